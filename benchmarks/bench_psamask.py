"""psa_mask (PSANet): mmcv_runtime against compiled mmcv CPU, in the same process, interleaved, with peak memory.

    python benchmarks/bench_psamask.py [--repeat 5] [--threads N] [--memory] [--only TEXT] [--json OUT]

PSANet-like sizes: the over-complete mask (mask_size (2H-1, 2W-1) = (59, 59)) on a 2x30x30 map and
a 7x7 window on a 2x60x60 map (output 2x3600x60x60), collect and distribute, forward and
forward+backward (dense gradient of ones for both: mmcv's kernel views grad_output flat). mmcv 2.2.0 has a CPU kernel, so with the
oracle importable (see bench_nms.py) it prints runtime/mmcv ratios. Goal: at or below 1.0.
"""

from __future__ import annotations

import importlib
from typing import Dict, List

import torch
from _harness import mmcv_ops as mm
from _harness import forward_backward, run

rt = importlib.import_module("mmcv_runtime.ops.psa_mask")
mm_psa = importlib.import_module("mmcv.ops.psa_mask").psa_mask if mm else None


def cases() -> List[Dict]:
    out = []
    for n, h, w, size in ((2, 30, 30, (59, 59)), (2, 60, 60, (7, 7))):
        x = torch.randn(n, size[0] * size[1], h, w, generator=torch.Generator().manual_seed(0))
        for psa_type, kind in ((0, "collect"), (1, "distribute")):
            name = f"psa_mask {kind} {n}x{h}x{w} mask {size[0]}x{size[1]}"
            args = (psa_type, size)
            out.append(dict(name=f"{name} fwd", runtime=lambda x=x, a=args: rt.psa_mask(x, *a),
                            mmcv=(lambda x=x, a=args: mm_psa(x, *a)) if mm_psa else None))
            out.append(dict(name=f"{name} fwd+bwd", runtime=forward_backward(rt.psa_mask, x, *args, dense_grad=True),
                            mmcv=forward_backward(mm_psa, x, *args, dense_grad=True) if mm_psa else None))
    return out


def main(argv=None) -> int:
    return run(cases(), __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())
