"""``mmcv.ops.multi_scale_deform_attn``: multi-scale deformable attention (Deformable DETR, BEVFormer).

Semantics follow mmcv's CUDA kernel (``ms_deform_attn_cuda_kernel.cuh``; mmcv 1.7.2 and 2.2.0 ship
the same one). For a query ``q`` of batch ``b``, head ``h``, level ``l`` of shape ``(H, W)`` and point
``p`` with location ``(loc_x, loc_y)``:

- the point sits at ``w_im = loc_x * W - 0.5``, ``h_im = loc_y * H - 0.5`` (pixel centres at
  integers) and reads only when ``-1 < h_im < H`` and ``-1 < w_im < W`` (strictly);
- it blends its four neighbours bilinearly, each neighbour off the map contributing 0 (zero
  padding per corner, no clamping): ``grid_sample(align_corners=False, padding_mode="zeros")``,
  which is what mmcv's ``multi_scale_deformable_attn_pytorch`` calls;
- ``output[b, q, h * D:(h + 1) * D] = sum over l, p of attention_weights[b, q, h, l, p] * sample``.

The backward is the kernel's: ``grad_value`` receives ``bilinear weight x attention weight x
grad_output`` at each corner on the map, ``grad_attention_weights`` is ``<sample, grad_output>``,
and ``grad_sampling_locations`` is the slope of the zero-padded blend times ``W`` (x) or ``H`` (y)
times the attention weight, 0 for points that do not read.

How it is computed: ``value`` (bs, num_keys, num_heads, head_dim) already is a table of rows
``(bs * num_keys * num_heads, head_dim)``, so every ``(b, query, head)`` is one bag of
``num_levels * num_points * 4`` taps (:func:`._bilinear.zero_padded_taps`), each weighted by its
bilinear weight times the point's attention weight: the forward pass is one
:func:`._bilinear.weighted_row_sum` (``F.embedding_bag``) per chunk of queries. The backward pass
is explicit and works on each chunk's on-map taps sorted by row (so that ``value`` is read nearly
sequentially): ``<row, grad_output of the tap's bag>`` per tap gives the attention-weight and
location gradients, and the value gradient is each distinct row's taps summed by one more
``embedding_bag`` and added to that row. Only chunks of taps are ever materialised, never a
(queries x points x channels) tensor, and nothing is saved for the backward pass but the inputs.

Differences from mmcv, all on inputs mmcv rejects or mis-handles: ``im2col_step`` only bounds
memory in mmcv's CUDA path, which also requires ``batch % min(batch, im2col_step) == 0``; here any
batch works (the chunking is the runtime's own). Locations and attention weights are cast to the
value's dtype as mmcv's autograd Function does, also by ``multi_scale_deformable_attn_pytorch``.
Half-precision inputs are computed in float32 and returned in their dtype (mmcv's CUDA kernel
rounds every intermediate to half). For float64 inputs the kernel's ``floorf`` rounds a coordinate
to float32 before flooring; the runtime floors the float64 coordinate (they differ only within
float32 rounding of an integer).
"""

from __future__ import annotations

import contextlib
import copy
import math
import warnings
from typing import Any, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import Function, once_differentiable

from .. import registry
from ..model_registry import register_model
from ._bilinear import tap_dots, weighted_row_sum, zero_padded_taps
from ._checks import check_int, check_same_device, check_tensor, compute_dtype, no_autocast, renamed_kwargs

__all__ = ["MultiScaleDeformableAttention", "MultiScaleDeformableAttnFunction",
           "multi_scale_deformable_attn_pytorch"]

_OP = "multi_scale_deform_attn"
#: taps (bilinear corners) handled at once by the forward pass: ~60 bytes each at the peak
_FORWARD_TAPS = 1 << 21
#: taps handled at once by the backward pass, which sorts them by row: chunks of about this size
#: sort and gather fastest (larger ones fall out of cache)
_BACKWARD_TAPS = 1 << 20
#: sorted taps whose value-gradient sums (distinct rows x head_dim) are held at once
_SCATTER_TAPS = 1 << 19


# --- input checks ------------------------------------------------------------------------------


class _Problem(NamedTuple):
    """Sizes of one call: value (bs, num_keys, heads, dim), locations (bs, queries, heads, levels, points, 2)."""

    bs: int
    num_keys: int
    heads: int
    dim: int
    queries: int
    levels: int
    points: int


def _check_tensor(op: str, name: str, t: Any, rank: int, floating: bool = True) -> Tensor:
    return check_tensor(op, name, t, dim=rank, kind="floating" if floating else "integer")


def check_inputs(op: str, value: Tensor, spatial_shapes: Tensor, level_start_index: Optional[Tensor],
                 sampling_locations: Tensor, attention_weights: Tensor, exact_keys: bool = False) -> _Problem:
    """Shapes, dtypes and devices of the op's inputs, and that every level lies inside ``value``.

    ``exact_keys``: the levels must tile ``value`` exactly (``multi_scale_deformable_attn_pytorch``
    splits it by their sizes); otherwise they only have to fit (the kernel reads at the starts).
    """
    _check_tensor(op, "value", value, 4)
    _check_tensor(op, "spatial_shapes", spatial_shapes, 2, floating=False)
    _check_tensor(op, "sampling_locations", sampling_locations, 6)
    _check_tensor(op, "attention_weights", attention_weights, 5)
    bs, num_keys, heads, dim = value.shape
    levels = spatial_shapes.size(0)
    if spatial_shapes.size(1) != 2:
        raise ValueError(f"{op}: spatial_shapes must have shape (num_levels, 2), got {tuple(spatial_shapes.shape)}")
    loc = sampling_locations.shape
    if loc[0] != bs or loc[2] != heads or loc[3] != levels or loc[5] != 2:
        raise ValueError(f"{op}: sampling_locations must have shape (bs={bs}, num_queries, num_heads={heads}, "
                         f"num_levels={levels}, num_points, 2), got {tuple(loc)}")
    if tuple(attention_weights.shape) != tuple(loc[:5]):
        raise ValueError(f"{op}: attention_weights must have shape {tuple(loc[:5])} (sampling_locations without "
                         f"its last dimension), got {tuple(attention_weights.shape)}")
    if level_start_index is not None:
        _check_tensor(op, "level_start_index", level_start_index, 1, floating=False)
        if level_start_index.size(0) != levels:
            raise ValueError(f"{op}: level_start_index must have shape ({levels},) like spatial_shapes, "
                             f"got {tuple(level_start_index.shape)}")
    check_same_device(op, value=value, spatial_shapes=spatial_shapes, level_start_index=level_start_index,
                      sampling_locations=sampling_locations, attention_weights=attention_weights)
    _check_levels(op, spatial_shapes, level_start_index, num_keys, exact_keys)
    return _Problem(bs, num_keys, heads, dim, loc[1], levels, loc[4])


def _check_levels(op: str, spatial_shapes: Tensor, level_start_index: Optional[Tensor], num_keys: int,
                  exact: bool) -> None:
    if spatial_shapes.numel() == 0:
        return
    sizes = spatial_shapes.long().prod(1)
    if exact or level_start_index is None:
        if bool((spatial_shapes < 0).any()) or int(sizes.sum()) != num_keys:
            raise ValueError(f"{op}: the levels' sizes H * W must sum to num_keys = value.size(1) = {num_keys}, "
                             f"got spatial_shapes {spatial_shapes.tolist()}")
        return
    start = level_start_index.long()
    if bool((spatial_shapes < 0).any() | (start < 0).any() | (start + sizes > num_keys).any()):
        raise ValueError(f"{op}: every level [start, start + H * W) must lie within num_keys = value.size(1) = "
                         f"{num_keys}, got spatial_shapes {spatial_shapes.tolist()} and level_start_index "
                         f"{level_start_index.tolist()}")


# --- the functional core -----------------------------------------------------------------------


class _Levels(NamedTuple):
    """Per-level sizes as (L, 1) tensors, broadcasting over (..., levels, points)."""

    height: Tensor
    width: Tensor
    start: Tensor


def _levels(spatial_shapes: Tensor, level_start_index: Optional[Tensor]) -> _Levels:
    shapes = spatial_shapes.long()
    if level_start_index is None:
        sizes = shapes.prod(1)
        start = torch.cumsum(sizes, 0) - sizes
    else:
        start = level_start_index.long()
    return _Levels(shapes[:, 0, None], shapes[:, 1, None], start[:, None])


class _Taps(NamedTuple):
    """The four corner taps of a chunk of points, (n, heads, levels, points, 4) each."""

    row: Tensor  # int64 row of value.view(-1, head_dim); pixel 0 of the level for taps off the map
    weight: Tensor  # bilinear weight, 0 off the map
    valid: Tensor  # bool: the corner lies on the map of a point that reads
    y: Tensor  # (n, heads, levels, points) pixel coordinates of the points
    x: Tensor


def _taps(loc: Tensor, lv: _Levels, first: int, p: _Problem) -> _Taps:
    """Taps of query rows ``first .. first + n`` of the flattened (bs * queries) locations ``loc``."""
    x = loc[..., 0] * lv.width - 0.5  # the kernel's w_im, h_im
    y = loc[..., 1] * lv.height - 0.5
    pixel, weight, valid = zero_padded_taps(y, x, lv.height, lv.width)
    n = loc.size(0)
    batch = torch.arange(first, first + n, device=loc.device).div_(p.queries, rounding_mode="floor")
    head = torch.arange(p.heads, device=loc.device)
    # row of pixel 0 of (b, level, head): ((b * num_keys + start) * heads + head), (n, heads, levels)
    origin = (batch[:, None, None] * p.num_keys + lv.start.view(1, 1, -1)) * p.heads + head[None, :, None]
    row = pixel.mul_(p.heads).add_(origin[..., None, None])
    return _Taps(row, weight, valid, y, x)


def _zero_row_needed(value: Tensor, lv: _Levels) -> bool:
    """Taps off the map point at pixel 0 of their level with weight 0; that reads NaN when the pixel
    is not finite, where the kernel reads nothing."""
    if value.numel() == 0 or lv.start.numel() == 0:
        return False
    starts = lv.start.view(-1).clamp(max=value.size(1) - 1)
    return not bool(torch.isfinite(value.index_select(1, starts)).all())


@contextlib.contextmanager
def _exact_math(device: torch.device):
    """No autograd and no autocast (mmcv's kernels ignore it) around the core's arithmetic."""
    with torch.no_grad(), no_autocast(device):
        yield


def _prepare(value: Tensor, sampling_locations: Tensor, attention_weights: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Inputs in the compute dtype: locations and weights cast to the value's dtype first (as mmcv's
    Function does), half precision widened to float32."""
    dtype = compute_dtype(value.dtype)
    loc = sampling_locations.to(value.dtype).to(dtype)
    attn = attention_weights.to(value.dtype).to(dtype)
    return value.to(dtype).contiguous(), loc.contiguous(), attn.contiguous()


def ms_deform_attn_forward(value: Tensor, spatial_shapes: Tensor, level_start_index: Optional[Tensor],
                           sampling_locations: Tensor, attention_weights: Tensor, op: str = _OP) -> Tensor:
    """The kernel's forward: (bs, num_queries, num_heads * head_dim) in the value's dtype, no autograd.

    Args:
        value: (bs, num_keys, num_heads, head_dim).
        spatial_shapes: (num_levels, 2) integer (H, W) of each level.
        level_start_index: (num_levels,) first key of each level; None: the levels tile ``value``.
        sampling_locations: (bs, num_queries, num_heads, num_levels, num_points, 2) as (x, y) in [0, 1].
        attention_weights: (bs, num_queries, num_heads, num_levels, num_points).
        op: the name errors give.
    """
    p = check_inputs(op, value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    return _run_forward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, p)


def _run_forward(value: Tensor, spatial_shapes: Tensor, level_start_index: Optional[Tensor],
                 sampling_locations: Tensor, attention_weights: Tensor, p: _Problem) -> Tensor:
    with _exact_math(value.device):
        rows, loc, attn = _prepare(value, sampling_locations, attention_weights)
        out = _forward(rows, _levels(spatial_shapes, level_start_index), loc, attn, p)
    return out.to(value.dtype)


def _forward(value: Tensor, lv: _Levels, loc: Tensor, attn: Tensor, p: _Problem) -> Tensor:
    rows = value.view(-1, p.dim)
    out = value.new_zeros((p.bs * p.queries, p.heads, p.dim))
    taps_per_query = p.heads * p.levels * p.points * 4
    if out.numel() == 0 or taps_per_query == 0 or rows.size(0) == 0:
        return out.view(p.bs, p.queries, p.heads * p.dim)
    zero_row = None
    if _zero_row_needed(value, lv):
        zero_row = rows.size(0)
        rows = torch.cat([rows, rows.new_zeros((1, p.dim))])
    loc = loc.view(p.bs * p.queries, p.heads, p.levels, p.points, 2)
    attn = attn.view(p.bs * p.queries, p.heads, p.levels, p.points)
    step = max(1, _FORWARD_TAPS // taps_per_query)
    for lo in range(0, p.bs * p.queries, step):
        hi = min(lo + step, p.bs * p.queries)
        taps = _taps(loc[lo:hi], lv, lo, p)
        # the where (not a product) keeps a NaN location or weight of a point that reads nothing out
        weight = torch.where(taps.valid, taps.weight * attn[lo:hi, ..., None], 0)
        row = taps.row if zero_row is None else torch.where(taps.valid, taps.row, zero_row)
        bag = p.levels * p.points * 4
        out[lo:hi] = weighted_row_sum(rows, row.view(-1, bag), weight.view(-1, bag)).view(hi - lo, p.heads, p.dim)
    return out.view(p.bs, p.queries, p.heads * p.dim)


def ms_deform_attn_backward(value: Tensor, spatial_shapes: Tensor, level_start_index: Optional[Tensor],
                            sampling_locations: Tensor, attention_weights: Tensor, grad_output: Tensor,
                            grad_value: Optional[Tensor] = None, need_value: bool = True, need_location: bool = True,
                            need_weight: bool = True,
                            op: str = _OP) -> Tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
    """The kernel's backward: ``(grad_value, grad_sampling_locations, grad_attention_weights)``, shaped and
    typed like the inputs (None where not needed).

    Args:
        grad_output: (bs, num_queries, num_heads * head_dim) (any shape with that many elements).
        grad_value: when given, the value gradient is added into it (in place, as the kernel's
            atomicAdd) and it is returned.
        need_value, need_location, need_weight: which gradients to compute.
        The others as in :func:`ms_deform_attn_forward`.
    """
    p = check_inputs(op, value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    if not isinstance(grad_output, Tensor):
        raise TypeError(f"{op}: grad_output must be a torch.Tensor, got {type(grad_output).__name__}")
    if grad_output.numel() != p.bs * p.queries * p.heads * p.dim:
        raise ValueError(f"{op}: grad_output must have shape ({p.bs}, {p.queries}, {p.heads * p.dim}), "
                         f"got {tuple(grad_output.shape)}")
    if grad_value is not None and (not isinstance(grad_value, Tensor) or grad_value.shape != value.shape):
        shape = tuple(grad_value.shape) if isinstance(grad_value, Tensor) else type(grad_value).__name__
        raise ValueError(f"{op}: grad_value must have the shape of value {tuple(value.shape)}, got {shape}")
    check_same_device(op, value=value, grad_output=grad_output, grad_value=grad_value)
    return _run_backward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, grad_output,
                         p, grad_value, need_value or grad_value is not None, need_location, need_weight)


def _run_backward(value: Tensor, spatial_shapes: Tensor, level_start_index: Optional[Tensor],
                  sampling_locations: Tensor, attention_weights: Tensor, grad_output: Tensor, p: _Problem,
                  grad_value: Optional[Tensor], need_value: bool, need_location: bool,
                  need_weight: bool) -> Tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
    with _exact_math(value.device):
        rows, loc, attn = _prepare(value, sampling_locations, attention_weights)
        g = grad_output.to(rows.dtype).reshape(-1, p.dim).contiguous()
        # the value gradient is accumulated in the compute dtype: into grad_value itself when it has it
        direct = grad_value is not None and grad_value.dtype == rows.dtype and grad_value.is_contiguous()
        into = None
        if direct:
            into = grad_value.view(rows.shape)
        elif need_value:
            into = torch.zeros_like(rows)
        grad_loc, grad_attn = _backward(rows, _levels(spatial_shapes, level_start_index), loc, attn, g, p,
                                        None if into is None else into.view(-1, p.dim), need_location or need_weight)
    out_value = None
    if grad_value is not None:
        if not direct:
            grad_value.add_(into.to(grad_value.dtype))
        out_value = grad_value
    elif need_value:
        out_value = into.to(value.dtype)
    out_loc = grad_loc.view(sampling_locations.shape).to(sampling_locations.dtype) if need_location else None
    out_attn = grad_attn.view(attention_weights.shape).to(attention_weights.dtype) if need_weight else None
    return out_value, out_loc, out_attn


def _backward(value: Tensor, lv: _Levels, loc: Tensor, attn: Tensor, g: Tensor, p: _Problem,
              grad_rows: Optional[Tensor], need_points: bool) -> Tuple[Tensor, Tensor]:
    """Accumulates the value gradient into ``grad_rows`` (when given); returns the location (n, heads,
    levels, points, 2) and attention-weight gradients (zeros when not ``need_points``)."""
    n_rows = p.bs * p.queries
    grad_loc = loc.new_zeros((n_rows, p.heads, p.levels, p.points, 2))
    grad_attn = attn.new_zeros((n_rows, p.heads, p.levels, p.points))
    taps_per_query = p.heads * p.levels * p.points * 4
    if taps_per_query == 0 or n_rows == 0 or p.dim == 0 or value.numel() == 0:
        return grad_loc, grad_attn
    rows = value.view(-1, p.dim)
    loc = loc.view(n_rows, p.heads, p.levels, p.points, 2)
    attn = attn.view(n_rows, p.heads, p.levels, p.points)
    step = max(1, _BACKWARD_TAPS // taps_per_query)
    for lo in range(0, n_rows, step):
        hi = min(lo + step, n_rows)
        taps = _taps(loc[lo:hi], lv, lo, p)
        sorted_taps = _SortedTaps.of(taps, rows.size(0))
        if sorted_taps is None:  # no point of the chunk reads
            continue
        a = attn[lo:hi]
        g_chunk = g[lo * p.heads:hi * p.heads]
        if need_points:
            dots = sorted_taps.dots(rows, g_chunk).view(taps.row.shape)
            grad_loc[lo:hi], grad_attn[lo:hi] = _point_gradients(taps, dots, a, lv)
        if grad_rows is not None:
            weight = taps.weight * a[..., None]
            sorted_taps.scatter(grad_rows, weight, g_chunk)
    return grad_loc, grad_attn


class _SortedTaps(NamedTuple):
    """The on-map taps of a chunk sorted by row: gathers in that order read ``value`` nearly sequentially."""

    row: Tensor  # (K,) sorted rows, int32 where they fit (sorting is cheaper)
    tap: Tensor  # (K,) int64 position of each in the chunk's flat taps
    bag: Tensor  # (K,) int64 its (query, head) bag in the chunk
    count: int  # taps in the chunk

    @staticmethod
    def of(taps: _Taps, num_rows: int) -> Optional["_SortedTaps"]:
        keep = taps.valid.view(-1).nonzero().squeeze(1)
        if keep.numel() == 0:
            return None
        row = taps.row.view(-1).index_select(0, keep)
        if num_rows < 2 ** 31:
            row = row.int()
        row, order = row.sort()
        tap = keep.index_select(0, order)
        per_bag = taps.row.size(2) * taps.row.size(3) * 4
        return _SortedTaps(row, tap, tap.div(per_bag, rounding_mode="floor"), taps.row.numel())

    def dots(self, rows: Tensor, g: Tensor) -> Tensor:
        """(count,) ``<rows[row of tap], g[bag of tap]>``, 0 for taps off the map."""
        dots = tap_dots(rows, self.row.long(), g, self.bag)
        return g.new_zeros(self.count).scatter_(0, self.tap, dots)

    def scatter(self, grad_rows: Tensor, weight: Tensor, g: Tensor) -> None:
        """``grad_rows[row[t]] += weight[t] * g[bag of t]``: each distinct row's taps summed by one
        embedding_bag, then added to that row; by slices of the sorted taps, which bounds the
        (distinct rows x head_dim) sums held at once."""
        weight = weight.view(-1).index_select(0, self.tap)
        for lo in range(0, self.row.numel(), _SCATTER_TAPS):
            hi = min(lo + _SCATTER_TAPS, self.row.numel())
            distinct, counts = torch.unique_consecutive(self.row[lo:hi], return_counts=True)
            summed = F.embedding_bag(self.bag[lo:hi], g, torch.cumsum(counts, 0) - counts, mode="sum",
                                     per_sample_weights=weight[lo:hi])
            grad_rows.index_add_(0, distinct.long(), summed)


def _point_gradients(taps: _Taps, dots: Tensor, attn: Tensor, lv: _Levels) -> Tuple[Tensor, Tensor]:
    """Location (n, heads, levels, points, 2) and attention-weight gradients from the taps' dots
    (0 for corners off the map), as the kernel's ``ms_deform_attn_col2im_bilinear``."""
    d0, d1, d2, d3 = dots.unbind(-1)
    # slopes of the zero-padded blend along x (w) and y (h) per pixel: (1 - l) * near + l * far
    slope_x = torch.lerp(d1 - d0, d3 - d2, taps.y.remainder(1))
    slope_y = torch.lerp(d2 - d0, d3 - d1, taps.x.remainder(1))
    silent = ~taps.valid.any(-1, keepdim=True)  # a point inside (-1, H) x (-1, W) has a corner on the map
    grad_attn = torch.linalg.vecdot(taps.weight, dots).unsqueeze(-1).masked_fill_(silent, 0)
    scale = torch.stack([lv.width, lv.height], -1) * attn[..., None]  # W or H times the attention weight
    grad_loc = torch.stack([slope_x, slope_y], -1).mul_(scale).masked_fill_(silent, 0)
    return grad_loc, grad_attn.squeeze(-1)


class _MSDeformAttnCore(Function):
    """The differentiable core behind the module and ``multi_scale_deformable_attn_pytorch`` (inputs
    already checked; ``problem`` holds their sizes)."""

    @staticmethod
    def forward(ctx: Any, value: Tensor, spatial_shapes: Tensor, level_start_index: Optional[Tensor],
                sampling_locations: Tensor, attention_weights: Tensor, problem: _Problem) -> Tensor:
        ctx.problem = problem
        ctx.save_for_backward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
        return _run_forward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, problem)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_output: Tensor) -> tuple:
        return _function_backward(ctx, grad_output)


def _function_backward(ctx: Any, grad_output: Tensor) -> tuple:
    value, spatial_shapes, level_start_index, loc, attn = ctx.saved_tensors
    need_value, _, _, need_loc, need_attn, _ = ctx.needs_input_grad
    grad_value, grad_loc, grad_attn = _run_backward(value, spatial_shapes, level_start_index, loc, attn,
                                                    grad_output, ctx.problem, None, need_value, need_loc, need_attn)
    return grad_value, None, None, grad_loc, grad_attn, None


class MultiScaleDeformableAttnFunction(Function):
    """mmcv's autograd Function: ``apply(value, value_spatial_shapes, value_level_start_index,
    sampling_locations, attention_weights, im2col_step)`` -> (bs, num_queries, embed_dims).

    Once-differentiable, as mmcv's. ``im2col_step`` must be an int >= 1 and is otherwise unused (the
    runtime chunks by its own memory budget; mmcv's CUDA code also needs it to divide the batch).
    """

    @staticmethod
    def forward(ctx: Any, value: Tensor, value_spatial_shapes: Tensor, value_level_start_index: Tensor,
                sampling_locations: Tensor, attention_weights: Tensor, im2col_step: Any) -> Tensor:
        ctx.im2col_step = check_int(_OP, "im2col_step", im2col_step, 1)
        ctx.problem = check_inputs(_OP, value, value_spatial_shapes, value_level_start_index, sampling_locations,
                                   attention_weights)
        ctx.save_for_backward(value, value_spatial_shapes, value_level_start_index, sampling_locations,
                              attention_weights)
        return _run_forward(value, value_spatial_shapes, value_level_start_index, sampling_locations,
                            attention_weights, ctx.problem)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_output: Tensor) -> tuple:
        return _function_backward(ctx, grad_output)


def multi_scale_deformable_attn_pytorch(value: Tensor, value_spatial_shapes: Tensor, sampling_locations: Tensor,
                                        attention_weights: Tensor) -> Tensor:
    """Multi-scale deformable attention, differentiable in all three tensors (mmcv's "CPU version";
    here the same core as every other entry point, on any device).

    Args:
        value: (bs, num_keys, num_heads, embed_dims // num_heads); the levels tile ``num_keys`` in order.
        value_spatial_shapes: (num_levels, 2) integer (H, W) of each level.
        sampling_locations: (bs, num_queries, num_heads, num_levels, num_points, 2), (x, y) in [0, 1].
        attention_weights: (bs, num_queries, num_heads, num_levels, num_points).

    Returns:
        (bs, num_queries, embed_dims), contiguous, in the value's dtype.
    """
    p = check_inputs("multi_scale_deformable_attn_pytorch", value, value_spatial_shapes, None, sampling_locations,
                     attention_weights, exact_keys=True)
    return _MSDeformAttnCore.apply(value, value_spatial_shapes, None, sampling_locations, attention_weights, p)


# --- the module ----------------------------------------------------------------------------------


def _is_power_of_2(n: int) -> bool:
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"invalid input for _is_power_of_2: {n} (type: {type(n)})")
    return (n & (n - 1) == 0) and n != 0


@register_model(mmcv1_registry="ATTENTION")
class MultiScaleDeformableAttention(nn.Module):
    """An attention module used in Deformable-DETR (mmcv's, with its constructor, parameters,
    ``init_weights`` and forward).

    `Deformable DETR: Deformable Transformers for End-to-End Object Detection.
    <https://arxiv.org/pdf/2010.04159.pdf>`_.

    Args:
        embed_dims: The embedding dimension of Attention. Default: 256.
        num_heads: Parallel attention heads. Default: 8.
        num_levels: The number of feature map used in Attention. Default: 4.
        num_points: The number of sampling points for each query in each head. Default: 4.
        im2col_step: The step used in image_to_column (kept for mmcv compatibility). Default: 64.
        dropout: A Dropout layer on the output before the identity is added. Default: 0.1.
        batch_first: Key, Query and Value are shape of (batch, n, embed_dim) or (n, batch, embed_dim).
            Default: False.
        norm_cfg: Config dict for normalization layer (stored, unused, as in mmcv). Default: None.
        init_cfg: The config for initialization (stored as mmengine's BaseModule does). Default: None.
        value_proj_ratio: The expansion ratio of value_proj (mmcv 2.x). Default: 1.0.
    """

    def __init__(self, embed_dims: int = 256, num_heads: int = 8, num_levels: int = 4, num_points: int = 4,
                 im2col_step: int = 64, dropout: float = 0.1, batch_first: bool = False,
                 norm_cfg: Optional[dict] = None, init_cfg: Optional[dict] = None, value_proj_ratio: float = 1.0):
        super().__init__()
        self._is_init = False
        self.init_cfg = copy.deepcopy(init_cfg)
        if embed_dims % num_heads != 0:
            raise ValueError(f"embed_dims must be divisible by num_heads, but got {embed_dims} and {num_heads}")
        dim_per_head = embed_dims // num_heads
        self.norm_cfg = norm_cfg
        self.dropout = nn.Dropout(dropout)
        self.batch_first = batch_first
        # mmcv's advice: a power-of-2 head dim is more efficient in its CUDA implementation
        if not _is_power_of_2(dim_per_head):
            warnings.warn("You'd better set embed_dims in MultiScaleDeformAttention to make the dimension of each "
                          "attention head a power of 2 which is more efficient in our CUDA implementation.")
        self.im2col_step = im2col_step
        self.embed_dims = embed_dims
        self.num_levels = num_levels
        self.num_heads = num_heads
        self.num_points = num_points
        self.sampling_offsets = nn.Linear(embed_dims, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(embed_dims, num_heads * num_levels * num_points)
        value_proj_size = int(embed_dims * value_proj_ratio)
        self.value_proj = nn.Linear(embed_dims, value_proj_size)
        self.output_proj = nn.Linear(value_proj_size, embed_dims)
        self.init_weights()

    @property
    def is_init(self) -> bool:
        return self._is_init

    def __repr__(self) -> str:
        # mmengine's BaseModule appends the init_cfg
        s = super().__repr__()
        if self.init_cfg:
            s += f"\ninit_cfg={self.init_cfg}"
        return s

    def init_weights(self) -> None:
        """mmcv's default initialisation: zero sampling offsets whose bias points head ``h`` along
        angle ``2 pi h / num_heads`` (scaled to the unit square's border, times ``point + 1``), zero
        attention weights (uniform attention), xavier-uniform projections with zero biases."""
        nn.init.constant_(self.sampling_offsets.weight, 0.0)
        nn.init.constant_(self.sampling_offsets.bias, 0.0)
        device = next(self.parameters()).device
        thetas = torch.arange(self.num_heads, dtype=torch.float32, device=device) * (2.0 * math.pi / self.num_heads)
        grid_init = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid_init = (grid_init / grid_init.abs().max(-1, keepdim=True)[0]).view(self.num_heads, 1, 1, 2).repeat(
            1, self.num_levels, self.num_points, 1)
        grid_init *= torch.arange(1, self.num_points + 1, dtype=torch.float32, device=device).view(1, 1, -1, 1)
        self.sampling_offsets.bias.data = grid_init.view(-1)
        nn.init.constant_(self.attention_weights.weight, 0.0)
        nn.init.constant_(self.attention_weights.bias, 0.0)
        for proj in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(proj.weight, gain=1)
            nn.init.constant_(proj.bias, 0.0)
        self._is_init = True

    @renamed_kwargs({"residual": "identity"})
    def forward(self, query: Tensor, key: Optional[Tensor] = None, value: Optional[Tensor] = None,
                identity: Optional[Tensor] = None, query_pos: Optional[Tensor] = None,
                key_padding_mask: Optional[Tensor] = None, reference_points: Optional[Tensor] = None,
                spatial_shapes: Optional[Tensor] = None, level_start_index: Optional[Tensor] = None,
                **kwargs) -> Tensor:
        """Forward Function of MultiScaleDeformAttention.

        Args:
            query: (num_query, bs, embed_dims), or (bs, num_query, embed_dims) with ``batch_first``.
            key: unused (mmcv's signature).
            value: (num_key, bs, embed_dims) (batch first likewise); None: ``query``.
            identity: added to the output, shaped like ``query``; None: ``query`` (before ``query_pos``).
            query_pos: positional encoding added to ``query``.
            key_padding_mask: (bs, num_key) bool, True where ``value`` is padding (set to 0).
            reference_points: (bs, num_query, num_levels, 2) normalised (x, y) in [0, 1], or
                (bs, num_query, num_levels, 4) boxes (x, y, w, h).
            spatial_shapes: (num_levels, 2) (H, W) of each level.
            level_start_index: (num_levels,) first key of each level, i.e. [0, h_0*w_0, ...]; None:
                the levels tile ``value`` in order.

        Returns:
            Shaped like ``query``.
        """
        if value is None:
            value = query
        if identity is None:
            identity = query
        if query_pos is not None:
            query = query + query_pos
        if not self.batch_first:
            query = query.permute(1, 0, 2)  # (bs, num_query, embed_dims)
            value = value.permute(1, 0, 2)
        bs, num_query, _ = query.shape
        bs, num_value, _ = value.shape
        if spatial_shapes is None or reference_points is None:
            raise ValueError("MultiScaleDeformableAttention: spatial_shapes and reference_points are required")
        if int((spatial_shapes[:, 0] * spatial_shapes[:, 1]).sum()) != num_value:
            raise ValueError(f"MultiScaleDeformableAttention: the levels' sizes H * W must sum to num_value = "
                             f"{num_value}, got spatial_shapes {spatial_shapes.tolist()}")
        value = self.value_proj(value)
        if key_padding_mask is not None:
            value = value.masked_fill(key_padding_mask[..., None], 0.0)
        value = value.view(bs, num_value, self.num_heads, -1)
        sampling_offsets = self.sampling_offsets(query).view(
            bs, num_query, self.num_heads, self.num_levels, self.num_points, 2)
        attention_weights = self.attention_weights(query).view(
            bs, num_query, self.num_heads, self.num_levels * self.num_points)
        attention_weights = attention_weights.softmax(-1).view(
            bs, num_query, self.num_heads, self.num_levels, self.num_points)
        if reference_points.shape[-1] == 2:
            offset_normalizer = torch.stack([spatial_shapes[..., 1], spatial_shapes[..., 0]], -1)
            sampling_locations = (reference_points[:, :, None, :, None, :]
                                  + sampling_offsets / offset_normalizer[None, None, None, :, None, :])
        elif reference_points.shape[-1] == 4:
            sampling_locations = (reference_points[:, :, None, :, None, :2]
                                  + sampling_offsets / self.num_points * reference_points[:, :, None, :, None, 2:]
                                  * 0.5)
        else:
            raise ValueError(f"Last dim of reference_points must be 2 or 4, but get {reference_points.shape[-1]} "
                             f"instead.")
        p = check_inputs("MultiScaleDeformableAttention", value, spatial_shapes, level_start_index,
                         sampling_locations, attention_weights)
        output = _MSDeformAttnCore.apply(value, spatial_shapes, level_start_index, sampling_locations,
                                         attention_weights, p)
        output = self.output_proj(output)
        if not self.batch_first:
            output = output.permute(1, 0, 2)  # (num_query, bs, embed_dims)
        return self.dropout(output) + identity


registry.register(registry.OpEntry(
    op=_OP,
    names=("MultiScaleDeformableAttention", "MultiScaleDeformableAttnFunction", "multi_scale_deformable_attn_pytorch"),
    ext_functions=("ms_deform_attn_backward", "ms_deform_attn_forward"),
    backward="yes",
    devices=("any",),
))
