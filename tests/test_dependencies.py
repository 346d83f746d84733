"""Dependency rewrites: the version classification, and before/after fixtures per file type.

Each directory ``fixtures/dependencies/CASE/`` holds one input file (its name decides the format:
``requirements*.txt``, ``setup.cfg``, ``pyproject.toml``, ``*.sh``, ``setup.py``), ``expected/`` with
the file after ``apply`` (absent when it must stay unchanged) and ``findings.txt``. Regenerate after a
deliberate change with ``MMCV_MIGRATE_UPDATE_FIXTURES=1 pytest tests/test_dependencies.py`` and
review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mmcv_migrate.coverage import load_coverage
from mmcv_migrate.discovery import discover, is_dependency_file
from mmcv_migrate.engine import analyze, run
from mmcv_migrate.rewrites import dependency_files, requirement_spec
from mmcv_migrate.rewrites.context import SUPPRESSION_MARK
from mmcv_migrate.rewrites.requirement_spec import classify, major_range, parse
from fixture_text import findings_text

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures" / "dependencies"
REGISTRY = ROOT / "tests" / "data" / "registry_some_ops.json"
UPDATE = os.environ.get("MMCV_MIGRATE_UPDATE_FIXTURES") == "1"


def _input(case: Path) -> Path:
    files = [p for p in case.rglob("*") if p.is_file() and "expected" not in p.relative_to(case).parts
             and p.name != "findings.txt"]
    assert len(files) == 1, files
    return files[0]


CASES = sorted(p for p in FIXTURES.iterdir() if p.is_dir())


# --- classification ---------------------------------------------------------------------------


@pytest.mark.parametrize("specifier, expected", [
    ("==1.7.2", (1, 1)),
    (">=1.3,<1.8", (1, 1)),
    (">=1.3.17, <2.0.0", (1, 1)),
    ("<2", (None, 1)),
    ("<2.0.0rc1", (None, 1)),
    ("<2.2.0", (None, 2)),
    ("~=1.7", (1, 1)),
    ("==2.*", (2, 2)),
    (">=2.0.0rc4", (2, 2)),
    ("==2.2.0", (2, 2)),
    (">=1.4", (1, None)),
    ("!=1.5.0", (None, None)),
    ("", (None, None)),
])
def test_major_range(specifier, expected):
    assert major_range(specifier) == expected


@pytest.mark.parametrize("text, new, fixable, remaining", [
    ("mmcv-full==1.7.2", "mmcv==1.7.2", True, True),
    ("mmcv-full>=1.3.17,<1.8.0", "mmcv>=1.3.17,<1.8.0", True, True),
    ("mmcv-full>=1.6", "mmcv>=1.6,<2.0", True, True),  # else pip would pick mmcv 2.x, with ops
    ("mmcv-full", "mmcv<2.0", True, True),
    ("MMCV_Full[all] == 1.7.0 ; python_version<'3.11'", "mmcv[all] == 1.7.0 ; python_version<'3.11'", True, True),
    ("mmcv-full (>=1.6)", "mmcv (>=1.6,<2.0)", True, True),
    ("mmcv==2.1.0", "mmcv-lite==2.1.0", True, True),
    ("mmcv>=2.0.0rc4", "mmcv-lite>=2.0.0rc4", True, True),
    ("mmcv>=2.0.0,<2.2.0", "mmcv-lite>=2.0.0,<2.2.0", True, True),
    ("mmcv==1.7.2", None, False, False),  # 1.x mmcv has no ops
    ("mmcv<2", None, False, False),
    ("mmcv-lite>=2.0", None, False, False),
    ("mmcv", None, False, True),  # ambiguous: reported, not guessed
    ("mmcv>=1.4", None, False, True),
    ("mmcv-full>=2.0", None, False, True),  # no such release
    ("mmcv-full @ https://example.com/mmcv_full-1.7.0-cp38-cp38-linux_x86_64.whl", None, False, True),
    ("mmcv==${MMCV_VERSION}", None, False, True),
])
def test_classify(text, new, fixable, remaining):
    req = parse(text)
    verdict = classify(req)
    assert (verdict.fixable, verdict.remaining) == (fixable, remaining), verdict
    if new is None:
        assert not (verdict.fixable and verdict.changes)
        return
    rewritten = (text[: req.name_start] + verdict.new_name + text[req.name_end: req.spec_end]
                 + verdict.append_spec + text[req.spec_end:])
    assert rewritten == new
    assert classify(parse(rewritten)).remaining is False  # the rewrite is final


@pytest.mark.parametrize("text", ["mmcv-migrate", "mmcv-migrate>=0.1", "torch>=1.8", "mmdet"])
def test_other_distributions_are_not_findings(text):
    assert classify(parse(text)) is None


def test_suppression_mark_matches_python_files():
    assert dependency_files.SUPPRESSION_MARK == SUPPRESSION_MARK


def test_file_formats_and_discovery_names():
    assert dependency_files.file_format("a/requirements/runtime.txt") == dependency_files.REQUIREMENTS
    assert dependency_files.file_format("setup.cfg") == dependency_files.SETUP_CFG
    assert dependency_files.file_format("pyproject.toml") == dependency_files.PYPROJECT
    assert dependency_files.file_format("tools/dist_train.sh") == dependency_files.SHELL
    assert dependency_files.file_format("setup.py") is None
    assert is_dependency_file("requirements-dev.txt") and is_dependency_file("runtime.txt", "requirements")
    assert not is_dependency_file("notes.txt", "docs") and not is_dependency_file("README.md")


# --- fixtures -------------------------------------------------------------------------------


def _analyze(data: bytes, name: str):
    return analyze(data, name, fix=True, coverage=load_coverage(str(REGISTRY)))


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_fixture(case: Path) -> None:
    source = _input(case)
    rel = source.relative_to(case)
    data = source.read_bytes()
    result = _analyze(data, rel.as_posix())
    assert result.error is None, result.error
    assert result.findings and all(f.kind == "dependency" for f in result.findings)
    expected_path = case / "expected" / rel
    findings_path = case / "findings.txt"
    if UPDATE:
        findings_path.write_text(findings_text(result.findings))
        if result.new_source is not None:
            expected_path.parent.mkdir(parents=True, exist_ok=True)
            expected_path.write_bytes(result.new_source)
        elif expected_path.exists():
            expected_path.unlink()
    assert findings_text(result.findings) == findings_path.read_text()
    if not expected_path.exists():
        assert result.new_source is None, "this fixture must stay unchanged"
        return
    expected = expected_path.read_bytes()
    assert result.new_source == expected
    again = _analyze(expected, rel.as_posix())
    assert again.new_source is None  # idempotent
    added = expected.count(b"mmcv-migrate") - data.count(b"mmcv-migrate")
    assert added == (0 if case.name == "already_lists_runtime" else 1)  # once per file, never twice
    assert not [f for f in again.findings if f.fixable]
    # every line without a finding is kept byte for byte, in order
    touched = {n for f in result.findings for n in range(f.line, (f.end_line or f.line) + 1)}
    after = iter(expected.splitlines(keepends=True))
    for number, line in enumerate(data.splitlines(keepends=True), 1):
        if number not in touched:
            assert any(line == candidate for candidate in after), (case.name, line)


def test_every_case_has_findings_file():
    assert CASES
    for case in CASES:
        assert (case / "findings.txt").exists(), case.name


# --- discovery and the engine's run ----------------------------------------------------------


def _tree(tmp_path: Path) -> Path:
    files = {
        "requirements.txt": b"mmcv-full==1.7.2\n",
        "requirements/runtime.txt": b"mmcv>=2.0.0\n",
        "docs/requirements.txt": b"mmcv==2.1.0\n",  # requirements*.txt anywhere
        "docs/notes.txt": b"mmcv-full==1.7.2\n",  # not a requirements file
        "setup.cfg": b"[options]\ninstall_requires =\n    mmcv-full\n",
        "pyproject.toml": b'[project]\ndependencies = ["mmcv==2.2.0"]\n',
        "tools/install.sh": b"mim install mmcv-full==1.7.0\n",
        "README.md": b"pip install mmcv-full\n",  # docs are out of scope
        "ignored/requirements.txt": b"mmcv-full\n",
        ".gitignore": b"ignored/\n",
        "pkg/model.py": b"import torch\n",
    }
    for rel, data in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    (tmp_path / ".git").mkdir()
    return tmp_path


def test_discovery_finds_dependency_files(tmp_path):
    tree = _tree(tmp_path)
    rels = [f.rel for f in discover([tree])]
    assert rels == ["docs/requirements.txt", "pkg/model.py", "pyproject.toml", "requirements.txt",
                    "requirements/runtime.txt", "setup.cfg", "tools/install.sh"]
    assert "tools/install.sh" not in [f.rel for f in discover([tree], ["*.sh"])]


def test_run_reports_and_caches_dependency_files(tmp_path, monkeypatch):
    tree = _tree(tmp_path / "tree")
    monkeypatch.setenv("MMCV_MIGRATE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MMCV_MIGRATE_REGISTRY", str(REGISTRY))

    def findings(outcome):
        return sorted((r.path, f.symbol, f.fixable) for _, r in outcome.results for f in r.findings)

    cold = run([str(tree)], fix=False)
    assert findings(cold) == [
        ("docs/requirements.txt", "mmcv==2.1.0", True),
        ("pyproject.toml", "mmcv==2.2.0", True),
        ("requirements.txt", "mmcv-full==1.7.2", True),
        ("requirements/runtime.txt", "mmcv>=2.0.0", True),
        ("setup.cfg", "mmcv-full", True),
        ("tools/install.sh", "mmcv-full==1.7.0", True),
    ]
    assert findings(run([str(tree)], fix=False)) == findings(cold)  # served from the cache
    applied = run([str(tree)], fix=True)
    assert {r.path for _, r in applied.results if r.changed} == {f for f, _, _ in findings(cold)}
    # the same bytes under a Python name are a Python file, not a requirements file (cache key)
    (tree / "pkg" / "same.py").write_bytes(b"mmcv-full @ https://x/y.whl\n")
    again = run([str(tree)], fix=False)
    assert [e.path for e in again.errors] == ["pkg/same.py"]


def test_requirement_spec_needs_no_libcst():
    import subprocess
    import sys

    code = ("import sys; import mmcv_migrate.rewrites.dependency_files, mmcv_migrate.engine; "
            "sys.exit('libcst' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
    assert requirement_spec.RULE == "mmcv-dependency"


# --- the CLI ----------------------------------------------------------------------------------


def test_cli_scan_apply_check_on_dependency_files(tmp_path):
    import json
    import subprocess
    import sys

    tree = tmp_path / "proj"
    (tree / "requirements").mkdir(parents=True)
    (tree / "requirements" / "runtime.txt").write_bytes(b"torch\r\nmmcv-full==1.7.2  # ops\r\n")
    (tree / "install.sh").write_bytes(b'mim install "mmcv>=2.0.0"\n')
    env = dict(os.environ, MMCV_MIGRATE_REGISTRY=str(REGISTRY), MMCV_MIGRATE_CACHE_DIR=str(tmp_path / "cache"))

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "mmcv_migrate.cli", *args, "."], cwd=tree, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    scan = cli("scan", "--format", "json")
    doc = json.loads(scan.stdout)
    assert scan.returncode == 0 and doc["files_scanned"] == 2
    assert {(f["path"], f["kind"], f["symbol"]) for f in doc["findings"]} == {
        ("requirements/runtime.txt", "dependency", "mmcv-full==1.7.2"),
        ("install.sh", "dependency", "mmcv>=2.0.0")}
    assert doc["coverage"]["ops"] == []
    assert cli("check").returncode == 1
    assert cli("apply").returncode == 1  # dry run: changes pending
    assert cli("apply", "--inplace").returncode == 0
    assert (tree / "requirements" / "runtime.txt").read_bytes() == b"torch\r\nmmcv==1.7.2  # ops\r\nmmcv-migrate\r\n"
    assert (tree / "install.sh").read_bytes() == b'mim install "mmcv-lite>=2.0.0" mmcv-migrate\n'
    second = cli("apply", "--inplace", "--format", "json")
    assert second.returncode == 0 and json.loads(second.stdout)["files_changed"] == []
    assert cli("check").returncode == 0
    # an ambiguous requirement is reported, never rewritten, and keeps the gate closed
    (tree / "requirements" / "runtime.txt").write_bytes(b"mmcv>=1.4\n")
    assert cli("apply", "--inplace").returncode == 1
    assert (tree / "requirements" / "runtime.txt").read_bytes() == b"mmcv>=1.4\n"
    check = cli("check")
    assert check.returncode == 1 and b"requirements/runtime.txt:1:1" in check.stdout
