"""Multi-scale deformable attention: mmcv_runtime against mmcv's ``multi_scale_deformable_attn_pytorch``.

    python benchmarks/bench_msda.py [--repeat 5] [--threads N] [--memory] [--only TEXT] [--json OUT]
    # against the oracle (mmcv 2.2.0 built from source):
    PYTHONPATH=~/.cache/mmcv-ref/src/mmcv-2.2.0 ~/.cache/mmcv-ref/venv/bin/python benchmarks/bench_msda.py

Sizes of BEVFormer's spatial cross-attention: the value holds the 6 cameras' features (bs = 6) over
4 levels of shapes (116, 200), (58, 100), (29, 50), (15, 25) (a 900 x 1600 image at strides 8-64),
8 heads of dim 32, 4 (mmcv's default) or 8 (BEVFormer's) points per level, 2500 rebatched queries
per camera, sampling around a reference point per query (some points fall off the image), forward
and forward+backward. mmcv has no CPU kernel for this op: on CPU its module runs
``multi_scale_deformable_attn_pytorch`` (grid_sample per level), which is the reference here. Without
the oracle the same algorithm, transcribed below, stands in for it (rows marked "[local ref]").
Goal: at most 0.5x the reference's time and peak memory (``--memory``).
"""

from __future__ import annotations

import importlib
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F
from _harness import mmcv_ops as mm
from _harness import forward_backward, run

msda = importlib.import_module("mmcv_runtime.ops.multi_scale_deform_attn")

SHAPES = torch.tensor([(116, 200), (58, 100), (29, 50), (15, 25)])
CAMERAS, HEADS, HEAD_DIM, QUERIES = 6, 8, 32, 2500


def local_reference(value, shapes, loc, attn):
    """mmcv's ``multi_scale_deformable_attn_pytorch`` algorithm: grid_sample per level, then the
    attention-weighted sum of all levels' and points' samples."""
    bs, _, heads, dim = value.shape
    _, queries, _, levels, points, _ = loc.shape
    per_level = value.split([int(h) * int(w) for h, w in shapes.tolist()], dim=1)
    samples = []
    for level, (h, w) in enumerate(shapes.tolist()):
        maps = per_level[level].flatten(2).transpose(1, 2).reshape(bs * heads, dim, h, w)
        grid = (2 * loc[:, :, :, level] - 1).transpose(1, 2).flatten(0, 1)
        samples.append(F.grid_sample(maps, grid, mode="bilinear", padding_mode="zeros", align_corners=False))
    weights = attn.transpose(1, 2).reshape(bs * heads, 1, queries, levels * points)
    out = (torch.stack(samples, dim=-2).flatten(-2) * weights).sum(-1).view(bs, heads * dim, queries)
    return out.transpose(1, 2).contiguous()


def reference_fn():
    if mm is not None:
        return importlib.import_module("mmcv.ops.multi_scale_deform_attn").multi_scale_deformable_attn_pytorch, ""
    return local_reference, " [local ref]"


def inputs(points: int):
    g = torch.Generator().manual_seed(0)
    keys = int(SHAPES.prod(1).sum())
    value = torch.randn(CAMERAS, keys, HEADS, HEAD_DIM, generator=g)
    centre = torch.rand(CAMERAS, QUERIES, 1, 1, 1, 2, generator=g) * 1.1 - 0.05
    loc = centre + torch.randn(CAMERAS, QUERIES, HEADS, len(SHAPES), points, 2, generator=g) * 0.05
    attn = torch.rand(CAMERAS, QUERIES, HEADS, len(SHAPES), points, generator=g).softmax(-1)
    return value, loc, attn



def with_shapes(fn: Callable) -> Callable:
    """``fn(value, loc, attn)`` for the op's ``fn(value, spatial_shapes, loc, attn)``."""
    return lambda value, loc, attn: fn(value, SHAPES, loc, attn)


def forward(fn: Callable, value, loc, attn) -> Callable:
    return lambda: fn(value, SHAPES, loc, attn)


def cases() -> List[Dict]:
    reference, mark = reference_fn()
    runtime = msda.multi_scale_deformable_attn_pytorch
    out = []
    for points in (4, 8):
        args = inputs(points)
        name = f"msda 6x{QUERIES}q 4lvl {HEADS}x{HEAD_DIM} {points}pts"
        out.append(dict(name=f"{name} fwd{mark}", runtime=forward(runtime, *args), mmcv=forward(reference, *args)))
        out.append(dict(name=f"{name} fwd+bwd{mark}", runtime=forward_backward(with_shapes(runtime), args),
                        mmcv=forward_backward(with_shapes(reference), args)))
    return out


def main(argv=None) -> int:
    return run(cases(), __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())
