"""``mmcv.ops.bezier_align``: RoIAlign along Bezier-bounded text regions (ABCNet).

A region ``(batch, 8 control points)`` (17 values: the top curve's four (x, y) points, then the
bottom curve's four, listed right to left) is cut into ``pooled_h x pooled_w`` bins. As mmcv's
kernels: bin column ``pw`` sits at curve parameter ``u = pw / pooled_w`` (not the bin centre), bin
row ``ph`` at ``v = ph / pooled_h`` between the top and bottom curve points; each bin is a
``bin_h x bin_w`` box around that point, where the region's size is the larger of its top and bottom
extents (at least 1 in the legacy, non-aligned mode; ``aligned`` shifts by -0.5 pixel). Samples
are averaged as in RoIAlign (:mod:`._roi_sampling`). The Bezier polynomial is evaluated in double,
as the kernel's ``1.``-literals make it do. Regions get no gradient, as in mmcv.
"""

from __future__ import annotations

from typing import Any, Tuple, Union

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.nn.modules.utils import _pair

from .. import registry
from ._checks import check_feature_map, check_rois
from ._roi_sampling import BinSamples, adaptive_grid, average_bins, average_bins_backward

__all__ = ["BezierAlign", "BezierAlignFunction", "bezier_align"]

_OP = "bezier_align"
# columns of the control points: top curve left to right, bottom curve (stored right to left) reversed
_TOP = ((1, 2), (3, 4), (5, 6), (7, 8))
_BOTTOM = ((15, 16), (13, 14), (11, 12), (9, 10))


def _bezier(points: Tensor, u: Tensor) -> Tensor:
    """Cubic Bezier through (..., 4) control values at (...) parameters, in float64."""
    p0, p1, p2, p3 = points.double().unbind(-1)
    u = u.double()
    w = 1.0 - u
    return w * w * w * p0 + 3.0 * u * w * w * p1 + 3.0 * u * u * w * p2 + u * u * u * p3


class _BezierGeometry:
    def __init__(self, input_shape, beziers: Tensor, pooled: Tuple[int, int], spatial_scale: float,
                 sampling_ratio: int, aligned: bool, dtype: torch.dtype):
        self.batch = check_rois(_OP, beziers, input_shape[0], 17, name="beziers")
        scaled = beziers.to(dtype) * torch.tensor(spatial_scale, dtype=dtype, device=beziers.device)
        self.top_x = scaled[:, [c[0] for c in _TOP]]
        self.top_y = scaled[:, [c[1] for c in _TOP]]
        self.bottom_x = scaled[:, [c[0] for c in _BOTTOM]]
        self.bottom_y = scaled[:, [c[1] for c in _BOTTOM]]
        width = torch.maximum((self.top_x[:, 0] - self.top_x[:, 3]).abs(),
                              (self.bottom_x[:, 0] - self.bottom_x[:, 3]).abs())
        height = torch.maximum((self.top_y[:, 0] - self.top_y[:, 3]).abs(),
                               (self.bottom_y[:, 0] - self.bottom_y[:, 3]).abs())
        if not aligned:
            width, height = width.clamp(min=1.0), height.clamp(min=1.0)
        self.offset = 0.5 if aligned else 0.0
        self.pooled = pooled
        self.bin_h, self.bin_w = height / pooled[0], width / pooled[1]
        self.grid_h = adaptive_grid(height, pooled[0], sampling_ratio)
        self.grid_w = adaptive_grid(width, pooled[1], sampling_ratio)

    def place(self, s: BinSamples, lo: int) -> Tuple[Tensor, Tensor]:
        k = s.roi + lo
        dtype = self.bin_h.dtype
        u = s.pw.to(dtype) / self.pooled[1]
        v = s.ph.to(dtype) / self.pooled[0]
        centres = []
        for top, bottom in ((self.top_x, self.bottom_x), (self.top_y, self.bottom_y)):
            near = _bezier(top[k], u).to(dtype)
            far = _bezier(bottom[k], u).to(dtype)
            # the kernel: far * v in T, the rest in double (the ``1. - v`` literal), stored as T
            centres.append(((far * v).double() + near.double() * (1.0 - v.double()) - self.offset).to(dtype))
        x_center, y_center = centres
        bin_h, bin_w = self.bin_h[k], self.bin_w[k]
        y = (y_center - 0.5 * bin_h) + (s.iy.to(dtype) + 0.5) * bin_h / self.grid_h[k].to(dtype)
        x = (x_center - 0.5 * bin_w) + (s.ix.to(dtype) + 0.5) * bin_w / self.grid_w[k].to(dtype)
        return y, x


def bezier_align_forward(input: Tensor, beziers: Tensor, pooled: Tuple[int, int], spatial_scale: float,
                         sampling_ratio: int, aligned: bool) -> Tensor:
    """(K, C, pooled_h, pooled_w) averages of the Bezier bins."""
    g = _BezierGeometry(input.shape, beziers, pooled, spatial_scale, sampling_ratio, aligned, input.dtype)
    with torch.no_grad():
        return average_bins(input, g.batch, g.grid_h, g.grid_w, pooled, g.place)


def bezier_align_backward(grad_output: Tensor, beziers: Tensor, input_shape, pooled: Tuple[int, int],
                          spatial_scale: float, sampling_ratio: int, aligned: bool) -> Tensor:
    """(N, C, H, W) input gradient of :func:`bezier_align_forward`."""
    g = _BezierGeometry(input_shape, beziers, pooled, spatial_scale, sampling_ratio, aligned, grad_output.dtype)
    return average_bins_backward(grad_output, input_shape, g.batch, g.grid_h, g.grid_w, pooled, g.place)


class BezierAlignFunction(torch.autograd.Function):
    """mmcv's ``BezierAlignFunction``; ``bezier_align = BezierAlignFunction.apply``."""

    @staticmethod
    def forward(ctx: Any, input: Tensor, beziers: Tensor, output_size: Union[int, Tuple[int, int]],
                spatial_scale: Union[int, float] = 1.0, sampling_ratio: int = 0, aligned: bool = True) -> Tensor:
        check_feature_map(_OP, input, beziers)
        ctx.output_size = _pair(output_size)
        ctx.spatial_scale = float(spatial_scale)
        ctx.input_shape = input.size()
        ctx.sampling_ratio = int(sampling_ratio)
        ctx.aligned = bool(aligned)
        ctx.save_for_backward(beziers)
        return bezier_align_forward(input, beziers, ctx.output_size, ctx.spatial_scale, ctx.sampling_ratio,
                                    ctx.aligned)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_output: Tensor):
        (beziers,) = ctx.saved_tensors
        grad_input = bezier_align_backward(grad_output.contiguous(), beziers, ctx.input_shape, ctx.output_size,
                                           ctx.spatial_scale, ctx.sampling_ratio, ctx.aligned)
        return grad_input, None, None, None, None, None


bezier_align = BezierAlignFunction.apply


class BezierAlign(nn.Module):
    """Bezier align pooling layer, as mmcv's.

    Args:
        output_size (int or tuple): (h, w) of the output bins.
        spatial_scale (float): scale from region coordinates to the input map.
        sampling_ratio (int): samples per bin side; 0 means ``ceil(region size / output size)``.
        aligned (bool): shift by -0.5 pixel; False is the legacy mode.

    Shapes: input (N, C, H, W), beziers (K, 17); output (K, C, output_size[0], output_size[1]).
    """

    def __init__(self, output_size: Tuple, spatial_scale: Union[int, float], sampling_ratio: int,
                 aligned: bool = True) -> None:
        super().__init__()
        self.output_size = _pair(output_size)
        self.spatial_scale = float(spatial_scale)
        self.sampling_ratio = int(sampling_ratio)
        self.aligned = aligned

    def forward(self, input: Tensor, beziers: Tensor) -> Tensor:
        return bezier_align(input, beziers, self.output_size, self.spatial_scale, self.sampling_ratio,
                            self.aligned)

    def __repr__(self) -> str:
        # mmcv's own repr, stray parentheses included
        return (f"{self.__class__.__name__}(output_size={self.output_size}, "
                f"spatial_scale={self.spatial_scale})sampling_ratio={self.sampling_ratio})"
                f"aligned={self.aligned})")


registry.register(registry.OpEntry(
    op="bezier_align",
    names=("BezierAlign", "BezierAlignFunction", "bezier_align"),
    ext_functions=("bezier_align_backward", "bezier_align_forward"),
    backward="yes",
    devices=("any",),
))
