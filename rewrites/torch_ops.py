"""``torch.ops.mmcv.*``: ops mmcv registers with the dispatcher from its compiled library.

Reported, never rewritten: there is no dispatcher registration to point them at; the code must call
the op through ``mmcv_runtime.ops`` instead.
"""

from __future__ import annotations

from mmcv_migrate.findings import KIND_TORCH_OPS, UNCONVERTED
from mmcv_migrate.rewrites.context import FileContext

RULE = "torch-ops"


def run(ctx: FileContext) -> None:
    for head, uses in ctx.uses.items():
        bound = ctx.binding(head)
        if bound is None or bound.target != "torch":
            continue
        for use in uses:
            parts = use.dotted.split(".")
            if parts[1:3] != ["ops", "mmcv"]:
                continue
            symbol = "torch.ops.mmcv" + ("." + parts[3] if len(parts) > 3 else "")
            ctx.add(use.node, rule=RULE, kind=KIND_TORCH_OPS, symbol=symbol, status=UNCONVERTED, fixable=False,
                    remaining=True, message=f"{symbol} needs mmcv's compiled library; call the op through "
                    "mmcv_runtime.ops instead")
