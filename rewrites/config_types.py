"""Config dicts whose ``type`` names an mmcv op or registry alias: ``dict(type='RoIAlign')``.

Reported, never rewritten: the names stay valid because the runtime registers the same ones; the
finding tells the user the runtime must be imported (``import mmcv_runtime.ops``) for that to hold.
"""

from __future__ import annotations

from typing import Optional

import libcst as cst

from mmcv_migrate.findings import KIND_CONFIG
from mmcv_migrate.rewrites.context import FileContext

RULE = "config-type"


def _string(node: cst.BaseExpression) -> Optional[str]:
    if isinstance(node, cst.SimpleString):
        value = node.evaluated_value
        return value if isinstance(value, str) else None
    return None


def run(ctx: FileContext) -> None:
    types = ctx.catalogue.config_types
    for call in ctx.calls:
        if isinstance(call.func, cst.Name) and call.func.value == "dict":
            for arg in call.args:
                if arg.keyword is not None and arg.keyword.value == "type":
                    _report(ctx, arg.value, types)
    for node in ctx.dicts:
        for element in node.elements:
            if isinstance(element, cst.DictElement) and _string(element.key) == "type":
                _report(ctx, element.value, types)


def _report(ctx: FileContext, value: cst.BaseExpression, types) -> None:
    name = _string(value)
    symbol = types.get(name) if name is not None else None
    if symbol is None:
        return
    status = ctx.coverage.status(symbol)
    ctx.add(value, rule=RULE, kind=KIND_CONFIG, symbol=symbol, status=status, fixable=False, remaining=False,
            message=f"config type '{name}' resolves to {symbol} at run time: import mmcv_runtime.ops so the "
            f"runtime registers it; " + ctx.coverage.describe(symbol))
