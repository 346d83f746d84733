"""Deformable aggregation (Sparse4D / SparseDrive): mmcv_runtime against the projects' grid_sample path.

    python benchmarks/bench_deformable_aggregation.py [--repeat 5] [--threads N] [--memory] [--only TEXT]
                                                      [--json OUT] [--device cpu|cuda]

SparseDrive's sizes: 900 anchors x 13 key points, 6 cameras, 4 levels of a 256x704 image (strides
4/8/16/32: 64x176, 32x88, 16x44, 8x22), 256 channels in 8 groups, batch 1; forward and forward+backward
(gradients to the features, the points and the weights).

There is no mmcv op here: the reference column (printed as "mmcv") is the fallback the projects run
without their compiled extension (``DeformableFeatureAggregation.feature_sampling`` +
``multi_view_level_fusion`` + the sum over points): per level ``F.grid_sample`` of the
(bs * cams, C, H, W) maps at every point, then the weighted sum over cameras, levels and points per
group, written here from those semantics. Each side gets its inputs in its own layout, made outside the
timed call; the runtime is timed on features already put through ``feature_maps_format`` (the projects
format once per image and reuse it in every layer). Goal: ratio below 1.0, and less peak memory
(``--memory``; on CPU the harness's resident-memory peak, with ``--device cuda`` the CUDA allocator's).
The two agree wherever the kernel reads (points strictly inside the image); outside, the kernel
drops a point that grid_sample still half-reads at the border.

On a machine whose cores other processes also use, run with ``--threads 1`` or
``OMP_WAIT_POLICY=PASSIVE``: the runtime issues many short parallel ops, and OpenMP's spin-waiting
for a descheduled thread then costs it up to 10x (grid_sample's few long ops hardly notice).
"""

from __future__ import annotations

import argparse
import importlib
from typing import Callable, Dict, List, Sequence

import torch
import torch.nn.functional as F
from _harness import run

da = importlib.import_module("mmcv_runtime.ops.deformable_aggregation")

SHAPES = ((64, 176), (32, 88), (16, 44), (8, 22))
BS, CAMS, CHANNELS, GROUPS, ANCHORS, PTS = 1, 6, 256, 8, 900, 13


def grid_sample_fallback(maps: Sequence[torch.Tensor], points: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The projects' path without the op. maps: per level (bs, cams, C, H, W); points (bs, cams, anchors,
    pts, 2) in [0, 1]; weights (bs, anchors, cams, levels, pts, groups) -> (bs, anchors, C)."""
    bs, cams, anchors, pts = points.shape[:4]
    levels, groups = weights.shape[3], weights.shape[-1]
    grid = (points * 2 - 1).flatten(0, 1)  # (bs * cams, anchors, pts, 2)
    sampled = torch.stack([F.grid_sample(m.flatten(0, 1), grid, align_corners=False) for m in maps], 1)
    channels = sampled.size(2)
    sampled = sampled.view(bs, cams, levels, channels, anchors, pts).permute(0, 4, 1, 2, 5, 3)
    fused = weights[..., None] * sampled.reshape(*sampled.shape[:-1], groups, channels // groups)
    return fused.sum(2).sum(2).reshape(bs, anchors, pts, channels).sum(2)


def inputs(device: torch.device) -> Dict[str, object]:
    g = torch.Generator().manual_seed(0)
    maps = [torch.randn(BS, CAMS, CHANNELS, h, w, generator=g) for h, w in SHAPES]
    # ~70% of the projections land inside a camera, as points near the image borders do
    points = torch.rand(BS, CAMS, ANCHORS, PTS, 2, generator=g) * 1.2 - 0.1
    weights = torch.randn(BS, ANCHORS, CAMS, len(SHAPES), PTS, GROUPS, generator=g).flatten(2, 4).softmax(2)
    weights = weights.view(BS, ANCHORS, CAMS, len(SHAPES), PTS, GROUPS)
    maps, points, weights = [m.to(device) for m in maps], points.to(device), weights.to(device)
    col, hw, start = da.feature_maps_format(maps)
    return dict(maps=maps, points=points, weights=weights, col=col, hw=hw, start=start,
                # the op's layouts, as DeformableFeatureAggregation builds them for it
                points_op=points.permute(0, 2, 3, 1, 4).contiguous(),
                weights_op=weights.permute(0, 1, 4, 2, 3, 5).contiguous())


def synced(fn: Callable, device: torch.device) -> Callable:
    if device.type != "cuda":
        return fn

    def call():
        fn()
        torch.cuda.synchronize(device)

    return call


def cases(device: torch.device) -> List[Dict]:
    x = inputs(device)
    op_args = (x["hw"], x["start"])

    def runtime_fwd():
        with torch.no_grad():
            da.deformable_aggregation_function(x["col"], *op_args, x["points_op"], x["weights_op"])

    def fallback_fwd():
        with torch.no_grad():
            grid_sample_fallback(x["maps"], x["points"], x["weights"])

    col, pts, w = (x[k].clone().requires_grad_() for k in ("col", "points_op", "weights_op"))
    maps = [m.clone().requires_grad_() for m in x["maps"]]
    pts_fb, w_fb = x["points"].clone().requires_grad_(), x["weights"].clone().requires_grad_()

    def runtime_fwd_bwd():
        for leaf in (col, pts, w):
            leaf.grad = None
        da.deformable_aggregation_function(col, *op_args, pts, w).sum().backward()

    def fallback_fwd_bwd():
        for leaf in (*maps, pts_fb, w_fb):
            leaf.grad = None
        grid_sample_fallback(maps, pts_fb, w_fb).sum().backward()

    name = f"deform_agg {ANCHORS}x{PTS} pts {CAMS} cams {len(SHAPES)} lvls C{CHANNELS}/{GROUPS}"
    return [dict(name=f"{name} fwd", runtime=synced(runtime_fwd, device), mmcv=synced(fallback_fwd, device)),
            dict(name=f"{name} fwd+bwd", runtime=synced(runtime_fwd_bwd, device),
                 mmcv=synced(fallback_fwd_bwd, device))]


def cuda_peaks(case_list: List[Dict], device: torch.device) -> None:
    """Peak CUDA memory a call adds (the harness's resident-memory peak sees only the host)."""
    for case in case_list:
        row = []
        for key in ("runtime", "mmcv"):
            case[key]()
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            case[key]()
            row.append((torch.cuda.max_memory_allocated(device) - base) / 2 ** 20)
        print(f"{case['name']:48s} runtime {row[0]:9.1f} MiB   grid_sample fallback {row[1]:9.1f} MiB", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--device", default="cpu")
    own, rest = parser.parse_known_args(argv)
    device = torch.device(own.device)
    case_list = cases(device)
    if device.type == "cuda" and "--memory" in rest:
        cuda_peaks(case_list, device)
        return 0
    return run(case_list, __doc__.splitlines()[0], rest)


if __name__ == "__main__":
    raise SystemExit(main())
