"""Output formats of mmcv-migrate (mmcv_migrate.reports), from hand-built ScanReports."""

from __future__ import annotations

import io
import json
import re

import pytest

from mmcv_migrate import __version__
from mmcv_migrate.findings import CoverageRow, FileError, Finding, ScanReport
from mmcv_migrate.reports import (
    FORMATS,
    JSON_SCHEMA_VERSION,
    OpRow,
    render,
    render_ops,
    to_json,
)

ANSI = re.compile(r"\x1b\[")
WEIRD_PATH = "odd,dir/a:b.py"


def _findings():
    # Deliberately out of order: reports sort by (path, line, column, rule).
    return [
        Finding(
            path="pkg/models/head.py",
            line=12,
            column=5,
            rule="ops-import",
            kind="import",
            symbol="mmcv.ops.nms",
            status="converted",
            fixable=True,
            message="mmcv.ops.nms -> mmcv_runtime.ops.nms",
            end_line=12,
        ),
        Finding(
            path="pkg/models/head.py",
            line=3,
            column=1,
            rule="ops-import",
            kind="import",
            symbol="mmcv.ops.roi_align",
            status="partial",
            fixable=True,
            message="RoIAlign: forward only | backward pending",
        ),
        Finding(
            path="pkg/models/head.py",
            line=3,
            column=1,
            rule="config-type",
            kind="config",
            symbol="mmcv.ops.RoIAlign",
            status="converted",
            fixable=False,
            message="config type 'RoIAlign': import mmcv_runtime to register it",
            remaining=False,
        ),
        Finding(
            path="pkg/ext/wrapper.py",
            line=7,
            column=9,
            rule="ext-call",
            kind="ext_call",
            symbol="mmcv._ext.fancy_op_forward",
            status="unconverted",
            fixable=False,
            message="mmcv._ext.fancy_op_forward is not in the runtime\nsee `mmcv-migrate ops`",
        ),
        Finding(
            path="pkg/ext/wrapper.py",
            line=2,
            column=1,
            rule="ext-loader",
            kind="ext_loader",
            symbol="mmcv.utils.ext_loader",
            status="unconverted",
            fixable=False,
            message="ext_loader with 100% unknown ops",
            remaining=False,
            suppressed=True,
        ),
        Finding(
            path=WEIRD_PATH,
            line=1,
            column=1,
            rule="ops-import",
            kind="import",
            symbol="mmcv.ops.deform_conv2d",
            status="converted",
            fixable=True,
            message="deform_conv2d, DeformConv2d: rewrite to mmcv_runtime",
        ),
    ]


def _coverage():
    return [
        CoverageRow("mmcv.ops.roi_align", 1, "partial", "no", [], op="roi_align"),
        CoverageRow("mmcv.ops.nms", 1, "converted", "n/a", ["triton"], op="nms"),
        CoverageRow("mmcv._ext.fancy_op_forward", 1, "unconverted", "-", []),
        CoverageRow("mmcv.ops.deform_conv2d", 1, "converted", "yes", ["triton", "cuda"], op="deform_conv"),
    ]


def make_report(command="scan", **kw):
    data = dict(
        command=command,
        roots=["src", "other dir"],
        files_scanned=5,
        findings=_findings(),
        coverage=_coverage(),
        errors=[FileError(path="pkg/broken.py", message="syntax error: line 3, col 4")],
        files_changed=["pkg/models/head.py"] if command == "apply" else [],
    )
    data.update(kw)
    return ScanReport(**data)


def clean_report(command="check"):
    return ScanReport(
        command=command,
        roots=["src"],
        files_scanned=3,
        findings=[
            Finding(
                path="a.py",
                line=1,
                column=1,
                rule="ops-import",
                kind="import",
                symbol="mmcv.ops.nms",
                status="unconverted",
                fixable=False,
                message="kept on purpose",
                remaining=False,
                suppressed=True,
            )
        ],
        coverage=[],
        errors=[],
    )


def out(report, fmt, color=None):
    buf = io.StringIO()
    render(report, fmt, stream=buf, color=color)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------- json


def test_json_document():
    text = out(make_report(), "json")
    assert text.endswith("}\n")
    doc = json.loads(text)
    assert list(doc) == [
        "version",
        "tool",
        "command",
        "roots",
        "files_scanned",
        "summary",
        "findings",
        "coverage",
        "errors",
        "files_changed",
    ]
    assert doc["version"] == JSON_SCHEMA_VERSION == 1
    assert doc["tool"] == {"name": "mmcv-migrate", "version": __version__}
    assert doc["command"] == "scan"
    assert doc["roots"] == ["src", "other dir"]
    assert doc["files_scanned"] == 5
    assert doc["summary"] == {
        "findings": 6,
        "remaining": 4,
        "suppressed": 1,
        "fixable": 3,
        "by_status": {"converted": 3, "partial": 1, "unconverted": 2},
        "files_changed": 0,
    }
    keys = [(f["path"], f["line"], f["column"], f["rule"]) for f in doc["findings"]]
    assert keys == sorted(keys)
    assert keys == [
        (WEIRD_PATH, 1, 1, "ops-import"),
        ("pkg/ext/wrapper.py", 2, 1, "ext-loader"),
        ("pkg/ext/wrapper.py", 7, 9, "ext-call"),
        ("pkg/models/head.py", 3, 1, "config-type"),
        ("pkg/models/head.py", 3, 1, "ops-import"),
        ("pkg/models/head.py", 12, 5, "ops-import"),
    ]
    required = {"path", "line", "column", "rule", "kind", "symbol", "status", "fixable", "message",
                "remaining", "suppressed", "end_line"}
    for f in doc["findings"]:
        assert required <= set(f)
        assert Finding.from_dict(f) in _findings()
    for row in doc["coverage"]["ops"]:
        assert {"symbol", "uses", "status", "backward", "kernels"} <= set(row)
    assert [r["symbol"] for r in doc["coverage"]["ops"]] == sorted(r.symbol for r in _coverage())
    assert doc["errors"] == [{"path": "pkg/broken.py", "message": "syntax error: line 3, col 4"}]
    assert doc["files_changed"] == []
    assert doc == to_json(make_report())


def test_json_apply_files_changed_and_no_ansi_with_color():
    text = out(make_report("apply"), "json", color=True)
    assert not ANSI.search(text)
    doc = json.loads(text)
    assert doc["command"] == "apply"
    assert doc["files_changed"] == ["pkg/models/head.py"]
    assert doc["summary"]["files_changed"] == 1


def test_json_empty_report():
    doc = json.loads(out(ScanReport("scan", ["."], 0, [], [], []), "json"))
    assert doc["findings"] == [] and doc["errors"] == [] and doc["coverage"] == {"ops": []}
    assert doc["summary"]["by_status"] == {"converted": 0, "partial": 0, "unconverted": 0}


# ------------------------------------------------------------------------------------ no decoration


@pytest.mark.parametrize(
    "command,fmt",
    [("scan", "json"), ("scan", "sarif"), ("scan", "github"), ("scan", "markdown"),
     ("check", "json"), ("check", "github"), ("apply", "json")],
)
def test_machine_formats_never_coloured(command, fmt):
    assert not ANSI.search(out(make_report(command), fmt, color=True))


def test_unknown_format_rejected():
    with pytest.raises(ValueError):
        out(make_report("apply"), "sarif")
    with pytest.raises(ValueError):
        out(make_report(), "xml")
    with pytest.raises(ValueError):
        render_ops([], "sarif", stream=io.StringIO())
    assert FORMATS["scan"] == ("table", "json", "markdown", "sarif", "github")


# -------------------------------------------------------------------------------------------- sarif


def test_sarif_structure():
    log = json.loads(out(make_report(), "sarif"))
    assert log["$schema"] == "https://json.schemastore.org/sarif-2.1.0.json"
    assert log["version"] == "2.1.0"
    assert len(log["runs"]) == 1
    run = log["runs"][0]
    driver = run["tool"]["driver"]
    assert driver["name"] == "mmcv-migrate"
    assert driver["version"] == __version__
    assert driver["informationUri"].startswith("https://")
    rule_ids = [r["id"] for r in driver["rules"]]
    assert rule_ids == sorted({f.rule for f in _findings()})
    for r in driver["rules"]:
        assert r["shortDescription"]["text"]

    results = run["results"]
    assert len(results) == len(_findings())
    for res in results:
        assert {"ruleId", "level", "message", "locations"} <= set(res)
        assert res["ruleId"] in rule_ids
        assert rule_ids[res["ruleIndex"]] == res["ruleId"]
        assert res["level"] in ("error", "warning", "note")
        assert res["message"]["text"]
        loc = res["locations"][0]["physicalLocation"]
        assert loc["artifactLocation"]["uriBaseId"] == "%SRCROOT%"
        assert not loc["artifactLocation"]["uri"].startswith("/")
        assert loc["region"]["startLine"] >= 1 and loc["region"]["startColumn"] >= 1

    by_symbol = {r["properties"]["symbol"]: r for r in results}
    assert by_symbol["mmcv._ext.fancy_op_forward"]["level"] == "error"
    assert by_symbol["mmcv.ops.nms"]["level"] == "warning"
    assert by_symbol["mmcv.ops.RoIAlign"]["level"] == "note"
    suppressed = by_symbol["mmcv.utils.ext_loader"]
    assert suppressed["suppressions"] == [{"kind": "inSource"}]
    assert suppressed["level"] == "note"
    assert "suppressions" not in by_symbol["mmcv.ops.nms"]
    nms_region = by_symbol["mmcv.ops.nms"]["locations"][0]["physicalLocation"]["region"]
    assert nms_region == {"startLine": 12, "startColumn": 5, "endLine": 12}
    weird = by_symbol["mmcv.ops.deform_conv2d"]["locations"][0]["physicalLocation"]
    assert weird["artifactLocation"]["uri"] == "odd%2Cdir/a%3Ab.py"

    inv = run["invocations"][0]
    assert inv["executionSuccessful"] is False
    notes = inv["toolExecutionNotifications"]
    assert len(notes) == 1 and notes[0]["level"] == "error"
    assert notes[0]["message"]["text"] == "syntax error: line 3, col 4"
    assert notes[0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "pkg/broken.py"


def test_sarif_empty():
    log = json.loads(out(ScanReport("scan", ["."], 0, [], [], []), "sarif"))
    run = log["runs"][0]
    assert run["results"] == [] and run["tool"]["driver"]["rules"] == []
    assert run["invocations"][0]["executionSuccessful"] is True


# ------------------------------------------------------------------------------------------- github


def test_github_commands_and_escaping():
    lines = out(make_report(), "github").splitlines()
    assert all(line.startswith("::") for line in lines)
    # one per non-suppressed finding, plus one per error
    assert len(lines) == 5 + 1
    assert not any("ext_loader with" in line for line in lines)

    nms = next(line for line in lines if "mmcv.ops.nms" in line)
    assert nms == (
        "::error file=pkg/models/head.py,line=12,col=5,title=mmcv-migrate ops-import"
        "::mmcv.ops.nms -> mmcv_runtime.ops.nms"
    )
    weird = next(line for line in lines if "deform_conv2d" in line)
    assert weird.startswith("::error file=odd%2Cdir/a%3Ab.py,line=1,col=1,")
    # ':' and ',' are not escaped in the message
    assert weird.endswith("::deform_conv2d, DeformConv2d: rewrite to mmcv_runtime")
    multiline = next(line for line in lines if "fancy_op_forward" in line)
    assert "%0A" in multiline and "\n" not in multiline
    config = next(line for line in lines if "RoIAlign" in line and "config-type" in line)
    assert config.startswith("::notice file=pkg/models/head.py,line=3,col=1,")
    err = next(line for line in lines if "broken.py" in line)
    assert err.startswith("::error file=pkg/broken.py")
    assert err.endswith("::syntax error: line 3, col 4")


def test_github_percent_and_cr_escaping():
    f = Finding("p%1.py", 1, 1, "r", "import", "mmcv.ops.nms", "unconverted", False, "100%\r\ndone")
    text = out(ScanReport("scan", ["."], 1, [f], [], []), "github")
    assert text == "::error file=p%251.py,line=1,col=1,title=mmcv-migrate r::100%25%0D%0Adone\n"


def test_github_check_adds_fix_command_line():
    lines = out(make_report("check"), "github").splitlines()
    assert "mmcv-migrate apply --inplace src 'other dir'" in lines[-1]
    assert out(clean_report(), "github") == ""


# ----------------------------------------------------------------------------------------- markdown


def test_markdown():
    text = out(make_report(), "markdown")
    assert text.startswith("## ")
    assert "| Symbol | Uses | Status | Backward | Kernels |" in text
    assert "| File | Line | Symbol | Status | Fixable | Message |" in text
    assert "| `mmcv.ops.nms` | 1 | converted | n/a | triton |" in text
    assert "forward only \\| backward pending" in text
    assert "`pkg/models/head.py`" in text
    assert "### Errors" in text and "`pkg/broken.py`" in text
    assert "(suppressed)" in text
    # every table row has the right number of unescaped cell separators
    for line in text.splitlines():
        if line.startswith("| `pkg/models/head.py`") or line.startswith("| `odd"):
            assert len(re.findall(r"(?<!\\)\|", line)) == 7, line
    # no raw newline inside a cell
    row = next(line for line in text.splitlines() if "fancy_op_forward is not" in line)
    assert row.endswith("|")


def test_markdown_backtick_in_code_cell():
    f = Finding("we`ird.py", 1, 1, "r", "import", "mmcv.ops.nms", "converted", True, "m")
    text = out(ScanReport("scan", ["."], 1, [f], [], []), "markdown")
    assert "`` we`ird.py ``" in text


# ------------------------------------------------------------------------------------------- tables


def test_table_scan():
    text = out(make_report(), "table")
    assert not ANSI.search(text)
    for symbol in ("mmcv.ops.nms", "mmcv.ops.roi_align", "mmcv._ext.fancy_op_forward"):
        assert symbol in text
    assert "pkg/models/head.py:12:5" in text
    assert "[suppressed]" in text
    assert "pkg/broken.py" in text and "syntax error" in text
    assert "Scanned 5 files, 6 findings, 4 remaining, 3 fixable" in text
    # wide enough for logs: no finding line is wrapped
    assert f"{WEIRD_PATH}:1:1  ops-import  mmcv.ops.deform_conv2d" in text


def test_table_colour():
    coloured = out(make_report(), "table", color=True)
    assert ANSI.search(coloured)
    assert not ANSI.search(out(make_report(), "table", color=False))


def test_table_apply_shows_files_changed():
    text = out(make_report("apply"), "table")
    assert "1 file changed" in text


def test_table_check_remaining():
    text = out(make_report("check"), "table")
    assert not ANSI.search(text)
    assert "pkg/models/head.py:12:5: mmcv.ops.nms — mmcv.ops.nms -> mmcv_runtime.ops.nms" in text
    assert "pkg/ext/wrapper.py:7:9: mmcv._ext.fancy_op_forward" in text
    assert f"{WEIRD_PATH}:1:1:" in text
    # not remaining / suppressed ones are not listed
    assert "pkg/ext/wrapper.py:2:1" not in text
    assert "pkg/models/head.py:3:1: mmcv.ops.RoIAlign" not in text
    assert "mmcv-migrate apply --inplace src 'other dir'" in text
    assert "# mmcv-migrate: ignore" in text
    assert "4 remaining uses" in text
    # a multi-line message stays on its finding's line
    assert (
        "pkg/ext/wrapper.py:7:9: mmcv._ext.fancy_op_forward — mmcv._ext.fancy_op_forward is not "
        "in the runtime see `mmcv-migrate ops`\n" in text
    )


def test_table_check_clean():
    text = out(clean_report(), "table")
    assert "No remaining uses" in text
    assert "apply --inplace" not in text


def test_table_empty_scan():
    text = out(ScanReport("scan", ["."], 2, [], [], []), "table")
    assert "No uses of mmcv's compiled ops found." in text
    assert "Scanned 2 files, 0 findings" in text


# ---------------------------------------------------------------------------------------------- ops


def _ops():
    return [
        OpRow("roi_align", ["RoIAlign", "roi_align"], ["roi_align_forward", "roi_align_backward"],
              "converted", "yes", ["cpu", "cuda", "mps"], ["triton"], ["1.7", "2.x"]),
        OpRow("fancy_op", ["FancyOp"], ["fancy_op_forward"], "unconverted", "-", [], [], ["2.x"]),
        OpRow("nms", ["nms", "batched_nms", "soft_nms"], ["nms"], "partial", "n/a", ["cpu"], [], ["1.7", "2.x"]),
    ]


def test_ops_json():
    buf = io.StringIO()
    render_ops(_ops(), "json", stream=buf, color=True)
    assert not ANSI.search(buf.getvalue())
    doc = json.loads(buf.getvalue())
    assert list(doc) == ["version", "ops", "local_ops"] and doc["version"] == 1 and doc["local_ops"] == []
    assert [o["op"] for o in doc["ops"]] == ["fancy_op", "nms", "roi_align"]
    assert set(doc["ops"][0]) == {"op", "names", "ext_functions", "status", "backward", "devices",
                                  "kernels", "versions"}


def test_ops_table_and_markdown():
    buf = io.StringIO()
    render_ops(_ops(), "table", stream=buf)
    text = buf.getvalue()
    assert text.index("fancy_op") < text.index("nms") < text.index("roi_align")
    assert "cpu, cuda, mps" in text
    assert "3 ops: 1 converted, 1 partial, 1 unconverted" in text

    buf = io.StringIO()
    render_ops(_ops(), "markdown", stream=buf, color=True)
    md = buf.getvalue()
    assert not ANSI.search(md)
    assert "| `roi_align` | converted | yes | cpu, cuda, mps | triton | 2 | 2 | 1.7, 2.x |" in md


def test_ops_lists_the_project_local_ops():
    from mmcv_migrate.rewrites.local_ops import LOCAL_OPS

    buf = io.StringIO()
    render_ops(_ops(), "json", stream=buf, local_ops=LOCAL_OPS)
    doc = json.loads(buf.getvalue())
    assert doc["local_ops"] == [{
        "extension": "deformable_aggregation_ext",
        "functions": ["deformable_aggregation_forward", "deformable_aggregation_backward"],
        "runtime_extension": "mmcv_runtime.local_ext.deformable_aggregation_ext",
        "wrapper_names": ["deformable_aggregation_function", "DeformableAggregationFunction", "feature_maps_format"],
        "runtime_module": "mmcv_runtime.ops.deformable_aggregation",
    }]
    for fmt in ("table", "markdown"):
        buf = io.StringIO()
        render_ops(_ops(), fmt, stream=buf, local_ops=LOCAL_OPS)
        text = buf.getvalue()
        assert "deformable_aggregation_ext" in text and "mmcv_runtime.ops.deformable_aggregation" in text
