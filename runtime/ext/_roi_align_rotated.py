"""``_ext`` adapters of mmcv.ops.roi_align_rotated.

``roi_align_rotated_backward`` keeps mmcv's pybind argument *names*, which are out of step with their
positions there: the C++ function takes ``(grad_output, rois, grad_input, ...)`` but binds them as
``rois, grad_input, grad_output``. mmcv's own wrapper passes them positionally, so positions decide:
the first argument is the output gradient, the third the input gradient (added into, as the kernel).
"""

from __future__ import annotations

from torch import Tensor

from mmcv_runtime.ops.roi_align_rotated import roi_align_rotated_backward as _backward
from mmcv_runtime.ops.roi_align_rotated import roi_align_rotated_forward as _forward

__all__ = ["roi_align_rotated_backward", "roi_align_rotated_forward"]


def roi_align_rotated_forward(input: Tensor, rois: Tensor, output: Tensor, pooled_height: int, pooled_width: int,
                              spatial_scale: float, sampling_ratio: int, aligned: bool, clockwise: bool) -> None:
    output.copy_(_forward(input, rois, (int(pooled_height), int(pooled_width)), float(spatial_scale),
                          int(sampling_ratio), bool(aligned), bool(clockwise)))


def roi_align_rotated_backward(rois: Tensor, grad_input: Tensor, grad_output: Tensor, pooled_height: int,
                               pooled_width: int, spatial_scale: float, sampling_ratio: int, aligned: bool,
                               clockwise: bool) -> None:
    # positions, not names, carry meaning here (see the module docstring)
    top_grad, boxes, bottom_grad = rois, grad_input, grad_output
    bottom_grad.add_(_backward(top_grad, boxes, bottom_grad.shape, (int(pooled_height), int(pooled_width)),
                               float(spatial_scale), int(sampling_ratio), bool(aligned), bool(clockwise)))
