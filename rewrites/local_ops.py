"""Project-local compiled ops that the runtime replaces, and how their imports are recognised.

Some projects carry their own CUDA op next to their mmcv use: Sparse4D, SparseDrive and their forks
build ``deformable_aggregation_ext`` (``setup.py`` ``CUDAExtension`` or ``cpp_extension.load``),
wrap it in ``ops/deformable_aggregation.py`` (``from . import deformable_aggregation_ext``) and import
the wrapper as ``from ..ops import deformable_aggregation_function as DAF``, usually inside
``try/except`` with a ``grid_sample`` fallback whose boundary rule differs from the kernel's. Without
a CUDA toolchain the import fails and the fallback silently changes the numbers.

The runtime provides both layers, so ``apply`` rewrites both kinds of import:

- the wrapper's import of the compiled module -> ``mmcv_runtime.local_ext.<extension>``, an adapter
  with the extension's functions, signatures and in-place gradient outputs (the project's own
  autograd Function keeps working unchanged);
- imports of the wrapper's public names from the op package (a module named like one of
  ``wrapper_modules``) -> the runtime's op module with the same names and signatures.

This table is the one place that knows these ops; a test checks it against the runtime modules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

LOCAL_EXT_PACKAGE = "mmcv_runtime.local_ext"


@dataclass(frozen=True)
class LocalOp:
    extension: str
    """the compiled module's name, e.g. ``deformable_aggregation_ext``"""
    functions: Tuple[str, ...]
    """the compiled module's functions (the runtime adapter defines each one)"""
    wrapper_names: Tuple[str, ...]
    """public names of the project's wrapper package that the runtime op module provides"""
    wrapper_modules: Tuple[str, ...]
    """last components of the modules those names are imported from (``..ops``, ``.deformable_aggregation``)"""
    runtime_module: str
    """the runtime module providing ``wrapper_names``"""

    @property
    def runtime_extension(self) -> str:
        return f"{LOCAL_EXT_PACKAGE}.{self.extension}"


LOCAL_OPS: Tuple[LocalOp, ...] = (
    LocalOp(
        extension="deformable_aggregation_ext",
        functions=("deformable_aggregation_forward", "deformable_aggregation_backward"),
        wrapper_names=("deformable_aggregation_function", "DeformableAggregationFunction", "feature_maps_format"),
        wrapper_modules=("ops", "deformable_aggregation"),
        runtime_module="mmcv_runtime.ops.deformable_aggregation",
    ),
)

#: Byte tokens of files that may use one of these ops (the engine's prefilter).
PREFILTER_TOKENS: Tuple[bytes, ...] = tuple(sorted(
    {op.extension.encode() for op in LOCAL_OPS} | {name.encode() for op in LOCAL_OPS for name in op.wrapper_names}
))


@dataclass(frozen=True)
class LocalMatch:
    op: LocalOp
    matched: str  # the prefix of the path that names the op's object, e.g. "detector.ops.deformable_aggregation_ext"
    runtime_path: str  # where that object is in the runtime
    is_module: bool  # the compiled module itself (its functions are used through the binding)
    provided: bool  # the runtime has this name
    in_runtime: bool  # the path already points at the runtime


def match(path: str) -> Optional[LocalMatch]:
    """The local op a fully qualified path names (``<pkg>.ops.deformable_aggregation_function``,
    ``<pkg>.deformable_aggregation_ext[.fn]``, or their runtime homes), else None."""
    parts = path.split(".")
    for op in LOCAL_OPS:
        for runtime, names in ((op.runtime_extension, op.functions), (op.runtime_module, op.wrapper_names)):
            if path == runtime or path.startswith(runtime + "."):
                rest = path[len(runtime) + 1:]
                return LocalMatch(op, path, path, is_module=not rest, provided=not rest or rest in names,
                                  in_runtime=True)
        if parts[0] in ("mmcv", "mmcv_runtime"):
            continue
        if op.extension in parts:
            at = parts.index(op.extension)
            matched = ".".join(parts[: at + 1])
            rest = parts[at + 1:]
            if not rest:
                return LocalMatch(op, matched, op.runtime_extension, True, True, False)
            name = rest[0]
            return LocalMatch(op, f"{matched}.{name}", f"{op.runtime_extension}.{name}", False,
                              name in op.functions, False)
        if len(parts) >= 2 and parts[-1] in op.wrapper_names and parts[-2] in op.wrapper_modules:
            return LocalMatch(op, path, f"{op.runtime_module}.{parts[-1]}", False, True, False)
    return None
