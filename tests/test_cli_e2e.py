"""End-to-end tests of the real ``mmcv-migrate`` CLI, run as a subprocess on temporary copies.

Trees:

* ``fixtures/projects/sample`` -> ``sample_expected`` (regenerate with
  ``python fixtures/projects/regenerate.py``; see fixtures/projects/README.md);
* ``fixtures/hostile/tree`` (written by ``fixtures/hostile/_generate.py``): odd encodings, line
  endings, Python 2, undecodable bytes; the symlink out of the tree is made here, at test time.

Every run points ``MMCV_MIGRATE_REGISTRY`` at the fixed snapshot ``tests/data/registry_some_ops.json``
(nms, roi_align, modulated_deform_conv, multi_scale_deform_attn implemented) and
``MMCV_MIGRATE_CACHE_DIR`` at a temporary directory, so nothing here depends on the shipped registry
or touches ``~/.cache``. CLI runs are batched in module-scoped fixtures to keep the file fast.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Dict, Optional

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "fixtures"
SAMPLE = FIXTURES / "projects" / "sample"
EXPECTED = FIXTURES / "projects" / "sample_expected"
HOSTILE = FIXTURES / "hostile"
REGISTRY = REPO / "tests" / "data" / "registry_some_ops.json"

needs_symlinks = pytest.mark.skipif(not hasattr(os, "symlink") or os.name == "nt", reason="symlinks")

# Created in every copy of the sample: both must be skipped (build/ by the project's .gitignore and
# the default excludes, work_dirs/ by the project's .gitignore only).
IGNORED_FILES = {
    "build/ignored.py": b"from mmcv.ops import nms\nimport mmcv._ext\ncfg = dict(type='RoIAlign')\n",
    "work_dirs/exp1/dumped_config.py": b"from mmcv.ops import RoIAlign\nroi = dict(type='RoIAlign')\n",
}
IGNORED_DIRS = ("build/", "work_dirs/")

# Files of the sample that apply rewrites (the tests check this list against sample_expected).
CHANGED = {
    "detector/models/backbones/resnet.py",
    "detector/models/dense_heads/anchor_head.py",
    "detector/models/dense_heads/bev_head.py",
    "detector/models/dense_heads/sparse_head.py",
    "detector/models/necks/fpn_carafe.py",
    "detector/models/roi_heads/mask_head.py",
    "detector/models/roi_heads/roi_extractor.py",
    "detector/ops/__init__.py",
    "detector/ops/deformable_aggregation.py",
    "requirements.txt",
    "third_party/mmcv/ops/carafe.py",
    "third_party/mmcv/ops/nms.py",
    "third_party/mmcv/ops/roi_align.py",
    "third_party/mmcv/utils/__init__.py",
    "tools/benchmark_nms.py",
}
MODES = {"detector/models/dense_heads/anchor_head.py": 0o755, "tools/benchmark_nms.py": 0o750}

FINDING_KEYS = {"path", "line", "column", "rule", "kind", "symbol", "status", "fixable", "message"}
COVERAGE_KEYS = {"symbol", "uses", "status", "backward", "kernels"}


# --------------------------------------------------------------------------------------------
# helpers


def cli(*args: str, cwd: Path, cache: Optional[Path] = None, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["MMCV_MIGRATE_REGISTRY"] = str(REGISTRY)
    env["MMCV_MIGRATE_CACHE_DIR"] = str(cache if cache is not None else cwd.parent / ".cache-e2e")
    env.pop("XDG_CACHE_HOME", None)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "mmcv_migrate.cli", *args],
        cwd=str(cwd), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
    )


def out(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout.decode("utf-8")


def explain(proc: subprocess.CompletedProcess) -> str:
    return f"rc={proc.returncode}\nstdout:\n{proc.stdout.decode(errors='replace')[-3000:]}\n" \
           f"stderr:\n{proc.stderr.decode(errors='replace')[-3000:]}"


def as_json(proc: subprocess.CompletedProcess) -> dict:
    return json.loads(proc.stdout.decode("utf-8"))


def snapshot(root: Path) -> Dict[str, tuple]:
    """rel -> (kind, sha256 or link target, mode, mtime_ns, inode) of every entry under root."""
    entries = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                entries[rel] = ("link", os.readlink(path), None, None, None)
            elif stat.S_ISDIR(st.st_mode):
                entries[rel] = ("dir", None, stat.S_IMODE(st.st_mode), None, None)
            else:
                with open(path, "rb") as handle:
                    digest = hashlib.sha256(handle.read()).hexdigest()
                entries[rel] = ("file", digest, stat.S_IMODE(st.st_mode), st.st_mtime_ns, st.st_ino)
    return entries


def files_of(root: Path) -> Dict[str, bytes]:
    found = {}
    for dirpath, _dirs, filenames in os.walk(root, followlinks=False):
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                found[os.path.relpath(path, root).replace(os.sep, "/")] = Path(path).read_bytes()
    return found


_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc")


def copy_sample(dest: Path) -> Path:
    shutil.copytree(SAMPLE, dest, symlinks=True, ignore=_IGNORE)
    for rel, data in IGNORED_FILES.items():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return dest


def py_files(root: Path, skip=IGNORED_DIRS) -> set:
    return {rel for rel in files_of(root) if rel.endswith(".py") and not rel.startswith(skip)}


def scanned_files(root: Path, skip=IGNORED_DIRS) -> set:
    """What a scan walks: the .py files and the dependency files (requirements*.txt, ...)."""
    from mmcv_migrate.discovery import is_dependency_file

    deps = {rel for rel in files_of(root) if not rel.startswith(skip)
            and is_dependency_file(rel.rpartition("/")[2], rel.rpartition("/")[0])}
    return py_files(root, skip) | deps


def hostile_table() -> Dict[str, bytes]:
    """FILES of fixtures/hostile/_generate.py (executed from source: no .pyc lands in fixtures/)."""
    path = HOSTILE / "_generate.py"
    namespace: dict = {"__name__": "hostile_generate", "__file__": str(path)}
    exec(compile(path.read_bytes(), str(path), "exec"), namespace)
    return namespace["FILES"]


def findings_at(doc: dict, path: str):
    return [f for f in doc["findings"] if f["path"] == path]


# --------------------------------------------------------------------------------------------
# the sample project: scan, apply, check (one module-scoped flow, many assertions)


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    base = tmp_path_factory.mktemp("e2e-sample")
    tree = copy_sample(base / "sample")
    for rel, mode in MODES.items():
        os.chmod(tree / rel, mode)
    cache, no_cache_dir = base / "cache", base / "cache-unused"
    r = SimpleNamespace(tree=tree, base=base, cache=cache, no_cache_dir=no_cache_dir)

    r.before = snapshot(tree)
    r.scan_table = cli("scan", ".", cwd=tree, cache=cache)
    r.scan_cold = cli("scan", ".", "--format", "json", cwd=tree, cache=cache)
    r.scan_warm = cli("scan", ".", "--format", "json", cwd=tree, cache=cache)
    r.scan_nocache = cli("scan", ".", "--format", "json", "--no-cache", cwd=tree, cache=no_cache_dir)
    r.scan_fail = cli("scan", ".", "--fail-on-remaining", "--format", "json", cwd=tree, cache=cache)
    r.scan_exclude = cli("scan", ".", "--format", "json", "--exclude", "configs", cwd=tree, cache=cache)
    r.sarif_path = base / "report.sarif"
    r.scan_sarif = cli("scan", ".", "--format", "sarif", "--output", str(r.sarif_path), cwd=tree, cache=cache)
    r.after_scans = snapshot(tree)

    r.dry = cli("apply", ".", cwd=tree, cache=cache)
    r.after_dry = snapshot(tree)

    r.apply1 = cli("apply", ".", "--inplace", cwd=tree, cache=cache)
    r.after_apply1 = snapshot(tree)
    r.apply2 = cli("apply", ".", "--inplace", "--format", "json", cwd=tree, cache=cache)
    r.after_apply2 = snapshot(tree)
    r.dry2 = cli("apply", ".", cwd=tree, cache=cache)
    r.check = cli("check", ".", cwd=tree, cache=cache)
    r.check_json = cli("check", ".", "--format", "json", cwd=tree, cache=cache)
    return r


def test_expected_tree_matches_the_changed_list():
    """The golden tree differs from the sample in exactly the files CHANGED names."""
    sample, expected = files_of(SAMPLE), files_of(EXPECTED)
    sample = {k: v for k, v in sample.items() if "__pycache__" not in k}
    expected = {k: v for k, v in expected.items() if "__pycache__" not in k}
    assert set(sample) == set(expected)
    assert {rel for rel in sample if sample[rel] != expected[rel]} == CHANGED


def test_scan_exit_codes_and_changes_nothing(flow):
    assert flow.scan_table.returncode == 0, explain(flow.scan_table)
    assert flow.scan_cold.returncode == 0, explain(flow.scan_cold)
    assert flow.scan_fail.returncode == 1, explain(flow.scan_fail)
    assert flow.scan_sarif.returncode == 0, explain(flow.scan_sarif)
    assert flow.after_scans == flow.before
    assert "anchor_head.py" in out(flow.scan_table)


def test_scan_json_document(flow):
    doc = as_json(flow.scan_cold)
    assert doc["version"] == 1
    assert doc["errors"] == []
    # every .py and dependency file outside the ignored directories, and nothing else
    assert doc["files_scanned"] == len(scanned_files(flow.tree)) == len(py_files(flow.tree)) + 1
    for finding in doc["findings"]:
        assert FINDING_KEYS <= set(finding), finding
        assert not finding["path"].startswith(IGNORED_DIRS), finding
        assert not finding["path"].startswith("/"), finding
    assert doc["coverage"]["ops"], doc["coverage"]
    for row in doc["coverage"]["ops"]:
        assert COVERAGE_KEYS <= set(row), row

    def has(path, symbol, **fields):
        hits = [f for f in findings_at(doc, path) if f["symbol"] == symbol
                and all(f.get(k) == v for k, v in fields.items())]
        assert hits, (path, symbol, fields, findings_at(doc, path))
        return hits

    anchor = "detector/models/dense_heads/anchor_head.py"
    has(anchor, "mmcv.ops.batched_nms", status="converted", fixable=True, line=7)
    has(anchor, "mmcv.ops.RoIAlign", status="converted", fixable=True, line=7)
    has(anchor, "mmcv.ops.CARAFEPack", status="unconverted", fixable=False, remaining=True, line=7)
    has(anchor, "mmcv.ops.nms", fixable=True, line=56)  # import inside a function
    has(anchor, "mmcv.ops.soft_nms", suppressed=True, fixable=False, remaining=False)  # mmcv-migrate: ignore
    has("detector/models/backbones/resnet.py", "mmcv.ops.ModulatedDeformConv2dPack", fixable=True)  # try/except
    bev = "detector/models/dense_heads/bev_head.py"
    has(bev, "mmcv.ops.MultiScaleDeformableAttention", rule="deprecated-import", fixable=True)
    has(bev, "mmcv.ops.multi_scale_deform_attn.multi_scale_deformable_attn_pytorch", fixable=True)
    has(bev, "mmcv.utils.ext_loader", rule="ext-loader", fixable=True)
    has(bev, "mmcv._ext.ms_deform_attn_forward", rule="mmcv-ext")
    has("detector/models/roi_heads/roi_extractor.py", "mmcv.ops", kind="dynamic")  # getattr(ops, layer_type)
    has("detector/models/roi_heads/mask_head.py", "mmcv.ops.nms", fixable=True)  # import mmcv; mmcv.ops.nms
    has("detector/models/layers/export.py", "torch.ops.mmcv.nms", rule="torch-ops", remaining=True)
    has("setup.py", "torch.utils.cpp_extension.CUDAExtension", rule="compiled-extension")
    has("detector/ops/jit.py", "torch.utils.cpp_extension.load", rule="compiled-extension")
    has("tools/benchmark_nms.py", "mmcv.ops.box_iou_rotated", status="unconverted", remaining=True)
    # requirements: their own kind, rewritten by apply, never a coverage row
    has("requirements.txt", "mmcv-full>=1.3.17,<1.8.0", kind="dependency", rule="mmcv-dependency",
        status="converted", fixable=True, remaining=True, line=3, column=1)
    assert not any(row["symbol"].startswith("mmcv-") for row in doc["coverage"]["ops"])
    # inside the vendored mmcv tree: ext_loader imports are fixable, ops imports only reported
    has("third_party/mmcv/ops/nms.py", "mmcv.utils.ext_loader", fixable=True)
    has("third_party/mmcv/ops/carafe.py", "mmcv._ext.carafe_forward", status="unconverted")
    has("third_party/mmcv/cnn/bricks/transformer.py", "mmcv.ops.MultiScaleDeformableAttention",
        fixable=False, remaining=False)
    # config files: reported (never rewritten)
    configs = [f for f in doc["findings"] if f["path"].startswith("configs/")]
    assert {f["rule"] for f in configs} == {"config-type"}
    assert {f["symbol"] for f in configs} >= {
        "mmcv.ops.RoIAlign", "mmcv.ops.ModulatedDeformConv2dPack", "mmcv.ops.nms",
        "mmcv.ops.MultiScaleDeformableAttention",
    }
    assert not any(f["fixable"] for f in configs)
    # files that mention nothing mmcv-related have no findings
    for quiet in ("detector/utils/logger.py", "detector/models/layers/norm.py",
                  "detector/utils/collect_env.py", "configs/_base_/default_runtime.py"):
        assert findings_at(doc, quiet) == [], quiet


def test_scan_reports_wrapper_of_project_local_extension(flow):
    doc = as_json(flow.scan_cold)
    assert findings_at(doc, "detector/ops/deformable_aggregation.py")


def test_scan_cache_and_no_cache_agree(flow):
    cold, warm, nocache = as_json(flow.scan_cold), as_json(flow.scan_warm), as_json(flow.scan_nocache)
    assert warm == cold
    assert nocache == cold
    assert any(p.is_file() for p in flow.cache.rglob("*")), "the cache was never written"
    assert not flow.no_cache_dir.exists() or not any(flow.no_cache_dir.rglob("*")), "--no-cache wrote"


def test_scan_fail_on_remaining_json_matches(flow):
    assert as_json(flow.scan_fail) == as_json(flow.scan_cold)
    assert as_json(flow.scan_cold)["summary"]["remaining"] > 0


def test_scan_exclude_drops_config_findings(flow):
    assert flow.scan_exclude.returncode == 0, explain(flow.scan_exclude)
    full, excluded = as_json(flow.scan_cold), as_json(flow.scan_exclude)
    assert not any(f["path"].startswith("configs/") for f in excluded["findings"])
    assert excluded["findings"] == [f for f in full["findings"] if not f["path"].startswith("configs/")]
    n_configs = len([p for p in py_files(flow.tree) if p.startswith("configs/")])
    assert n_configs == 3
    assert excluded["files_scanned"] == full["files_scanned"] - n_configs


def test_scan_sarif_written_to_output_file(flow):
    assert out(flow.scan_sarif).strip() == ""
    sarif = json.loads(flow.sarif_path.read_text(encoding="utf-8"))
    assert sarif["version"] == "2.1.0"
    results = sarif["runs"][0]["results"]
    assert results and all("ruleId" in r for r in results)
    uris = {loc["physicalLocation"]["artifactLocation"]["uri"] for r in results for loc in r["locations"]}
    assert "detector/models/dense_heads/anchor_head.py" in uris


def test_apply_dry_run_prints_diff_and_writes_nothing(flow):
    assert flow.dry.returncode == 1, explain(flow.dry)
    assert flow.after_dry == flow.before
    text = out(flow.dry)
    headers = {line[len("--- a/"):] for line in text.splitlines() if line.startswith("--- a/")}
    assert headers == CHANGED
    for rel in sorted(CHANGED):
        before = (SAMPLE / rel).read_text(encoding="utf-8").splitlines(keepends=True)
        after = (EXPECTED / rel).read_text(encoding="utf-8").splitlines(keepends=True)
        expected_diff = "".join(difflib.unified_diff(before, after, f"a/{rel}", f"b/{rel}"))
        assert expected_diff in text, rel


def test_apply_inplace_writes_expected_tree(flow):
    assert flow.apply1.returncode == 1, explain(flow.apply1)  # CARAFEPack etc. remain
    got = {k: v for k, v in files_of(flow.tree).items() if not k.startswith(IGNORED_DIRS)}
    want = {k: v for k, v in files_of(EXPECTED).items() if "__pycache__" not in k}
    assert sorted(got) == sorted(want)  # no temp files left behind, nothing added or lost
    mismatched = [rel for rel in want if got[rel] != want[rel]]
    assert mismatched == []
    for rel, data in got.items():
        if rel.endswith(".py"):
            compile(data, rel, "exec")


def test_apply_inplace_keeps_modes_and_untouched_files(flow):
    before, after = flow.before, flow.after_apply1
    assert set(before) == set(after)
    for rel, mode in MODES.items():
        assert rel in CHANGED
        assert after[rel][2] == mode, (rel, oct(after[rel][2]))
    for rel, entry in before.items():
        if entry[0] != "file":
            continue
        if rel in CHANGED:
            assert after[rel][1] != entry[1], rel
        else:
            assert after[rel] == entry, rel  # same bytes, mode, mtime and inode
    for rel, data in IGNORED_FILES.items():
        assert (flow.tree / rel).read_bytes() == data


def test_apply_is_idempotent(flow):
    assert flow.apply2.returncode == 1, explain(flow.apply2)
    doc = as_json(flow.apply2)
    assert doc["files_changed"] == []
    assert doc["summary"]["fixable"] == 0
    assert flow.after_apply2 == flow.after_apply1
    assert flow.dry2.returncode == 0, explain(flow.dry2)
    assert "--- a/" not in out(flow.dry2) and "+++ b/" not in out(flow.dry2)


def test_check_lists_remaining_uses_with_fix_command(flow):
    assert flow.check.returncode == 1, explain(flow.check)
    assert flow.check_json.returncode == 1, explain(flow.check_json)
    text = out(flow.check)
    remaining = [f for f in as_json(flow.check_json)["findings"] if f["remaining"] and not f["suppressed"]]
    assert remaining
    for f in remaining:
        assert f"{f['path']}:{f['line']}:" in text, f
    for where in ("detector/models/dense_heads/anchor_head.py:8:", "detector/models/necks/fpn_carafe.py:3:",
                  "detector/models/layers/export.py:7:", "tools/benchmark_nms.py:28:",
                  "third_party/mmcv/ops/carafe.py:33:"):
        assert where in text, where
    # converted uses are not listed as remaining
    assert "detector/models/roi_heads/mask_head.py:" not in text
    assert "requirements.txt:" not in text  # rewritten to mmcv (1.x, no ops) by apply
    after = [f for f in as_json(flow.check_json)["findings"] if f["path"] == "requirements.txt"]
    assert [(f["symbol"], f["remaining"]) for f in after] == [("mmcv>=1.3.17,<1.8.0", False)]
    assert "mmcv-migrate apply --inplace ." in text


# --------------------------------------------------------------------------------------------
# clean trees, parallelism, ops, usage errors


@pytest.fixture(scope="module")
def clean_trees(tmp_path_factory):
    base = tmp_path_factory.mktemp("e2e-clean")
    plain = base / "plain"
    (plain / "pkg").mkdir(parents=True)
    (plain / "pkg" / "__init__.py").write_bytes(b"")
    (plain / "pkg" / "model.py").write_bytes(
        b"import torch\nimport torch.nn as nn\n\n\nclass Head(nn.Module):\n"
        b"    def forward(self, x):\n        return torch.relu(x)\n")
    migrated = base / "migrated"
    (migrated / "pkg").mkdir(parents=True)
    (migrated / "pkg" / "__init__.py").write_bytes(b"")
    (migrated / "pkg" / "ops.py").write_bytes(
        b"import mmcv_runtime.ops\n"
        b"from mmcv_runtime import ext_loader\n"
        b"from mmcv_runtime.ops import RoIAlign, batched_nms\n"
        b"from mmcv_runtime.ops.multi_scale_deform_attn import multi_scale_deformable_attn_pytorch\n\n"
        b"ext_module = ext_loader.load_ext('_ext', ['nms', 'roi_align_forward'])\n\n\n"
        b"def suppress(boxes, scores):\n"
        b"    return ext_module.nms(boxes, scores, iou_threshold=0.5, offset=0)\n\n\n"
        b"layer = mmcv_runtime.ops.RoIAlign((7, 7))\n")
    (migrated / "configs").mkdir()
    (migrated / "configs" / "cfg.py").write_bytes(b"roi = dict(type='RoIAlign', output_size=7)\n")
    return SimpleNamespace(base=base, plain=plain, migrated=migrated)


def test_check_clean_trees_exit_zero(clean_trees):
    for tree in (clean_trees.plain, clean_trees.migrated):
        before = snapshot(tree)
        proc = cli("check", ".", cwd=tree)
        assert proc.returncode == 0, (tree.name, explain(proc))
        assert snapshot(tree) == before
    proc = cli("scan", ".", "--format", "json", "--fail-on-remaining", cwd=clean_trees.migrated)
    assert proc.returncode == 0, explain(proc)
    doc = as_json(proc)
    assert doc["findings"] and doc["summary"]["remaining"] == 0


def _many_files(root: Path, count: int) -> None:
    templates = [
        b"from mmcv.ops import nms, CARAFEPack\n\n\ndef f{i}(b, s):\n    return nms(b, s, 0.{i})\n",
        b"import mmcv\n\nx{i} = mmcv.ops.RoIAlign((7, 7))\ny{i} = mmcv.ops.box_iou_rotated\n",
        b"from mmcv.utils import ext_loader\next_module = ext_loader.load_ext('_ext', ['nms', 'carafe_forward'])\n"
        b"out{i} = ext_module.nms(1, 2)\n",
        b"model = dict(type='DCNv2', groups={i}, roi=dict(type='RoIAlign'))\n",
        b"from mmcv import ops\nlayer{i} = getattr(ops, 'RoIAlign')\n",
        b"def broken{i}(:\n    from mmcv.ops import nms\n",
    ]
    for i in range(count):
        sub = root / f"pkg{i % 4}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"mod_{i:03d}.py").write_bytes(templates[i % len(templates)].replace(b"{i}", str(i).encode()))


def test_jobs_one_and_two_give_identical_json(tmp_path):
    from mmcv_migrate.engine import POOL_THRESHOLD

    tree = tmp_path / "many"
    count = max(36, POOL_THRESHOLD + 12)
    _many_files(tree, count)
    one = cli("scan", ".", "--format", "json", "--no-cache", "--jobs", "1", cwd=tree)
    two = cli("scan", ".", "--format", "json", "--no-cache", "--jobs", "2", cwd=tree)
    assert one.returncode == two.returncode == 2, explain(one) + explain(two)  # the broken files
    doc = as_json(one)
    assert doc == as_json(two)
    assert doc["files_scanned"] == count
    assert len(doc["errors"]) == len([i for i in range(count) if i % 6 == 5])
    assert len({f["path"] for f in doc["findings"]}) == count - len(doc["errors"])


def test_ops_json_lists_every_catalogue_submodule(tmp_path):
    from mmcv_migrate.rewrites.catalogue import load_catalogue

    proc = cli("ops", "--format", "json", cwd=tmp_path)
    assert proc.returncode == 0, explain(proc)
    doc = as_json(proc)
    assert "version" in doc
    ops = {row["op"]: row for row in doc["ops"]}
    assert set(ops) == set(load_catalogue().submodules)
    assert ops["nms"]["status"] in ("converted", "partial")  # implemented in the test snapshot
    assert ops["carafe"]["status"] == "unconverted"


def test_usage_errors_exit_two(tmp_path):
    missing = cli("scan", str(tmp_path / "does-not-exist"), cwd=tmp_path)
    assert missing.returncode == 2, explain(missing)
    bad_format = cli("scan", ".", "--format", "yaml", cwd=tmp_path)
    assert bad_format.returncode == 2, explain(bad_format)
    for proc in (missing, bad_format):
        assert b"Traceback" not in proc.stderr


# --------------------------------------------------------------------------------------------
# hostile files


# What apply must make of each file of fixtures/hostile/tree (None: left as it is).
def _hostile_expected(files):
    sub = lambda data: data.replace(b"from mmcv.ops import", b"from mmcv_runtime.ops import")  # noqa: E731
    return {
        "crlf.py": sub(files["crlf.py"]),
        "cr_only.py": sub(files["cr_only.py"]),
        "mixed_endings.py": sub(files["mixed_endings.py"]),
        "latin1.py": sub(files["latin1.py"]),
        "bom.py": sub(files["bom.py"]),
        "bom_crlf.py": b"\xef\xbb\xbfimport mmcv\r\nimport mmcv_runtime.ops\r\n\r\ndets = mmcv_runtime.ops.nms\r\n",
        "tabs.py": sub(files["tabs.py"]),
        "py2.py": None,
        "undecodable.py": None,
        "empty.py": None,
    }


def test_hostile_fixture_bytes_are_intact():
    """The committed files are exactly what _generate.py writes (no editor/git newline mangling)."""
    files = hostile_table()
    on_disk = files_of(HOSTILE / "tree")
    assert on_disk == files


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    base = tmp_path_factory.mktemp("e2e-hostile")
    tree = base / "tree"
    shutil.copytree(HOSTILE / "tree", tree, symlinks=True, ignore=_IGNORE)
    outside = base / "outside"
    outside.mkdir()
    target = outside / "target.py"
    target.write_bytes(b"from mmcv.ops import nms\nimport mmcv._ext\n")
    r = SimpleNamespace(base=base, tree=tree, target=target, target_bytes=target.read_bytes(), links=False)
    if hasattr(os, "symlink") and os.name != "nt":
        os.symlink(os.path.join("..", "outside", "target.py"), tree / "link_out.py")
        os.symlink(os.path.join("..", "outside"), tree / "linkdir")
        os.symlink("crlf.py", tree / "zz_alias.py")  # in-tree link: the real file is the one written
        r.links = True
    r.before = snapshot(tree)
    r.scan = cli("scan", ".", "--format", "json", cwd=tree)
    r.after_scan = snapshot(tree)
    r.apply = cli("apply", ".", "--inplace", "--format", "json", cwd=tree)
    r.after_apply = snapshot(tree)
    r.apply2 = cli("apply", ".", "--inplace", "--format", "json", cwd=tree)
    r.after_apply2 = snapshot(tree)
    return r


def test_hostile_scan_reports_errors_and_changes_nothing(hostile):
    assert hostile.scan.returncode == 2, explain(hostile.scan)
    assert hostile.after_scan == hostile.before
    doc = as_json(hostile.scan)
    assert sorted(e["path"] for e in doc["errors"]) == ["py2.py", "undecodable.py"]
    assert all(e["message"] for e in doc["errors"])
    paths = {f["path"] for f in doc["findings"]}
    assert paths == {"crlf.py", "cr_only.py", "mixed_endings.py", "latin1.py", "bom.py", "bom_crlf.py", "tabs.py"}
    assert doc["files_scanned"] == len(hostile_table())  # no symlinked file or directory counted


def test_hostile_apply_keeps_encodings_and_line_endings(hostile):
    assert hostile.apply.returncode == 2, explain(hostile.apply)
    doc = as_json(hostile.apply)
    assert sorted(e["path"] for e in doc["errors"]) == ["py2.py", "undecodable.py"]
    files = hostile_table()
    for name, want in _hostile_expected(files).items():
        got = (hostile.tree / name).read_bytes()
        assert got == (files[name] if want is None else want), name
        if want is not None:
            compile(got, name, "exec")
    for name in ("py2.py", "undecodable.py", "empty.py"):
        assert hostile.after_apply[name] == hostile.before[name], name  # not even rewritten
    assert sorted(doc["files_changed"]) == sorted(n for n, w in _hostile_expected(files).items() if w is not None)
    # a second run finds nothing left to rewrite
    assert hostile.apply2.returncode == 2, explain(hostile.apply2)
    assert as_json(hostile.apply2)["files_changed"] == []
    assert hostile.after_apply2 == hostile.after_apply


def test_dry_run_diff_of_cr_only_file_is_line_oriented(tmp_path):
    files = hostile_table()
    for name in ("cr_only.py", "crlf.py"):
        (tmp_path / name).write_bytes(files[name])
    proc = cli("apply", "cr_only.py", "crlf.py", cwd=tmp_path)
    assert proc.returncode == 1, explain(proc)
    lines = proc.stdout.decode("latin-1").split("\n")
    assert "--- a/cr_only.py" in lines and "--- a/crlf.py" in lines, lines


@needs_symlinks
def test_hostile_symlink_out_of_tree_is_neither_scanned_nor_written(hostile):
    assert hostile.links
    assert hostile.target.read_bytes() == hostile.target_bytes
    for doc in (as_json(hostile.scan), as_json(hostile.apply)):
        seen = {f["path"] for f in doc["findings"]} | {e["path"] for e in doc["errors"]}
        assert not any(p.startswith(("link_out", "linkdir", "zz_alias")) for p in seen), seen
    for link in ("link_out.py", "linkdir", "zz_alias.py"):
        assert os.path.islink(hostile.tree / link), link
        assert hostile.after_apply[link] == hostile.before[link]
