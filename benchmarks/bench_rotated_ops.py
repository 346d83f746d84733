"""Rotated-detector ops: active_rotated_filter and rotated_feature_align, mmcv_runtime against compiled mmcv CPU.

    python benchmarks/bench_rotated_ops.py [--repeat 5] [--threads N] [--memory] [--only TEXT] [--json OUT]

Sizes of S2ANet / ReDet heads: active_rotated_filter on a 256x256x8x3x3 oriented filter bank (8
rotations), as ORConv2d runs it every forward; rotated_feature_align on a 2x256x100x168 map
(stride 8) with one refined rotated anchor per pixel, points 1 and 5. Forward and forward+backward.
mmcv 2.2.0 has CPU kernels for both; with the oracle importable it prints runtime/mmcv ratios.
"""

from __future__ import annotations

import importlib
import math
from typing import Dict, List

import torch
from _harness import mmcv_ops as mm
from _harness import forward_backward, run

arf = importlib.import_module("mmcv_runtime.ops.active_rotated_filter")
rfa = importlib.import_module("mmcv_runtime.ops.rotated_feature_align")

SCALE = 1 / 8


def orn_indices(orientations: int = 8, k: int = 3, rotations: int = 8) -> torch.Tensor:
    """(O, k, k, R) int32 1-based targets: the 3x3 ring turned by 45 degrees per rotation step and the
    orientation channel cycled (a permutation per rotation, as ORConv2d's tables)."""
    ring = [(0, 0), (0, 1), (0, 2), (1, 2), (2, 2), (2, 1), (2, 0), (1, 0)]
    o, y, x, r = torch.meshgrid(torch.arange(orientations), torch.arange(k), torch.arange(k),
                                torch.arange(rotations), indexing="ij")
    pos = torch.full((k, k), -1, dtype=torch.long)
    for i, (a, b) in enumerate(ring):
        pos[a, b] = i
    ring_t = torch.tensor(ring)
    p = pos[y, x]
    moved = ring_t[(p + r * 8 // rotations) % 8]
    ty = torch.where(p >= 0, moved[..., 0], y)
    tx = torch.where(p >= 0, moved[..., 1], x)
    to = (o + r * orientations // rotations) % orientations
    return (to * k * k + ty * k + tx + 1).int()


def rboxes(n: int = 2, h: int = 100, w: int = 168) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    k = n * h * w
    # field 0 is read as y and field 1 as x by the kernels
    ctr = torch.rand(k, 2, generator=g) * torch.tensor([h / SCALE, w / SCALE])
    size = torch.rand(k, 2, generator=g) * 200 + 16
    angle = (torch.rand(k, 1, generator=g) - 0.5) * math.pi
    return torch.cat([ctr, size, angle], 1).view(n, h, w, 5)



def cases() -> List[Dict]:
    weight = torch.randn(256, 256, 8, 3, 3, generator=torch.Generator().manual_seed(0))
    indices = orn_indices()
    x = torch.randn(2, 256, 100, 168, generator=torch.Generator().manual_seed(2))
    boxes = rboxes()
    out = []

    def add(name, runtime_fn, mmcv_fn, first, args):
        out.append(dict(name=f"{name} fwd", runtime=lambda: runtime_fn(first, *args),
                        mmcv=(lambda: mmcv_fn(first, *args)) if mmcv_fn else None))
        out.append(dict(name=f"{name} fwd+bwd", runtime=forward_backward(runtime_fn, first, *args, dense_grad=True),
                        mmcv=forward_backward(mmcv_fn, first, *args, dense_grad=True) if mmcv_fn else None))

    add("active_rotated_filter 256x256x8x3x3 R=8", arf.active_rotated_filter,
        mm.active_rotated_filter if mm else None, weight, (indices,))
    for points in (1, 5):
        add(f"rotated_feature_align 2x256x100x168 points={points}", rfa.rotated_feature_align,
            mm.rotated_feature_align if mm else None, x, (boxes, SCALE, points))
    return out


def main(argv=None) -> int:
    return run(cases(), __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())
