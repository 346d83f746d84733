"""``mmcv.ops.roi_align``: RoIAlign with average or max pooling, ``aligned`` and legacy modes.

Semantics follow mmcv's kernels (the CPU and CUDA ones agree): the RoI ``(batch, x1, y1, x2, y2)``
is scaled by ``spatial_scale`` and, when ``aligned``, shifted by -0.5 pixel; without ``aligned`` a
RoI is at least 1 x 1. Each of the ``pooled_h x pooled_w`` bins is sampled on a grid of
``sampling_ratio`` (or adaptively ``ceil(roi size / bins)``) points per side, read bilinearly
(:mod:`._bilinear`: points outside ``[-1, H] x [-1, W]`` read 0). ``avg`` divides the bin's sum by
``max(grid_h * grid_w, 1)``; ``max`` keeps the first largest sample, starting from -10000 (so a bin
whose samples are all at or below -10000 outputs -10000 and passes no gradient), and records the
sample's (y, x) per channel in ``argmax_y``/``argmax_x``, from which the backward pass reads the
gradient's four taps, as mmcv's does.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple, Union

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.nn.modules.utils import _pair

from .. import registry
from ._bilinear import bilinear_taps, channels_last_rows, weighted_row_sum
from ._checks import check_choice, check_feature_map, check_rois, renamed_kwargs
from ._roi_sampling import BinSamples, adaptive_grid, average_bins, average_bins_backward, ragged_samples

__all__ = ["RoIAlign", "RoIAlignFunction", "roi_align"]

_POOL_MODES = {"max": 0, "avg": 1}
_MAX_FLOOR = -10000.0  # the kernels' initial maximum
#: (RoIs x bins x samples x channels) values held at once by max pooling
_MAX_CHUNK_ELEMENTS = 1 << 24


class _Geometry:
    """Where RoIAlign samples: per-RoI start, bin size and grid, in the input's dtype as the kernels."""

    def __init__(self, op: str, input_shape, rois: Tensor, pooled: Tuple[int, int], spatial_scale: float,
                 sampling_ratio: int, aligned: bool, dtype: torch.dtype):
        self.pooled = pooled
        self.batch = check_rois(op, rois, input_shape[0], 5)
        rois = rois.to(dtype)
        scale = torch.tensor(spatial_scale, dtype=dtype, device=rois.device)
        offset = 0.5 if aligned else 0.0
        start_w, start_h = rois[:, 1] * scale - offset, rois[:, 2] * scale - offset
        width, height = rois[:, 3] * scale - offset - start_w, rois[:, 4] * scale - offset - start_h
        if aligned:
            if bool(((width < 0) | (height < 0)).any()):
                raise ValueError(f"{op}: with aligned=True every RoI needs x2 >= x1 and y2 >= y1")
        else:  # the legacy mode makes every RoI at least one pixel
            width, height = width.clamp(min=1.0), height.clamp(min=1.0)
        self.start_h, self.start_w = start_h, start_w
        self.bin_h, self.bin_w = height / pooled[0], width / pooled[1]
        self.grid_h = adaptive_grid(height, pooled[0], sampling_ratio)
        self.grid_w = adaptive_grid(width, pooled[1], sampling_ratio)

    def place(self, s: BinSamples, lo: int) -> Tuple[Tensor, Tensor]:
        """(y, x) of samples, in the kernels' order of operations."""
        k = s.roi + lo
        bin_h, bin_w = self.bin_h[k], self.bin_w[k]
        dtype = bin_h.dtype
        y = (self.start_h[k] + s.ph.to(dtype) * bin_h) + (s.iy.to(dtype) + 0.5) * bin_h / self.grid_h[k].to(dtype)
        x = (self.start_w[k] + s.pw.to(dtype) * bin_w) + (s.ix.to(dtype) + 0.5) * bin_w / self.grid_w[k].to(dtype)
        return y, x


def roi_align_forward(input: Tensor, rois: Tensor, pooled: Tuple[int, int], spatial_scale: float,
                      sampling_ratio: int, pool_mode: int, aligned: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """``(output, argmax_y, argmax_x)``: output (K, C, pooled_h, pooled_w); for max pooling the sample
    coordinates of each maximum (-1 where none beat -10000), else empty tensors."""
    geometry = _Geometry("roi_align", input.shape, rois, pooled, spatial_scale, sampling_ratio, aligned, input.dtype)
    if pool_mode == 1:
        with torch.no_grad():
            out = average_bins(input, geometry.batch, geometry.grid_h, geometry.grid_w, pooled, geometry.place)
        return out, input.new_zeros(0), input.new_zeros(0)
    return _max_pool(input, geometry)


def _max_pool(input: Tensor, geometry: _Geometry) -> Tuple[Tensor, Tensor, Tensor]:
    n, c, height, width = input.shape
    k, (ph, pw) = geometry.batch.numel(), geometry.pooled
    out = input.new_empty((k, ph * pw, c))
    arg_y, arg_x = torch.full_like(out, -1.0), torch.full_like(out, -1.0)
    rows = channels_last_rows(input)
    per_roi = (geometry.grid_h * geometry.grid_w * (ph * pw * max(c, 1))).clamp(min=1)
    lo = 0
    for hi in _max_chunk_ends(per_roi):
        grid_h, grid_w = geometry.grid_h[lo:hi], geometry.grid_w[lo:hi]
        # pad every bin of the chunk to the chunk's largest grid; padded samples never win
        gh, gw = int(grid_h.max()), int(grid_w.max())
        samples = ragged_samples(torch.full_like(grid_h, gh), torch.full_like(grid_w, gw), ph, pw)
        y, x = geometry.place(samples, lo)
        index, weight = bilinear_taps(y, x, height, width)
        index = index + (geometry.batch[lo:hi][samples.roi] * (height * width)).unsqueeze(1)
        with torch.no_grad():
            values = weighted_row_sum(rows, index, weight).reshape(hi - lo, ph * pw, gh * gw, c)
        real = (samples.iy < grid_h[samples.roi]) & (samples.ix < grid_w[samples.roi])
        values = values.masked_fill(~real.reshape(hi - lo, ph * pw, gh * gw, 1), float("-inf"))
        floor = values.new_full((hi - lo, ph * pw, 1, c), _MAX_FLOOR)
        # torch.max returns the first maximum: with the floor first, a sample must beat it strictly
        best, which = torch.cat([floor, values], 2).max(2)
        out[lo:hi] = best
        sample = (which - 1).clamp(min=0)
        picked = which > 0
        ys = y.reshape(hi - lo, ph * pw, gh * gw).gather(2, sample)
        xs = x.reshape(hi - lo, ph * pw, gh * gw).gather(2, sample)
        arg_y[lo:hi] = torch.where(picked, ys, arg_y[lo:hi])
        arg_x[lo:hi] = torch.where(picked, xs, arg_x[lo:hi])
        lo = hi

    def layout(t: Tensor) -> Tensor:
        return t.reshape(k, ph, pw, c).permute(0, 3, 1, 2).contiguous()

    return layout(out), layout(arg_y), layout(arg_x)


def _max_chunk_ends(per_roi: Tensor):
    if per_roi.numel() == 0:
        return []
    total = torch.cumsum(per_roi, 0)
    if int(total[-1]) <= _MAX_CHUNK_ELEMENTS:
        return [per_roi.numel()]
    ends = torch.searchsorted(total, torch.arange(_MAX_CHUNK_ELEMENTS, int(total[-1]), _MAX_CHUNK_ELEMENTS,
                                                  device=total.device)).tolist()
    return sorted({min(e + 1, per_roi.numel()) for e in ends} | {per_roi.numel()})


def roi_align_backward(grad_output: Tensor, rois: Tensor, argmax_y: Tensor, argmax_x: Tensor, input_shape,
                       pooled: Tuple[int, int], spatial_scale: float, sampling_ratio: int, pool_mode: int,
                       aligned: bool) -> Tensor:
    """The input gradient (N, C, H, W) of :func:`roi_align_forward` (mmcv's backward kernel)."""
    geometry = _Geometry("roi_align", input_shape, rois, pooled, spatial_scale, sampling_ratio, aligned,
                         grad_output.dtype)
    if pool_mode == 1:
        return average_bins_backward(grad_output, input_shape, geometry.batch, geometry.grid_h, geometry.grid_w,
                                     pooled, geometry.place)
    return _max_pool_backward(grad_output, geometry.batch, argmax_y, argmax_x, input_shape)


def _max_pool_backward(grad_output: Tensor, batch: Tensor, argmax_y: Tensor, argmax_x: Tensor,
                       input_shape) -> Tensor:
    """Each output's gradient goes to the four taps of its recorded maximum, channel by channel."""
    n, c, height, width = input_shape
    grad_input = grad_output.new_zeros(n * c * height * width)
    k = grad_output.size(0)
    per_roi = max(1, grad_output[0].numel() * 4) if k else 1
    step = max(1, _MAX_CHUNK_ELEMENTS // per_roi)
    for lo in range(0, k, step):
        hi = min(lo + step, k)
        y, x = argmax_y[lo:hi], argmax_x[lo:hi]
        index, weight = bilinear_taps(y, x, height, width)
        weight = weight * (y != -1).unsqueeze(-1)  # no maximum recorded: no gradient
        plane = (batch[lo:hi].view(-1, 1, 1, 1) * c + torch.arange(c, device=y.device).view(1, -1, 1, 1))
        index = index + (plane * (height * width)).unsqueeze(-1)
        grad_input.index_add_(0, index.reshape(-1),
                              (grad_output[lo:hi].unsqueeze(-1) * weight).reshape(-1))
    return grad_input.reshape(n, c, height, width)


class RoIAlignFunction(torch.autograd.Function):
    """mmcv's ``RoIAlignFunction``; ``roi_align = RoIAlignFunction.apply``."""

    @staticmethod
    def forward(ctx: Any, input: Tensor, rois: Tensor, output_size: Union[int, Tuple[int, int]],
                spatial_scale: float = 1.0, sampling_ratio: int = 0, pool_mode: str = "avg",
                aligned: bool = True) -> Tensor:
        check_feature_map("roi_align", input, rois)
        check_choice("roi_align", "pool_mode", pool_mode, tuple(_POOL_MODES))
        ctx.output_size = _pair(output_size)
        ctx.spatial_scale = float(spatial_scale)
        ctx.sampling_ratio = int(sampling_ratio)
        ctx.pool_mode = _POOL_MODES[pool_mode]
        ctx.aligned = bool(aligned)
        ctx.input_shape = input.shape
        output, argmax_y, argmax_x = roi_align_forward(input, rois, ctx.output_size, ctx.spatial_scale,
                                                       ctx.sampling_ratio, ctx.pool_mode, ctx.aligned)
        ctx.save_for_backward(rois, argmax_y, argmax_x)
        return output

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_output: Tensor) -> tuple:
        rois, argmax_y, argmax_x = ctx.saved_tensors
        grad_input = roi_align_backward(grad_output.contiguous(), rois, argmax_y, argmax_x, ctx.input_shape,
                                        ctx.output_size, ctx.spatial_scale, ctx.sampling_ratio, ctx.pool_mode,
                                        ctx.aligned)
        return grad_input, None, None, None, None, None, None


roi_align = RoIAlignFunction.apply


class RoIAlign(nn.Module):
    """RoI align pooling layer, as mmcv's.

    Args:
        output_size (int or tuple): (h, w) of the output bins.
        spatial_scale (float): scale from RoI coordinates to the input map.
        sampling_ratio (int): samples per bin side; 0 means ``ceil(roi size / output size)``.
        pool_mode (str): ``'avg'`` or ``'max'``.
        aligned (bool): shift RoIs by -0.5 pixel (the pixel-model fix); False is the legacy mode.
        use_torchvision (bool): mmcv then calls ``torchvision.ops.roi_align``, which always averages;
            the runtime computes that same average itself (no torchvision needed).

    Shapes: input (N, C, H, W), rois (K, 5) as ``(batch index, x1, y1, x2, y2)``; output
    (K, C, output_size[0], output_size[1]).
    """

    @renamed_kwargs({"out_size": "output_size", "sample_num": "sampling_ratio"})
    def __init__(self, output_size: Union[int, Tuple[int, int]], spatial_scale: float = 1.0,
                 sampling_ratio: int = 0, pool_mode: str = "avg", aligned: bool = True,
                 use_torchvision: bool = False):
        super().__init__()
        self.output_size = _pair(output_size)
        self.spatial_scale = float(spatial_scale)
        self.sampling_ratio = int(sampling_ratio)
        self.pool_mode = pool_mode
        self.aligned = aligned
        self.use_torchvision = use_torchvision

    def forward(self, input: Tensor, rois: Tensor) -> Tensor:
        pool_mode = "avg" if self.use_torchvision else self.pool_mode
        return roi_align(input, rois, self.output_size, self.spatial_scale, self.sampling_ratio, pool_mode,
                         self.aligned)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(output_size={self.output_size}, "
                f"spatial_scale={self.spatial_scale}, sampling_ratio={self.sampling_ratio}, "
                f"pool_mode={self.pool_mode}, aligned={self.aligned}, use_torchvision={self.use_torchvision})")


registry.register(registry.OpEntry(
    op="roi_align",
    names=("RoIAlign", "RoIAlignFunction", "roi_align"),
    ext_functions=("roi_align_backward", "roi_align_forward"),
    backward="yes",
    devices=("any",),
))
