"""PointNet++ ops (furthest_point_sample, gather_points, three_nn, three_interpolate, knn): absolute times.

    python benchmarks/bench_pointnet_ops.py [--repeat 5] [--threads N] [--memory] [--only TEXT] [--json OUT]

mmcv 2.2.0 has CUDA kernels only for these ops, so there is no CPU oracle: the harness reports the
runtime's absolute times. Sizes are those of a PointNet++ SSG backbone on a 16384-point scene,
batch 2: FPS 16384 -> 4096 (the inherently sequential op: 4095 steps of (2, 16384) vector work),
FPS on a 1024x1024 distance matrix, gathering 256 channels at 4096 indices, three_nn of 16384
targets in 4096 sources and the matching three_interpolate of 256 channels (forward and
forward+backward), and knn with k=16 of 1024 centres in 16384 points.
"""

from __future__ import annotations

import importlib
from typing import Dict, List

import torch
from _harness import forward_backward, run

fps = importlib.import_module("mmcv_runtime.ops.furthest_point_sample")
gp = importlib.import_module("mmcv_runtime.ops.gather_points")
nn = importlib.import_module("mmcv_runtime.ops.three_nn")
ti = importlib.import_module("mmcv_runtime.ops.three_interpolate")
knn = importlib.import_module("mmcv_runtime.ops.knn")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)



def cases() -> List[Dict]:
    points = torch.rand(2, 16384, 3, generator=_gen(0)) * 40
    small = points[:, :1024].contiguous()
    dist = ((small.unsqueeze(1) - small.unsqueeze(2)) ** 2).sum(-1)
    sampled = fps.furthest_point_sample(points, 4096)
    centres = gp.gather_points(points.transpose(1, 2).contiguous(), sampled).transpose(1, 2).contiguous()
    features = torch.randn(2, 256, 16384, generator=_gen(1))
    coarse = torch.randn(2, 256, 4096, generator=_gen(2))
    dist3, idx3 = nn.three_nn(points, centres)
    weight = 1.0 / (dist3 + 1e-8)
    weight = (weight / weight.sum(2, keepdim=True)).contiguous()
    return [
        dict(name="furthest_point_sample 2x16384 -> 4096", runtime=lambda: fps.furthest_point_sample(points, 4096)),
        dict(name="furthest_point_sample_with_dist 2x1024^2 -> 256",
             runtime=lambda: fps.furthest_point_sample_with_dist(dist, 256)),
        dict(name="gather_points 2x256x16384 @ 4096 fwd", runtime=lambda: gp.gather_points(features, sampled)),
        dict(name="gather_points 2x256x16384 @ 4096 fwd+bwd",
             runtime=forward_backward(gp.gather_points, features, sampled)),
        dict(name="three_nn 2x16384 in 4096", runtime=lambda: nn.three_nn(points, centres)),
        dict(name="three_interpolate 2x256x4096 -> 16384 fwd",
             runtime=lambda: ti.three_interpolate(coarse, idx3, weight)),
        dict(name="three_interpolate 2x256x4096 -> 16384 fwd+bwd",
             runtime=forward_backward(ti.three_interpolate, coarse, idx3, weight)),
        dict(name="knn k=16 2x1024 in 16384", runtime=lambda: knn.knn(16, points, centres[:, :1024].contiguous())),
    ]


def main(argv=None) -> int:
    return run(cases(), __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())
