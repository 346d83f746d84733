"""``mmcv.ops.roi_align_rotated``: RoIAlign over rotated boxes ``(batch, cx, cy, w, h, angle)``.

As mmcv's kernels: the centre is scaled by ``spatial_scale`` and shifted by -0.5 when ``aligned``,
width and height are scaled (at least 1 in the legacy, non-aligned mode), the angle is in radians,
counter-clockwise unless ``clockwise``. Bins are laid out in the box's own frame around its centre,
sampled on a ``sampling_ratio`` (or adaptive ``ceil(size / bins)``) grid, rotated into the map,
read bilinearly (outside ``[-1, H] x [-1, W]`` reads 0) and averaged over ``max(grid, 1)`` samples.
RoIs get no gradient, as in mmcv.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple, Union

import torch
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from .. import registry
from ._checks import check_feature_map, check_rois, renamed_kwargs
from ._roi_sampling import BinSamples, adaptive_grid, average_bins, average_bins_backward

__all__ = ["RoIAlignRotated", "RoIAlignRotatedFunction", "roi_align_rotated"]

_OP = "roi_align_rotated"


class _RotatedGeometry:
    def __init__(self, input_shape, rois: Tensor, pooled: Tuple[int, int], spatial_scale: float,
                 sampling_ratio: int, aligned: bool, clockwise: bool, dtype: torch.dtype):
        self.batch = check_rois(_OP, rois, input_shape[0], 6)
        rois = rois.to(dtype)
        scale = torch.tensor(spatial_scale, dtype=dtype, device=rois.device)
        offset = 0.5 if aligned else 0.0
        self.center_w, self.center_h = rois[:, 1] * scale - offset, rois[:, 2] * scale - offset
        width, height = rois[:, 3] * scale, rois[:, 4] * scale
        if aligned:
            if bool(((width < 0) | (height < 0)).any()):
                raise ValueError(f"{_OP}: with aligned=True every RoI needs w >= 0 and h >= 0")
        else:
            width, height = width.clamp(min=1.0), height.clamp(min=1.0)
        theta = -rois[:, 5] if clockwise else rois[:, 5]
        self.cos, self.sin = torch.cos(theta), torch.sin(theta)
        self.start_h, self.start_w = -height / 2.0, -width / 2.0
        self.bin_h, self.bin_w = height / pooled[0], width / pooled[1]
        self.grid_h = adaptive_grid(height, pooled[0], sampling_ratio)
        self.grid_w = adaptive_grid(width, pooled[1], sampling_ratio)

    def place(self, s: BinSamples, lo: int) -> Tuple[Tensor, Tensor]:
        k = s.roi + lo
        bin_h, bin_w = self.bin_h[k], self.bin_w[k]
        dtype = bin_h.dtype
        yy = (self.start_h[k] + s.ph.to(dtype) * bin_h) + (s.iy.to(dtype) + 0.5) * bin_h / self.grid_h[k].to(dtype)
        xx = (self.start_w[k] + s.pw.to(dtype) * bin_w) + (s.ix.to(dtype) + 0.5) * bin_w / self.grid_w[k].to(dtype)
        cos, sin = self.cos[k], self.sin[k]
        return yy * cos - xx * sin + self.center_h[k], yy * sin + xx * cos + self.center_w[k]


def roi_align_rotated_forward(input: Tensor, rois: Tensor, pooled: Tuple[int, int], spatial_scale: float,
                              sampling_ratio: int, aligned: bool, clockwise: bool) -> Tensor:
    """(K, C, pooled_h, pooled_w) averages of the rotated bins."""
    g = _RotatedGeometry(input.shape, rois, pooled, spatial_scale, sampling_ratio, aligned, clockwise, input.dtype)
    with torch.no_grad():
        return average_bins(input, g.batch, g.grid_h, g.grid_w, pooled, g.place)


def roi_align_rotated_backward(grad_output: Tensor, rois: Tensor, input_shape, pooled: Tuple[int, int],
                               spatial_scale: float, sampling_ratio: int, aligned: bool, clockwise: bool) -> Tensor:
    """(N, C, H, W) input gradient of :func:`roi_align_rotated_forward`."""
    g = _RotatedGeometry(input_shape, rois, pooled, spatial_scale, sampling_ratio, aligned, clockwise,
                         grad_output.dtype)
    return average_bins_backward(grad_output, input_shape, g.batch, g.grid_h, g.grid_w, pooled, g.place)


class RoIAlignRotatedFunction(torch.autograd.Function):
    """mmcv's ``RoIAlignRotatedFunction``; ``roi_align_rotated = RoIAlignRotatedFunction.apply``."""

    @staticmethod
    def forward(ctx: Any, input: Tensor, rois: Tensor, output_size: Union[int, tuple], spatial_scale: float,
                sampling_ratio: int = 0, aligned: bool = True, clockwise: bool = False) -> Tensor:
        check_feature_map(_OP, input, rois)
        ctx.output_size = _pair(output_size)
        ctx.spatial_scale = float(spatial_scale)
        ctx.sampling_ratio = int(sampling_ratio)
        ctx.aligned = bool(aligned)
        ctx.clockwise = bool(clockwise)
        ctx.feature_size = input.size()
        ctx.save_for_backward(rois)
        return roi_align_rotated_forward(input, rois, ctx.output_size, ctx.spatial_scale, ctx.sampling_ratio,
                                         ctx.aligned, ctx.clockwise)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> Tuple[Optional[Tensor], None, None, None, None, None, None]:
        (rois,) = ctx.saved_tensors
        grad_input = None
        if ctx.needs_input_grad[0]:
            grad_input = roi_align_rotated_backward(grad_output.contiguous(), rois, ctx.feature_size,
                                                    ctx.output_size, ctx.spatial_scale, ctx.sampling_ratio,
                                                    ctx.aligned, ctx.clockwise)
        return grad_input, None, None, None, None, None, None


roi_align_rotated = RoIAlignRotatedFunction.apply


class RoIAlignRotated(nn.Module):
    """RoI align pooling layer for rotated proposals, as mmcv's.

    Args:
        output_size (int or tuple): (h, w) of the output bins.
        spatial_scale (float): scale from RoI coordinates to the input map.
        sampling_ratio (int): samples per bin side; 0 means ``ceil(roi size / output size)``.
        aligned (bool): shift centres by -0.5 pixel; False is the legacy mode.
        clockwise (bool): angles turn clockwise in image space.

    Shapes: input (N, C, H, W), rois (K, 6) as ``(batch index, cx, cy, w, h, angle in radians)``;
    output (K, C, output_size[0], output_size[1]).
    """

    @renamed_kwargs({"out_size": "output_size", "sample_num": "sampling_ratio"})
    def __init__(self, output_size: Union[int, tuple], spatial_scale: float, sampling_ratio: int = 0,
                 aligned: bool = True, clockwise: bool = False):
        super().__init__()
        self.output_size = _pair(output_size)
        self.spatial_scale = float(spatial_scale)
        self.sampling_ratio = int(sampling_ratio)
        self.aligned = aligned
        self.clockwise = clockwise

    def forward(self, input: Tensor, rois: Tensor) -> Tensor:
        return RoIAlignRotatedFunction.apply(input, rois, self.output_size, self.spatial_scale,
                                             self.sampling_ratio, self.aligned, self.clockwise)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(output_size={self.output_size}, "
                f"spatial_scale={self.spatial_scale}, sampling_ratio={self.sampling_ratio}, "
                f"aligned={self.aligned}, clockwise={self.clockwise})")


registry.register(registry.OpEntry(
    op="roi_align_rotated",
    names=("RoIAlignRotated", "RoIAlignRotatedFunction", "roi_align_rotated"),
    ext_functions=("roi_align_rotated_backward", "roi_align_rotated_forward"),
    backward="yes",
    devices=("any",),
))
