"""``_ext`` adapters of mmcv.ops.bezier_align (mmcv 2.x): in-place ``output``, ``grad_input`` added into."""

from __future__ import annotations

from torch import Tensor

from mmcv_runtime.ops.bezier_align import bezier_align_backward as _backward
from mmcv_runtime.ops.bezier_align import bezier_align_forward as _forward

__all__ = ["bezier_align_backward", "bezier_align_forward"]


def bezier_align_forward(input: Tensor, rois: Tensor, output: Tensor, aligned_height: int, aligned_width: int,
                         spatial_scale: float, sampling_ratio: int, aligned: bool) -> None:
    output.copy_(_forward(input, rois, (int(aligned_height), int(aligned_width)), float(spatial_scale),
                          int(sampling_ratio), bool(aligned)))


def bezier_align_backward(grad_output: Tensor, rois: Tensor, grad_input: Tensor, aligned_height: int,
                          aligned_width: int, spatial_scale: float, sampling_ratio: int, aligned: bool) -> None:
    grad_input.add_(_backward(grad_output, rois, grad_input.shape, (int(aligned_height), int(aligned_width)),
                              float(spatial_scale), int(sampling_ratio), bool(aligned)))
