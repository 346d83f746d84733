"""iou3d family (3D-detection BEV overlap / 3D IoU / 3D NMS): mmcv_runtime absolute times.

    python benchmarks/bench_iou3d.py [--repeat 7] [--threads N] [--memory] [--only TEXT] [--json OUT]

mmcv's iou3d kernels are CUDA-only, so a CPU oracle has no ``boxes_overlap_bev`` / ``nms3d``: the
harness prints absolute times, and for NMS a naive baseline (dense IoU matrix from the runtime plus a
Python loop over boxes). Scenes are LiDAR-like: car-sized boxes over a 100 m x 100 m area, with
clusters of near-duplicate proposals as a detector head emits before NMS.
"""

from __future__ import annotations

import importlib
from typing import Dict, List

import torch
from _harness import run

iou3d = importlib.import_module("mmcv_runtime.ops.iou3d")


def scene_boxes(n: int, seed: int, objects: int = 60) -> tuple:
    """(n, 7) proposals jittered around ``objects`` cars, and (n,) scores."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.cat([torch.rand(objects, 2, generator=g) * 100 - 50, torch.rand(objects, 1, generator=g) - 1,
                         torch.tensor([4.2, 1.8, 1.6]) * (0.8 + 0.4 * torch.rand(objects, 3, generator=g)),
                         (torch.rand(objects, 1, generator=g) - 0.5) * 6.2832], 1)
    pick = torch.randint(0, objects, (n,), generator=g)
    noise = torch.randn(n, 7, generator=g) * torch.tensor([0.6, 0.6, 0.2, 0.3, 0.15, 0.15, 0.3])
    return centres[pick] + noise, torch.rand(n, generator=g)


def naive_nms3d(boxes: torch.Tensor, scores: torch.Tensor, thr: float, normal: bool = False) -> torch.Tensor:
    order = scores.sort(0, descending=True)[1]
    b = boxes[order]
    if normal:
        b = b.clone()
        b[:, 6] = 0
    ov = iou3d.boxes_overlap_bev(b, b)
    area = b[:, 3] * b[:, 4]
    iou = ov / torch.clamp(area[:, None] + area[None, :] - ov, min=1e-8)
    keep = torch.ones(len(order), dtype=torch.bool)
    for i in range(len(order)):
        if keep[i]:
            keep[i + 1:] &= ~(iou[i, i + 1:] > thr)
    return order[keep]


def cases() -> List[Dict]:
    out = []
    a, _ = scene_boxes(500, 1)
    b, _ = scene_boxes(500, 2)
    out.append(dict(name="boxes_overlap_bev 500x500", runtime=lambda: iou3d.boxes_overlap_bev(a, b),
                    mmcv=None, naive=None))
    out.append(dict(name="boxes_iou3d 500x500", runtime=lambda: iou3d.boxes_iou3d(a, b), mmcv=None, naive=None))
    for n in (1000, 4096):
        boxes, scores = scene_boxes(n, n)
        out.append(dict(name=f"nms3d {n} boxes thr 0.1", runtime=lambda b=boxes, s=scores: iou3d.nms3d(b, s, 0.1),
                        mmcv=None,
                        naive=(lambda b=boxes, s=scores: naive_nms3d(b, s, 0.1)) if n <= 1000 else None))
        out.append(dict(name=f"nms3d_normal {n} boxes thr 0.1",
                        runtime=lambda b=boxes, s=scores: iou3d.nms3d_normal(b, s, 0.1), mmcv=None, naive=None))
    return out


def main(argv=None) -> int:
    return run(cases(), __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())
