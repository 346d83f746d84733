"""Before/after fixtures, one per usage form (fixtures/rewrites/NAME.py).

For each input ``NAME.py`` the expectations are ``NAME.expected.py`` (the file after ``apply``; absent
when the file must stay unchanged) and ``NAME.findings.txt`` (what ``scan`` reports). They run against
``tests/data/registry_some_ops.json``, a fixed registry in which the runtime provides nms,
roi_align, modulated_deform_conv and multi_scale_deform_attn, so the expectations do not move as
the real runtime grows. A first line ``# fixture-module: a.b.c`` gives the file's module name (for
relative imports and mmcv-tree detection).

After a deliberate behaviour change, regenerate with ``MMCV_MIGRATE_UPDATE_FIXTURES=1 pytest
tests/test_rewrite_fixtures.py`` and review the diff.
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import pytest

from mmcv_migrate.coverage import load_coverage
from mmcv_migrate.engine import analyze
from fixture_text import findings_text

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures" / "rewrites"
REGISTRY = ROOT / "tests" / "data" / "registry_some_ops.json"
UPDATE = os.environ.get("MMCV_MIGRATE_UPDATE_FIXTURES") == "1"
CASES = sorted(p for p in FIXTURES.glob("*.py") if not p.name.endswith(".expected.py"))


def _module(data: bytes):
    match = re.match(rb"# fixture-module: ([\w.]+)", data)
    return match.group(1).decode() if match else None


def _run(data: bytes):
    coverage = load_coverage(str(REGISTRY))
    return analyze(data, "fixture.py", fix=True, module=_module(data), coverage=coverage)


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.stem)
def test_fixture(case: Path) -> None:
    data = case.read_bytes()
    result = _run(data)
    assert result.error is None, result.error
    expected_path = case.with_name(case.stem + ".expected.py")
    findings_path = case.with_name(case.stem + ".findings.txt")
    findings = findings_text(result.findings)
    if UPDATE:
        findings_path.write_text(findings)
        if result.new_source is not None:
            expected_path.write_bytes(result.new_source)
        elif expected_path.exists():
            expected_path.unlink()
    assert findings == findings_path.read_text()
    if expected_path.exists():
        expected = expected_path.read_bytes()
        assert result.new_source == expected
        compile(expected, str(expected_path), "exec")
        # Idempotent: a second apply changes nothing.
        assert _run(expected).new_source is None
    else:
        assert result.new_source is None, "this fixture must stay unchanged"


def test_every_fixture_has_expectations() -> None:
    assert CASES, "no fixtures found"
    for case in CASES:
        assert case.with_name(case.stem + ".findings.txt").exists(), case.name


def _untouched_lines(data: bytes):
    """Lines no rule may touch: outside every import statement and holding no finding."""
    tree = ast.parse(data)
    in_import = {line for f in _run(data).findings for line in range(f.line, (f.end_line or f.line) + 1)}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            in_import.update(range(node.lineno, node.end_lineno + 1))
    lines = data.splitlines(keepends=True)
    return [line for number, line in enumerate(lines, 1) if number not in in_import]


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.stem)
def test_untouched_lines_are_byte_identical(case: Path) -> None:
    expected_path = case.with_name(case.stem + ".expected.py")
    if not expected_path.exists():
        return
    after = iter(expected_path.read_bytes().splitlines(keepends=True))
    for line in _untouched_lines(case.read_bytes()):
        # an ordered subsequence: each untouched line is found, byte for byte, after the previous one
        assert any(line == candidate for candidate in after), (case.name, line)
