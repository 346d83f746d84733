"""points_in_boxes: mmcv_runtime against compiled mmcv CPU, in the same process, interleaved.

    python benchmarks/bench_points_in_boxes.py [--repeat 5] [--threads N] [--memory] [--only TEXT] [--json OUT]

A LiDAR-sized batch: 2 x 16384 points in a 100 m x 100 m x 6 m scene and 200 rotated boxes per sample.
mmcv 2.2.0 has a CPU kernel for ``points_in_boxes_cpu`` only (ratio against it); ``_part`` and ``_all``
are CUDA-only in mmcv and report absolute times. A 100k x 500 case shows the chunked memory bound.
"""

from __future__ import annotations

import math
from typing import Dict, List

import torch
from _harness import mmcv_ops as mm
from _harness import run

import mmcv_runtime.ops.points_in_boxes as rt


def scene(batch: int, num_points: int, num_boxes: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    pts = torch.rand(batch, num_points, 3, generator=g) * torch.tensor([100.0, 100.0, 6.0]) - torch.tensor(
        [50.0, 50.0, 3.0])
    centre = torch.rand(batch, num_boxes, 3, generator=g) * torch.tensor([100.0, 100.0, 2.0]) - torch.tensor(
        [50.0, 50.0, 2.0])
    size = torch.rand(batch, num_boxes, 3, generator=g) * torch.tensor([4.0, 2.0, 1.5]) + torch.tensor([0.5, 0.5, 1.0])
    rz = (torch.rand(batch, num_boxes, 1, generator=g) - 0.5) * 2 * math.pi
    return pts, torch.cat([centre, size, rz], -1)


def cases() -> List[Dict]:
    pts, boxes = scene(2, 16384, 200)
    big_pts, big_boxes = scene(1, 100_000, 500, seed=1)
    return [
        dict(name="points_in_boxes_cpu 2x16384 pts x 200 boxes", runtime=lambda: rt.points_in_boxes_cpu(pts, boxes),
             mmcv=(lambda: mm.points_in_boxes_cpu(pts, boxes)) if mm else None),
        dict(name="points_in_boxes_part 2x16384 pts x 200 boxes", runtime=lambda: rt.points_in_boxes_part(pts, boxes),
             mmcv=None),
        dict(name="points_in_boxes_all 2x16384 pts x 200 boxes", runtime=lambda: rt.points_in_boxes_all(pts, boxes),
             mmcv=None),
        dict(name="points_in_boxes_part 1x100k pts x 500 boxes",
             runtime=lambda: rt.points_in_boxes_part(big_pts, big_boxes), mmcv=None),
    ]


def main(argv=None) -> int:
    return run(cases(), __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())
