"""CARAFE: mmcv_runtime against a naive shift-and-accumulate version (mmcv has no CPU kernel).

    python benchmarks/bench_carafe.py [--repeat 5] [--threads N] [--memory] [--only TEXT] [--json OUT]

Sizes of mmdet's CARAFE FPN upsampler: features 2x256x50x68 (a 800x1088 image at stride 16) up by 2,
kernel 5, one mask group; forward and forward+backward (gradients to features and masks). The
``naive`` baseline is what a user without the compiled op would write: for each of the k*k kernel
taps, shift the source map, upsample it by nearest neighbour and add it weighted by that tap's mask
channel (autograd through it).
"""

from __future__ import annotations

import importlib
from typing import Dict, List

import torch
import torch.nn.functional as F
from _harness import forward_backward, run

# the module, not the function: mmcv_runtime.ops.carafe is the function (re-exported like mmcv.ops)
rt = importlib.import_module("mmcv_runtime.ops.carafe")

KERNEL, GROUPS, SCALE = 5, 1, 2


def naive_carafe(features: torch.Tensor, masks: torch.Tensor, kernel_size: int, group_size: int,
                 scale_factor: int) -> torch.Tensor:
    n, c, h, w = features.shape
    half = (kernel_size - 1) // 2
    padded = F.pad(features, (half, half, half, half))
    grouped = c // group_size
    out = 0
    for dy in range(kernel_size):
        for dx in range(kernel_size):
            shifted = padded[:, :, dy:dy + h, dx:dx + w]
            up = F.interpolate(shifted, scale_factor=scale_factor, mode="nearest")
            weight = masks[:, dy * kernel_size + dx::kernel_size * kernel_size]  # (n, groups, H*s, W*s)
            out = out + up * weight.repeat_interleave(grouped, 1)
    return out


def inputs():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(2, 256, 50, 68, generator=g)
    masks = torch.softmax(torch.randn(2, GROUPS * KERNEL * KERNEL, 100, 136, generator=g), 1)
    return features, masks



def cases() -> List[Dict]:
    features, masks = inputs()
    name = f"carafe 2x256x50x68 k={KERNEL} s={SCALE}"
    return [
        dict(name=f"{name} fwd", runtime=lambda: rt.carafe(features, masks, KERNEL, GROUPS, SCALE), mmcv=None,
             naive=lambda: naive_carafe(features, masks, KERNEL, GROUPS, SCALE)),
        dict(name=f"{name} fwd+bwd", runtime=forward_backward(rt.carafe, (features, masks), KERNEL, GROUPS, SCALE), mmcv=None,
             naive=forward_backward(naive_carafe, (features, masks), KERNEL, GROUPS, SCALE)),
    ]


def main(argv=None) -> int:
    return run(cases(), __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())
