"""Deformable convolution: mmcv_runtime against compiled mmcv CPU, in the same process, interleaved.

    python benchmarks/bench_deform_conv.py [--repeat 5] [--threads N] [--memory] [--only TEXT] [--json OUT]

Issue 5's sizes: a 1x256x50x84 input, 256 output channels, 3x3 kernel, padding 1, deform_groups 1
(an FPN level of a detector's DCN layer), offsets of a few pixels, forward and forward+backward, for
deform_conv2d and modulated_deform_conv2d (with bias). Goal: runtime/mmcv time ratio <= 1.0, with
peak memory bounded by the im2col_step-style chunking (see ``--memory``). Without the oracle it prints
absolute times.
"""

from __future__ import annotations

import importlib
from typing import Dict, List

import torch
from _harness import mmcv_ops as mm
from _harness import forward_backward, run

deform_conv2d = importlib.import_module("mmcv_runtime.ops.deform_conv").deform_conv2d
modulated_deform_conv2d = importlib.import_module("mmcv_runtime.ops.modulated_deform_conv").modulated_deform_conv2d


def tensors() -> Dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return dict(
        input=torch.randn(1, 256, 50, 84, generator=g),
        offset=torch.randn(1, 18, 50, 84, generator=g) * 2,
        mask=torch.rand(1, 9, 50, 84, generator=g),
        weight=torch.randn(256, 256, 3, 3, generator=g) * 0.02,
        bias=torch.randn(256, generator=g),
    )



def cases() -> List[Dict]:
    t = tensors()
    # deform_conv2d(input, offset, weight, stride, padding, dilation, groups, deform_groups, bias, im2col_step)
    dc_args = (1, 1, 1, 1, 1, False, 32)
    # modulated_deform_conv2d(input, offset, mask, weight, bias, stride, padding, dilation, groups, deform_groups)
    mdc_args = (1, 1, 1, 1, 1)
    dc_leaves = [t["input"], t["offset"], t["weight"]]
    mdc_leaves = [t["input"], t["offset"], t["mask"], t["weight"], t["bias"]]
    name = "1x256x50x84 -> 256, 3x3 pad 1"
    return [
        dict(name=f"deform_conv2d {name} fwd", runtime=lambda: deform_conv2d(*dc_leaves, *dc_args),
             mmcv=(lambda: mm.deform_conv2d(*dc_leaves, *dc_args)) if mm else None),
        dict(name=f"deform_conv2d {name} fwd+bwd", runtime=forward_backward(deform_conv2d, dc_leaves, *dc_args),
             mmcv=forward_backward(mm.deform_conv2d, dc_leaves, *dc_args) if mm else None),
        dict(name=f"modulated_deform_conv2d {name} fwd",
             runtime=lambda: modulated_deform_conv2d(*mdc_leaves, *mdc_args),
             mmcv=(lambda: mm.modulated_deform_conv2d(*mdc_leaves, *mdc_args)) if mm else None),
        dict(name=f"modulated_deform_conv2d {name} fwd+bwd",
             runtime=forward_backward(modulated_deform_conv2d, mdc_leaves, *mdc_args),
             mmcv=forward_backward(mm.modulated_deform_conv2d, mdc_leaves, *mdc_args) if mm else None),
    ]


def main(argv=None) -> int:
    return run(cases(), __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())
