"""One mmcv requirement string (PEP 508): which distribution and major version it means, and what
to write instead so that it no longer pulls mmcv's compiled ops.

mmcv ships its ops-less build under a different distribution name per major version: in 1.x the
compiled ops are in ``mmcv-full`` and ``mmcv`` has none; in 2.x ``mmcv`` has them and ``mmcv-lite``
has none. So ``mmcv-full`` becomes ``mmcv`` (kept below 2.0) and a 2.x ``mmcv`` becomes ``mmcv-lite``;
only the name changes (plus ``<2.0`` where ``mmcv-full``'s specifier would let pip pick a 2.x
``mmcv``). A bare or open-ended ``mmcv`` is reported, not guessed at.

Pure string work, no imports beyond the stdlib: the text-file rewriter and the setup.py rule share it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Tuple

from mmcv_migrate.findings import CONVERTED, UNCONVERTED

RULE = "mmcv-dependency"
RUNTIME_DISTRIBUTION = "mmcv-migrate"  # this project's distribution: it provides mmcv_runtime
LATEST_MAJOR = 2  # mmcv has no 3.x: an open-ended ">=2..." means 2.x

_NAME = re.compile(r"[\s\ufeff]*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)")
_EXTRAS = re.compile(r"\s*\[[^\]]*\]")
_CLAUSE = re.compile(r"(===|==|!=|<=|>=|~=|<|>)\s*([A-Za-z0-9.*+!_-]+)")
_SPECIFIER = re.compile(r"\s*(?:(?:===|==|!=|<=|>=|~=|<|>)\s*[A-Za-z0-9.*+!_-]+\s*(?:,\s*(?=\S)|$))*")
_VERSION = re.compile(r"v?(\d+)((?:\.\d+)*)")


def canonical_name(name: str) -> str:
    """PEP 503 normalisation: ``MMCV_Full`` -> ``mmcv-full``."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Requirement:
    """Where the parts of a requirement string are (offsets into the string given to :func:`parse`)."""

    name: str
    name_start: int
    name_end: int
    specifier: str  # as written, without parentheses ("" when none)
    spec_end: int  # just after the specifier: where an extra clause goes
    url: bool = False  # a direct reference, ``name @ url``
    readable: bool = True  # False when the specifier is not a plain one (e.g. ``==${VERSION}``)

    @property
    def canonical(self) -> str:
        return canonical_name(self.name)


@dataclass(frozen=True)
class Verdict:
    """What a requirement means for the migration, and the edit that fixes it (if any)."""

    symbol: str
    status: str
    fixable: bool
    remaining: bool
    message: str
    new_name: Optional[str] = None  # the name to write instead
    append_spec: str = ""  # a clause to add after the specifier

    @property
    def changes(self) -> bool:
        return self.new_name is not None or bool(self.append_spec)


def parse(text: str) -> Optional[Requirement]:
    """The requirement in ``text`` (comments and pip options already removed), or None."""
    match = _NAME.match(text)
    if match is None:
        return None
    name_start, name_end = match.span(1)
    pos = name_end
    extras = _EXTRAS.match(text, pos)
    if extras is not None:
        pos = extras.end()
    rest = text[pos:]
    stripped = rest.lstrip()
    if stripped.startswith("@"):
        return Requirement(match.group(1), name_start, name_end, "", pos, url=True)
    marker = rest.find(";")
    spec_text = rest if marker < 0 else rest[:marker]
    lead = len(spec_text) - len(spec_text.lstrip())
    body = spec_text.strip()
    spec_start = pos + lead
    if body.startswith("(") and body.endswith(")"):
        inner = body[1:-1]
        spec_start += 1 + (len(inner) - len(inner.lstrip()))
        body = inner.strip()
    spec_end = spec_start + len(body) if body else pos
    readable = _SPECIFIER.fullmatch(body) is not None
    return Requirement(match.group(1), name_start, name_end, body, spec_end, readable=readable)


def _major(version: str) -> Optional[int]:
    match = _VERSION.match(version)
    return int(match.group(1)) if match else None


def _is_major_floor(version: str) -> bool:
    """``2``, ``2.0``, ``2.0.0``, ``2.0.0rc1``: nothing of major 2 lies below it (for ``<``)."""
    match = _VERSION.match(version)
    return bool(match) and all(part == "0" for part in match.group(2).split(".")[1:])


def major_range(specifier: str) -> Tuple[Optional[int], Optional[int]]:
    """(lowest, highest) major version the specifier admits; None where unbounded."""
    low: Optional[int] = None
    high: Optional[int] = None
    for op, version in _CLAUSE.findall(specifier):
        major = _major(version)
        if major is None or op == "!=":
            continue
        if op in ("==", "===", "~="):
            low = major if low is None else max(low, major)
            high = major if high is None else min(high, major)
        elif op in (">=", ">"):
            low = major if low is None else max(low, major)
        else:
            top = major - 1 if op == "<" and _is_major_floor(version) else major
            high = top if high is None else min(high, top)
    if high is None and low is not None and low >= LATEST_MAJOR:
        high = low
    return low, high


def classify(req: Requirement) -> Optional[Verdict]:
    """The verdict on an mmcv requirement; None for any other distribution."""
    name = req.canonical
    symbol = name + re.sub(r"\s+", "", req.specifier)
    written = f"`{req.name}{req.specifier}`" if not req.url else f"`{req.name} @ ...`"
    if name == "mmcv-lite":
        return Verdict(symbol, CONVERTED, False, False, f"{written}: mmcv-lite has no compiled ops")
    if name not in ("mmcv", "mmcv-full"):
        return None
    if req.url or not req.readable:
        what = "a direct URL reference" if req.url else "a version that is not a plain specifier"
        return Verdict(symbol, UNCONVERTED, False, True,
                       f"{written}: {what}, which may be a build with compiled ops; write `mmcv-lite` "
                       "with your 2.x specifier, or `mmcv` below 2.0 for 1.x, and add `mmcv-migrate`")
    low, high = major_range(req.specifier)
    if name == "mmcv-full":
        if low is not None and low >= 2:
            return Verdict(symbol, UNCONVERTED, False, True,
                           f"{written}: mmcv-full has no 2.x release; write `mmcv-lite{req.specifier}` "
                           "and add `mmcv-migrate`")
        extra = "" if high is not None and high <= 1 else (",<2.0" if req.specifier else "<2.0")
        return Verdict(symbol, CONVERTED, True, True,
                       f"{written} builds mmcv's compiled ops; apply writes `mmcv{req.specifier}{extra}` "
                       "(mmcv 1.x without ops) and adds `mmcv-migrate`",
                       new_name="mmcv", append_spec=extra)
    if high is not None and high <= 1:
        return Verdict(symbol, CONVERTED, False, False, f"{written}: mmcv 1.x has no compiled ops")
    if low is not None and low >= 2:
        return Verdict(symbol, CONVERTED, True, True,
                       f"{written} is mmcv 2.x, which builds compiled ops; apply writes "
                       f"`mmcv-lite{req.specifier}` and adds `mmcv-migrate`", new_name="mmcv-lite")
    spec = req.specifier
    one = f"mmcv{spec},<2.0" if spec else "mmcv<2.0"
    return Verdict(symbol, UNCONVERTED, False, True,
                   f"{written} may resolve to mmcv 2.x, which builds compiled ops: pin the major version, "
                   f"`mmcv-lite>=2.0.0` for 2.x or `{one}` for 1.x, and add `mmcv-migrate`")
