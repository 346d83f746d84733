"""The engine's pieces: prefilter, hostile bytes, cache, process pool, coverage join."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmcv_migrate import engine
from mmcv_migrate.coverage import load_coverage
from mmcv_migrate.engine import analyze, is_candidate

ROOT = Path(__file__).resolve().parent.parent
SOME_OPS = str(ROOT / "tests" / "data" / "registry_some_ops.json")
CONFIG_TYPES = frozenset(load_coverage().catalogue.config_types)


@pytest.fixture
def some_ops(monkeypatch, tmp_path):
    monkeypatch.setenv("MMCV_MIGRATE_REGISTRY", SOME_OPS)
    monkeypatch.setenv("MMCV_MIGRATE_CACHE_DIR", str(tmp_path / "cache"))
    return load_coverage(SOME_OPS)


# --- prefilter ------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [
    b"from mmcv.ops import nms\n",
    b"from ..utils import ext_loader\n",
    b"ext = load_ext('_ext', [])\n",
    b"CUDAExtension('x', [])\n",
    b"roi = dict(type='RoIAlign', output_size=7)\n",
    b"cfg = {'type': \"DCNv2\"}\n",
    b"cfg = {\"type\" : 'nms'}\n",
])
def test_prefilter_admits_possible_uses(data):
    assert is_candidate(data, CONFIG_TYPES)


@pytest.mark.parametrize("data", [
    b"import torch\nx = torch.zeros(3)\n",
    b"layer = dict(type='Linear', in_features=3)\n",  # not an mmcv.ops name
    b"norm = dict(type='SyncBN')\n",  # torch's SyncBatchNorm, not mmcv's MMSyncBN
    b"def f(x: type) -> None: ...\n",
])
def test_prefilter_rejects_unrelated_files(data):
    assert not is_candidate(data, CONFIG_TYPES)


# --- bytes the engine must keep --------------------------------------------------------------


@pytest.mark.parametrize("data, expected", [
    (b"import os\r\nfrom mmcv.ops import nms\r\n", b"import os\r\nfrom mmcv_runtime.ops import nms\r\n"),
    (b"import os\rfrom mmcv.ops import nms\r", b"import os\rfrom mmcv_runtime.ops import nms\r"),
    (b"\xef\xbb\xbffrom mmcv.ops import nms\n", b"\xef\xbb\xbffrom mmcv_runtime.ops import nms\n"),
    (b"# -*- coding: latin-1 -*-\nx = '\xe9'\nfrom mmcv.ops import nms\n",
     b"# -*- coding: latin-1 -*-\nx = '\xe9'\nfrom mmcv_runtime.ops import nms\n"),
    (b"import os\r\nfrom mmcv.ops import nms, CARAFE\r\n",
     b"import os\r\nfrom mmcv_runtime.ops import nms\r\nfrom mmcv.ops import CARAFE\r\n"),
])
def test_encoding_bom_and_line_endings_are_kept(some_ops, data, expected):
    result = analyze(data, "x.py", fix=True, coverage=some_ops)
    assert result.new_source == expected
    assert analyze(expected, "x.py", fix=True, coverage=some_ops).new_source is None


@pytest.mark.parametrize("data, reason", [
    (b"print 'hello'\nfrom mmcv.ops import nms\n", "cannot parse"),
    (b"x = '\xff\xfe'\nfrom mmcv.ops import nms\n", "cannot decode"),
    (b"# -*- coding: no-such-codec -*-\nimport mmcv\n", "cannot decode"),
])
def test_bad_files_become_errors(data, reason):
    result = analyze(data, "bad.py", fix=True)
    assert result.error is not None and reason in result.error.message
    assert result.new_source is None and result.findings == []


def test_empty_and_unrelated_sources(some_ops):
    assert analyze(b"", "e.py", fix=True, coverage=some_ops).findings == []
    assert analyze(b"import mmcv\nmmcv.imread('x')\n", "e.py", fix=True, coverage=some_ops).new_source is None


# --- running over a tree: cache and pool ------------------------------------------------------


def _tree(root: Path, files: int) -> None:
    root.mkdir()
    for index in range(files):
        (root / f"m{index:03d}.py").write_text(
            f"from mmcv.ops import nms, CARAFE\n\ndef f{index}(b, s):\n    return nms(b, s, 0.{index % 9 + 1})\n")
    (root / "plain.py").write_text("import os\n")
    (root / "bad.py").write_bytes(b"print 'x'  # mmcv\n")


def _summary(outcome):
    return [(f.path, [x.to_dict() for x in r.findings], r.new_source,
             r.error.message if r.error else None) for f, r in outcome.results]


def test_cache_returns_the_same_results_without_parsing(some_ops, tmp_path, monkeypatch):
    _tree(tmp_path / "t", 5)
    cold = engine.run([str(tmp_path / "t")], fix=False)
    monkeypatch.setattr(engine, "analyze", lambda *a, **k: pytest.fail("parsed despite a warm cache"))
    warm = engine.run([str(tmp_path / "t")], fix=False)
    assert _summary(warm) == _summary(cold)
    assert len(cold.errors) == 1 and cold.errors[0].path == "bad.py"


def test_cache_is_keyed_on_content(some_ops, tmp_path):
    _tree(tmp_path / "t", 2)
    engine.run([str(tmp_path / "t")], fix=False)
    (tmp_path / "t" / "m000.py").write_text("from mmcv.ops import CARAFE\n")
    again = engine.run([str(tmp_path / "t")], fix=False)
    findings = {f.rel: [x.symbol for x in r.findings] for f, r in again.results}
    assert findings["m000.py"] == ["mmcv.ops.CARAFE"]


def test_apply_never_takes_new_text_from_the_cache(some_ops, tmp_path):
    _tree(tmp_path / "t", 2)
    engine.run([str(tmp_path / "t")], fix=False)  # warms the cache with scan results
    outcome = engine.run([str(tmp_path / "t")], fix=True)
    changed = {f.path.name for f, r in outcome.results if r.changed}
    assert changed == {"m000.py", "m001.py"}


def test_no_cache_and_pool_give_identical_results(some_ops, tmp_path, monkeypatch):
    _tree(tmp_path / "t", engine.POOL_THRESHOLD + 6)
    serial = engine.run([str(tmp_path / "t")], fix=True, jobs=1, use_cache=False)
    pooled = engine.run([str(tmp_path / "t")], fix=True, jobs=2, use_cache=False)
    assert _summary(serial) == _summary(pooled)


def test_unwritable_cache_falls_back(some_ops, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("MMCV_MIGRATE_CACHE_DIR", str(blocker / "cache"))
    _tree(tmp_path / "t", 1)
    outcome = engine.run([str(tmp_path / "t")], fix=False)
    assert any(r.findings for _, r in outcome.results)


# --- coverage -------------------------------------------------------------------------------


def test_coverage_statuses(some_ops):
    cov = some_ops
    assert cov.status("mmcv.ops.nms") == "converted" and cov.provides("mmcv.ops.nms")
    assert cov.status("mmcv.ops.CARAFE") == "unconverted" and not cov.provides("mmcv.ops.CARAFE")
    assert cov.status("mmcv._ext.nms") == "converted"
    assert cov.status("mmcv._ext.carafe_forward") == "unconverted"
    assert "mmcv-migrate ops" in cov.describe("mmcv.ops.CARAFE")
    assert cov.implemented_ext_functions() >= {"nms", "roi_align_forward"}


def test_forward_only_ops_are_partial(tmp_path):
    registry = json.loads(Path(SOME_OPS).read_text())
    registry["ops"]["roi_align"]["backward"] = "no"
    path = tmp_path / "registry.json"
    path.write_text(json.dumps(registry))
    cov = load_coverage(str(path))
    assert cov.status("mmcv.ops.RoIAlign") == "partial" and cov.provides("mmcv.ops.RoIAlign")


def test_coverage_rows_and_op_rows(some_ops):
    result = analyze(b"from mmcv.ops import nms, CARAFE\nfrom mmcv.ops import nms as n2\n", "x.py",
                     fix=False, coverage=some_ops)
    rows = {row.symbol: row for row in some_ops.rows(result.findings)}
    assert rows["mmcv.ops.nms"].uses == 2 and rows["mmcv.ops.nms"].backward == "n/a"
    assert rows["mmcv.ops.CARAFE"].status == "unconverted" and rows["mmcv.ops.CARAFE"].backward == "-"
    ops = {row.op: row for row in some_ops.op_rows()}
    assert len(ops) == len(some_ops.catalogue.submodules)
    assert ops["carafe"].status == "unconverted"
    assert ops["nms"].status in ("converted", "partial")


def test_shipped_registry_snapshot_is_what_scan_reads(monkeypatch):
    monkeypatch.delenv("MMCV_MIGRATE_REGISTRY", raising=False)
    from mmcv_runtime import registry

    assert set(load_coverage().ops) == set(registry.snapshot()["ops"])


def test_scanning_never_imports_torch(tmp_path):
    """Scanning is static analysis: neither the engine nor the reports may pull in torch."""
    import subprocess
    import sys

    code = (
        "import sys, io\n"
        "from mmcv_migrate import engine, reports\n"
        "from mmcv_migrate.cli import _report\n"
        f"outcome = engine.run([{str(ROOT / 'fixtures' / 'rewrites')!r}], fix=True, use_cache=False)\n"
        "findings = [f for _, r in outcome.results for f in r.findings]\n"
        "reports.render(_report('scan', ['.'], outcome, findings), 'table', stream=io.StringIO())\n"
        "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))\n"
    )
    env = {"MMCV_MIGRATE_CACHE_DIR": str(tmp_path), "PATH": ""}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_warm_run_reads_no_unchanged_file(some_ops, tmp_path, monkeypatch):
    import os
    import time

    _tree(tmp_path / "t", 3)
    old = time.time() - 60  # older than the racy window
    for path in (tmp_path / "t").iterdir():
        os.utime(path, (old, old))
    cold = engine.run([str(tmp_path / "t")], fix=False)
    engine.run([str(tmp_path / "t")], fix=False)  # the index now trusts every file
    monkeypatch.setattr(engine, "open", lambda *a, **k: pytest.fail(f"read {a[0]}"), raising=False)
    warm = engine.run([str(tmp_path / "t")], fix=False)
    assert _summary(warm) == _summary(cold)


def test_stat_index_sees_a_same_size_edit_in_the_same_second(some_ops, tmp_path):
    _tree(tmp_path / "t", 1)
    target = tmp_path / "t" / "m000.py"
    engine.run([str(tmp_path / "t")], fix=False)
    engine.run([str(tmp_path / "t")], fix=False)
    target.write_text(target.read_text().replace("CARAFE", "RoIPo"))  # same size, same second
    findings = {f.rel: [x.symbol for x in r.findings] for f, r in engine.run([str(tmp_path / "t")], fix=False).results}
    assert "mmcv.ops.RoIPo" in findings["m000.py"]
