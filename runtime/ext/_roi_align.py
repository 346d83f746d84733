"""``_ext`` adapters of mmcv.ops.roi_align: ``roi_align_forward`` / ``roi_align_backward``.

mmcv's pybind signatures; ``output`` and, for max pooling (``pool_mode=0``), ``argmax_y``/``argmax_x``
are written in place; the backward adds into ``grad_input`` (mmcv passes zeros), as the kernels do.
"""

from __future__ import annotations

from torch import Tensor

from mmcv_runtime.ops.roi_align import roi_align_backward as _backward
from mmcv_runtime.ops.roi_align import roi_align_forward as _forward

__all__ = ["roi_align_backward", "roi_align_forward"]


def roi_align_forward(input: Tensor, rois: Tensor, output: Tensor, argmax_y: Tensor, argmax_x: Tensor,
                      aligned_height: int, aligned_width: int, spatial_scale: float, sampling_ratio: int,
                      pool_mode: int, aligned: bool) -> None:
    out, arg_y, arg_x = _forward(input, rois, (int(aligned_height), int(aligned_width)), float(spatial_scale),
                                 int(sampling_ratio), int(pool_mode), bool(aligned))
    output.copy_(out)
    if int(pool_mode) == 0:
        argmax_y.copy_(arg_y)
        argmax_x.copy_(arg_x)


def roi_align_backward(grad_output: Tensor, rois: Tensor, argmax_y: Tensor, argmax_x: Tensor, grad_input: Tensor,
                       aligned_height: int, aligned_width: int, spatial_scale: float, sampling_ratio: int,
                       pool_mode: int, aligned: bool) -> None:
    grad_input.add_(_backward(grad_output, rois, argmax_y, argmax_x, grad_input.shape,
                              (int(aligned_height), int(aligned_width)), float(spatial_scale),
                              int(sampling_ratio), int(pool_mode), bool(aligned)))
