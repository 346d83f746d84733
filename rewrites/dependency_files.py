"""mmcv requirements in text files: requirements*.txt, setup.cfg, pyproject.toml, shell scripts.

Each format has a small line-based reader that yields :class:`Site` s (a requirement string and where
its characters lie in the file); one shared routine turns them into findings and edits through
:mod:`.requirement_spec`. Editing is by character offsets into the decoded text, so everything but the
rewritten name (and the added ``mmcv-migrate`` entry) stays byte-identical: comments, quotes,
indentation, line endings, BOM. Bytes that are not UTF-8 round-trip through ``surrogateescape``.

No TOML or INI parser on purpose: the package supports Pythons without ``tomllib``, and a parser
would not give back the layout anyway.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Iterator, List, Optional, Tuple

from mmcv_migrate.findings import KIND_DEPENDENCY, FileResult, Finding
from mmcv_migrate.rewrites import requirement_spec as spec

REQUIREMENTS, SETUP_CFG, PYPROJECT, SHELL = "requirements", "setup.cfg", "pyproject.toml", "shell"
# Same mark as in Python files (rewrites.context, which this module must not import: it loads libcst).
SUPPRESSION_MARK = "mmcv-migrate: ignore"

# pip options whose value is the next word (a -r file, an index URL, ...): never a requirement.
_PIP_VALUE_OPTIONS = frozenset(
    "-r --requirement -c --constraint -e --editable -f --find-links -i --index-url --extra-index-url "
    "-t --target --prefix --root --src --upgrade-strategy --platform --python-version --implementation "
    "--abi --trusted-host --cache-dir --log --progress-bar --only-binary --no-binary -C "
    "--config-settings --global-option --install-option --report".split())
_INSTALL = re.compile(r"(?:\b(?:pip3?(?:\.\d+)?|mim)|\bpython3?(?:\.\d+)?\s+-m\s+pip)\s+install(?=\s|$)")
_SHELL_WORD = re.compile(r"""\s*("(?:[^"\\]|\\.)*"|'[^']*'|[^\s;&|()'"]+)""")
_TOML_TABLE = re.compile(r"\s*\[([^\[\]]+)\]\s*(?:#.*)?$")
_TOML_ARRAY_KEY = re.compile(r"""\s*("[^"]*"|'[^']*'|[A-Za-z0-9_-]+)\s*=\s*\[""")
_INI_KEY = re.compile(r"([^=:\s][^=:]*?)\s*[=:]\s*")


def file_format(path: str) -> Optional[str]:
    """The dependency-file format of ``path`` by its name, or None for a Python file."""
    name = os.path.basename(path)
    lower = name.lower()
    if name == "setup.cfg":
        return SETUP_CFG
    if name == "pyproject.toml":
        return PYPROJECT
    if lower.endswith(".txt"):
        return REQUIREMENTS
    if lower.endswith((".sh", ".bash")):
        return SHELL
    return None


def is_candidate(data: bytes) -> bool:
    """Prefilter for dependency files: the name appears in any case (``MMCV-Full``)."""
    return b"mmcv" in data.lower()


@dataclass
class Site:
    """A requirement string in the file: ``text`` as the installer reads it, and for each of its
    characters (plus one past the end) the offset in the file's text."""

    text: str
    where: List[int]
    insertion: List[Tuple[int, str]] = field(default_factory=list)  # how to add mmcv-migrate after it
    blocked: Optional[str] = None  # why it must not be rewritten (e.g. a hash-pinned line)


# --------------------------------------------------------------------------------------------
# Lines


def _lines(text: str) -> List[Tuple[int, int, str]]:
    """(start, end without the line break, line break) of every line; CR, LF and CRLF all count."""
    out = []
    pos = 0
    for match in re.finditer(r"\r\n|\r|\n", text):
        out.append((pos, match.start(), match.group()))
        pos = match.end()
    if pos < len(text):
        out.append((pos, len(text), ""))
    return out


def _logical_lines(text: str, lines) -> Iterator[Tuple[str, List[int], int]]:
    """Lines joined at a trailing backslash (pip and sh both do): (text, offsets, index of last line)."""
    index = 0
    while index < len(lines):
        chars: List[str] = []
        where: List[int] = []
        while True:
            start, end, _ = lines[index]
            continued = end > start and text[end - 1] == "\\" and index + 1 < len(lines)
            stop = end - 1 if continued else end
            chars.append(text[start:stop])
            where.extend(range(start, stop))
            if not continued:
                break
            index += 1
        where.append(lines[index][1])
        yield "".join(chars), where, index
        index += 1


def _comment_start(line: str) -> int:
    """Where a ``#`` comment starts (at the line start or after whitespace), else len(line)."""
    match = re.search(r"(^|\s)#", line)
    return match.start() if match else len(line)


def _after_line(text: str, lines, index: int, indent: str) -> Tuple[int, str]:
    """Insert a line ``indent + mmcv-migrate`` after line ``index``, with that line's line break."""
    _, end, eol = lines[index]
    if eol:
        return end + len(eol), f"{indent}{spec.RUNTIME_DISTRIBUTION}{eol}"
    return end, f"{_first_eol(lines)}{indent}{spec.RUNTIME_DISTRIBUTION}"


def _first_eol(lines) -> str:
    return next((eol for _, _, eol in lines if eol), "\n")


# --------------------------------------------------------------------------------------------
# Readers, one per format


def _requirements_sites(text: str) -> Iterator[Site]:
    lines = _lines(text)
    for logical, where, last in _logical_lines(text, lines):
        body = logical[: _comment_start(logical)]
        if not body.strip() or body.lstrip("\ufeff \t").startswith("-"):
            continue  # -r / -c / -e / --index-url lines are not requirements
        options = re.search(r"\s-", body)
        requirement = body[: options.start()] if options else body
        indent = re.match(r"[\ufeff \t]*", body).group().replace("\ufeff", "")
        site = Site(requirement, where[: len(requirement) + 1], [_after_line(text, lines, last, indent)])
        if options and "--hash" in body[options.start():]:
            site.blocked = "the line is hash-pinned: change it and regenerate the hashes (e.g. pip-compile)"
        yield site


def _setup_cfg_sites(text: str) -> Iterator[Site]:
    lines = _lines(text)
    section = ""
    in_list = False
    for index, (start, end, _) in enumerate(lines):
        line = text[start:end]
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", ";")):
            continue
        if line[:1] in (" ", "\t"):
            if in_list:
                yield _cfg_site(text, lines, index, start, line, re.match(r"[ \t]*", line).group())
            continue
        in_list = False
        header = re.match(r"\[([^\]]+)\]", stripped)
        if header:
            section = header.group(1).strip().lower()
            continue
        key = _INI_KEY.match(line)
        if key is None:
            continue
        name = key.group(1).strip().lower()
        in_list = (section == "options" and name == "install_requires") or section == "options.extras_require"
        if in_list and line[key.end():].strip():
            yield _cfg_site(text, lines, index, start + key.end(), line[key.end():], "    ")


def _cfg_site(text: str, lines, index: int, offset: int, value: str, indent: str) -> Site:
    body = value[: _comment_start(value)].rstrip()
    lead = len(body) - len(body.lstrip())
    return Site(body[lead:], list(range(offset + lead, offset + len(body) + 1)),
                [_after_line(text, lines, index, indent)])


def _pyproject_sites(text: str) -> Iterator[Site]:
    lines = _lines(text)
    table = ""
    skip_until = 0
    for start, end, _ in lines:
        if start < skip_until:
            continue
        line = text[start:end]
        header = _TOML_TABLE.match(line)
        if header and not line.lstrip().startswith("[["):
            table = header.group(1).strip().replace(" ", "")
            continue
        if line.lstrip().startswith("[["):
            table = ""
            continue
        key = _TOML_ARRAY_KEY.match(line)
        if key is None:
            continue
        name = key.group(1).strip("\"'")
        if (table == "project" and name == "dependencies") or table == "project.optional-dependencies":
            strings, skip_until = _toml_array_strings(text, start + key.end())
            for open_at, close_at, quote in strings:
                yield _toml_site(text, open_at, close_at, quote)


def _toml_array_strings(text: str, pos: int) -> Tuple[List[Tuple[int, int, str]], int]:
    """Single-line strings of the array whose ``[`` ends just before ``pos``: (content start,
    content end, quote), and the offset after the closing ``]``."""
    found = []
    depth = 1
    while pos < len(text) and depth:
        ch = text[pos]
        if ch == "#":
            newline = re.compile(r"\r|\n").search(text, pos)
            pos = newline.start() if newline else len(text)
            continue
        if ch in "\"'":
            if text.startswith(ch * 3, pos):  # multi-line string: never a requirement here
                close = text.find(ch * 3, pos + 3)
                pos = len(text) if close < 0 else close + 3
                continue
            pattern = r'"(?:[^"\\\r\n]|\\.)*"' if ch == '"' else r"'[^'\r\n]*'"
            match = re.compile(pattern).match(text, pos)
            if match is None:
                return found, len(text)
            if "\\" not in match.group():  # escapes: the raw text is not the value
                found.append((pos + 1, match.end() - 1, ch))
            pos = match.end()
            continue
        depth += ch == "["
        depth -= ch == "]"
        pos += 1
    return found, pos


def _toml_site(text: str, open_at: int, close_at: int, quote: str) -> Site:
    line_start = max(text.rfind("\n", 0, open_at), text.rfind("\r", 0, open_at)) + 1
    before = text[line_start: open_at - 1]
    after_match = re.compile(r"[ \t]*(,?)[ \t]*(#[^\r\n]*)?(\r\n|\r|\n|$)").match(text, close_at + 1)
    entry = f"{quote}{spec.RUNTIME_DISTRIBUTION}{quote}"
    if not before.strip() and after_match is not None and after_match.group(3):
        # one item per line: the new entry gets a line of its own, punctuated like this one
        eol = after_match.group(3)
        if after_match.group(1):
            insertion = [(after_match.end(), f"{before}{entry},{eol}")]
        else:
            insertion = [(close_at + 1, ","), (after_match.end(), f"{before}{entry}{eol}")]
    else:
        insertion = [(close_at + 1, f", {entry}")]
    return Site(text[open_at:close_at], list(range(open_at, close_at + 1)), insertion)


def _shell_sites(text: str) -> Iterator[Site]:
    lines = _lines(text)
    for logical, where, _ in _logical_lines(text, lines):
        for command in _INSTALL.finditer(logical):
            pos = command.end()
            takes_value = False
            while True:
                word = _SHELL_WORD.match(logical, pos)
                if word is None or word.group(1).startswith("#"):
                    break
                pos = word.end()
                raw = word.group(1)
                if takes_value:
                    takes_value = False
                    continue
                if raw.startswith("-"):
                    takes_value = raw in _PIP_VALUE_OPTIONS
                    continue
                first, last = word.start(1), word.end(1)
                if raw[0] in "\"'":
                    first, last = first + 1, last - 1
                yield Site(logical[first:last], where[first: last + 1],
                           [(where[word.end(1) - 1] + 1, f" {spec.RUNTIME_DISTRIBUTION}")])


_READERS = {REQUIREMENTS: _requirements_sites, SETUP_CFG: _setup_cfg_sites,
            PYPROJECT: _pyproject_sites, SHELL: _shell_sites}


# --------------------------------------------------------------------------------------------
# Findings and edits


def analyze(data: bytes, path: str, fmt: str, *, fix: bool) -> FileResult:
    """Findings for one dependency file and, with ``fix``, its rewritten bytes (None if unchanged)."""
    text = data.decode("utf-8", errors="surrogateescape")
    lines = _lines(text)
    line_starts = [start for start, _, _ in lines]
    if text.startswith("\ufeff"):
        line_starts[0] = 1  # columns count from after the BOM, as in Python files
    sites = list(_READERS[fmt](text))
    parsed = [(site, spec.parse(site.text)) for site in sites]
    lists_runtime = any(req is not None and req.canonical == spec.RUNTIME_DISTRIBUTION for _, req in parsed)

    findings: List[Finding] = []
    edits: List[Tuple[int, int, str]] = []
    first_rewrite: Optional[Site] = None
    for site, req in parsed:
        verdict = spec.classify(req) if req is not None else None
        if verdict is None:
            continue
        start_line = _line_of(line_starts, site.where[req.name_start])
        end_line = _line_of(line_starts, site.where[-1])
        suppressed = any(SUPPRESSION_MARK in text[lines[i][0]:lines[i][1]] for i in range(start_line - 1, end_line))
        fixable = verdict.fixable and not suppressed and site.blocked is None
        message = verdict.message if site.blocked is None or not verdict.fixable else f"{verdict.message}; but {site.blocked}"
        findings.append(Finding(
            path=path, line=start_line, column=site.where[req.name_start] - line_starts[start_line - 1] + 1,
            end_line=end_line, rule=spec.RULE, kind=KIND_DEPENDENCY, symbol=verdict.symbol,
            status=verdict.status, fixable=fixable, message=message,
            remaining=verdict.remaining and not suppressed, suppressed=suppressed))
        if not (fix and fixable and verdict.changes):
            continue
        if verdict.new_name is not None:
            edits.append((site.where[req.name_start], site.where[req.name_end], verdict.new_name))
        if verdict.append_spec:
            at = site.where[req.spec_end]
            edits.append((at, at, verdict.append_spec))
        first_rewrite = first_rewrite or site
    if first_rewrite is not None and not lists_runtime:
        edits.extend((at, at, added) for at, added in first_rewrite.insertion)
    result = FileResult(path, findings=findings)
    if edits:
        new = _apply(text, edits).encode("utf-8", errors="surrogateescape")
        if new != data:
            result.new_source = new
    return result


def _line_of(line_starts: List[int], offset: int) -> int:
    import bisect

    return max(1, bisect.bisect_right(line_starts, offset))


def _apply(text: str, edits: List[Tuple[int, int, str]]) -> str:
    # stable sort: edits at one offset keep the order they were made in (a clause, then an entry)
    out = []
    pos = 0
    for start, end, new in sorted(edits, key=lambda edit: (edit[0], edit[1])):
        out.append(text[pos:start])
        out.append(new)
        pos = max(pos, end)
    out.append(text[pos:])
    return "".join(out)
