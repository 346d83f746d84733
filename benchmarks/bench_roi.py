"""RoI family: mmcv_runtime against compiled mmcv CPU, in the same process, interleaved, with peak memory.

    python benchmarks/bench_roi.py [--repeat 5] [--threads N] [--memory] [--only TEXT] [--json OUT]

Issue 4's sizes: 512 RoIs on a 2x256x100x168 map (stride 8, so RoIs of 16-316 image pixels), 7x7
bins, ``sampling_ratio`` 2 and 0 (adaptive), forward and forward+backward. mmcv 2.2.0 has CPU kernels
for roi_align, roi_align_rotated and bezier_align only; the other ops report absolute times.
With the oracle importable (see bench_nms.py) it prints runtime/mmcv ratios. Goal: at or below 1.0
where mmcv has a CPU kernel, and adaptive sampling staying bounded in memory.
"""

from __future__ import annotations

import math
from typing import Dict, List

import torch
from _harness import mmcv_ops as mm
from _harness import forward_backward, run

import mmcv_runtime.ops as rt

SCALE = 1 / 8


def feature_map() -> torch.Tensor:
    return torch.randn(2, 256, 100, 168, generator=torch.Generator().manual_seed(0))


def rois(k: int = 512) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    xy = torch.rand(k, 2, generator=g) * torch.tensor([168.0, 100.0]) / SCALE
    wh = torch.rand(k, 2, generator=g) * 300 + 16
    return torch.cat([torch.randint(0, 2, (k, 1), generator=g).float(), xy, xy + wh], 1)


def rotated_rois(k: int = 512) -> torch.Tensor:
    boxes = rois(k)
    centre, size = (boxes[:, 1:3] + boxes[:, 3:5]) / 2, boxes[:, 3:5] - boxes[:, 1:3]
    angle = torch.rand(k, 1, generator=torch.Generator().manual_seed(2)) * math.pi - math.pi / 2
    return torch.cat([boxes[:, :1], centre, size, angle], 1)



def cases() -> List[Dict]:
    x, boxes, turned = feature_map(), rois(), rotated_rois()
    offset = torch.randn(512, 2, 7, 7, generator=torch.Generator().manual_seed(3)) * 0.1
    out = []

    def add(name, runtime_fn, mmcv_fn, args):
        out.append(dict(name=f"{name} fwd", runtime=lambda: runtime_fn(x, *args),
                        mmcv=(lambda: mmcv_fn(x, *args)) if mmcv_fn else None))
        out.append(dict(name=f"{name} fwd+bwd", runtime=forward_backward(runtime_fn, x, *args),
                        mmcv=forward_backward(mmcv_fn, x, *args) if mmcv_fn else None))

    for ratio in (2, 0):
        add(f"roi_align 512 rois sr={ratio}", rt.roi_align, mm.roi_align if mm else None,
            (boxes, 7, SCALE, ratio, "avg", True))
    for ratio in (2, 0):
        add(f"roi_align_rotated 512 rois sr={ratio}", rt.roi_align_rotated, mm.roi_align_rotated if mm else None,
            (turned, 7, SCALE, ratio, True, False))
    add("roi_align max 512 rois sr=2", rt.roi_align, mm.roi_align if mm else None, (boxes, 7, SCALE, 2, "max", True))
    add("roi_pool 512 rois", rt.roi_pool, None, (boxes, 7, SCALE))
    add("deform_roi_pool 512 rois sr=2", lambda i, *a: rt.deform_roi_pool(i, boxes, offset, *a), None,
        (7, SCALE, 2, 0.1))
    return out


def main(argv=None) -> int:
    return run(cases(), __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())
