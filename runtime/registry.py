"""What mmcv_runtime implements: one :class:`OpEntry` per ``mmcv.ops`` submodule it mirrors.

Each op module (``mmcv_runtime/ops/<op>.py``) calls :func:`register` once, at import. Together with the
catalogue of mmcv's API (``mmcv_migrate.rewrites.catalogue``) this is the single source of coverage:
the coverage report is their join, nothing else keeps a list of ops.

The tool must not import torch, so it reads a static copy of :func:`snapshot`,
``mmcv_migrate/runtime_registry.json``; a test keeps that file equal to the live registry. Regenerate it
with::

    python -m mmcv_runtime.registry --write mmcv_migrate/runtime_registry.json
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = [
    "BACKWARD_VALUES",
    "SCHEMA",
    "REGENERATE_COMMAND",
    "OpEntry",
    "dumps",
    "entries",
    "implemented_ext_functions",
    "register",
    "snapshot",
]

#: Version of the :func:`snapshot` layout; bump it when the layout changes.
SCHEMA = 1

#: ``"yes"``: gradients match mmcv's backward; ``"no"``: forward only (backward raises);
#: ``"n/a"``: the op has no gradient (e.g. nms).
BACKWARD_VALUES = ("yes", "no", "n/a")

REGENERATE_COMMAND = "python -m mmcv_runtime.registry --write mmcv_migrate/runtime_registry.json"


def _check_str_tuple(op: str, field: str, value: object, *, non_empty: bool = False) -> None:
    if not isinstance(value, tuple) or not all(isinstance(v, str) for v in value):
        raise TypeError(
            f"OpEntry {op!r}: {field} must be a tuple of str, got {value!r}"
            + (" (a bare str is not a tuple: write (x,))" if isinstance(value, str) else "")
        )
    if non_empty and not value:
        raise ValueError(f"OpEntry {op!r}: {field} must not be empty")
    for v in value:
        if not v or v != v.strip():
            raise ValueError(f"OpEntry {op!r}: {field} holds an empty or padded name {v!r}")
    duplicates = sorted({v for v in value if value.count(v) > 1})
    if duplicates:
        raise ValueError(f"OpEntry {op!r}: {field} repeats {', '.join(duplicates)}")


@dataclass(frozen=True)
class OpEntry:
    """One ``mmcv.ops`` submodule as the runtime provides it."""

    op: str
    """the mmcv.ops submodule it mirrors, e.g. ``"nms"``, ``"roi_align"``"""
    names: tuple[str, ...]
    """public names of that submodule the runtime provides"""
    ext_functions: tuple[str, ...]
    """``mmcv._ext`` functions the runtime's ``_ext`` ABI (``mmcv_runtime.ext``) provides for it"""
    backward: str
    """``"yes"`` | ``"no"`` | ``"n/a"`` (the op has no gradient, e.g. nms)"""
    devices: tuple[str, ...]
    """devices it runs on; pure PyTorch ops say ``("any",)``"""
    kernels: tuple[str, ...] = ()
    """optional accelerated implementations, e.g. ``("triton",)``"""

    def __post_init__(self) -> None:
        if not isinstance(self.op, str) or not self.op.isidentifier():
            raise ValueError(f"OpEntry.op must be an mmcv.ops submodule name, got {self.op!r}")
        _check_str_tuple(self.op, "names", self.names)
        _check_str_tuple(self.op, "ext_functions", self.ext_functions)
        if not self.names and not self.ext_functions:
            raise ValueError(f"OpEntry {self.op!r}: provides neither names nor ext_functions")
        if self.backward not in BACKWARD_VALUES:
            raise ValueError(
                f"OpEntry {self.op!r}: backward must be one of {', '.join(BACKWARD_VALUES)}, "
                f"got {self.backward!r}"
            )
        _check_str_tuple(self.op, "devices", self.devices, non_empty=True)
        _check_str_tuple(self.op, "kernels", self.kernels)

    def to_json(self) -> dict:
        """JSON-able form used by :func:`snapshot`.

        ``names`` and ``ext_functions`` are sets and come out sorted; ``devices`` and ``kernels`` keep
        their declared order (preference order).
        """
        return {
            "names": sorted(self.names),
            "ext_functions": sorted(self.ext_functions),
            "backward": self.backward,
            "devices": list(self.devices),
            "kernels": list(self.kernels),
        }


# op -> entry. Only _register_into writes to it.
_ENTRIES: dict[str, OpEntry] = {}


def _register_into(table: MutableMapping[str, OpEntry], entry: OpEntry) -> OpEntry:
    """Add ``entry`` to ``table`` (the global registry, or a temporary one in tests)."""
    if not isinstance(entry, OpEntry):
        raise TypeError(f"register() takes an OpEntry, got {type(entry).__name__}")
    if entry.op in table:
        raise ValueError(f"op {entry.op!r} is already registered")
    # No _ext function is implemented twice: each one belongs to exactly one op.
    claimed = {fn: other.op for other in table.values() for fn in other.ext_functions}
    clashes = sorted(fn for fn in entry.ext_functions if fn in claimed)
    if clashes:
        raise ValueError(
            f"op {entry.op!r}: ext function(s) {', '.join(clashes)} already registered by "
            f"{', '.join(sorted({claimed[fn] for fn in clashes}))}"
        )
    table[entry.op] = entry
    return entry


def register(entry: OpEntry) -> OpEntry:
    """Register what an op module implements; called once by each op module at import.

    Raises ``ValueError`` when the op (or one of its ext functions) is already registered.
    """
    return _register_into(_ENTRIES, entry)


def entries() -> Mapping[str, OpEntry]:
    """Every registered op, as a read-only mapping ``op -> OpEntry``.

    Imports ``mmcv_runtime.ops`` first, so that every op module has registered itself.
    """
    import mmcv_runtime.ops  # noqa: F401  (importing it registers every op module)

    return MappingProxyType(_ENTRIES)


def _snapshot_of(table: Mapping[str, OpEntry]) -> dict:
    return {"schema": SCHEMA, "ops": {op: table[op].to_json() for op in sorted(table)}}


def snapshot() -> dict:
    """The registry as JSON-able data: ``{"schema": 1, "ops": {op: {...}}}``, sorted by op."""
    return _snapshot_of(entries())


def implemented_ext_functions() -> frozenset[str]:
    """Every ``mmcv._ext`` function the runtime's ``_ext`` ABI implements."""
    return frozenset(fn for entry in entries().values() for fn in entry.ext_functions)


def dumps(data: dict | None = None) -> str:
    """The snapshot as text, exactly as ``mmcv_migrate/runtime_registry.json`` holds it."""
    return json.dumps(snapshot() if data is None else data, sort_keys=True, indent=1) + "\n"


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m mmcv_runtime.registry",
        description="Print (or write) the JSON snapshot of what mmcv_runtime implements.",
    )
    parser.add_argument(
        "--write",
        metavar="PATH",
        help="write the snapshot to PATH (e.g. mmcv_migrate/runtime_registry.json) instead of printing it",
    )
    args = parser.parse_args(argv)
    text = dumps()
    if args.write:
        with open(args.write, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    # Under ``python -m`` this file runs as ``__main__``, a different module object from
    # ``mmcv_runtime.registry`` which the op modules register into: delegate to the real one.
    from mmcv_runtime import registry as _registry

    sys.exit(_registry.main())
