"""Find the files a run works on: Python sources and dependency declarations.

``discover(paths, excludes)`` walks the given directories for ``*.py`` files and the files that
declare dependencies (:func:`is_dependency_file`: ``requirements*.txt``, ``requirements/*.txt``,
``setup.cfg``, ``pyproject.toml``, ``*.sh``); a file given explicitly is taken whatever its name.
It prunes the usual non-source directories (:data:`DEFAULT_EXCLUDES`, any virtualenv), user
``--exclude`` patterns and ``.gitignore`` rules, without ever following a directory symlink or leaving
the given root through a file symlink.

``module_name(file)`` gives the dotted module name of a found file from its ``__init__.py`` chain
(the engine needs it to resolve relative imports such as ``from ..utils import ext_loader``).

Stdlib + ``pathspec`` only; built for trees of many thousands of files: one ``os.scandir`` per
directory, ignore rules compiled once per ``.gitignore`` file, excluded directories never entered.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple, Union

import pathspec

__all__ = [
    "DEFAULT_EXCLUDES",
    "DiscoveryError",
    "SourceFile",
    "discover",
    "is_dependency_file",
    "module_name",
]

DEFAULT_EXCLUDES: tuple[str, ...] = (
    ".git",
    ".hg",
    ".svn",
    ".venv",
    "venv",
    "env",
    "build",
    "dist",
    "site-packages",
    "node_modules",
    "__pycache__",
    ".tox",
    ".eggs",
    ".mypy_cache",
    ".pytest_cache",
    ".mmcv-migrate-cache",
)

_DEFAULT_EXCLUDES_SET = frozenset(DEFAULT_EXCLUDES)


class DiscoveryError(Exception):
    """A usage error in the paths given (e.g. a path that does not exist)."""


@dataclass(frozen=True)
class SourceFile:
    """A file to work on.

    ``path`` is absolute as found (symlinks not resolved); ``root`` is the absolute directory it was
    found under (the directory given, or a file argument's parent); ``rel`` is the posix path of
    ``path`` relative to ``root`` (what reports print).
    """

    path: Path
    root: Path
    rel: str


# --------------------------------------------------------------------------------------------
# Pattern specs


def _compile(lines: Iterable[str]) -> "pathspec.PathSpec":
    lines = list(lines)
    cls = getattr(pathspec, "GitIgnoreSpec", None)
    if cls is not None:
        return cls.from_lines(lines)
    return pathspec.PathSpec.from_lines("gitwildmatch", lines)  # pragma: no cover - old pathspec


def _make_checker(spec: "pathspec.PathSpec"):
    """Return ``check(path) -> True (ignored) | False (re-included by '!') | None (no match)``."""
    if not spec.patterns:
        return None
    if hasattr(spec, "check_file"):  # pathspec >= 0.12

        def check(path: str, _c=spec.check_file) -> Optional[bool]:
            return _c(path).include

        return _with_quick_miss(spec, check)

    patterns = [p for p in spec.patterns if p.include is not None]  # pragma: no cover

    def check_old(path: str) -> Optional[bool]:  # pragma: no cover - pathspec 0.11
        result = None
        for p in patterns:
            if p.match_file(path) is not None:
                result = p.include
        return result

    return check_old


def _with_quick_miss(spec: "pathspec.PathSpec", check):
    """``check`` behind one combined regex that answers the common case, "no pattern matches".

    A path that no pattern's regex matches cannot match their alternation either, so the combined
    regex only decides misses; any hit still goes through pathspec's own (ordered, negation-aware)
    check. Named groups become plain groups so that patterns can be joined; a pattern pathspec
    does not express as a regex, or one with a named backreference, keeps the plain check.
    """
    active = [p for p in spec.patterns if p.include is not None]
    sources = [getattr(getattr(p, "regex", None), "pattern", None) for p in active]
    if not sources or any(not isinstance(r, str) or "(?P=" in r for r in sources):
        return check
    try:
        combined = re.compile("|".join("(?:%s)" % re.sub(r"\(\?P<[^>]+>", "(?:", r) for r in sources))
    except re.error:
        return check

    def quick(path: str, _match=combined.match, _check=check) -> Optional[bool]:
        return None if _match(path) is None else _check(path)

    return quick


def _read_ignore_file(path: str) -> Optional["pathspec.PathSpec"]:
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    text = raw.decode("utf-8", errors="surrogateescape")
    if text.startswith("\ufeff"):
        text = text[1:]
    return _compile(text.splitlines())


# An active gitignore source: (check, add_prefix, strip_len). A path ``rel`` relative to the walk
# root is tested as ``add_prefix + rel[strip_len:]`` (i.e. relative to the ignore file's directory).
_Rule = Tuple[object, str, int]


def _find_git_top(start: str) -> Optional[str]:
    """The nearest directory at or above ``start`` holding a ``.git`` entry (no git call)."""
    cur = start
    while True:
        if os.path.lexists(os.path.join(cur, ".git")):
            return cur
        parent = os.path.dirname(cur)
        if parent == cur:
            return None
        cur = parent


def _git_info_exclude(top: str) -> Optional[str]:
    """Path of the ``info/exclude`` file of the work tree at ``top`` (handles ``.git`` files)."""
    dotgit = os.path.join(top, ".git")
    if os.path.isdir(dotgit):
        return os.path.join(dotgit, "info", "exclude")
    try:  # worktree / submodule: ".git" is a file "gitdir: <path>"
        with open(dotgit, "r", encoding="utf-8", errors="replace") as fh:
            first = fh.readline().strip()
    except OSError:
        return None
    if not first.startswith("gitdir:"):
        return None
    gitdir = first[len("gitdir:"):].strip()
    if not os.path.isabs(gitdir):
        gitdir = os.path.normpath(os.path.join(top, gitdir))
    common = gitdir
    try:
        with open(os.path.join(gitdir, "commondir"), "r", encoding="utf-8") as fh:
            cd = fh.read().strip()
        common = cd if os.path.isabs(cd) else os.path.normpath(os.path.join(gitdir, cd))
    except OSError:
        pass
    return os.path.join(common, "info", "exclude")


def _outer_rules(root: str) -> List[_Rule]:
    """Ignore rules that apply to ``root`` from outside it: ``.git/info/exclude`` of the enclosing
    work tree and the ``.gitignore`` files of ``root``'s ancestors up to that work tree's top.
    Lowest precedence first (the walk appends deeper files after these)."""
    top = _find_git_top(root)
    if top is None:
        return []
    rules: List[_Rule] = []

    def prefix_for(base: str) -> str:
        if base == root:
            return ""
        return os.path.relpath(root, base).replace(os.sep, "/") + "/"

    info = _git_info_exclude(top)
    if info and os.path.isfile(info):
        spec = _read_ignore_file(info)
        check = _make_checker(spec) if spec is not None else None
        if check is not None:
            rules.append((check, prefix_for(top), 0))

    # ancestors strictly above root, from the work tree top down (the root's own .gitignore is read
    # by the walk itself)
    ancestors = []
    cur = root
    while cur != top:
        cur = os.path.dirname(cur)
        ancestors.append(cur)
    for base in reversed(ancestors):
        gi = os.path.join(base, ".gitignore")
        if os.path.isfile(gi):
            spec = _read_ignore_file(gi)
            check = _make_checker(spec) if spec is not None else None
            if check is not None:
                rules.append((check, prefix_for(base), 0))
    return rules


def _ignored(rules: Sequence[_Rule], rel: str) -> bool:
    # git precedence: the deepest ignore file with a matching pattern decides
    for check, add_prefix, strip_len in reversed(rules):
        res = check(add_prefix + rel[strip_len:] if (add_prefix or strip_len) else rel)
        if res is not None:
            return res
    return False


def _normalize_excludes(excludes: Sequence[str]) -> Tuple[List[str], List[Tuple[bool, str]]]:
    """Split user patterns into relative gitignore-style patterns and absolute paths
    (``(negated, abs_path)``, anchored per root later)."""
    rel_pats: List[str] = []
    abs_pats: List[Tuple[bool, str]] = []
    for raw in excludes:
        pat = os.fspath(raw).strip()
        if not pat:
            continue
        neg = pat.startswith("!")
        body = pat[1:] if neg else pat
        if os.sep != "/":  # pragma: no cover - windows
            body = body.replace(os.sep, "/")
        if body.startswith("./"):
            body = "/" + body[2:]
        if os.path.isabs(body) and os.path.exists(body.rstrip("/") or "/"):
            abs_pats.append((neg, os.path.abspath(body)))
            continue
        rel_pats.append(("!" if neg else "") + body)
    return rel_pats, abs_pats


class _Excluder:
    """User ``--exclude`` patterns, gitignore-style: a pattern without '/' matches the basename of
    any path component, a pattern with '/' matches the path relative to the root. Paths are also
    tested relative to the current directory when the root lies under it, so that
    ``--exclude src/gen`` works for ``scan src`` and for the file argument ``src/gen/x.py`` as well
    as for ``scan .``. An absolute path that exists is anchored at each root it lies under."""

    def __init__(self, excludes: Sequence[str]):
        self.rel_pats, self.abs_pats = _normalize_excludes(excludes)
        self.active = bool(self.rel_pats or self.abs_pats)
        self._base = _make_checker(_compile(self.rel_pats)) if self.rel_pats else None
        self.cwd = os.getcwd()

    def for_root(self, root: str):
        """Return ``excluded(rel) -> bool`` for paths under ``root``, or None when nothing can
        match."""
        if not self.active:
            return None
        check = self._base
        if self.abs_pats:
            pats = list(self.rel_pats)
            for neg, ap in self.abs_pats:
                try:
                    r = os.path.relpath(ap, root)
                except ValueError:  # pragma: no cover - windows drives
                    continue
                if r == os.curdir or r.startswith(os.pardir):
                    continue
                pats.append(("!" if neg else "") + "/" + r.replace(os.sep, "/"))
            check = _make_checker(_compile(pats)) if pats else None
        if check is None:
            return None
        cwd_prefix: Optional[str] = None
        if self._base is not None and root != self.cwd:
            try:
                r = os.path.relpath(root, self.cwd)
            except ValueError:  # pragma: no cover - windows drives
                r = os.pardir
            if r != os.curdir and not r.startswith(os.pardir):
                cwd_prefix = r.replace(os.sep, "/") + "/"
        base = self._base

        def excluded(rel: str) -> bool:
            if check(rel):
                return True
            if cwd_prefix is not None and base(cwd_prefix + rel):
                return True
            return False

        return excluded


# --------------------------------------------------------------------------------------------
# The walk


def is_dependency_file(name: str, parent_rel: str = "") -> bool:
    """True for a file that can declare an mmcv requirement (``name`` in directory ``parent_rel``)."""
    if name in ("setup.cfg", "pyproject.toml") or name.endswith(".sh"):
        return True
    return name.endswith(".txt") and (
        name.startswith("requirements") or parent_rel.rpartition("/")[2] == "requirements")


def _within(real: str, root_real: str) -> bool:
    if real == root_real:
        return True
    base = root_real if root_real.endswith(os.sep) else root_real + os.sep
    return real.startswith(base)


# A candidate: (root_path, rel, abs_path_str, real_path_str, is_link)
_Cand = Tuple[Path, str, str, str, bool]


def _walk(root: str, excluder: _Excluder, use_gitignore: bool, out: List[_Cand]) -> None:
    root_path = Path(root)
    root_real = os.path.realpath(root)
    excluded = excluder.for_root(root)
    base_rules: List[_Rule] = _outer_rules(root) if use_gitignore else []
    realpath = os.path.realpath
    sep = os.sep
    default_excl = _DEFAULT_EXCLUDES_SET

    # stack of (abs_dir, rel_dir ("" for root), real_dir, rules)
    stack: List[Tuple[str, str, str, List[_Rule]]] = [(root, "", root_real, base_rules)]
    while stack:
        dpath, drel, dreal, rules = stack.pop()
        try:
            with os.scandir(dpath) as it:
                entries = list(it)
        except OSError:
            continue
        if drel:
            names = {e.name for e in entries}
            if "pyvenv.cfg" in names:  # a virtualenv under any name
                continue
        else:
            names = None
        if use_gitignore:
            if names is None:
                names = {e.name for e in entries}
            if ".gitignore" in names:
                spec = _read_ignore_file(os.path.join(dpath, ".gitignore"))
                check = _make_checker(spec) if spec is not None else None
                if check is not None:
                    rules = rules + [(check, "", len(drel) + 1 if drel else 0)]
        prefix = drel + "/" if drel else ""
        for e in entries:
            name = e.name
            try:
                is_link = e.is_symlink()
                if is_link:
                    # never follow a directory symlink; a file symlink only if it stays in root
                    if not (name.endswith(".py") or is_dependency_file(name, drel)) or not e.is_file():
                        continue
                    is_dir = False
                else:
                    is_dir = e.is_dir(follow_symlinks=False)
                    if not is_dir:
                        if not (name.endswith(".py") or is_dependency_file(name, drel)) or not e.is_file(
                                follow_symlinks=False):
                            continue
            except OSError:
                continue
            if is_dir:
                if name in default_excl:
                    continue
                rel = prefix + name
                relq = rel + "/"  # directory-only patterns need the trailing slash
                if excluded is not None and excluded(relq):
                    continue
                if rules and _ignored(rules, relq):
                    continue
                stack.append((e.path, rel, dreal + sep + name if not dreal.endswith(sep) else dreal + name, rules))
                continue
            rel = prefix + name
            if excluded is not None and excluded(rel):
                continue
            if rules and _ignored(rules, rel):
                continue
            if is_link:
                real = realpath(e.path)
                if not _within(real, root_real):
                    continue
            else:
                real = dreal + sep + name if not dreal.endswith(sep) else dreal + name
            out.append((root_path, rel, e.path, real, is_link))


def discover(
    paths: Sequence[Union[str, "os.PathLike[str]"]],
    excludes: Sequence[str] = (),
    *,
    use_gitignore: bool = True,
) -> List[SourceFile]:
    """Find the Python and dependency files under ``paths``; see the module docstring for the rules.

    Directories are walked for ``*.py`` and dependency files; a file given explicitly is taken
    (whatever its suffix) unless an exclude pattern matches it. Raises :class:`DiscoveryError` for a path that does not
    exist. Output is sorted by ``(root, rel)`` and holds each real file once.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    excluder = _Excluder(excludes)
    cands: List[_Cand] = []
    for raw in paths:
        p = os.path.abspath(os.fspath(raw))
        if not os.path.exists(p):
            raise DiscoveryError(f"path does not exist: {os.fspath(raw)}")
        if os.path.isdir(p):
            _walk(p, excluder, use_gitignore, cands)
            continue
        # an explicit file
        root = os.path.dirname(p)
        name = os.path.basename(p)
        excluded = excluder.for_root(root)
        if excluded is not None and excluded(name):
            continue
        is_link = os.path.islink(p)
        real = os.path.realpath(p)
        if is_link and not _within(real, os.path.realpath(root)):
            continue
        cands.append((Path(root), name, p, real, is_link))

    # sorted by (root, rel); one entry per real file: a real (non-symlink) path wins over a link to
    # it, otherwise the first in sorted order
    cands.sort(key=lambda c: (c[0], c[1]))
    chosen: dict = {}
    for i, c in enumerate(cands):
        prev = chosen.get(c[3])
        if prev is None or (cands[prev][4] and not c[4]):
            chosen[c[3]] = i
    keep = sorted(chosen.values())
    return [SourceFile(path=Path(cands[i][2]), root=cands[i][0], rel=cands[i][1]) for i in keep]


# --------------------------------------------------------------------------------------------
# Module names


@functools.lru_cache(maxsize=None)
def _package_parts(directory: str) -> Optional[Tuple[str, ...]]:
    """Dotted parts of the package ``directory`` is, or None when it has no ``__init__.py``."""
    if not os.path.isfile(os.path.join(directory, "__init__.py")):
        return None
    parent = os.path.dirname(directory)
    name = os.path.basename(directory)
    if not name:
        return None
    outer = _package_parts(parent) if parent != directory else None
    return (outer or ()) + (name,)


def module_name(file: SourceFile) -> Optional[str]:
    """The dotted module name of ``file`` from its ``__init__.py`` chain, or None when its
    directory is not a package. ``pkg/sub/__init__.py`` -> ``pkg.sub``; ``pkg/sub/m.py`` ->
    ``pkg.sub.m``."""
    path = file.path
    parts = _package_parts(os.path.dirname(os.fspath(path)))
    if parts is None:
        return None
    stem = path.name
    if stem.endswith(".py"):
        stem = stem[:-3]
    elif "." in stem:
        stem = stem.rsplit(".", 1)[0]
    if stem == "__init__":
        return ".".join(parts)
    return ".".join(parts + (stem,))


module_name.cache_clear = _package_parts.cache_clear  # type: ignore[attr-defined]
