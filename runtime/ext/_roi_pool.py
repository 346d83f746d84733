"""``_ext`` adapters of mmcv.ops.roi_pool: ``output``/``argmax`` written in place (RoIs the kernel
skips keep what the caller allocated), gradients added into ``grad_input``."""

from __future__ import annotations

from torch import Tensor

from mmcv_runtime.ops.roi_pool import roi_pool_backward as _backward
from mmcv_runtime.ops.roi_pool import roi_pool_forward as _forward

__all__ = ["roi_pool_backward", "roi_pool_forward"]


def _skipped(rois: Tensor, spatial_scale: float) -> Tensor:
    x1, y1 = rois[:, 1] * spatial_scale, rois[:, 2] * spatial_scale
    return ~(((rois[:, 3] + 1) * spatial_scale - x1 > 0) & ((rois[:, 4] + 1) * spatial_scale - y1 > 0))


def roi_pool_forward(input: Tensor, rois: Tensor, output: Tensor, argmax: Tensor, pooled_height: int,
                     pooled_width: int, spatial_scale: float) -> None:
    out, arg = _forward(input, rois, (int(pooled_height), int(pooled_width)), float(spatial_scale))
    written = ~_skipped(rois.to(input.dtype), float(spatial_scale))
    output[written] = out[written]
    argmax[written] = arg[written].to(argmax.dtype)


def roi_pool_backward(grad_output: Tensor, rois: Tensor, argmax: Tensor, grad_input: Tensor, pooled_height: int,
                      pooled_width: int, spatial_scale: float) -> None:
    grad_input.add_(_backward(grad_output, rois, argmax, grad_input.shape))
