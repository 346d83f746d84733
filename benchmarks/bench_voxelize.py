"""Voxelization: mmcv_runtime against compiled mmcv CPU, in the same process, interleaved, with peak memory.

    python benchmarks/bench_voxelize.py [--repeat 5] [--threads N] [--memory] [--only TEXT] [--json OUT]

A KITTI-like cloud of 20k points (4 features) in mmdet3d's KITTI range [0, -40, -3, 70.4, 40, 1]:
hard voxelization as SECOND / PointPillars use it (voxel 0.05x0.05x0.1, max_points 5, and pillars
0.16x0.16x4, max_points 32, both with max_voxels 16000) and dynamic voxelization. mmcv 2.2.0 has a
CPU kernel for both; with the oracle importable (see bench_nms.py) it prints runtime/mmcv ratios.
"""

from __future__ import annotations

import importlib
from typing import Dict, List

import torch
from _harness import mmcv_ops as mm
from _harness import run

rt = importlib.import_module("mmcv_runtime.ops.voxelize")

RANGE = [0, -40, -3, 70.4, 40, 1]


def kitti_cloud(n: int = 20000) -> torch.Tensor:
    """(n, 4) points: ground-hugging clusters and a uniform part, ~5% outside the range."""
    g = torch.Generator().manual_seed(0)
    lo, hi = torch.tensor(RANGE[:3]), torch.tensor(RANGE[3:])
    centres = lo + torch.rand(200, 3, generator=g) * (hi - lo)
    clustered = centres[torch.randint(0, 200, (n // 2,), generator=g)] + torch.randn(n // 2, 3, generator=g) * 0.5
    uniform = lo - 1 + torch.rand(n - n // 2, 3, generator=g) * (hi - lo + 2)
    xyz = torch.cat([clustered, uniform])[torch.randperm(n, generator=g)]
    return torch.cat([xyz, torch.rand(n, 1, generator=g)], 1)


def cases() -> List[Dict]:
    points = kitti_cloud()
    out = []
    settings = [("hard voxel 0.05x0.05x0.1 max_points=5", [0.05, 0.05, 0.1], 5, 16000),
                ("hard pillar 0.16x0.16x4 max_points=32", [0.16, 0.16, 4], 32, 16000),
                ("dynamic voxel 0.05x0.05x0.1", [0.05, 0.05, 0.1], -1, 16000)]
    for name, voxel_size, max_points, max_voxels in settings:
        args = (points, voxel_size, RANGE, max_points, max_voxels)
        out.append(dict(name=f"{name} 20k pts", runtime=lambda a=args: rt.voxelization(*a),
                        mmcv=(lambda a=args: mm.voxelization(*a)) if mm else None))
    return out


def main(argv=None) -> int:
    return run(cases(), __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())
