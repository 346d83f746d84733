"""Average pooling of bilinear samples over RoI bins: the engine of roi_align, roi_align_rotated,
bezier_align and deform_roi_pool.

Those kernels share one shape: RoI k is cut into ``pooled_h x pooled_w`` bins, each bin is sampled
on a ``grid_h[k] x grid_w[k]`` grid (``sampling_ratio``, or adaptively ``ceil(roi size / bins)``
per RoI), every sample is read bilinearly, and a bin's output is the sum of its samples divided
by ``max(grid_h * grid_w, 1)``. Only *where* the samples lie differs between the ops; each op passes
a function that places them.

Samples are laid out ragged, RoI after RoI, so adaptive grids cost what they sample and nothing is
padded to the largest RoI. RoIs are processed in chunks of bounded tap count, and the backward pass
recomputes the taps chunk by chunk instead of keeping them, so memory stays bounded by the chunk
and the (N*H*W, C) gradient, as in mmcv's kernels.
"""

from __future__ import annotations

from typing import Callable, Iterator, NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from ._bilinear import (bag_of_each_tap, bilinear_taps, redirect_outside_taps, rows_with_zero_row, transposed_row_sum,
                        weighted_row_sum)

#: Bilinear taps (4 per sample) generated at once; about 24 bytes of index and weight each.
_TAPS_PER_CHUNK = 1 << 22


class BinSamples(NamedTuple):
    """The samples of RoIs ``lo:hi``, flat, ordered by (roi, bin row, bin column, grid row, grid column)."""

    roi: Tensor  # (S,) RoI of each sample, counted from lo
    ph: Tensor  # (S,) bin row
    pw: Tensor  # (S,) bin column
    iy: Tensor  # (S,) grid row inside the bin
    ix: Tensor  # (S,) grid column inside the bin
    bin_offsets: Tensor  # (B,) first sample of each bin, B = (hi - lo) * pooled_h * pooled_w


#: places samples: (samples of RoIs lo:hi, lo) -> (y, x) feature-map coordinates, each (S,)
PlaceSamples = Callable[[BinSamples, int], Tuple[Tensor, Tensor]]


def ragged_samples(grid_h: Tensor, grid_w: Tensor, pooled_h: int, pooled_w: int) -> BinSamples:
    """Every sample of RoIs with per-RoI grids ``grid_h, grid_w`` ((K,) long, may be 0)."""
    device = grid_h.device
    bins = pooled_h * pooled_w
    per_bin = grid_h * grid_w
    per_roi = per_bin * bins
    roi = torch.repeat_interleave(torch.arange(grid_h.numel(), device=device), per_roi)
    start = torch.cumsum(per_roi, 0) - per_roi
    t = torch.arange(roi.numel(), device=device) - start[roi]  # sample number inside its RoI
    g, gw = per_bin[roi], grid_w[roi]
    bin_in_roi, r = t // g.clamp(min=1), t % g.clamp(min=1)
    bin_sizes = per_bin.repeat_interleave(bins)
    return BinSamples(roi, bin_in_roi // pooled_w, bin_in_roi % pooled_w, r // gw.clamp(min=1),
                      r % gw.clamp(min=1), torch.cumsum(bin_sizes, 0) - bin_sizes)


def adaptive_grid(size: Tensor, pooled: int, sampling_ratio: int) -> Tensor:
    """(K,) samples per bin along one side: ``sampling_ratio`` or ``ceil(size / pooled)``."""
    if sampling_ratio > 0:
        return torch.full(size.shape, sampling_ratio, dtype=torch.long, device=size.device)
    return torch.ceil(size / pooled).long().clamp(min=0)


def _chunks(grid_h: Tensor, grid_w: Tensor, bins: int) -> Iterator[Tuple[int, int]]:
    """RoI ranges ``lo:hi`` of at most ~_TAPS_PER_CHUNK taps (a single RoI may exceed it)."""
    k = grid_h.numel()
    if k == 0:
        return
    taps = torch.cumsum(grid_h * grid_w * (4 * bins), 0)
    if int(taps[-1]) <= _TAPS_PER_CHUNK:
        yield 0, k
        return
    cuts = torch.searchsorted(taps, torch.arange(_TAPS_PER_CHUNK, int(taps[-1]), _TAPS_PER_CHUNK,
                                                 device=taps.device)).tolist()
    bounds = sorted({0, k, *[min(c + 1, k) for c in cuts]})
    yield from zip(bounds[:-1], bounds[1:])


class SampleChunk(NamedTuple):
    """RoIs ``lo:hi`` with their samples, sample coordinates and bilinear taps into the flat
    (N*H*W) rows of the feature map; ``offsets`` starts each bin's taps (4 per sample)."""

    lo: int
    hi: int
    samples: BinSamples
    y: Tensor
    x: Tensor
    index: Tensor  # (S * 4,)
    weight: Tensor  # (S * 4,)
    offsets: Tensor  # (B,)


def sample_chunks(input_shape, batch: Tensor, grid_h: Tensor, grid_w: Tensor, pooled: Tuple[int, int],
                  place: PlaceSamples, zero_row: Optional[int] = None) -> Iterator[SampleChunk]:
    """The samples of all RoIs, a bounded chunk of RoIs at a time (out-of-map taps pointing at
    ``zero_row`` when one is given, see :func:`._bilinear.rows_with_zero_row`)."""
    _, _, height, width = input_shape
    for lo, hi in _chunks(grid_h, grid_w, pooled[0] * pooled[1]):
        samples = ragged_samples(grid_h[lo:hi], grid_w[lo:hi], *pooled)
        y, x = place(samples, lo)
        index, weight = bilinear_taps(y, x, height, width)
        index = index + (batch[lo:hi][samples.roi] * (height * width)).unsqueeze(1)
        index = redirect_outside_taps(index, weight, zero_row)
        yield SampleChunk(lo, hi, samples, y, x, index.reshape(-1), weight.reshape(-1), samples.bin_offsets * 4)


def bin_of_each_tap(chunk: SampleChunk, bins: int) -> Tensor:
    """(S * 4,) the global bin (``roi * bins + ph * pooled_w + pw``) of each tap of a chunk."""
    first_bin = chunk.lo * bins
    return bag_of_each_tap(chunk.offsets, chunk.index.numel()) + first_bin


def bin_counts(grid_h: Tensor, grid_w: Tensor, bins: int, dtype) -> Tensor:
    """(K * bins,) the divisor of every bin: ``max(grid_h * grid_w, 1)`` of its RoI."""
    return (grid_h * grid_w).clamp(min=1).to(dtype).repeat_interleave(bins)


def average_bins(input: Tensor, batch: Tensor, grid_h: Tensor, grid_w: Tensor, pooled: Tuple[int, int],
                 place: PlaceSamples) -> Tensor:
    """(K, C, pooled_h, pooled_w): each bin's sample sum over ``max(grid_h * grid_w, 1)``.

    Differentiable in ``input`` and in whatever ``place`` computes the coordinates from.
    """
    k, c = batch.numel(), input.size(1)
    bins = pooled[0] * pooled[1]
    rows, zero_row = rows_with_zero_row(input)
    parts = [weighted_row_sum(rows, chunk.index, chunk.weight, chunk.offsets)
             for chunk in sample_chunks(input.shape, batch, grid_h, grid_w, pooled, place, zero_row)]
    sums = torch.cat(parts) if parts else input.new_zeros((0, c))
    counts = bin_counts(grid_h, grid_w, bins, sums.dtype).unsqueeze(1)
    out = sums / counts if sums.requires_grad else sums.div_(counts)  # in place: one (bins, C) copy less
    return out.reshape(k, *pooled, c).permute(0, 3, 1, 2).contiguous()


def average_bins_backward(grad_output: Tensor, input_shape, batch: Tensor, grid_h: Tensor, grid_w: Tensor,
                          pooled: Tuple[int, int], place: PlaceSamples) -> Tensor:
    """The input gradient of :func:`average_bins`, recomputing the taps chunk by chunk: (N, C, H, W)."""
    n, c, height, width = input_shape
    bins = pooled[0] * pooled[1]
    grad_bins = grad_output.permute(0, 2, 3, 1).reshape(-1, c)
    grad_bins = grad_bins / bin_counts(grid_h, grid_w, bins, grad_bins.dtype).unsqueeze(1)
    grad_rows = grad_output.new_zeros((n * height * width, c))
    for chunk in sample_chunks(input_shape, batch, grid_h, grid_w, pooled, place):
        bag = bin_of_each_tap(chunk, bins)
        grad_rows += transposed_row_sum(grad_bins, chunk.index, chunk.weight, bag, grad_rows.size(0))
    return grad_rows.reshape(n, height, width, c).permute(0, 3, 1, 2).contiguous()
