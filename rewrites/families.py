"""The mmcv namespaces the tool rewrites and where each lands in the runtime.

A *family* recognises fully qualified paths of its namespace (``mmcv.ops.RoIAlign``,
``mmcv._ext.nms``, ``mmcv.utils.ext_loader.load_ext``, a deprecated re-export) and says which symbol
a path names, where that symbol lives in ``mmcv_runtime``, and whether the runtime provides it.
Paths already in the runtime (``mmcv_runtime.ops.nms``) are recognised too, so a scan after
``apply`` still counts the converted uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from mmcv_migrate.findings import CONVERTED, UNCONVERTED
from mmcv_migrate.findings import KIND_COMPILED_EXTENSION, KIND_EXT_LOADER, KIND_EXT_MODULE, KIND_IMPORT
from mmcv_migrate.rewrites import local_ops
from mmcv_migrate.rewrites.context import FileContext

RULE_OPS = "mmcv-ops"
RULE_DEPRECATED = "deprecated-import"
RULE_EXT = "mmcv-ext"
RULE_EXT_LOADER = "ext-loader"
RULE_LOCAL_OP = "local-op"


@dataclass(frozen=True)
class Target:
    """What a fully qualified path names, and where the runtime has it."""

    rule: str
    import_kind: str
    path: str  # the mmcv path matched, e.g. "mmcv.ops.RoIAlign" (a prefix of the path asked about)
    symbol: str  # canonical symbol for reports, e.g. "mmcv.ops.RoIAlign"
    runtime_path: str  # e.g. "mmcv_runtime.ops.RoIAlign"
    status: str
    convertible: bool  # apply may point this use at the runtime
    is_module: bool  # the path names a module (a binding to it has attribute uses)
    message: str
    in_runtime: bool = False  # the path was already a runtime path


def _split(path: str, prefix: str) -> Optional[Tuple[str, ...]]:
    if path == prefix:
        return ()
    if path.startswith(prefix + "."):
        return tuple(path[len(prefix) + 1 :].split("."))
    return None


def _ops(path: str, ctx: FileContext, module_context: bool) -> Optional[Target]:
    rest = _split(path, "mmcv.ops")
    if rest is None:
        return None
    cat = ctx.catalogue
    if not rest:
        return Target(RULE_OPS, KIND_IMPORT, "mmcv.ops", "mmcv.ops", "mmcv_runtime.ops", CONVERTED, True, True,
                      "mmcv_runtime.ops mirrors the mmcv.ops package")
    first = rest[0]
    if len(rest) > 1 and first in cat.submodules:
        # ``mmcv.ops.nms.batched_nms``: the submodule's name, even where an export shares the
        # submodule's name (``nms``, ``roi_align``, ``carafe``).
        inner = cat.symbol(f"mmcv.ops.{first}", rest[1])
        if inner is not None:
            return _ops_symbol(f"mmcv.ops.{first}.{rest[1]}", inner, ctx)
    if module_context and len(rest) == 1 and first in cat.submodules:
        submodule = f"mmcv.ops.{first}"
        return _ops_symbol(submodule, submodule, ctx, is_module=True)
    symbol = cat.symbol("mmcv.ops", first)
    matched = f"mmcv.ops.{first}"
    if symbol is None:
        return Target(RULE_OPS, KIND_IMPORT, matched, matched, "mmcv_runtime.ops." + first, UNCONVERTED, False,
                      False, f"{matched} is not a public name of mmcv.ops in mmcv {' or '.join(cat.versions)}")
    return _ops_symbol(matched, symbol, ctx)


def _ops_symbol(matched: str, symbol: str, ctx: FileContext, is_module: bool = False) -> Target:
    last = symbol.rpartition(".")[2]
    is_module = is_module or (symbol.count(".") == 2 and last in ctx.catalogue.submodules
                              and last not in ctx.catalogue.exports)
    runtime_path = "mmcv_runtime" + matched[len("mmcv"):]
    return Target(RULE_OPS, KIND_IMPORT, matched, symbol, runtime_path, ctx.coverage.status(symbol),
                  ctx.coverage.provides(symbol), is_module, ctx.coverage.describe(symbol))


def _deprecated(path: str, ctx: FileContext, module_context: bool) -> Optional[Target]:
    for old, new in ctx.catalogue.deprecated_reexports.items():
        if path == old or path.startswith(old + "."):
            sub, _, name = new.rpartition(".")
            symbol = ctx.catalogue.symbol(sub, name) or new
            return Target(RULE_DEPRECATED, KIND_IMPORT, old, symbol, "mmcv_runtime" + new[len("mmcv"):],
                          ctx.coverage.status(symbol), ctx.coverage.provides(symbol), False,
                          f"deprecated re-export of {new}; " + ctx.coverage.describe(symbol))
    return None


def _ext(path: str, ctx: FileContext, module_context: bool) -> Optional[Target]:
    rest = _split(path, "mmcv._ext")
    if rest is None:
        return None
    if not rest:
        return Target(RULE_EXT, KIND_EXT_MODULE, "mmcv._ext", "mmcv._ext", "mmcv_runtime.ext", CONVERTED, True,
                      True, "mmcv_runtime.ext is the runtime's _ext ABI: every function exists, unimplemented ones raise")
    matched = f"mmcv._ext.{rest[0]}"
    if rest[0] not in ctx.catalogue.ext_functions:
        return Target(RULE_EXT, KIND_EXT_MODULE, matched, matched, "mmcv_runtime.ext." + rest[0], UNCONVERTED,
                      False, False, f"{matched} is not an _ext function of mmcv {' or '.join(ctx.catalogue.versions)}")
    # Always pointable at the runtime: its _ext ABI has every name (unimplemented ones raise).
    return Target(RULE_EXT, KIND_EXT_MODULE, matched, matched, "mmcv_runtime.ext." + rest[0],
                  ctx.coverage.status(matched), True, False, ctx.coverage.describe(matched))


_EXT_LOADER_API = ("load_ext", "check_ops_exist")


def _ext_loader(path: str, ctx: FileContext, module_context: bool) -> Optional[Target]:
    rest = _split(path, "mmcv.utils.ext_loader")
    if rest is None:
        return None
    module = "mmcv.utils.ext_loader"
    if not rest:
        return Target(RULE_EXT_LOADER, KIND_EXT_LOADER, module, module, "mmcv_runtime.ext_loader", CONVERTED,
                      True, True, "mmcv_runtime.ext_loader keeps mmcv's load_ext contract")
    matched = f"{module}.{rest[0]}"
    known = rest[0] in _EXT_LOADER_API
    return Target(RULE_EXT_LOADER, KIND_EXT_LOADER, matched, matched, "mmcv_runtime.ext_loader." + rest[0],
                  CONVERTED if known else UNCONVERTED, known, False,
                  f"{matched} -> mmcv_runtime.ext_loader.{rest[0]}" if known
                  else f"{matched} is parrots-only or private; mmcv_runtime.ext_loader does not provide it")


def _local_op(path: str) -> Optional[Target]:
    """A project-local compiled op the runtime replaces (see :mod:`.local_ops`)."""
    found = local_ops.match(path)
    if found is None:
        return None
    op = found.op
    kind = KIND_COMPILED_EXTENSION if found.runtime_path.startswith(op.runtime_extension) else KIND_IMPORT
    if found.in_runtime:
        return Target(RULE_LOCAL_OP, kind, found.matched, found.matched, found.runtime_path,
                      CONVERTED if found.provided else UNCONVERTED, False, found.is_module,
                      "already on the runtime" + ("" if found.provided else f": {found.runtime_path} does not exist"),
                      in_runtime=True)
    if not found.provided:
        return Target(RULE_LOCAL_OP, kind, found.matched, found.matched, found.runtime_path, UNCONVERTED, False,
                      found.is_module, f"{found.matched} is not a function of {op.extension} that the runtime knows")
    what = (f"the project-local compiled op {op.extension}" if kind == KIND_COMPILED_EXTENSION
            else f"the wrapper of the project-local compiled op {op.extension}")
    return Target(RULE_LOCAL_OP, kind, found.matched, found.matched, found.runtime_path, CONVERTED, True,
                  found.is_module, f"{what}: mmcv_runtime provides it with the CUDA kernel's semantics on any device")


_FAMILIES = (_ops, _deprecated, _ext, _ext_loader)

# Runtime namespaces and the mmcv namespaces they stand for (longest first).
_RUNTIME_PREFIXES = (
    ("mmcv_runtime.ext_loader", "mmcv.utils.ext_loader"),
    ("mmcv_runtime.ops", "mmcv.ops"),
    ("mmcv_runtime.ext", "mmcv._ext"),
)


def classify(path: str, ctx: FileContext, module_context: bool = False) -> Optional[Target]:
    """The family target a fully qualified path names, or None when it is not ours.

    ``module_context``: the path is known to name a module (``import mmcv.ops.nms as m``), so a
    submodule wins over an export of the same name.
    """
    local = _local_op(path)
    if local is not None:
        return local
    if path.startswith("mmcv_runtime"):
        for runtime, mmcv in _RUNTIME_PREFIXES:
            rest = _split(path, runtime)
            if rest is not None:
                target = classify(".".join((mmcv,) + rest), ctx, module_context)
                if target is None:
                    return None
                return Target(target.rule, target.import_kind, runtime + target.path[len(mmcv):], target.symbol,
                              target.runtime_path, target.status, False, target.is_module,
                              "already on the runtime: " + target.message, in_runtime=True)
        return None
    if not path.startswith("mmcv"):
        return None
    for family in _FAMILIES:
        target = family(path, ctx, module_context)
        if target is not None:
            return target
    return None
