"""``mmcv.ops.prroi_pool``: Precise RoI Pooling, differentiable in the feature map and in the RoIs.

Semantics follow mmcv's CUDA kernels (mmcv has no CPU kernel). A RoI ``(batch, x1, y1, x2, y2)`` is
scaled by ``spatial_scale``; its size is ``max(x2 - x1, 0)`` by ``max(y2 - y1, 0)`` (``fmax``, so a NaN
size counts as 0), cut into ``pooled_h x pooled_w`` bins. A bin's output is the exact integral, over
the bin, of the bilinearly interpolated map divided by the bin's area, and 0 when that area is 0. The
interpolated map is ``f(y, x) = sum_p data[p] * hat(y - p_y) * hat(x - p_x)`` with
``hat(t) = max(0, 1 - |t|)`` and pixels outside the map reading 0 (the kernel's own
``PrRoIPoolingGetData``; no border clamping as in RoIAlign), so ``f`` fades to 0 one pixel beyond
the map. The batch index is truncated to int as the kernels do.

How it is computed. ``f`` is separable and its one-dimensional antiderivative is a quadratic
B-spline: with ``Q`` the inclusive prefix sum of the pixels along a line,
``integral(-inf, x) = (1-f)^2/2 Q[k-1] + (1/2 + f - f^2) Q[k] + f^2/2 Q[k+1]`` for ``k = floor(x)``,
``f = x - k`` (``Q`` constant past the map). In two dimensions that is 9 taps of the summed-area
table per point, and a bin is 4 corner values of ``S(y, x) = integral over (-inf, y] x (-inf, x]``:
36 taps per bin whatever its size (mmcv's kernel visits every unit cell under it), gathered for all
bins at once. Bin edges are rounded as the kernel rounds them in float32 (``first = x1 + size * p``,
``second = first + size``), so small bins far from the origin match mmcv's to float rounding rather
than being off by an ulp of the coordinate. The table is built and read in float64 (float32 on MPS,
which lacks it), since a bin is a small difference of large prefix sums.

Gradients are those of mmcv's backward kernels, which are the exact derivatives of this integral: the
input gradient is its adjoint (a transposed gather, then suffix sums); the RoI gradient moves each
bin edge by the integral of the map along that edge (18 taps per edge, one more gather) and the area
by the other side, chained to ``(x1, y1, x2, y2)`` as the kernel chains it; the batch column gets 0.

Deliberate differences: any floating dtype is accepted (mmcv raises for anything but float32), and
``features`` and ``rois`` may differ in dtype; the output has the dtype of ``features``, the RoI
gradient that of ``rois``. Sums are formed in another order than the kernel's, so results agree to
rounding, not bit for bit.
"""

from __future__ import annotations

from typing import Any, Iterator, NamedTuple, Optional, Tuple, Union

import torch
from torch import Tensor, nn
from torch.autograd import Function
from torch.autograd.function import once_differentiable
from torch.nn.modules.utils import _pair

from .. import registry
from ._bilinear import transposed_row_sum, weighted_row_sum
from ._checks import check_rois, check_same_device

__all__ = ["PrRoIPool", "PrRoIPoolFunction", "prroi_pool"]

_OP = "prroi_pool"
#: (RoI bins x channels) output values made at once; the RoIs are processed in chunks of this.
_CHUNK_ELEMENTS = 1 << 23
_TAPS = 36  # per bin: 4 corners x 3 rows x 3 columns of the summed-area table


# --- input checks -----------------------------------------------------------------------------


def _check_inputs(features: Tensor, rois: Tensor, pooled: Tuple[int, int]) -> Tensor:
    """Validate the arguments; returns the (K,) batch index of each RoI (truncated like ``int(x)``).
    Unlike the RoIAlign family, features and rois may differ in dtype here."""
    if not isinstance(features, Tensor):
        raise TypeError(f"{_OP}: features must be a torch.Tensor, got {type(features).__name__}")
    if not features.is_floating_point():
        raise TypeError(f"{_OP}: features must be a floating point tensor, got {features.dtype}")
    if features.dim() != 4:
        raise ValueError(f"{_OP}: features must have shape (N, C, H, W), got {tuple(features.shape)}")
    if isinstance(rois, Tensor):
        check_same_device(_OP, features=features, rois=rois)
    if any(p <= 0 for p in pooled):
        raise ValueError(f"{_OP}: output_size must be positive, got {pooled}")
    return check_rois(_OP, rois, features.size(0), 5)


def _output_size(output_size: Union[int, Tuple[int, int]]) -> Tuple[int, int]:
    size = _pair(output_size)
    if len(size) != 2:
        raise ValueError(f"{_OP}: output_size must be an int or a pair (h, w), got {output_size!r}")
    return int(size[0]), int(size[1])


def _table_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def _coord_dtype(rois: Tensor) -> torch.dtype:
    """The kernels compute RoI geometry in float32 (``T = float``); double RoIs keep double."""
    return torch.promote_types(rois.dtype, torch.float32)


# --- geometry: bin edges, and each bin as 36 weighted taps of the summed-area table ---------------


class _Geometry(NamedTuple):
    """Bins of K RoIs in the kernels' float32 geometry; differentiable in the RoIs."""

    x_edges: Tensor  # (K, PW, 2) left, right edge of each bin column
    y_edges: Tensor  # (K, PH, 2) top, bottom edge of each bin row
    area: Tensor  # (K,) bin area, 1 for empty RoIs
    empty: Tensor  # (K,) bool: bin area 0 (or NaN), output 0


def _bin_edges(start: Tensor, size: Tensor, pooled: int) -> Tensor:
    """(K, pooled, 2) bin edges along one side, rounded as the kernels round them: the first edge is
    ``start + size * p``, the second ``first + size`` (not ``start + size * (p + 1)``: in float32 the
    two differ by an ulp, which is a visible share of a small bin far from the origin)."""
    first = start[:, None] + size[:, None] * torch.arange(pooled, device=start.device, dtype=start.dtype)
    return torch.stack([first, first + size[:, None]], -1)


def _geometry(rois: Tensor, pooled: Tuple[int, int], spatial_scale: float) -> _Geometry:
    dtype = _coord_dtype(rois)
    coords = rois[:, 1:].to(dtype) * torch.tensor(spatial_scale, dtype=dtype, device=rois.device)
    x1, y1, x2, y2 = coords.unbind(1)
    zero = x1.new_zeros(())
    bin_w = torch.fmax(x2 - x1, zero) / pooled[1]  # fmax like CUDA's max(): a NaN size counts as 0
    bin_h = torch.fmax(y2 - y1, zero) / pooled[0]
    area = bin_w * bin_h
    empty = ~(area > 0)
    # Empty RoIs get harmless coordinates so no NaN/inf reaches the taps (their weight is 0 anyway).
    x1, y1 = torch.where(empty, zero, x1), torch.where(empty, zero, y1)
    bin_w, bin_h = torch.where(empty, zero, bin_w), torch.where(empty, zero, bin_h)
    return _Geometry(_bin_edges(x1, bin_w, pooled[1]), _bin_edges(y1, bin_h, pooled[0]),
                     torch.where(empty, zero + 1, area), empty)


def _spline_taps(t: Tensor, size: int, dtype: torch.dtype) -> Tuple[Tensor, Tensor, Tensor]:
    """``(line, weight, slope)``, each ``(*t.shape, 3)``: the antiderivative of the hat interpolation
    of a line of ``size`` pixels at ``t`` as weights of the padded prefix sums ``P[0..size]``
    (``P[0] = 0``), and the derivatives of those weights in ``t``."""
    # Outside [-1, size] the antiderivative is flat (0 before, the total after): clamping there is
    # exact in value and slope (the slope weights cancel on the clamped lines), and keeps floor() of
    # huge coordinates in range.
    t = t.detach().to(dtype).clamp(-1.0, float(size))
    k = t.floor()
    f = t - k
    weight = torch.stack([0.5 * (1 - f) ** 2, 0.5 + f - f * f, 0.5 * f * f], -1)
    slope = torch.stack([f - 1, 1 - 2 * f, f], -1)
    line = (k.long().unsqueeze(-1) + torch.arange(3, device=t.device)).clamp_(0, size)
    return line, weight, slope


class _Taps(NamedTuple):
    """Summed-area taps of every bin edge: (K, P, 2 edges, 3) each, rows for y and columns for x."""

    index: Tensor  # (K, PH, PW, 2 y-edges, 2 x-edges, 3 rows, 3 columns) rows of the table
    wy: Tensor  # (K, PH, 2, 3) signed (-top, +bottom) row weights
    wx: Tensor  # (K, PW, 2, 3) signed (-left, +right) column weights
    dy: Tensor  # (K, PH, 2, 3) d(row weight)/dy, unsigned
    dx: Tensor  # (K, PW, 2, 3) d(column weight)/dx, unsigned


def _taps(geo: _Geometry, batch: Tensor, height: int, width: int, dtype: torch.dtype) -> _Taps:
    col, wx, dx = _spline_taps(geo.x_edges, width, dtype)
    row, wy, dy = _spline_taps(geo.y_edges, height, dtype)
    # the integral over a bin: S(far corner) - S(two mixed corners) + S(near corner)
    sign = torch.tensor([-1.0, 1.0], dtype=dtype, device=batch.device)[:, None]
    plane = (batch * ((height + 1) * (width + 1)))[:, None, None, None, None, None, None]
    index = plane + (row * (width + 1))[:, :, None, :, None, :, None] + col[:, None, :, None, :, None, :]
    return _Taps(index, wy * sign, wx * sign, dy, dx)


def _inv_area(geo: _Geometry, dtype: torch.dtype) -> Tensor:
    """(K,) 1 / bin area, 0 for empty RoIs (whose bins the kernel sets to 0), not differentiated."""
    return torch.where(geo.empty, 0.0, 1 / geo.area.detach().to(dtype))


def _bin_weights(taps: _Taps, geo: _Geometry, dtype: torch.dtype) -> Tensor:
    """(K, PH, PW, 36) tap weights whose sum is each bin's integral over its area (0 if empty)."""
    wy = taps.wy * _inv_area(geo, dtype)[:, None, None, None]
    weight = wy[:, :, None, :, None, :, None] * taps.wx[:, None, :, None, :, None, :]
    return weight.reshape(*weight.shape[:3], _TAPS)


def _chunks(num_rois: int, pooled: Tuple[int, int], channels: int) -> Iterator[Tuple[int, int]]:
    """RoI ranges whose (bins x channels) values stay under ``_CHUNK_ELEMENTS``."""
    per_roi = pooled[0] * pooled[1] * max(channels, 1)
    step = max(1, _CHUNK_ELEMENTS // per_roi)
    for lo in range(0, num_rois, step):
        yield lo, min(lo + step, num_rois)


# --- the summed-area table --------------------------------------------------------------------


def _prefix_table(features: Tensor, dtype: torch.dtype) -> Tensor:
    """(N * (H + 1) * (W + 1), C): ``P[n, i, j] = sum(features[n, :, :i, :j])`` per channel, channels last."""
    n, c, h, w = features.shape
    sums = features.permute(0, 2, 3, 1).to(dtype, memory_format=torch.contiguous_format, copy=True)
    sums.cumsum_(1).cumsum_(2)
    return torch.nn.functional.pad(sums, (0, 0, 1, 0, 1, 0)).reshape(n * (h + 1) * (w + 1), c)


def _suffix_sum_(g: Tensor, dim: int) -> Tensor:
    """``g[i] <- sum(g[i:])`` along ``dim``, in place (total minus the exclusive prefix sum)."""
    if g.size(dim) == 0:
        return g
    prefix = g.cumsum(dim)
    total = prefix.narrow(dim, g.size(dim) - 1, 1)
    return g.sub_(prefix).add_(total)


def _prefix_table_adjoint(grad_table: Tensor, shape) -> Tensor:
    """The gradient of :func:`_prefix_table` for ``features`` of ``shape``: (N, C, H, W).

    ``P[i, j]`` sums the pixels above and left of it, so pixel ``(p, q)`` collects the gradient of
    every ``P[i > p, j > q]``: the 2-D suffix sums of the table gradient without its first row and column.
    """
    n, c, h, w = shape
    g = grad_table.reshape(n, h + 1, w + 1, c)[:, 1:, 1:].contiguous()
    return _suffix_sum_(_suffix_sum_(g, 1), 2).permute(0, 3, 1, 2)


# --- forward and backward cores ---------------------------------------------------------------


def _pool(table: Tensor, index: Tensor, weight: Tensor) -> Tensor:
    """(K, C, PH, PW): the weighted sums of (K, PH, PW, T) taps of the table, in the table's dtype."""
    k, ph, pw, taps = index.shape
    out = weighted_row_sum(table, index.reshape(-1, taps), weight.reshape(-1, taps))
    return out.reshape(k, ph, pw, table.size(1)).permute(0, 3, 1, 2)


def prroi_pool_forward(features: Tensor, rois: Tensor, pooled: Tuple[int, int], spatial_scale: float,
                       batch: Optional[Tensor] = None) -> Tensor:
    """(K, C, PH, PW) Precise RoI Pooling of (N, C, H, W) ``features`` over (K, 5) ``rois``."""
    if batch is None:
        batch = _check_inputs(features, rois, pooled)
    n, c, h, w = features.shape
    dtype = _table_dtype(features.device)
    out = features.new_empty((rois.size(0), c, *pooled))
    with torch.no_grad():
        table = _prefix_table(features, dtype)
        for lo, hi in _chunks(rois.size(0), pooled, c):
            geo = _geometry(rois[lo:hi], pooled, spatial_scale)
            taps = _taps(geo, batch[lo:hi], h, w, dtype)
            index = taps.index.reshape(*taps.index.shape[:3], _TAPS)
            out[lo:hi] = _pool(table, index, _bin_weights(taps, geo, dtype))
    return out


def prroi_pool_input_grad(grad_output: Tensor, rois: Tensor, input_shape, pooled: Tuple[int, int],
                          spatial_scale: float) -> Tensor:
    """(N, C, H, W) gradient w.r.t. the features; it depends on the RoIs alone (the op is linear)."""
    n, c, h, w = input_shape
    batch = rois[:, 0].detach().long()
    dtype = _table_dtype(grad_output.device)
    grad_table = grad_output.new_zeros((n * (h + 1) * (w + 1), c), dtype=dtype)
    with torch.no_grad():
        for lo, hi in _chunks(rois.size(0), pooled, c):
            geo = _geometry(rois[lo:hi], pooled, spatial_scale)
            taps = _taps(geo, batch[lo:hi], h, w, dtype)
            grad_bins = grad_output[lo:hi].permute(0, 2, 3, 1).reshape((hi - lo) * pooled[0] * pooled[1], c)
            grad_bins = grad_bins.to(dtype)
            bag = torch.arange(grad_bins.size(0), device=rois.device).repeat_interleave(_TAPS)
            weight = _bin_weights(taps, geo, dtype).reshape(-1)
            grad_table += transposed_row_sum(grad_bins, taps.index.reshape(-1), weight, bag, grad_table.size(0))
        grad = _prefix_table_adjoint(grad_table, input_shape)
    return grad.to(grad_output.dtype)


def _edge_weights(taps: _Taps) -> Tuple[Tensor, Tensor]:
    """Bags of 18 taps whose sums are, per bin, the integrals of the map along its four edges
    (left, right, top, bottom; signed by the other axis' edges): ``(index, weight)``, (K, PH, PW, 4, 18)."""
    idx = taps.index  # (K, PH, PW, ey, ex, a, c)
    k, ph, pw = idx.shape[:3]
    along_x = idx.permute(0, 1, 2, 4, 3, 5, 6)  # one bag per x-edge: (K, PH, PW, ex, ey, a, c)
    w_x = taps.wy[:, :, None, None, :, :, None] * taps.dx[:, None, :, :, None, None, :]
    w_y = taps.dy[:, :, None, :, None, :, None] * taps.wx[:, None, :, None, :, None, :]
    index = torch.cat([along_x.reshape(k, ph, pw, 2, 18), idx.reshape(k, ph, pw, 2, 18)], 3)
    weight = torch.cat([w_x.reshape(k, ph, pw, 2, 18), w_y.reshape(k, ph, pw, 2, 18)], 3)
    return index, weight


def prroi_pool_rois_grad(grad_output: Tensor, features: Tensor, rois: Tensor, output: Tensor,
                         pooled: Tuple[int, int], spatial_scale: float) -> Tensor:
    """(K, 5) gradient w.r.t. the RoIs (0 for the batch column), given the forward ``output``.

    As mmcv's kernel: a bin's output is ``I / area``; moving an edge changes ``I`` by the integral of
    the map along that edge, and the area by the bin's other side, chained to (x1, y1, x2, y2).
    """
    n, c, h, w = features.shape
    batch = rois[:, 0].detach().long()
    dtype = _table_dtype(features.device)
    grad = torch.zeros(rois.shape, dtype=rois.dtype, device=rois.device)
    with torch.no_grad():
        table = _prefix_table(features.detach(), dtype)
    for lo, hi in _chunks(rois.size(0), pooled, 4 * c):
        part = rois[lo:hi].detach().requires_grad_(True)
        g = grad_output[lo:hi].to(dtype)
        with torch.enable_grad():
            geo = _geometry(part, pooled, spatial_scale)
        with torch.no_grad():
            taps = _taps(geo, batch[lo:hi], h, w, dtype)
            index, weight = _edge_weights(taps)
            edges = weighted_row_sum(table, index.reshape(-1, 18), weight.reshape(-1, 18))
            edges = edges.reshape(*index.shape[:4], c)  # (K, PH, PW, 4, C)
            # d(bin integral)/d(edge) . grad: -left, +right, -top, +bottom line integrals
            sign = torch.tensor([-1.0, 1.0, -1.0, 1.0], dtype=dtype, device=rois.device)
            dot = (edges * g.permute(0, 2, 3, 1).unsqueeze(3)).sum(-1) * sign
            dot = dot * _inv_area(geo, dtype)[:, None, None, None]  # (K, PH, PW, 4)
            out_dot = (output[lo:hi].to(dtype) * g).sum((1, 2, 3)) * (~geo.empty)  # (K,)
        with torch.enable_grad():
            # a scalar whose gradient in the RoIs is the chain rule of the pieces above
            surrogate = ((dot[..., 0:2] * geo.x_edges[:, None].to(dtype)).sum()
                         + (dot[..., 2:4] * geo.y_edges[:, :, None].to(dtype)).sum()
                         - (out_dot * geo.area.to(dtype).log()).sum())
            (g_rois,) = torch.autograd.grad(surrogate, part)
        grad[lo:hi, 1:] = g_rois[:, 1:]
    return grad


# --- the public API ---------------------------------------------------------------------------


class PrRoIPoolFunction(Function):
    """mmcv's ``PrRoIPoolFunction``; ``prroi_pool = PrRoIPoolFunction.apply``.

    Returns gradients for ``features`` and for ``rois`` (columns x1, y1, x2, y2; 0 for the batch index).
    """

    @staticmethod
    def symbolic(g, features, rois, output_size, spatial_scale):
        return g.op("mmcv::PrRoIPool", features, rois, pooled_height_i=int(output_size[0]),
                    pooled_width_i=int(output_size[1]), spatial_scale_f=float(spatial_scale))

    @staticmethod
    def forward(ctx: Any, features: Tensor, rois: Tensor, output_size: Union[int, Tuple[int, int]],
                spatial_scale: float = 1.0) -> Tensor:
        pooled = _output_size(output_size)
        spatial_scale = float(spatial_scale)
        batch = _check_inputs(features, rois, pooled)
        output = prroi_pool_forward(features, rois, pooled, spatial_scale, batch)
        ctx.params = (pooled, spatial_scale)
        ctx.input_shape = features.shape
        ctx.save_for_backward(features, rois, output)
        return output

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_output: Tensor) -> tuple:
        features, rois, output = ctx.saved_tensors
        pooled, spatial_scale = ctx.params
        grad_input = grad_rois = None
        if ctx.needs_input_grad[0]:
            grad_input = prroi_pool_input_grad(grad_output, rois, ctx.input_shape, pooled, spatial_scale)
        if ctx.needs_input_grad[1]:
            grad_rois = prroi_pool_rois_grad(grad_output, features, rois, output, pooled, spatial_scale)
        return grad_input, grad_rois, None, None


prroi_pool = PrRoIPoolFunction.apply


class PrRoIPool(nn.Module):
    """Precise RoI Pooling layer, as mmcv's (itself from https://github.com/vacancy/PreciseRoIPooling/).

    Each bin averages the bilinearly interpolated feature map exactly (an integral, not samples), so
    the output is continuous in the RoI coordinates and has a gradient with respect to them.

    Args:
        output_size (int or tuple): (h, w) of the output bins.
        spatial_scale (float): scale from RoI coordinates to the feature map. Default: 1.0.

    Shapes: features (N, C, H, W), rois (K, 5) as ``(batch index, x1, y1, x2, y2)``; output
    (K, C, output_size[0], output_size[1]).
    """

    def __init__(self, output_size: Union[int, tuple], spatial_scale: float = 1.0):
        super().__init__()
        self.output_size = _pair(output_size)
        self.spatial_scale = float(spatial_scale)

    def forward(self, features: Tensor, rois: Tensor) -> Tensor:
        return prroi_pool(features, rois, self.output_size, self.spatial_scale)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(output_size={self.output_size}, spatial_scale={self.spatial_scale})"


registry.register(registry.OpEntry(
    op="prroi_pool",
    names=("PrRoIPool", "PrRoIPoolFunction", "prroi_pool"),
    ext_functions=("prroi_pool_backward", "prroi_pool_coor_backward", "prroi_pool_forward"),
    backward="yes",
    devices=("any",),
))
