"""The catalogue of mmcv's API: every public ``mmcv.ops`` name and every ``mmcv._ext`` function of
mmcv-full 1.7 and mmcv 2.x, with the submodule each lives in.

The data is ``catalogue.json`` next to this module, generated from mmcv's sources by
``python -m mmcv_migrate.rewrites._generate_catalogue`` (see that module); never edit it by hand.
This module uses the standard library only: ``mmcv_runtime`` reads it too and must import with
torch alone.

Symbols are fully qualified strings:

* ``mmcv.ops.<name>`` for a name exported by ``mmcv.ops`` (in either version);
* ``mmcv.ops.<sub>.<name>`` for a public name that only a submodule defines
  (``mmcv.ops.multi_scale_deform_attn.multi_scale_deformable_attn_pytorch``);
* ``mmcv.ops.<sub>`` for a submodule itself;
* ``mmcv._ext.<fn>`` for a function of the compiled extension.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from importlib.resources import files
from types import MappingProxyType
from typing import Any, Mapping

__all__ = [
    "Catalogue",
    "ExtFunction",
    "ExtSignature",
    "Submodule",
    "load_catalogue",
    "parse_catalogue",
]

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True)
class ExtSignature:
    """An ``mmcv._ext`` function's binding in one mmcv version (used where versions differ)."""

    args: tuple[str, ...]
    declaration: str


@dataclass(frozen=True)
class ExtFunction:
    """One ``m.def`` of mmcv's ``pybind.cpp``.

    ``args`` and ``declaration`` are those of the newest version that defines the function; a
    version whose binding differs is in ``older`` (``upfirdn2d`` changed between 1.7 and 2.x).
    ``overloads`` holds the argument names of further ``m.def`` calls of the same name, which
    pybind11 adds as overloads (``knn_forward`` is bound twice, the second time with the names in
    another order).
    """

    name: str
    versions: tuple[str, ...]
    args: tuple[str, ...]  # py::arg names, in order
    declaration: str  # e.g. "Tensor nms(Tensor boxes, Tensor scores, float iou_threshold, int offset)"
    submodules: tuple[str, ...]  # mmcv.ops submodules whose load_ext lists name it (may be empty)
    overloads: tuple[tuple[str, ...], ...] = ()
    older: Mapping[str, ExtSignature] = field(default_factory=lambda: _EMPTY)

    @property
    def symbol(self) -> str:
        """``mmcv._ext.<name>``."""
        return "mmcv._ext." + self.name

    def signature(self, version: str) -> ExtSignature | None:
        """The binding in ``version`` (None if that version lacks the function)."""
        if version not in self.versions:
            return None
        return self.older.get(version) or ExtSignature(self.args, self.declaration)


@dataclass(frozen=True)
class Submodule:
    """One ``mmcv/ops/<name>.py`` (union over the catalogued versions).

    ``names`` maps each public name the module defines (top-level def/class/assignment, also
    inside module-level ``if``/``try``, plus its ``__all__``) to the versions defining it.
    ``imports`` maps public names the module only imports from a sibling submodule to their
    origin, ``"<sibling>.<name>"`` (``from mmcv.ops.sparse_conv import SparseConvTensor`` works).
    """

    name: str
    names: Mapping[str, tuple[str, ...]]
    ext_functions: tuple[str, ...]
    versions: tuple[str, ...] = ()
    imports: Mapping[str, str] = field(default_factory=lambda: _EMPTY)

    @property
    def symbol(self) -> str:
        """``mmcv.ops.<name>``."""
        return "mmcv.ops." + self.name


@dataclass(frozen=True, eq=False)
class Catalogue:
    """mmcv's API, read-only. Get it with :func:`load_catalogue`."""

    versions: tuple[str, ...]
    #: every name in ``mmcv.ops.__all__`` of either version -> its submodule
    exports: Mapping[str, str]
    export_versions: Mapping[str, tuple[str, ...]]
    #: exports bound under an alias -> the name their submodule defines (Conv2d -> Conv2d_deprecated)
    export_aliases: Mapping[str, str]
    submodules: Mapping[str, Submodule]
    ext_functions: Mapping[str, ExtFunction]
    #: a config dict's ``type`` string -> the canonical symbol it resolves to
    config_types: Mapping[str, str]
    #: ``<module>.<name>`` kept for backward compatibility -> ``<mmcv.ops module>.<name>`` it imports
    deprecated_reexports: Mapping[str, str]
    #: sha256 hex of catalogue.json's bytes
    digest: str

    # ------------------------------------------------------------------ lookups

    def canonical(self, sub: str, name: str) -> str | None:
        """Canonical symbol of the object that ``mmcv/ops/<sub>.py`` binds to ``name``."""
        module = self.submodules.get(sub)
        if module is None:
            return None
        seen = set()
        while name not in module.names:
            origin = module.imports.get(name)
            if origin is None or (module.name, name) in seen:
                return None
            seen.add((module.name, name))
            sub, _, name = origin.partition(".")
            module = self.submodules.get(sub)
            if module is None:
                return None
        exported = self._export_of.get((module.name, name))
        if exported is not None:
            return "mmcv.ops." + exported
        return f"mmcv.ops.{module.name}.{name}"

    def symbol(self, module: str, name: str) -> str | None:
        """What ``from <module> import <name>`` binds, as a canonical symbol, or None if unknown.

        ``module`` is ``"mmcv.ops"``, ``"mmcv.ops.<sub>"`` or a module holding a deprecated
        re-export (``"mmcv.cnn.bricks.transformer"``). For ``mmcv.ops`` an exported name wins over a
        same-named submodule, as in Python (``from mmcv.ops import nms`` is the function).
        """
        if module == "mmcv.ops":
            if name in self.exports:
                return "mmcv.ops." + name
            if name in self.submodules:
                return "mmcv.ops." + name
            return None
        if module.startswith("mmcv.ops."):
            sub = module[len("mmcv.ops."):]
            if sub in self.submodules:
                return self.canonical(sub, name)
            return None
        origin = self.deprecated_reexports.get(f"{module}.{name}")
        if origin is not None:
            origin_module, _, origin_name = origin.rpartition(".")
            if origin_module != module:
                return self.symbol(origin_module, origin_name)
        return None

    def submodule_of(self, symbol: str) -> str | None:
        """The mmcv.ops submodule that defines (or, for ``mmcv._ext.<fn>``, first uses) ``symbol``.

        ``"mmcv.ops.nms"`` -> ``"nms"``, ``"mmcv.ops.RoIAlign"`` -> ``"roi_align"``,
        ``"mmcv.ops.merge_cells.ConcatCell"`` -> ``"merge_cells"``, ``"mmcv._ext.nms"`` -> ``"nms"``;
        None for anything unknown.
        """
        if symbol.startswith("mmcv._ext."):
            fn = self.ext_functions.get(symbol[len("mmcv._ext."):])
            return fn.submodules[0] if fn is not None and fn.submodules else None
        if not symbol.startswith("mmcv.ops."):
            return None
        rest = symbol[len("mmcv.ops."):]
        if "." not in rest:
            if rest in self.exports:
                return self.exports[rest]
            return rest if rest in self.submodules else None
        sub, _, name = rest.partition(".")
        module = self.submodules.get(sub)
        if module is None or "." in name:
            return None
        if name in module.names:
            return sub
        origin = self.canonical(sub, name)  # a name the submodule imports from a sibling
        return self.submodule_of(origin) if origin is not None else None

    def ext_symbol(self, fn: str) -> str:
        """``"mmcv._ext." + fn``."""
        return "mmcv._ext." + fn

    @functools.cached_property
    def _export_of(self) -> Mapping[tuple[str, str], str]:
        """(submodule, name it defines) -> the name mmcv.ops exports it under."""
        return {(sub, self.export_aliases.get(name, name)): name for name, sub in self.exports.items()}


# ---------------------------------------------------------------------- loading


def _tuple(values: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in values)


def parse_catalogue(data: bytes) -> Catalogue:
    """Build a :class:`Catalogue` from the bytes of a catalogue.json."""
    raw = json.loads(data.decode("utf-8"))
    if raw.get("format") != 1:
        raise ValueError(f"unsupported catalogue format {raw.get('format')!r}")
    ro = MappingProxyType
    exports = raw["exports"]
    submodules = {
        name: Submodule(
            name=name,
            names=ro({n: _tuple(v) for n, v in s["names"].items()}),
            ext_functions=_tuple(s["ext_functions"]),
            versions=_tuple(s["versions"]),
            imports=ro(dict(s.get("imports", {}))),
        )
        for name, s in raw["submodules"].items()
    }
    ext_functions = {
        name: ExtFunction(
            name=name,
            versions=_tuple(e["versions"]),
            args=_tuple(e["args"]),
            declaration=e["declaration"],
            submodules=_tuple(e["submodules"]),
            overloads=tuple(_tuple(o) for o in e.get("overloads", ())),
            older=ro({v: ExtSignature(_tuple(o["args"]), o["declaration"]) for v, o in e.get("older", {}).items()}),
        )
        for name, e in raw["ext_functions"].items()
    }
    return Catalogue(
        versions=_tuple(raw["versions"]),
        exports=ro({n: e["submodule"] for n, e in exports.items()}),
        export_versions=ro({n: _tuple(e["versions"]) for n, e in exports.items()}),
        export_aliases=ro({n: e["name"] for n, e in exports.items() if "name" in e}),
        submodules=ro(submodules),
        ext_functions=ro(ext_functions),
        config_types=ro(dict(raw["config_types"])),
        deprecated_reexports=ro(dict(raw["deprecated_reexports"])),
        digest=hashlib.sha256(data).hexdigest(),
    )


def catalogue_bytes() -> bytes:
    """The raw bytes of the packaged catalogue.json."""
    return (files("mmcv_migrate.rewrites") / "catalogue.json").read_bytes()


@functools.lru_cache(maxsize=None)
def load_catalogue() -> Catalogue:
    """The packaged catalogue (read once, then cached)."""
    return parse_catalogue(catalogue_bytes())
