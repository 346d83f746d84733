"""``ext_module = ext_loader.load_ext('_ext', [...])`` and the ``ext_module.fn(...)`` calls it enables.

Nothing here is rewritten: pointing the ext_loader import at the runtime (see
:mod:`.module_imports`) makes every ``load_ext`` call and ``ext_module.fn`` call work unchanged.
These findings say which ``_ext`` functions the code needs and which the runtime implements.
"""

from __future__ import annotations

from typing import List, Optional

import libcst as cst

from mmcv_migrate.findings import CONVERTED, KIND_EXT_CALL, KIND_EXT_LOADER, PARTIAL, UNCONVERTED
from mmcv_migrate.rewrites.collect import dotted_name
from mmcv_migrate.rewrites.context import FileContext
from mmcv_migrate.rewrites.families import RULE_EXT, RULE_EXT_LOADER

_LOADERS = {"mmcv.utils.ext_loader.load_ext": False, "mmcv_runtime.ext_loader.load_ext": True}


def _literal_strings(node: cst.BaseExpression) -> Optional[List[str]]:
    if not isinstance(node, (cst.List, cst.Tuple)):
        return None
    names = []
    for element in node.elements:
        if not isinstance(element.value, cst.SimpleString):
            return None
        names.append(element.value.evaluated_value)
    return names


def run(ctx: FileContext) -> None:
    implemented = ctx.coverage.implemented_ext_functions()
    for assign, call in ctx.assigns:
        func = dotted_name(call.func)
        loader = ctx.resolve(func) if func else None
        if loader not in _LOADERS:
            continue
        on_runtime = _LOADERS[loader]
        loader_fixable = any(
            f.fixable and f.rule == RULE_EXT_LOADER and f.kind == KIND_EXT_LOADER for f in ctx.findings
        )
        funcs = _literal_strings(call.args[1].value) if len(call.args) > 1 else None
        if funcs is None:
            status, detail = PARTIAL, "the function list is not a literal"
        else:
            have = [f for f in funcs if f in implemented]
            status = CONVERTED if len(have) == len(funcs) else PARTIAL if have else UNCONVERTED
            missing = [f for f in funcs if f not in implemented]
            detail = f"loads {len(funcs)} _ext function(s), the runtime implements {len(have)}"
            if missing:
                detail += " (missing: " + ", ".join(missing) + ")"
        where = "through mmcv_runtime.ext_loader" if on_runtime else "through mmcv's ext_loader"
        ctx.add(call, rule=RULE_EXT_LOADER, kind=KIND_EXT_LOADER, symbol="mmcv._ext", status=status,
                fixable=False, remaining=not on_runtime,
                message=f"{detail} {where}" + ("; fixed by rewriting the ext_loader import" if loader_fixable else ""))
        for target in assign.targets:
            if isinstance(target.target, cst.Name):
                _report_calls(ctx, target.target.value, implemented, on_runtime)


def _report_calls(ctx: FileContext, name: str, implemented, on_runtime: bool) -> None:
    for use in ctx.uses.get(name, []):
        if use.dotted == name:
            continue
        fn = use.dotted.split(".")[1]
        symbol = ctx.catalogue.ext_symbol(fn)
        known = fn in ctx.catalogue.ext_functions
        status = CONVERTED if fn in implemented else UNCONVERTED
        if not known:
            message = f"{symbol} is not an _ext function of mmcv {' or '.join(ctx.catalogue.versions)}"
        elif fn in implemented:
            message = f"{symbol}: implemented by the runtime's _ext ABI"
        else:
            message = ctx.coverage.describe(symbol)
        ctx.add(use.node, rule=RULE_EXT, kind=KIND_EXT_CALL, symbol=symbol, status=status, fixable=False,
                remaining=(not on_runtime) or status == UNCONVERTED, message=message)
