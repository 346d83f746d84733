"""The engine: bytes -> prefilter -> libcst parse -> one collecting pass -> rules -> findings/edits.

:func:`analyze` handles one file and never raises for bad input: a file that cannot be decoded or
parsed comes back as a :class:`FileError` and is left untouched. :func:`run` drives it over
discovered files, through the per-file cache and, for larger sets, a process pool.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Callable, Iterable, List, Optional, Sequence, Tuple

from mmcv_migrate import cache as result_cache
from mmcv_migrate.coverage import Coverage, load_coverage
from mmcv_migrate.discovery import SourceFile, discover, module_name
from mmcv_migrate.findings import FileError, FileResult
from mmcv_migrate.rewrites import dependency_files, local_ops

# Byte tokens that any use the rules act on must contain (config types are checked separately).
# "MMCV" catches setup.py requirements spelled like "MMCV-Full".
_TOKENS = (b"mmcv", b"MMCV", b"ext_loader", b"load_ext", b"Extension", b"cpp_extension") + local_ops.PREFILTER_TOKENS
_CONFIG_TYPE = re.compile(rb"""type['"]?\s*[=:]\s*['"]([A-Za-z_][A-Za-z0-9_]*)['"]""")

# Below this many candidate files, a process pool costs more than it saves.
POOL_THRESHOLD = 24


def is_candidate(data: bytes, config_types: Iterable[str]) -> bool:
    """Cheap test on raw bytes: could this file hold anything the rules report?"""
    if any(token in data for token in _TOKENS):
        return True
    if b"type" not in data:
        return False
    names = config_types if isinstance(config_types, (set, frozenset, dict)) else set(config_types)
    return any(match.decode("ascii") in names for match in _CONFIG_TYPE.findall(data))


def analyze(
    data: bytes,
    path: str,
    *,
    fix: bool,
    module: Optional[str] = None,
    is_package: bool = False,
    coverage: Optional[Coverage] = None,
) -> FileResult:
    """Findings for one file's bytes and, with ``fix``, its rewritten bytes (None if unchanged).

    Dependency files (requirements*.txt, setup.cfg, pyproject.toml, shell scripts; told apart by the
    name in ``path``) go to the text-based rewriter; everything else is parsed as Python.
    """
    fmt = dependency_files.file_format(path)
    if fmt is not None:
        return dependency_files.analyze(data, path, fmt, fix=fix)
    import libcst as cst
    from libcst.metadata import MetadataWrapper, PositionProvider

    from mmcv_migrate.rewrites.collect import Collector
    from mmcv_migrate.rewrites.context import FileContext
    from mmcv_migrate.rewrites.rules import RULES

    coverage = coverage or load_coverage()
    # libcst keeps LF, CRLF and mixed endings byte for byte, but not old-Mac CR-only files:
    # for those, parse with LF and map back (every CR in such a file is a line break).
    cr_only = b"\r" in data and b"\n" not in data
    source = data.replace(b"\r", b"\n") if cr_only else data
    try:
        tree = cst.parse_module(source)
    except (cst.ParserSyntaxError, SyntaxError, UnicodeDecodeError, LookupError, ValueError) as error:
        return FileResult(path, error=FileError(path, _describe_error(error)))
    wrapper = MetadataWrapper(tree, unsafe_skip_copy=True)
    positions = wrapper.resolve(PositionProvider)
    ctx = FileContext(path=path, module=tree, positions=positions, catalogue=coverage.catalogue,
                      coverage=coverage, module_name=module, is_package=is_package)
    tree.visit(Collector(ctx))
    for rule in RULES:
        rule(ctx)
    ctx.findings.sort(key=lambda f: (f.line, f.column, f.rule))
    result = FileResult(path, findings=ctx.findings)
    if fix and ctx.plan:
        new = ctx.apply().bytes
        if cr_only:
            new = new.replace(b"\n", b"\r")
        if new != data:
            result.new_source = new
    return result


def _describe_error(error: Exception) -> str:
    if isinstance(error, UnicodeDecodeError):
        return f"cannot decode the file ({error.encoding}: {error.reason} at byte {error.start}); left untouched"
    text = str(error).strip().splitlines()
    first = text[0] if text else type(error).__name__
    if "encoding" in first.lower():
        return f"cannot decode the file ({first}); left untouched"
    return f"cannot parse the file as Python 3 ({first}); left untouched"


# --- running over a tree --------------------------------------------------------------------


@dataclass
class RunResult:
    files: List[SourceFile]
    results: List[Tuple[SourceFile, FileResult]] = field(default_factory=list)
    errors: List[FileError] = field(default_factory=list)


def display_paths(files: Sequence[SourceFile], roots: Sequence[str]) -> List[str]:
    """Paths as reports print them: relative to the root, or to the cwd when several roots."""
    if len(roots) <= 1:
        return [f.rel for f in files]
    cwd = os.getcwd()
    return [os.path.relpath(f.path, cwd).replace(os.sep, "/") for f in files]


def _job(args) -> FileResult:
    data, path, fix, module, is_package = args
    return analyze(data, path, fix=fix, module=module, is_package=is_package)


def run(
    paths: Sequence[str],
    *,
    fix: bool,
    excludes: Sequence[str] = (),
    jobs: Optional[int] = None,
    use_cache: bool = True,
    progress: Optional[Callable[[int, int], None]] = None,
) -> RunResult:
    files = discover(paths, excludes)
    coverage = load_coverage()
    config_types = frozenset(coverage.catalogue.config_types)
    shown = display_paths(files, paths)
    outcome = RunResult(files)
    store = result_cache.Cache.open(coverage.digest) if use_cache else None

    index_file = store.stat_index(files) if store else None
    pending = []  # (index, file, data, key)
    done: dict = {}
    modules = []
    for index, (file, path) in enumerate(zip(files, shown)):
        fmt = dependency_files.file_format(file.path.name)
        # A dependency file is not a module; its format must be part of its cache key.
        module = f"<{fmt}>" if fmt else module_name(file)
        modules.append(module)
        stamp = None
        if index_file is not None:
            # Unchanged since the last run (same size, mtime, inode, module): no need to read it.
            stamp = index_file.stamp(file)
            known = index_file.lookup(file, stamp, module)
            if known is not None:
                if known == result_cache.NOT_A_CANDIDATE:
                    continue
                cached = store.get(known, path, fix)
                if cached is not None:
                    done[index] = cached
                    continue
        try:
            with open(file.path, "rb") as handle:
                data = handle.read()
        except OSError as error:
            done[index] = FileResult(path, error=FileError(path, f"cannot read the file: {error.strerror}"))
            continue
        if not (dependency_files.is_candidate(data) if fmt else is_candidate(data, config_types)):
            if index_file is not None and stamp is not None:
                index_file.record(file, stamp, module, result_cache.NOT_A_CANDIDATE)
            continue
        key = result_cache.key(data, module, file.path.name == "__init__.py") if store else None
        if index_file is not None and stamp is not None:
            index_file.record(file, stamp, module, key)
        cached = store.get(key, path, fix) if store else None
        if cached is not None:
            done[index] = cached
        else:
            pending.append((index, file, data, key))

    jobs_args = [
        (data, shown[index], fix, modules[index], file.path.name == "__init__.py")
        for index, file, data, _ in pending
    ]
    workers = jobs if jobs is not None else (os.cpu_count() or 1)
    if len(pending) >= POOL_THRESHOLD and workers > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=workers) as pool:
            computed = pool.map(_job, jobs_args, chunksize=max(1, len(jobs_args) // (workers * 8)))
            computed = _with_progress(computed, len(jobs_args), progress)
            results = list(computed)
    else:
        results = list(_with_progress(map(_job, jobs_args), len(jobs_args), progress))
    for (index, _file, _data, key), result in zip(pending, results):
        done[index] = result
        if store is not None:
            store.put(key, result)

    if index_file is not None:
        index_file.save()
    for index in sorted(done):
        result = done[index]
        outcome.results.append((files[index], result))
        if result.error is not None:
            outcome.errors.append(result.error)
    return outcome


def _with_progress(results, total: int, progress):
    for count, result in enumerate(results, 1):
        if progress is not None:
            progress(count, total)
        yield result
