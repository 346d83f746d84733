"""Project-local compiled extensions: ``CUDAExtension``/``CppExtension`` and ``cpp_extension.load``.

Reported, never rewritten: they are the project's own kernels, not mmcv's, and need a toolchain to
build. The report lets a user see every compiled dependency of the project in one place.
"""

from __future__ import annotations

from typing import Optional

import libcst as cst

from mmcv_migrate.findings import KIND_COMPILED_EXTENSION, UNCONVERTED
from mmcv_migrate.rewrites import local_ops
from mmcv_migrate.rewrites.collect import dotted_name
from mmcv_migrate.rewrites.context import FileContext

RULE = "compiled-extension"

_BUILDERS = {
    "torch.utils.cpp_extension.CUDAExtension": "builds a CUDA extension",
    "torch.utils.cpp_extension.CppExtension": "builds a C++ extension",
    "torch.utils.cpp_extension.load": "JIT-compiles an extension",
    "torch.utils.cpp_extension.load_inline": "JIT-compiles an inline extension",
}


def _name_argument(call: cst.Call) -> Optional[str]:
    for index, arg in enumerate(call.args):
        if (arg.keyword is not None and arg.keyword.value == "name") or (arg.keyword is None and index == 0):
            if isinstance(arg.value, cst.SimpleString):
                value = arg.value.evaluated_value
                return value if isinstance(value, str) else None
    return None


def run(ctx: FileContext) -> None:
    _direct_calls(ctx)
    _aliased_builders(ctx)


def _aliased_builders(ctx: FileContext) -> None:
    """``extension = CUDAExtension`` ... ``extension(...)`` (mmdet3d's and Sparse4D's ``make_cuda_ext``):
    the builder is read as a value, not called by its own name; report where it is read."""
    callees = {id(call.func) for call in ctx.calls}
    for uses in ctx.uses.values():
        for use in uses:
            resolved = ctx.resolve(use.dotted)
            if resolved in _BUILDERS and id(use.node) not in callees and use.in_getattr is None:
                ctx.add(use.node, rule=RULE, kind=KIND_COMPILED_EXTENSION, symbol=resolved, status=UNCONVERTED,
                        fixable=False, remaining=False,
                        message=f"{_BUILDERS[resolved]} (called through another name): a project-local "
                        "compiled op, not rewritten; it needs a compiler and CUDA toolkit to build")


def _direct_calls(ctx: FileContext) -> None:
    for call in ctx.calls:
        func = dotted_name(call.func)
        resolved = ctx.resolve(func) if func else None
        if resolved not in _BUILDERS:
            continue
        name = _name_argument(call)
        replaced = next((op for op in local_ops.LOCAL_OPS if name and name.rpartition(".")[2] == op.extension), None)
        note = ("not rewritten; it needs a compiler and CUDA toolkit to build" if replaced is None else
                f"mmcv_runtime provides this op: apply points its imports at {replaced.runtime_extension}, "
                "after which this build step can go")
        ctx.add(call, rule=RULE, kind=KIND_COMPILED_EXTENSION, symbol=resolved, status=UNCONVERTED,
                fixable=False, remaining=False,
                message=f"{_BUILDERS[resolved]}{' ' + repr(name) if name else ''}: a project-local compiled op, {note}")
