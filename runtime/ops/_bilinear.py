"""Bilinear sampling as mmcv's kernels do it, shared by the RoI-style ops.

mmcv's ``bilinear_interpolate`` (roi_align, roi_align_rotated, bezier_align, deform_roi_pool,
riroi_align_rotated, border_align) reads a feature map at a real point (y, x) like this:

- a point outside ``[-1, H] x [-1, W]`` reads 0 (but still counts in an average);
- otherwise a coordinate ``<= 0`` is clamped to 0, and one whose integer part reaches the last
  row/column is clamped to it, so the point reads the border pixel;
- the value is the bilinear blend of the four neighbours ``(y_low|y_high, x_low|x_high)``.

:func:`bilinear_taps` turns points into four (pixel index, weight) taps with exactly these rules, and
:func:`weighted_row_sum` sums weighted rows of a channels-last feature table per output element.
Together they compute every sampled op as one sparse weighted gather: only the taps are
materialised, never a (points x channels) tensor per tap, and the backward pass is the transposed
gather, so gradients equal the kernels' adjoint sums.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import torch
from torch import Tensor
from torch.nn import functional as F

#: Taps x channels handled at once where a (taps, channels) product must be materialised.
_TAP_CHUNK_ELEMENTS = 1 << 24


class Corners(NamedTuple):
    """The four neighbours of points after mmcv's clamping, and whether each point reads anything."""

    y: Tensor  # the clamped coordinates (a point past the last row/column sits on it)
    x: Tensor
    y_low: Tensor  # integral-valued, in the coordinates' dtype
    x_low: Tensor
    y_high: Tensor
    x_high: Tensor
    inside: Tensor  # bool: within [-1, H] x [-1, W]


def bilinear_corners(y: Tensor, x: Tensor, height: int, width: int) -> Corners:
    """mmcv's ``bilinear_interpolate`` clamping of points (y, x) on an (H, W) map (module docstring)."""
    inside = ~((y < -1.0) | (y > height) | (x < -1.0) | (x > width))
    y = torch.where(y <= 0, torch.zeros_like(y), y)
    x = torch.where(x <= 0, torch.zeros_like(x), x)
    y_low = y.detach().floor().clamp(max=max(height - 1, 0))
    x_low = x.detach().floor().clamp(max=max(width - 1, 0))
    # a point at or past the last row/column reads that row/column alone
    y = torch.where(y_low >= height - 1, y_low, y)
    x = torch.where(x_low >= width - 1, x_low, x)
    y_high = (y_low + 1).clamp(max=max(height - 1, 0))
    x_high = (x_low + 1).clamp(max=max(width - 1, 0))
    return Corners(y, x, y_low, x_low, y_high, x_high, inside)


def bilinear_taps(y: Tensor, x: Tensor, height: int, width: int) -> Tuple[Tensor, Tensor]:
    """``(index, weight)``, each ``(*y.shape, 4)``: flat pixel indices ``row * width + col`` into one
    (H, W) map and their bilinear weights, by mmcv's rules (see the module docstring). The taps
    are ordered (y_low, x_low), (y_low, x_high), (y_high, x_low), (y_high, x_high).

    Points outside ``[-1, H] x [-1, W]`` get index 0 and weight 0: a non-finite value at pixel (0, 0)
    would turn such a point into NaN, where mmcv's kernels read nothing, so readers of maps that
    may hold one send these taps to a zero row instead (:func:`rows_with_zero_row`). The weights are
    differentiable in ``y`` and ``x`` the way the kernels differentiate them: zero where a
    coordinate is clamped.
    """
    c = bilinear_corners(y, x, height, width)
    ly, lx = c.y - c.y_low, c.x - c.x_low
    hy, hx = 1 - ly, 1 - lx
    weight = torch.stack([hy * hx, hy * lx, ly * hx, ly * lx], -1)
    y_low, x_low, y_high, x_high = (v.long() for v in (c.y_low, c.x_low, c.y_high, c.x_high))
    index = torch.stack([y_low * width + x_low, y_low * width + x_high,
                         y_high * width + x_low, y_high * width + x_high], -1)
    inside = c.inside.unsqueeze(-1)
    return index * inside, weight * inside


def zero_padded_taps(y: Tensor, x: Tensor, height: int, width: int) -> Tuple[Tensor, Tensor, Tensor]:
    """Taps of the *other* bilinear rule in mmcv, with zero padding per corner and no clamping.

    Deformable convolution (``deformable_im2col_bilinear``), multi-scale deformable attention
    (``ms_deform_attn_im2col_bilinear``) and Sparse4D's deformable aggregation read a point (y, x) like
    ``grid_sample(padding_mode="zeros")``: a point reads only when ``-1 < y < H`` and ``-1 < x < W``
    (strict); each of its four neighbours that lies off the map contributes 0; nothing is clamped.

    Returns ``(index, weight, valid)``, each ``(*y.shape, 4)``, taps ordered as in
    :func:`bilinear_taps`. ``index`` is ``row * width + col`` for a valid tap and 0 otherwise, with
    ``weight`` 0 there; ``valid`` says which taps lie on the map, so a reader of a map that may hold a
    non-finite value can send the others to a zero row (``torch.where(valid, index, zero_row)``):
    redirecting by ``weight == 0`` would be wrong here, since a tap on the map has weight 0 at an
    integral coordinate and its weight gradient (the sample's slope) must still see the pixel.
    The weights are differentiable in ``y`` and ``x`` exactly as the kernels' coordinate gradients
    (``get_coordinate_weight``): the slope of the zero-padded blend, 0 outside the open map.
    """
    y_low, x_low = y.detach().floor(), x.detach().floor()
    ly, lx = y - y_low, x - x_low
    hy, hx = 1 - ly, 1 - lx
    inside = (y > -1) & (y < height) & (x > -1) & (x < width)
    row_ok = (y_low >= 0, y_low + 1 <= height - 1)
    col_ok = (x_low >= 0, x_low + 1 <= width - 1)
    valid = torch.stack([row_ok[0] & col_ok[0], row_ok[0] & col_ok[1],
                         row_ok[1] & col_ok[0], row_ok[1] & col_ok[1]], -1) & inside.unsqueeze(-1)
    weight = torch.stack([hy * hx, hy * lx, ly * hx, ly * lx], -1) * valid
    # int64 before adding: a float index loses exactness past 2**24 pixels
    base = y_low.long() * width + x_low.long()
    index = torch.stack([base, base + 1, base + width, base + width + 1], -1) * valid
    return index, weight, valid


def channels_last_rows(input: Tensor) -> Tensor:
    """(N, C, H, W) -> (N * H * W, C): one contiguous row of channels per pixel."""
    n, c, h, w = input.shape
    return input.permute(0, 2, 3, 1).reshape(n * h * w, c)


def rows_with_zero_row(input: Tensor) -> Tuple[Tensor, Optional[int]]:
    """``(rows, zero_row)``: :func:`channels_last_rows`, plus an appended zero row and its index when
    pixel (0, 0) of some image is not finite (where out-of-map taps point), else None."""
    rows = channels_last_rows(input)
    if input.numel() == 0 or bool(torch.isfinite(input[:, :, 0, 0]).all()):
        return rows, None
    return torch.cat([rows, rows.new_zeros((1, rows.size(1)))]), rows.size(0)


def redirect_outside_taps(index: Tensor, weight: Tensor, zero_row: Optional[int]) -> Tensor:
    """``index`` ((..., 4) taps of :func:`bilinear_taps`) with out-of-map points sent to ``zero_row``:
    their four weights are all 0, while the weights of a point on the map sum to 1."""
    if zero_row is None:
        return index
    return torch.where((weight == 0).all(-1, keepdim=True), torch.full_like(index, zero_row), index)


class _WeightedRowSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, rows: Tensor, index: Tensor, weight: Tensor, offsets: Tensor) -> Tensor:
        ctx.save_for_backward(rows, index, weight, offsets)
        return F.embedding_bag(index, rows, offsets, mode="sum", per_sample_weights=weight)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        rows, index, weight, offsets = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        bag = bag_of_each_tap(offsets, index.numel())
        grad_rows = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_rows = transposed_row_sum(grad_out, index, weight, bag, rows.size(0))
        if ctx.needs_input_grad[2]:
            grad_weight = tap_dots(rows, index, grad_out, bag).to(weight.dtype)
        return grad_rows, None, grad_weight, None


#: embedding_bag's own gradient of its per-sample weights: one fused kernel that never materialises
#: the (taps, channels) products (~15x faster than gathering both sides on CPU). Private to torch,
#: so it is looked up, and a chunked gather stands in where a torch lacks it.
_PER_SAMPLE_WEIGHTS_BACKWARD = getattr(torch.ops.aten, "_embedding_bag_per_sample_weights_backward", None)


def tap_dots(rows: Tensor, index: Tensor, grad_out: Tensor, bag: Tensor) -> Tensor:
    """(T,) ``<rows[index[t]], grad_out[bag[t]]>`` for every tap t: the gradient of a tap's weight in
    :func:`weighted_row_sum`, and the channel sum of a tap's row against its output's gradient (the
    kernels' coordinate gradients are built from these)."""
    index, bag = index.reshape(-1), bag.reshape(-1)
    grad_out = grad_out.to(rows.dtype).contiguous()
    if index.numel() == 0 or rows.size(1) == 0:
        return rows.new_zeros(index.numel())
    if _PER_SAMPLE_WEIGHTS_BACKWARD is not None:
        return _PER_SAMPLE_WEIGHTS_BACKWARD(grad_out, rows, index, bag.new_empty(0), bag, 0, -1)
    return _gathered_tap_dots(rows, index, grad_out, bag)


def _gathered_tap_dots(rows: Tensor, index: Tensor, grad_out: Tensor, bag: Tensor) -> Tensor:
    dots = rows.new_empty(index.numel())
    step = max(1, _TAP_CHUNK_ELEMENTS // rows.size(1))
    for lo in range(0, index.numel(), step):
        hi = min(lo + step, index.numel())
        dots[lo:hi] = (rows.index_select(0, index[lo:hi]) * grad_out.index_select(0, bag[lo:hi])).sum(1)
    return dots


def transposed_row_sum(grad_out: Tensor, index: Tensor, weight: Tensor, bag: Tensor, num_rows: int) -> Tensor:
    """The adjoint of :func:`weighted_row_sum`: (num_rows, C), row r summing ``weight[t] * grad_out[bag[t]]``
    over the taps t with ``index[t] == r``; one more weighted gather, over the taps sorted by row."""
    order = index.argsort()
    counts = torch.bincount(index, minlength=num_rows)
    if grad_out.size(1) == 0 or index.numel() == 0:
        return grad_out.new_zeros((num_rows, grad_out.size(1)))
    return F.embedding_bag(bag[order], grad_out.contiguous(), torch.cumsum(counts, 0) - counts, mode="sum",
                           per_sample_weights=weight[order].to(grad_out.dtype))


def bag_of_each_tap(offsets: Tensor, taps: int) -> Tensor:
    """(taps,) the bag of every tap, for bags starting at ``offsets``."""
    sizes = torch.diff(offsets, append=offsets.new_tensor([taps]))
    return torch.repeat_interleave(torch.arange(offsets.numel(), device=offsets.device), sizes)


def weighted_row_sum(rows: Tensor, index: Tensor, weight: Tensor, offsets: Optional[Tensor] = None) -> Tensor:
    """``out[b] = sum(weight[t] * rows[index[t]] for t in bag b)``, differentiable in rows and weight.

    Args:
        rows: (P, C) table, e.g. :func:`channels_last_rows` of a feature map.
        index: (B, T) row indices, T taps per output row; or flat (E,) with ``offsets``.
        weight: the same shape as ``index``.
        offsets: (B,) start of each bag in a flat ``index`` (bags may differ in size).

    Returns:
        (B, C). Gradients: ``rows`` gets the transposed gather (each row sums weight x output
        gradient over the taps that read it), ``weight`` gets ``<rows[index], grad_out[bag]>``.
    """
    if offsets is None:
        taps = index.size(1) if index.dim() == 2 else 1
        offsets = torch.arange(0, index.numel(), taps, device=index.device)
    index, weight = index.reshape(-1), weight.reshape(-1).to(rows.dtype)
    if rows.size(1) == 0 or offsets.numel() == 0:  # embedding_bag rejects empty tables and bags
        return rows.new_zeros((offsets.numel(), rows.size(1))) + 0 * weight.sum()
    return _WeightedRowSum.apply(rows, index, weight, offsets)
