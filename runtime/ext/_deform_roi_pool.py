"""``_ext`` adapters of mmcv.ops.deform_roi_pool: ``output`` written in place; ``grad_input`` and
``grad_offset`` added into (an empty ``offset`` means no deformation, and no offset gradient)."""

from __future__ import annotations

from torch import Tensor

from mmcv_runtime.ops.deform_roi_pool import deform_roi_pool_backward as _backward
from mmcv_runtime.ops.deform_roi_pool import deform_roi_pool_forward as _forward

__all__ = ["deform_roi_pool_backward", "deform_roi_pool_forward"]


def deform_roi_pool_forward(input: Tensor, rois: Tensor, offset: Tensor, output: Tensor, pooled_height: int,
                            pooled_width: int, spatial_scale: float, sampling_ratio: int, gamma: float) -> None:
    output.copy_(_forward(input, rois, offset, (int(pooled_height), int(pooled_width)), float(spatial_scale),
                          int(sampling_ratio), float(gamma)))


def deform_roi_pool_backward(grad_output: Tensor, input: Tensor, rois: Tensor, offset: Tensor, grad_input: Tensor,
                             grad_offset: Tensor, pooled_height: int, pooled_width: int, spatial_scale: float,
                             sampling_ratio: int, gamma: float) -> None:
    d_input, d_offset = _backward(grad_output, input, rois, offset, (int(pooled_height), int(pooled_width)),
                                  float(spatial_scale), int(sampling_ratio), float(gamma))
    grad_input.add_(d_input)
    if d_offset is not None and grad_offset.numel():
        grad_offset.add_(d_offset)
