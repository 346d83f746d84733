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

from typing import Any, Iterator, List, NamedTuple, Optional, Tuple, Union

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.nn.modules.utils import _pair

from .. import registry
from ._bilinear import bilinear_taps, redirect_outside_taps, rows_with_zero_row, transposed_row_sum, weighted_row_sum
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


class _PaddedChunk(NamedTuple):
    lo: int
    hi: int
    samples_per_bin: int  # the chunk's largest grid; smaller grids are padded
    y: Tensor  # (RoIs x bins x samples,) sample coordinates
    x: Tensor
    index: Tensor  # (RoIs x bins x samples, 4) taps into the flat rows
    weight: Tensor
    real: Tensor  # (RoIs x bins x samples,) False for padding


def _padded_chunks(geometry: _Geometry, input_shape, channels: int,
                   zero_row: Optional[int] = None) -> Iterator[_PaddedChunk]:
    """RoIs in chunks of bounded (samples x channels), every bin padded to the chunk's largest grid
    so that the samples of a bin can be compared along one axis."""
    _, _, height, width = input_shape
    ph, pw = geometry.pooled
    per_roi = (geometry.grid_h * geometry.grid_w * (ph * pw * max(channels, 1))).clamp(min=1)
    lo = 0
    for hi in _max_chunk_ends(per_roi):
        grid_h, grid_w = geometry.grid_h[lo:hi], geometry.grid_w[lo:hi]
        gh, gw = int(grid_h.max()), int(grid_w.max())
        samples = ragged_samples(torch.full_like(grid_h, gh), torch.full_like(grid_w, gw), ph, pw)
        y, x = geometry.place(samples, lo)
        index, weight = bilinear_taps(y, x, height, width)
        index = index + (geometry.batch[lo:hi][samples.roi] * (height * width)).unsqueeze(1)
        index = redirect_outside_taps(index, weight, zero_row)
        real = (samples.iy < grid_h[samples.roi]) & (samples.ix < grid_w[samples.roi])
        # padding of an empty grid sits at 0/0: keep its NaN coordinates out of the taps
        weight = torch.where(real.unsqueeze(1), weight, torch.zeros_like(weight))
        yield _PaddedChunk(lo, hi, gh * gw, y, x, index, weight, real)
        lo = hi


def _max_pool(input: Tensor, geometry: _Geometry) -> Tuple[Tensor, Tensor, Tensor]:
    n, c, height, width = input.shape
    k, (ph, pw) = geometry.batch.numel(), geometry.pooled
    bins = ph * pw
    out = input.new_full((k, bins, c), _MAX_FLOOR)
    arg_y, arg_x = torch.full_like(out, -1.0), torch.full_like(out, -1.0)
    rows, zero_row = rows_with_zero_row(input)
    for chunk in _padded_chunks(geometry, input.shape, c, zero_row):
        if chunk.samples_per_bin == 0:
            continue  # no samples: the floor, no argmax
        shape = (chunk.hi - chunk.lo, bins, chunk.samples_per_bin)
        values = weighted_row_sum(rows, chunk.index, chunk.weight).view(*shape, c)
        if not bool(chunk.real.all()):
            values.masked_fill_(~chunk.real.view(*shape, 1), float("-inf"))
        # the first largest sample (torch.max keeps the first); it must beat the floor strictly
        best, which = values.max(2)
        picked = best > _MAX_FLOOR
        out[chunk.lo:chunk.hi] = torch.where(picked, best, out.new_tensor(_MAX_FLOOR))
        arg_y[chunk.lo:chunk.hi] = torch.where(picked, chunk.y.view(shape).gather(2, which), -1.0)
        arg_x[chunk.lo:chunk.hi] = torch.where(picked, chunk.x.view(shape).gather(2, which), -1.0)

    def layout(t: Tensor) -> Tensor:
        return t.reshape(k, ph, pw, c).permute(0, 3, 1, 2).contiguous()

    return layout(out), layout(arg_y), layout(arg_x)


def _max_chunk_ends(per_roi: Tensor) -> List[int]:
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
    if pool_mode == 1:
        geometry = _Geometry("roi_align", input_shape, rois, pooled, spatial_scale, sampling_ratio, aligned,
                             grad_output.dtype)
        return average_bins_backward(grad_output, input_shape, geometry.batch, geometry.grid_h, geometry.grid_w,
                                     pooled, geometry.place)
    # the samples are placed in the forward's dtype, so that they equal the recorded maxima exactly
    geometry = _Geometry("roi_align", input_shape, rois, pooled, spatial_scale, sampling_ratio, aligned,
                         argmax_y.dtype)
    return _max_pool_backward(grad_output, geometry, argmax_y, argmax_x, input_shape)


def _max_pool_backward(grad_output: Tensor, geometry: _Geometry, argmax_y: Tensor, argmax_x: Tensor,
                       input_shape) -> Tensor:
    """Each output's gradient goes to the four taps of its recorded maximum, as mmcv's kernel does.

    The maximum is found again among the bin's samples by its coordinates (the first sample at
    them), so the gradient becomes one (samples x channels) matrix that a transposed gather
    spreads over the taps, instead of four scattered adds per output element.
    """
    n, c, height, width = input_shape
    k, (ph, pw) = geometry.batch.numel(), geometry.pooled
    bins = ph * pw

    def bins_last(t: Tensor) -> Tensor:  # (K, C, ph, pw) -> (K, bins, C)
        return t.permute(0, 2, 3, 1).reshape(k, bins, c)

    grad, max_y, max_x = bins_last(grad_output), bins_last(argmax_y), bins_last(argmax_x)
    grad_rows = grad_output.new_zeros((n * height * width, c))
    for chunk in _padded_chunks(geometry, input_shape, c):
        if chunk.samples_per_bin == 0:
            continue
        shape = (chunk.hi - chunk.lo, bins, chunk.samples_per_bin)
        span = slice(chunk.lo, chunk.hi)
        # mmcv skips outputs whose recorded y is -1 (no maximum; also a real sample at y == -1)
        pending = max_y[span] != -1
        y, x, real = chunk.y.view(shape), chunk.x.view(shape), chunk.real.view(shape)
        per_sample = grad.new_empty((*shape, c))
        for sample in range(chunk.samples_per_bin):  # the first sample at the recorded maximum takes it
            hit = (pending & real[:, :, sample, None] & (y[:, :, sample, None] == max_y[span])
                   & (x[:, :, sample, None] == max_x[span]))
            per_sample[:, :, sample] = grad[span] * hit
            pending &= ~hit
        sample_of_tap = torch.arange(chunk.index.size(0), device=grad.device).repeat_interleave(4)
        grad_rows += transposed_row_sum(per_sample.view(-1, c), chunk.index.reshape(-1), chunk.weight.reshape(-1),
                                        sample_of_tap, grad_rows.size(0))
    return grad_rows.reshape(n, height, width, c).permute(0, 3, 1, 2).contiguous()


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
