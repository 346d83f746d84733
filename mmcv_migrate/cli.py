"""``mmcv-migrate``: scan, apply, check, ops (contract: ../shared/ARCHITECTURE.md, "The CLI contract").

Exit codes: 0 success; 1 "something remains" (scan --fail-on-remaining, check, apply dry run with
pending changes, apply --inplace leaving unconverted uses); 2 usage errors and files that could not
be processed (reported, left untouched, the run goes on).
"""

from __future__ import annotations

import difflib
import sys
from typing import List, Optional, Sequence, TextIO

import click

from mmcv_migrate import __version__
from mmcv_migrate.findings import ScanReport

EXIT_OK, EXIT_REMAINING, EXIT_ERROR = 0, 1, 2
# Show a progress bar when this many files need parsing (and stderr is a terminal).
PROGRESS_THRESHOLD = 200


def _formats(command: str) -> List[str]:
    from mmcv_migrate.reports import FORMATS

    return list(FORMATS[command])


_paths = click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, file_okay=True))
_exclude = click.option("--exclude", "excludes", multiple=True, metavar="GLOB",
                        help="Skip files and directories matching GLOB (repeatable).")
_jobs = click.option("--jobs", "-j", type=click.IntRange(min=1), default=None,
                     help="Worker processes for large trees (default: CPU count).")
_no_cache = click.option("--no-cache", is_flag=True, help="Ignore and do not update the per-file cache.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mmcv-migrate")
def main() -> None:
    """Find and rewrite uses of mmcv's compiled ops (mmcv.ops, mmcv._ext) to mmcv_runtime."""


def _run(paths: Sequence[str], *, fix: bool, excludes, jobs, no_cache: bool, show_progress: bool):
    from mmcv_migrate.discovery import DiscoveryError
    from mmcv_migrate.engine import run

    progress = _progress_bar() if show_progress else None
    try:
        return run(paths, fix=fix, excludes=excludes, jobs=jobs, use_cache=not no_cache,
                   progress=progress.update if progress else None)
    except DiscoveryError as error:
        raise click.UsageError(str(error)) from error
    finally:
        if progress is not None:
            progress.close()


class _progress_bar:
    """A rich progress bar on stderr, started only once enough files need parsing."""

    def __init__(self) -> None:
        self._progress = None
        self._task = None

    def update(self, done: int, total: int) -> None:
        if self._progress is None:
            if total < PROGRESS_THRESHOLD or not sys.stderr.isatty():
                return
            from rich.console import Console
            from rich.progress import Progress

            self._progress = Progress(console=Console(file=sys.stderr), transient=True)
            self._progress.start()
            self._task = self._progress.add_task("parsing", total=total)
        self._progress.update(self._task, completed=done)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()


def _report(command: str, paths, outcome, findings, files_changed=()) -> ScanReport:
    from mmcv_migrate.coverage import load_coverage

    return ScanReport(
        command=command,
        roots=list(paths),
        files_scanned=len(outcome.files),
        findings=findings,
        coverage=load_coverage().rows(findings),
        errors=outcome.errors,
        files_changed=list(files_changed),
    )


def _emit(report: ScanReport, fmt: str, output: Optional[str], stream: Optional[TextIO] = None) -> None:
    from mmcv_migrate.reports import render

    if output:
        with open(output, "w", encoding="utf-8", newline="\n") as handle:
            render(report, fmt, stream=handle, color=False)
    else:
        render(report, fmt, stream=stream or sys.stdout)


def _show_progress(fmt: str) -> bool:
    return fmt == "table"


@main.command()
@_paths
@click.option("--format", "fmt", type=click.Choice(_formats("scan")), default="table", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), help="Write the report to FILE.")
@_exclude
@_jobs
@click.option("--fail-on-remaining", is_flag=True, help="Exit 1 when any use of compiled mmcv remains.")
@_no_cache
def scan(paths, fmt, output, excludes, jobs, fail_on_remaining, no_cache) -> None:
    """Report every use of mmcv.ops / mmcv._ext / ext_loader under PATHS; change nothing."""
    outcome = _run(paths, fix=False, excludes=excludes, jobs=jobs, no_cache=no_cache,
                   show_progress=_show_progress(fmt))
    findings = [f for _, result in outcome.results for f in result.findings]
    report = _report("scan", paths, outcome, findings)
    _emit(report, fmt, output)
    if outcome.errors:
        sys.exit(EXIT_ERROR)
    sys.exit(EXIT_REMAINING if fail_on_remaining and report.remaining else EXIT_OK)


@main.command()
@_paths
@click.option("--inplace", is_flag=True, help="Write the rewrites (atomically) instead of a dry run.")
@click.option("--diff", "show_diff", is_flag=True, help="Print the unified diff (the default without --inplace).")
@click.option("--format", "fmt", type=click.Choice(_formats("apply")), default="table", show_default=True)
@_exclude
@_jobs
@_no_cache
def apply(paths, inplace, show_diff, fmt, excludes, jobs, no_cache) -> None:
    """Rewrite uses of compiled mmcv under PATHS to mmcv_runtime (dry run unless --inplace)."""
    from mmcv_migrate.engine import analyze
    from mmcv_migrate.findings import FileError
    from mmcv_migrate.writer import UnsafeWriteError, write_atomic

    outcome = _run(paths, fix=True, excludes=excludes, jobs=jobs, no_cache=no_cache,
                   show_progress=_show_progress(fmt))
    changed = [(file, result) for file, result in outcome.results if result.changed]
    diff_stream = sys.stdout if fmt == "table" else sys.stderr
    if show_diff or not inplace:
        for file, result in changed:
            diff_stream.write(_unified_diff(result.path, file.path.read_bytes(), result.new_source))
    findings = []
    written = []
    for file, result in outcome.results:
        if not (inplace and result.changed):
            findings.extend(result.findings)
            continue
        try:
            write_atomic(file.path, result.new_source, root=file.root)
        except (UnsafeWriteError, OSError) as error:
            outcome.errors.append(FileError(result.path, f"not written: {error}"))
            findings.extend(result.findings)
            continue
        written.append(result.path)
        # Report the file as it is now, so "remaining" means what is left after the rewrite.
        after = analyze(result.new_source, result.path, fix=False, module=_module(file),
                        is_package=file.path.name == "__init__.py")
        findings.extend(after.findings)
    report = _report("apply", paths, outcome, findings,
                     files_changed=written if inplace else [r.path for _, r in changed])
    _emit(report, fmt, None, stream=sys.stdout if inplace or fmt == "json" else sys.stderr)
    if outcome.errors:
        sys.exit(EXIT_ERROR)
    if not inplace:
        sys.exit(EXIT_REMAINING if changed else EXIT_OK)
    sys.exit(EXIT_REMAINING if report.remaining else EXIT_OK)


def _module(file):
    from mmcv_migrate.discovery import module_name

    return module_name(file)


def _unified_diff(path: str, before: bytes, after: bytes) -> str:
    def lines(data: bytes) -> List[str]:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = data.decode("latin-1")
        # Old-Mac CR-only endings would glue the whole diff onto one line: diff lines end in LF
        # (CRLF lines keep their CR, which patch and git apply expect).
        return [line[:-1] + "\n" if line.endswith("\r") else line for line in text.splitlines(keepends=True)]

    diff = difflib.unified_diff(lines(before), lines(after), f"a/{path}", f"b/{path}")
    out = []
    for line in diff:
        out.append(line if line.endswith(("\n", "\r")) else line + "\n\\ No newline at end of file\n")
    return "".join(out)


@main.command()
@_paths
@click.option("--format", "fmt", type=click.Choice(_formats("check")), default="table", show_default=True)
@_exclude
@_jobs
@_no_cache
def check(paths, fmt, excludes, jobs, no_cache) -> None:
    """CI gate: exit 1 while any use of compiled mmcv remains under PATHS."""
    outcome = _run(paths, fix=False, excludes=excludes, jobs=jobs, no_cache=no_cache, show_progress=False)
    findings = [f for _, result in outcome.results for f in result.findings]
    report = _report("check", paths, outcome, findings)
    _emit(report, fmt, None)
    if outcome.errors:
        sys.exit(EXIT_ERROR)
    sys.exit(EXIT_REMAINING if report.remaining else EXIT_OK)


@main.command()
@click.option("--format", "fmt", type=click.Choice(_formats("ops")), default="table", show_default=True)
def ops(fmt) -> None:
    """List every mmcv.ops op and what mmcv_runtime implements of it (and the project-local ops it replaces)."""
    from mmcv_migrate.coverage import load_coverage
    from mmcv_migrate.reports import render_ops
    from mmcv_migrate.rewrites.local_ops import LOCAL_OPS

    render_ops(load_coverage().op_rows(), fmt, stream=sys.stdout, local_ops=LOCAL_OPS)


from mmcv_migrate.shim import shim as _shim  # noqa: E402  (zero-touch mode: shim install|uninstall|status)

main.add_command(_shim)


if __name__ == "__main__":  # pragma: no cover
    main()
