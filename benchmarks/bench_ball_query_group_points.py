"""PointNet++ grouping (ball_query, grouping_operation, QueryAndGroup): absolute times.

    python benchmarks/bench_ball_query_group_points.py [--repeat 5] [--threads N] [--memory] [--only TEXT] [--json OUT]

mmcv 2.2.0 has CUDA kernels only for these ops, so there is no CPU oracle: the harness reports the
runtime's absolute times. Sizes are those of the first set abstraction of mmdet3d's PointNet2SASSG on a
16384-point scene, batch 2: ball query of 2048 centres, radius 0.4 (about 70 points per ball in a 4 m
cube), 64 samples; grouping 64 channels into (2048, 64) groups, forward and forward+backward; the
whole QueryAndGroup (xyz + 64 features); and the stacked ball query of the same points.
"""

from __future__ import annotations

import importlib
from typing import Dict, List

import torch
from _harness import forward_backward, run

bq = importlib.import_module("mmcv_runtime.ops.ball_query")
gp = importlib.import_module("mmcv_runtime.ops.group_points")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)



def cases() -> List[Dict]:
    points = torch.rand(2, 16384, 3, generator=_gen(0)) * 4
    centres = points[:, :2048].contiguous()
    features = torch.randn(2, 64, 16384, generator=_gen(1))
    idx = bq.ball_query(0.0, 0.4, 64, points, centres)
    group = gp.QueryAndGroup(0.4, 64)
    flat_points, flat_centres = points.reshape(-1, 3), centres.reshape(-1, 3)
    counts = torch.tensor([16384, 16384], dtype=torch.int32), torch.tensor([2048, 2048], dtype=torch.int32)
    return [
        dict(name="ball_query 2x16384 -> 2048 r=0.4 ns=64",
             runtime=lambda: bq.ball_query(0.0, 0.4, 64, points, centres)),
        dict(name="ball_query stacked 2x16384 -> 2048 r=0.4 ns=64",
             runtime=lambda: bq.ball_query(0.0, 0.4, 64, flat_points, flat_centres, *counts)),
        dict(name="grouping_operation 2x64x16384 @ 2048x64 fwd", runtime=lambda: gp.grouping_operation(features, idx)),
        dict(name="grouping_operation 2x64x16384 @ 2048x64 fwd+bwd",
             runtime=forward_backward(gp.grouping_operation, features, idx)),
        dict(name="QueryAndGroup r=0.4 ns=64 C=64 fwd", runtime=lambda: group(points, centres, features)),
        dict(name="QueryAndGroup r=0.4 ns=64 C=64 fwd+bwd",
             runtime=forward_backward(lambda f: group(points, centres, f), features)),
    ]


def main(argv=None) -> int:
    return run(cases(), __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())
