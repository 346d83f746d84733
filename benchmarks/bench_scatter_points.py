"""Dynamic scatter (mmdet3d dynamic voxel encoders): mmcv_runtime, absolute times (mmcv has no CPU kernel).

    python benchmarks/bench_scatter_points.py [--repeat 5] [--threads N] [--memory] [--only TEXT] [--json OUT]

100k points with 64 channels falling into ~20k voxels (plus ~5% dropped rows with a -1 entry), and
the batched form (2 samples, batch-led coors) of the module, mean and max, forward and forward+backward.
"""

from __future__ import annotations

import importlib
from typing import Dict, List

import torch
from _harness import forward_backward, run

sp = importlib.import_module("mmcv_runtime.ops.scatter_points")


def inputs(n: int = 100_000, channels: int = 64, voxels: int = 20_000):
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(n, channels, generator=g)
    cells = torch.randint(0, 200 * 200 * 40, (voxels,), generator=g)
    grid = torch.stack([cells // 1600, cells // 40 % 40, cells % 40], 1)  # (z, y, x)-like rows
    coors = grid[torch.randint(0, voxels, (n,), generator=g)].int()
    coors[torch.rand(n, generator=g) < 0.05, 1] = -1
    batch = (torch.arange(n) >= n // 2).int()[:, None]
    return feats, coors, torch.cat([batch, coors], 1)


def cases() -> List[Dict]:
    feats, coors, batched = inputs()
    out = []
    for reduce_type in ("mean", "max", "sum"):
        name = f"dynamic_scatter {reduce_type} 100k pts x64 ~20k voxels"
        out.append(dict(name=f"{name} fwd", runtime=lambda r=reduce_type: sp.dynamic_scatter(feats, coors, r)))
        out.append(dict(name=f"{name} fwd+bwd", runtime=forward_backward(sp.dynamic_scatter, feats, coors,
                                                                            reduce_type)))
    for average in (True, False):
        module = sp.DynamicScatter([0.2, 0.2, 4], [0, -40, -3, 70.4, 40, 1], average)
        name = f"DynamicScatter batched(2) average={average}"
        out.append(dict(name=f"{name} fwd", runtime=lambda m=module: m(feats, batched)))
        out.append(dict(name=f"{name} fwd+bwd", runtime=forward_backward(module, feats, batched)))
    return out


def main(argv=None) -> int:
    return run(cases(), __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())
