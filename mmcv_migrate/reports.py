"""Every output format of mmcv-migrate, rendered from a :class:`~mmcv_migrate.findings.ScanReport`.

Formats per command (the CLI offers exactly these, see :data:`FORMATS`):

- ``table``: for people, with rich (coverage table, findings per file, errors, a summary line);
  ``check`` prints the remaining uses as ``path:line:col: symbol — message`` and the fix command.
- ``json``: stable and versioned (:data:`JSON_SCHEMA_VERSION`), no decoration.
- ``markdown``: something to paste into a pull request.
- ``sarif``: SARIF 2.1.0, for code-scanning uploads.
- ``github``: GitHub Actions workflow commands (``::error file=...::...``), one per finding.

Machine formats (everything but ``table``) are written straight to the stream: rich never wraps or
colours them, whatever ``color`` says.
"""

from __future__ import annotations

import json
import re
import shlex
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, TextIO
from urllib.parse import quote

from mmcv_migrate import __version__
from mmcv_migrate.findings import (
    CONVERTED,
    PARTIAL,
    STATUSES,
    UNCONVERTED,
    FileError,
    Finding,
    ScanReport,
)

__all__ = [
    "JSON_SCHEMA_VERSION",
    "FORMATS",
    "OpRow",
    "render",
    "render_ops",
    "to_json",
    "to_sarif",
    "ops_to_json",
]

JSON_SCHEMA_VERSION = 1

FORMATS: Dict[str, tuple] = {
    "scan": ("table", "json", "markdown", "sarif", "github"),
    "check": ("table", "json", "github"),
    "apply": ("table", "json"),
    "ops": ("table", "json", "markdown"),
}

TOOL_NAME = "mmcv-migrate"
INFORMATION_URI = "https://pypi.org/project/mmcv-migrate/"
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
SARIF_VERSION = "2.1.0"
IGNORE_COMMENT = "# mmcv-migrate: ignore"

# Width used when the stream is not a terminal (logs, files, pipes): wide enough that paths
# do not wrap.
LOG_WIDTH = 200

STATUS_STYLES = {CONVERTED: "green", PARTIAL: "yellow", UNCONVERTED: "red"}

# What each kind of finding is, for SARIF rule descriptions.
KIND_DESCRIPTIONS = {
    "import": "import of an mmcv.ops symbol",
    "attribute": "attribute use of mmcv.ops",
    "dynamic": "dynamic lookup on mmcv.ops",
    "ext_loader": "use of mmcv's ext_loader / load_ext",
    "ext_module": "import of the compiled mmcv._ext module",
    "ext_call": "call into the compiled mmcv._ext module",
    "torch_ops": "use of torch.ops.mmcv",
    "config": "config type naming an mmcv op",
    "compiled_extension": "project-local compiled extension",
    "dependency": "requirement on an mmcv distribution with compiled ops",
}


@dataclass
class OpRow:
    """One ``mmcv.ops`` submodule ("op") of the catalogue joined with the runtime registry."""

    op: str
    names: List[str] = field(default_factory=list)
    ext_functions: List[str] = field(default_factory=list)
    status: str = UNCONVERTED  # converted | partial | unconverted
    backward: str = "-"
    devices: List[str] = field(default_factory=list)
    kernels: List[str] = field(default_factory=list)
    versions: List[str] = field(default_factory=list)  # mmcv versions having the op

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------------
# Entry points


def render(
    report: ScanReport, fmt: str, *, stream: TextIO, color: Optional[bool] = None
) -> None:
    """Write ``report`` to ``stream`` in format ``fmt`` (one of ``FORMATS[report.command]``)."""
    allowed = FORMATS.get(report.command, FORMATS["scan"])
    if fmt not in allowed:
        raise ValueError(
            f"unknown format {fmt!r} for {report.command!r}; choose from {', '.join(allowed)}"
        )
    if fmt == "json":
        _write_json(to_json(report), stream)
    elif fmt == "sarif":
        _write_json(to_sarif(report), stream)
    elif fmt == "github":
        stream.write("".join(line + "\n" for line in _github_lines(report)))
    elif fmt == "markdown":
        stream.write(_markdown(report))
    elif report.command == "check":
        _table_check(report, _console(stream, color))
    else:
        _table(report, _console(stream, color))


def render_ops(
    rows: Sequence[OpRow], fmt: str, *, stream: TextIO, color: Optional[bool] = None,
    local_ops: Sequence[Any] = (),
) -> None:
    """Write the op catalogue (``mmcv-migrate ops``) to ``stream``; ``local_ops`` are the project-local
    compiled ops the runtime also replaces (:data:`mmcv_migrate.rewrites.local_ops.LOCAL_OPS`)."""
    if fmt not in FORMATS["ops"]:
        raise ValueError(f"unknown format {fmt!r} for 'ops'; choose from {', '.join(FORMATS['ops'])}")
    rows = sorted(rows, key=lambda r: r.op)
    if fmt == "json":
        _write_json(ops_to_json(rows, local_ops), stream)
    elif fmt == "markdown":
        stream.write(_ops_markdown(rows) + _local_ops_markdown(local_ops))
    else:
        console = _console(stream, color)
        _ops_table(rows, console)
        _local_ops_table(local_ops, console)


# --------------------------------------------------------------------------------------------
# Shared helpers


def _sorted_findings(findings: Iterable[Finding]) -> List[Finding]:
    return sorted(findings, key=lambda f: (f.path, f.line, f.column, f.rule))


def _write_json(doc: Dict[str, Any], stream: TextIO) -> None:
    stream.write(json.dumps(doc, indent=2, sort_keys=False, ensure_ascii=False) + "\n")


def _summary(report: ScanReport) -> Dict[str, Any]:
    findings = report.findings
    by_status = Counter(f.status for f in findings)
    return {
        "findings": len(findings),
        "remaining": len(report.remaining),
        "suppressed": sum(1 for f in findings if f.suppressed),
        "fixable": sum(1 for f in findings if f.fixable and not f.suppressed),
        "by_status": {s: by_status.get(s, 0) for s in STATUSES},
        "files_changed": len(report.files_changed),
    }


def _plural(n: int, word: str, plural: Optional[str] = None) -> str:
    return f"{n} {word if n == 1 else (plural or word + 's')}"


def _fix_command(report: ScanReport) -> str:
    roots = report.roots or ["."]
    return "mmcv-migrate apply --inplace " + " ".join(shlex.quote(r) for r in roots)


def _one_line(text: str) -> str:
    """``text`` with its line breaks folded into spaces, for line-oriented output."""
    return _LINE_BREAKS.sub(" ", text)


_LINE_BREAKS = re.compile(r"\s*[\r\n]\s*")


def _is_remaining(f: Finding) -> bool:
    return f.remaining and not f.suppressed


# --------------------------------------------------------------------------------------------
# JSON


def to_json(report: ScanReport) -> Dict[str, Any]:
    """The versioned JSON document of ``report`` (``--format json``)."""
    return {
        "version": JSON_SCHEMA_VERSION,
        "tool": {"name": TOOL_NAME, "version": __version__},
        "command": report.command,
        "roots": list(report.roots),
        "files_scanned": report.files_scanned,
        "summary": _summary(report),
        "findings": [f.to_dict() for f in _sorted_findings(report.findings)],
        "coverage": {"ops": [row.to_dict() for row in sorted(report.coverage, key=lambda r: r.symbol)]},
        "errors": [e.to_dict() for e in sorted(report.errors, key=lambda e: e.path)],
        "files_changed": sorted(report.files_changed),
    }


def ops_to_json(rows: Sequence[OpRow], local_ops: Sequence[Any] = ()) -> Dict[str, Any]:
    """The versioned JSON document of ``mmcv-migrate ops --format json``."""
    return {
        "version": JSON_SCHEMA_VERSION,
        "ops": [r.to_dict() for r in sorted(rows, key=lambda r: r.op)],
        "local_ops": [_local_op_dict(op) for op in local_ops],
    }


def _local_op_dict(op: Any) -> Dict[str, Any]:
    return {"extension": op.extension, "functions": list(op.functions), "runtime_extension": op.runtime_extension,
            "wrapper_names": list(op.wrapper_names), "runtime_module": op.runtime_module}


# --------------------------------------------------------------------------------------------
# SARIF 2.1.0


def _sarif_uri(path: str) -> str:
    return quote(path.replace("\\", "/"), safe="/")


def _sarif_level(f: Finding) -> str:
    if f.status == UNCONVERTED and _is_remaining(f):
        return "error"
    if f.fixable:
        return "warning"
    return "note"


def to_sarif(report: ScanReport) -> Dict[str, Any]:
    """The SARIF 2.1.0 log of ``report`` (``--format sarif``)."""
    findings = _sorted_findings(report.findings)
    rule_kinds: Dict[str, str] = {}
    for f in findings:
        rule_kinds.setdefault(f.rule, f.kind)
    rule_ids = sorted(rule_kinds)
    rule_index = {rule: i for i, rule in enumerate(rule_ids)}
    rules = []
    for rule in rule_ids:
        what = KIND_DESCRIPTIONS.get(rule_kinds[rule], "use of mmcv's compiled ops")
        rules.append(
            {
                "id": rule,
                "name": rule,
                "shortDescription": {"text": f"{rule}: {what}"},
                "fullDescription": {
                    "text": f"{what[0].upper()}{what[1:]}: the code depends on mmcv's compiled "
                    "extension; `mmcv-migrate apply` rewrites it to mmcv_runtime where the runtime "
                    "provides the op."
                },
                "helpUri": INFORMATION_URI,
                "properties": {"kind": rule_kinds[rule]},
            }
        )

    results = []
    for f in findings:
        region: Dict[str, Any] = {"startLine": f.line, "startColumn": f.column}
        if f.end_line is not None and f.end_line >= f.line:
            region["endLine"] = f.end_line
        result: Dict[str, Any] = {
            "ruleId": f.rule,
            "ruleIndex": rule_index[f.rule],
            "level": _sarif_level(f),
            "message": {"text": f.message},
            "locations": [
                {
                    "physicalLocation": {
                        "artifactLocation": {"uri": _sarif_uri(f.path), "uriBaseId": "%SRCROOT%"},
                        "region": region,
                    }
                }
            ],
            "properties": {
                "symbol": f.symbol,
                "kind": f.kind,
                "status": f.status,
                "fixable": f.fixable,
                "remaining": _is_remaining(f),
            },
        }
        if f.suppressed:
            result["suppressions"] = [{"kind": "inSource"}]
        results.append(result)

    notifications = [
        {
            "level": "error",
            "message": {"text": e.message},
            "locations": [
                {
                    "physicalLocation": {
                        "artifactLocation": {"uri": _sarif_uri(e.path), "uriBaseId": "%SRCROOT%"}
                    }
                }
            ],
        }
        for e in sorted(report.errors, key=lambda e: e.path)
    ]

    return {
        "$schema": SARIF_SCHEMA,
        "version": SARIF_VERSION,
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": TOOL_NAME,
                        "version": __version__,
                        "semanticVersion": __version__,
                        "informationUri": INFORMATION_URI,
                        "rules": rules,
                    }
                },
                "invocations": [
                    {
                        "executionSuccessful": not report.errors,
                        "toolExecutionNotifications": notifications,
                    }
                ],
                "columnKind": "unicodeCodePoints",
                "results": results,
            }
        ],
    }


# --------------------------------------------------------------------------------------------
# GitHub Actions workflow commands


def _gh_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _gh_prop(text: str) -> str:
    return _gh_data(text).replace(":", "%3A").replace(",", "%2C")


def _gh_command(command: str, props: Dict[str, Any], message: str) -> str:
    rendered = ",".join(f"{k}={_gh_prop(str(v))}" for k, v in props.items())
    return f"::{command}{' ' + rendered if rendered else ''}::{_gh_data(message)}"


def _github_lines(report: ScanReport) -> List[str]:
    lines = []
    for f in _sorted_findings(report.findings):
        if f.suppressed:
            continue
        props: Dict[str, Any] = {"file": f.path, "line": f.line, "col": f.column}
        if f.end_line is not None and f.end_line > f.line:
            props["endLine"] = f.end_line
        props["title"] = f"{TOOL_NAME} {f.rule}"
        lines.append(_gh_command("error" if _is_remaining(f) else "notice", props, f.message))
    for e in sorted(report.errors, key=lambda e: e.path):
        lines.append(_gh_command("error", {"file": e.path, "title": f"{TOOL_NAME} error"}, e.message))
    if report.command == "check":
        remaining = report.remaining
        if remaining:
            lines.append(
                _gh_command(
                    "error",
                    {"title": f"{TOOL_NAME} check"},
                    f"{_plural(len(remaining), 'remaining use')} of mmcv's compiled ops; "
                    f"fix with: {_fix_command(report)}",
                )
            )
    return lines


# --------------------------------------------------------------------------------------------
# Markdown


def _md_cell(text: Any) -> str:
    s = _one_line(str(text))
    return s.replace("|", "\\|").replace("<", "&lt;")


def _md_code(text: str) -> str:
    s = _one_line(str(text)).replace("|", "\\|")
    if "`" not in s:
        return f"`{s}`"
    # Fence with one backtick more than the longest run inside.
    longest = 0
    run = 0
    for ch in s:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    fence = "`" * (longest + 1)
    return f"{fence} {s} {fence}"


def _md_list(items: Sequence[str]) -> str:
    return ", ".join(_md_cell(i) for i in items) if items else "-"


def _summary_parts(report: ScanReport, s: dict, scanned: str) -> List[str]:
    """The one-line summary's parts, shared by the table and Markdown outputs."""
    parts = [scanned, _plural(s["findings"], "finding"), f"{s['remaining']} remaining", f"{s['fixable']} fixable"]
    if s["suppressed"]:
        parts.append(f"{s['suppressed']} suppressed")
    if report.command == "apply":
        parts.append(f"{_plural(s['files_changed'], 'file')} changed")
    if report.errors:
        parts.append(_plural(len(report.errors), "error"))
    return parts


def _markdown(report: ScanReport) -> str:
    s = _summary(report)
    out = [f"## {TOOL_NAME} {report.command} report", ""]
    parts = _summary_parts(report, s, f"**{_plural(report.files_scanned, 'file')} scanned**")
    out += [" · ".join(parts), ""]
    if report.roots:
        out += ["Scanned: " + ", ".join(_md_code(r) for r in report.roots), ""]

    if report.coverage:
        out += ["### Coverage", "", "| Symbol | Uses | Status | Backward | Kernels |", "|---|---:|---|---|---|"]
        for row in sorted(report.coverage, key=lambda r: r.symbol):
            out.append(
                f"| {_md_code(row.symbol)} | {row.uses} | {_md_cell(row.status)} | "
                f"{_md_cell(row.backward)} | {_md_list(row.kernels)} |"
            )
        out.append("")

    if report.findings:
        out += [
            "### Findings",
            "",
            "| File | Line | Symbol | Status | Fixable | Message |",
            "|---|---:|---|---|---|---|",
        ]
        for f in _sorted_findings(report.findings):
            status = f.status + (" (suppressed)" if f.suppressed else "")
            out.append(
                f"| {_md_code(f.path)} | {f.line} | {_md_code(f.symbol)} | {_md_cell(status)} | "
                f"{'yes' if f.fixable else 'no'} | {_md_cell(f.message)} |"
            )
        out.append("")
    else:
        out += ["No uses of mmcv's compiled ops found.", ""]

    if report.errors:
        out += ["### Errors", "", "| File | Message |", "|---|---|"]
        for e in sorted(report.errors, key=lambda e: e.path):
            out.append(f"| {_md_code(e.path)} | {_md_cell(e.message)} |")
        out.append("")

    if s["remaining"]:
        out += [f"Fix with `{_fix_command(report)}`.", ""]
    return "\n".join(out)


def _ops_markdown(rows: Sequence[OpRow]) -> str:
    counts = Counter(r.status for r in rows)
    out = [
        f"## {TOOL_NAME} ops",
        "",
        f"{_plural(len(rows), 'op')}: "
        + ", ".join(f"{counts.get(s, 0)} {s}" for s in STATUSES),
        "",
        "| Op | Status | Backward | Devices | Kernels | Names | _ext functions | mmcv versions |",
        "|---|---|---|---|---|---:|---:|---|",
    ]
    for r in rows:
        out.append(
            f"| {_md_code(r.op)} | {_md_cell(r.status)} | {_md_cell(r.backward)} | "
            f"{_md_list(r.devices)} | {_md_list(r.kernels)} | {len(r.names)} | "
            f"{len(r.ext_functions)} | {_md_list(r.versions)} |"
        )
    out.append("")
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# Tables for people (rich)


def _console(stream: TextIO, color: Optional[bool]):
    from rich.console import Console

    try:
        is_tty = bool(stream.isatty())
    except Exception:  # closed or exotic streams
        is_tty = False
    return Console(
        file=stream,
        force_terminal=color,
        # None (not False) lets rich honour NO_COLOR when the caller did not ask for colour.
        no_color=True if color is False else None,
        width=None if is_tty else LOG_WIDTH,
        highlight=False,
        markup=False,
        emoji=False,
        soft_wrap=False,
    )


def _dash(console) -> str:
    """An em dash, or a hyphen where the stream cannot encode one."""
    return "—" if _can_encode(console, "—") else "-"


def _can_encode(console, text: str) -> bool:
    encoding = getattr(console.file, "encoding", None) or "utf-8"
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def _status_text(status: str):
    from rich.text import Text

    return Text(status, style=STATUS_STYLES.get(status, ""))


def _print_line(console, text) -> None:
    console.print(text, soft_wrap=True)


def _coverage_table(report: ScanReport):
    from rich.table import Table

    table = Table(title="mmcv ops used", title_justify="left")
    table.add_column("Symbol", overflow="fold")
    table.add_column("Uses", justify="right")
    table.add_column("Status")
    table.add_column("Backward")
    table.add_column("Kernels", overflow="fold")
    for row in sorted(report.coverage, key=lambda r: r.symbol):
        table.add_row(
            row.symbol,
            str(row.uses),
            _status_text(row.status),
            row.backward,
            ", ".join(row.kernels) or "-",
        )
    return table


def _print_errors(console, errors: Sequence[FileError], *, blank_before: bool = True) -> None:
    from rich.text import Text

    if not errors:
        return
    if blank_before:
        console.print()
    _print_line(console, Text(f"Could not process {_plural(len(errors), 'file')}:", style="bold red"))
    for e in sorted(errors, key=lambda e: e.path):
        line = Text("  ")
        line.append(e.path, style="bold")
        line.append(": ")
        line.append(_one_line(e.message), style="red")
        _print_line(console, line)


def _table(report: ScanReport, console) -> None:
    from rich.text import Text

    s = _summary(report)
    if report.coverage:
        console.print(_coverage_table(report))

    findings = _sorted_findings(report.findings)
    if findings:
        by_file: Dict[str, List[Finding]] = {}
        for f in findings:
            by_file.setdefault(f.path, []).append(f)
        for path, file_findings in by_file.items():
            console.print()
            _print_line(console, Text(path, style="bold underline"))
            for f in file_findings:
                line = Text("  ")
                line.append(f"{f.path}:{f.line}:{f.column}", style="bold")
                line.append("  ")
                line.append(f.rule, style="cyan")
                line.append("  ")
                line.append(f.symbol)
                line.append("  ")
                line.append_text(_status_text(f.status))
                line.append("  ")
                line.append(_one_line(f.message))
                if f.fixable and not f.suppressed:
                    line.append("  [fixable]", style="green")
                if f.suppressed:
                    line.append("  [suppressed]")
                    line.stylize("dim")
                _print_line(console, line)
    elif not report.errors:
        _print_line(console, Text("No uses of mmcv's compiled ops found.", style="green"))

    _print_errors(console, report.errors)

    console.print()
    parts = _summary_parts(report, s, f"Scanned {_plural(report.files_scanned, 'file')}")
    style = "bold red" if s["remaining"] or report.errors else "bold green"
    _print_line(console, Text(", ".join(parts), style=style))


def _table_check(report: ScanReport, console) -> None:
    from rich.text import Text

    dash = _dash(console)
    remaining = _sorted_findings(report.remaining)
    for f in remaining:
        line = Text()
        line.append(f"{f.path}:{f.line}:{f.column}:", style="bold")
        line.append(" ")
        line.append(f.symbol, style=STATUS_STYLES.get(f.status, ""))
        line.append(f" {dash} ")
        line.append(_one_line(f.message))
        _print_line(console, line)

    _print_errors(console, report.errors, blank_before=bool(remaining))

    suppressed = sum(1 for f in report.findings if f.suppressed)
    if remaining:
        files = len({f.path for f in remaining})
        console.print()
        _print_line(
            console,
            Text(
                f"{_plural(len(remaining), 'remaining use')} of mmcv's compiled ops "
                f"in {_plural(files, 'file')} ({_plural(report.files_scanned, 'file')} scanned).",
                style="bold red",
            ),
        )
        fixable = [f for f in remaining if f.fixable]
        _print_line(console, Text("Fix with:"))
        _print_line(console, Text("  " + _fix_command(report), style="bold"))
        unfixable = len(remaining) - len(fixable)
        if unfixable:
            _print_line(
                console,
                Text(
                    f"{_plural(unfixable, 'use')} cannot be rewritten automatically: the runtime "
                    "must implement the op (see `mmcv-migrate ops`) or the code needs manual work. "
                    f"To accept a use, mark its line with `{IGNORE_COMMENT}`."
                ),
            )
    else:
        if report.errors:
            console.print()
        mark = "✓ " if _can_encode(console, "✓") else ""
        msg = (
            f"{mark}No remaining uses of mmcv's compiled ops "
            f"({_plural(report.files_scanned, 'file')} scanned"
        )
        if suppressed:
            msg += f", {suppressed} suppressed"
        msg += ")."
        if report.errors:
            msg += f" {_plural(len(report.errors), 'file')} could not be processed."
            _print_line(console, Text(msg, style="bold yellow"))
        else:
            _print_line(console, Text(msg, style="bold green"))


def _local_ops_markdown(local_ops: Sequence[Any]) -> str:
    if not local_ops:
        return ""
    out = ["### Project-local compiled ops", "", "| Extension | Replaced by | Wrapper names |", "|---|---|---|"]
    for op in local_ops:
        out.append(f"| {_md_code(op.extension)} | {_md_code(op.runtime_extension)}, {_md_code(op.runtime_module)} | "
                   f"{_md_list(op.wrapper_names)} |")
    out.append("")
    return "\n".join(out)


def _local_ops_table(local_ops: Sequence[Any], console) -> None:
    if not local_ops:
        return
    from rich.table import Table

    table = Table(title="project-local compiled ops in mmcv_runtime", title_justify="left")
    table.add_column("Extension", overflow="fold")
    table.add_column("Replaced by", overflow="fold")
    table.add_column("Wrapper names", overflow="fold")
    for op in local_ops:
        table.add_row(op.extension, f"{op.runtime_extension}\n{op.runtime_module}", ", ".join(op.wrapper_names))
    console.print()
    console.print(table)


def _ops_table(rows: Sequence[OpRow], console) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table(title="mmcv ops in mmcv_runtime", title_justify="left")
    table.add_column("Op", overflow="fold")
    table.add_column("Status")
    table.add_column("Backward")
    table.add_column("Devices")
    table.add_column("Kernels", overflow="fold")
    table.add_column("Names", justify="right")
    table.add_column("_ext functions", justify="right")
    for r in rows:
        table.add_row(
            r.op,
            _status_text(r.status),
            r.backward,
            ", ".join(r.devices) or "-",
            ", ".join(r.kernels) or "-",
            str(len(r.names)),
            str(len(r.ext_functions)),
        )
    console.print(table)
    counts = Counter(r.status for r in rows)
    _print_line(
        console,
        Text(
            f"{_plural(len(rows), 'op')}: "
            + ", ".join(f"{counts.get(s, 0)} {s}" for s in STATUSES),
            style="bold",
        ),
    )
