"""Deformable convolution's shared core: deformable im2col as one sparse gather, then a grouped GEMM.

mmcv's ``deform_conv`` / ``modulated_deform_conv`` (and torchvision's ``deform_conv2d``) sample the
input at ``(ho * stride - pad + i * dilation + offset_y, wo * stride - pad + j * dilation + offset_x)``
for every output position and kernel tap, with the zero-padded bilinear rule of
``deformable_im2col_bilinear`` (:func:`._bilinear.zero_padded_taps`: a point reads only inside
``(-1, H) x (-1, W)``, each off-map corner reads 0), scale the sample by the mask (modulated only),
and multiply the resulting columns by the weight, one GEMM per group.

Here the columns of a chunk of output positions are built by one ``F.embedding_bag`` over a
channels-last table of the input: the table has ``U = lcm(groups, deform_groups)`` rows per pixel,
each holding ``C / U`` channels, so that every bag (one position, kernel tap and channel *unit*) sums
the four weighted corner rows of its sample, and the bags of a position come out in the
``(group, tap, channel)`` order the per-group GEMM wants. Offsets are laid out as mmcv's:
``offset[n, d * 2 * K + 2 * k + {0: y, 1: x}, ho, wo]``, ``mask[n, d * K + k, ho, wo]``, with
``k = i * kw + j``; the channels of deformable group ``d`` are ``[d * C / dg, (d + 1) * C / dg)``.

The backward pass is explicit (mmcv's are ``once_differentiable``):

- ``grad columns = grad_output x weight`` (GEMM), ``grad weight = grad_output^T x columns`` with the
  columns recomputed, as the kernels do;
- ``grad input``: the transposed gather of the grad columns (``col2im``), by
  :func:`._bilinear.transposed_row_sum`;
- ``grad offset``: per bag ``mask * <sum_t dw_t/dy * v_t, grad column>`` (and x), the tap slopes
  ``dw_t/dy`` being exactly the kernels' ``get_coordinate_weight`` (right-sided at integral coordinates,
  0 outside the open map; see :func:`_slopes`);
- ``grad mask``: ``<unmasked sample, grad column>``.

The three weighted sums (sample and both slopes) come from one more ``embedding_bag``. Everything is
chunked over output positions (``_COLUMN_ELEMENTS`` column elements at a time, at most
``im2col_step`` images for ``deform_conv``), so peak memory is bounded like mmcv's ``im2col_step``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator, List, NamedTuple, Optional, Tuple

import torch
from torch import Tensor
from torch.nn import functional as F
from torch.nn.modules.utils import _pair

from ._bilinear import transposed_row_sum, zero_padded_taps
from ._checks import check_int, check_tensor, compute_dtype, no_autocast

#: Column elements (positions x taps x channels) gathered at once (64 MiB in float32); the backward
#: gathers fewer positions at once so that all its per-chunk buffers fit in about as much.
_COLUMN_ELEMENTS = 1 << 24

#: ``rule`` values: mmcv's kernels, or torchvision's (whose coordinate gradient also sees a point
#: lying exactly on -1, where mmcv's returns 0).
RULES = ("mmcv", "torchvision")


class DeformConvError(ValueError, RuntimeError):
    """Bad shape or value. A ``RuntimeError`` too: mmcv's and torchvision's kernels raised those."""


class DeformConvAssertionError(ValueError, AssertionError):
    """Bad argument that mmcv's Python wrappers ``assert`` on; an ``AssertionError`` too."""


class DeformConvTypeError(TypeError, RuntimeError):
    """Bad type or dtype (the kernels raised ``RuntimeError``)."""


# --- geometry and argument checks -----------------------------------------------------------------


@dataclass(frozen=True)
class Geometry:
    """Shapes of one deformable convolution (input ``(N, C, H, W)``, weight ``(Cout, C / G, kh, kw)``)."""

    batch: int
    channels: int
    height: int
    width: int
    out_channels: int
    kernel: Tuple[int, int]
    stride: Tuple[int, int]
    padding: Tuple[int, int]
    dilation: Tuple[int, int]
    groups: int
    deform_groups: int
    out_h: int
    out_w: int

    @property
    def taps(self) -> int:  # K
        return self.kernel[0] * self.kernel[1]

    @property
    def units(self) -> int:
        """U = lcm(groups, deform_groups): channel units per pixel, each in one group and one deform group."""
        return self.groups * self.deform_groups // math.gcd(self.groups, self.deform_groups)

    @property
    def positions(self) -> int:  # L
        return self.out_h * self.out_w

    @property
    def offset_shape(self) -> Tuple[int, int, int, int]:
        return (self.batch, self.deform_groups * 2 * self.taps, self.out_h, self.out_w)

    @property
    def mask_shape(self) -> Tuple[int, int, int, int]:
        return (self.batch, self.deform_groups * self.taps, self.out_h, self.out_w)

    @property
    def output_shape(self) -> Tuple[int, int, int, int]:
        return (self.batch, self.out_channels, self.out_h, self.out_w)


def output_extent(size: int, pad: int, dilation: int, kernel: int, stride: int) -> int:
    """Output length along one axis, with mmcv's (floor) division."""
    return (size + 2 * pad - (dilation * (kernel - 1) + 1)) // stride + 1


def pair_of_ints(op: str, name: str, value: Any, minimum: Optional[int]) -> Tuple[int, int]:
    """``_pair(value)`` as two ints (each ``>= minimum`` unless None)."""
    pair = _pair(value)
    if len(pair) != 2:
        raise DeformConvError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
    low = -(1 << 62) if minimum is None else minimum
    try:
        return tuple(check_int(op, name, v, low) for v in pair)  # type: ignore[return-value]
    except ValueError as error:
        raise DeformConvError(str(error)) from None


def _require_tensor(op: str, name: str, value: Any, dim: int) -> Tensor:
    return check_tensor(op, name, value, dim=dim, kind="floating", type_error=DeformConvTypeError,
                        value_error=DeformConvError)


def check_arguments(op: str, input: Tensor, offset: Tensor, mask: Optional[Tensor], weight: Tensor,
                    bias: Optional[Tensor], stride: Any, padding: Any, dilation: Any, groups: int,
                    deform_groups: int, *, kernel_must_fit: bool = False, negative_padding: bool = True) -> Geometry:
    """Check every argument of a deformable convolution (message names ``op`` and the argument)."""
    _require_tensor(op, "input", input, 4)
    _require_tensor(op, "weight", weight, 4)
    _require_tensor(op, "offset", offset, 4)
    tensors = {"input": input, "offset": offset, "weight": weight}
    if mask is not None:
        tensors["mask"] = _require_tensor(op, "mask", mask, 4)
    if bias is not None:
        tensors["bias"] = _require_tensor(op, "bias", bias, 1)
    devices = {t.device for t in tensors.values()}
    if len(devices) > 1:
        listing = ", ".join(f"{name} on {t.device}" for name, t in tensors.items())
        raise DeformConvError(f"{op}: all tensors must be on one device, got {listing}")
    stride = pair_of_ints(op, "stride", stride, 1)
    padding = pair_of_ints(op, "padding", padding, None if negative_padding else 0)
    dilation = pair_of_ints(op, "dilation", dilation, 1)
    groups = _positive_int(op, "groups", groups)
    deform_groups = _positive_int(op, "deform_groups", deform_groups)
    n, c, h, w = input.shape
    cout, c_per_group, kh, kw = weight.shape
    if kh < 1 or kw < 1:
        raise DeformConvError(f"{op}: weight must have a kernel of at least 1x1, got {kh}x{kw}")
    if c_per_group * groups != c:
        raise DeformConvError(f"{op}: input has {c} channels but weight expects weight.size(1) * groups = "
                              f"{c_per_group} * {groups} = {c_per_group * groups} (in_channels must be "
                              f"divisible by groups)")
    if cout % groups:
        raise DeformConvError(f"{op}: weight.size(0) (out_channels {cout}) must be divisible by groups {groups}")
    if c % deform_groups:
        raise DeformConvError(f"{op}: input channels {c} must be divisible by deform_groups {deform_groups}")
    out_h = output_extent(h, padding[0], dilation[0], kh, stride[0])
    out_w = output_extent(w, padding[1], dilation[1], kw, stride[1])
    if out_h < 1 or out_w < 1:
        raise DeformConvError(f"{op}: input of size {h}x{w} is too small for kernel {kh}x{kw} with padding "
                              f"{padding}, dilation {dilation}, stride {stride} (output would be {out_h}x{out_w})")
    if kernel_must_fit and (h < kh or w < kw):
        raise DeformConvError(f"{op}: input image ({h}x{w}) is smaller than kernel ({kh}x{kw})")
    g = Geometry(n, c, h, w, cout, (kh, kw), stride, padding, dilation, groups, deform_groups, out_h, out_w)
    if tuple(offset.shape) != g.offset_shape:
        raise DeformConvError(f"{op}: offset must have shape (N, 2 * deform_groups * kh * kw, H_out, W_out) = "
                              f"{g.offset_shape}, got {tuple(offset.shape)}")
    if mask is not None and tuple(mask.shape) != g.mask_shape:
        raise DeformConvError(f"{op}: mask must have shape (N, deform_groups * kh * kw, H_out, W_out) = "
                              f"{g.mask_shape}, got {tuple(mask.shape)}")
    if bias is not None and bias.numel() != cout:
        raise DeformConvError(f"{op}: bias must have shape ({cout},), got {tuple(bias.shape)}")
    return g


def _positive_int(op: str, name: str, value: Any) -> int:
    try:
        return check_int(op, name, value, 1)
    except ValueError as error:
        raise DeformConvError(str(error)) from None


# --- sampling taps ---------------------------------------------------------------------------------


class _Taps(NamedTuple):
    index: Tensor  # (bags, 4) rows of the chunk's table; invalid taps read its zero row
    weight: Tensor  # (bags, 4) bilinear weights times the mask (the column's weights)
    raw: Tensor  # (bags, 4) bilinear weights without the mask
    bag_mask: Optional[Tensor]  # (bags,) the mask of each bag, or None
    slope_y: Optional[Tensor]  # (bags, 4) d raw / d y, when asked for
    slope_x: Optional[Tensor]


def _nudged(v: Tensor) -> Tensor:
    """torchvision's kernels read a point lying exactly on -1 as one of the cell (-1, 0) (its corners
    and coordinate slopes), where mmcv's return 0; any point inside that cell has the same ones."""
    return torch.where(v == -1, torch.full_like(v, -0.5), v)


#: Signs of the four taps' slopes (taps (y_low, x_low), (y_low, x_high), (y_high, x_low), (y_high, x_high)).
_SIGN_Y = (-1.0, -1.0, 1.0, 1.0)
_SIGN_X = (-1.0, 1.0, -1.0, 1.0)


def _slopes(y: Tensor, x: Tensor, height: int, width: int, rule: str, signs: Tensor) -> Tuple[Tensor, Tensor]:
    """``(d weight / d y, d weight / d x)``, each (..., 4), as the kernels' ``get_coordinate_weight``.

    A tap's weight is ``(1 - ly or ly) * (1 - lx or lx)`` on the map, so its slope along y is
    ``-/+ (1 - lx or lx)``: twice the weight :func:`zero_padded_taps` gives the point moved to the middle
    of its cell row (``floor(y) + 0.5``, same corners, same x), with the tap's sign. That is the
    right-sided slope at integral coordinates, 0 off the map, and 0 for a point exactly on -1 under
    mmcv's rule (its midpoint would be on the map); torchvision's rule keeps that one. ``signs``: (2, 4),
    twice the taps' signs along y and x.
    """
    mid_y = zero_padded_taps(y.floor() + 0.5, x, height, width)[1]
    mid_x = zero_padded_taps(y, x.floor() + 0.5, height, width)[1]
    slope_y, slope_x = mid_y * signs[0], mid_x * signs[1]
    if rule == "mmcv":
        slope_y = slope_y * (y != -1).unsqueeze(-1)
        slope_x = slope_x * (x != -1).unsqueeze(-1)
    return slope_y, slope_x


class _Layout:
    """Maps per-sample tensors ``(pc, dg, K, ...)`` to bags ``(pc, G, K, U/G, ...)`` and back.

    Bag ``(p, group, k, r)`` reads unit ``u = group * U/G + r`` of each pixel, whose channels
    ``[u * C/U, (u + 1) * C/U)`` belong to deform group ``u // (U/dg)``.
    """

    def __init__(self, g: Geometry, device: torch.device, dtype: torch.dtype):
        self.g = g
        u, dg, groups = g.units, g.deform_groups, g.groups
        self.dg_of_unit = None if u == dg else torch.arange(u, device=device) // (u // dg)
        unit = torch.arange(u, device=device).view(groups, 1, u // groups)
        self.unit_of_bag = unit.expand(groups, g.taps, u // groups).reshape(1, -1, 1)
        self.slope_signs = torch.tensor([_SIGN_Y, _SIGN_X], device=device, dtype=dtype) * 2
        # on the CPU, taps a few samples at a time (see _TAP_SAMPLES); elsewhere all at once
        self.tap_samples = _TAP_SAMPLES if device.type == "cpu" else None

    def to_bags(self, t: Tensor) -> Tensor:
        """(pc, dg, K, *rest) -> (pc * G * K * U/G, *rest)."""
        g = self.g
        pc, rest = t.size(0), t.shape[3:]
        if self.dg_of_unit is not None:
            t = t.index_select(1, self.dg_of_unit)
        t = t.reshape(pc, g.groups, g.units // g.groups, g.taps, *rest).transpose(2, 3)
        return t.reshape(-1, *rest)

    def from_bags(self, v: Tensor, pc: int) -> Tensor:
        """(pc * G * K * U/G,) -> (pc, dg, K), summing the units of each deform group."""
        g = self.g
        v = v.view(pc, g.groups, g.taps, g.units // g.groups).transpose(2, 3).reshape(pc, g.units, g.taps)
        return v.view(pc, g.deform_groups, g.units // g.deform_groups, g.taps).sum(2)


#: Samples whose taps are computed at once on the CPU: the tap stage is dozens of small elementwise
#: ops, and keeping them under ATen's parallel grain size (32768 elements) runs them on one thread,
#: without a barrier each (which costs a scheduler slice per op when another process shares the cores).
_TAP_SAMPLES = 8192


def _chunk_taps(y: Tensor, x: Tensor, mask: Optional[Tensor], image: Tensor, zero_row: int, layout: _Layout,
                rule: str, slopes: bool) -> _Taps:
    """Taps of the samples at ``y``, ``x`` ((pc, dg, K) pixel coordinates) of positions lying in image
    ``image`` ((pc,), counted from the chunk table's first image), in bag order."""
    g = layout.g
    pc, bags_per_position = y.size(0), g.taps * g.units
    nb = pc * bags_per_position
    rows = torch.empty((nb, 4), dtype=torch.long, device=y.device)
    raw = y.new_empty((nb, 4))
    weight = raw if mask is None else y.new_empty((nb, 4))
    bag_mask = None if mask is None else y.new_empty(nb)
    slope_y = y.new_empty((nb, 4)) if slopes else None
    slope_x = y.new_empty((nb, 4)) if slopes else None
    step = pc if layout.tap_samples is None else max(1, layout.tap_samples // bags_per_position)
    for p0 in range(0, pc, step):
        p1 = min(pc, p0 + step)
        b0, b1 = p0 * bags_per_position, p1 * bags_per_position
        piece = _piece_taps(y[p0:p1], x[p0:p1], image[p0:p1], zero_row, layout, rule)
        rows[b0:b1], raw[b0:b1] = piece
        if mask is not None:
            bag_mask[b0:b1] = layout.to_bags(mask[p0:p1])
            torch.mul(raw[b0:b1], bag_mask[b0:b1].unsqueeze(1), out=weight[b0:b1])
        if slopes:
            piece_y, piece_x = _slopes(y[p0:p1], x[p0:p1], g.height, g.width, rule, layout.slope_signs)
            slope_y[b0:b1], slope_x[b0:b1] = layout.to_bags(piece_y), layout.to_bags(piece_x)
    return _Taps(rows, weight, raw, bag_mask, slope_y, slope_x)


def _piece_taps(y: Tensor, x: Tensor, image: Tensor, zero_row: int, layout: _Layout,
                rule: str) -> Tuple[Tensor, Tensor]:
    """``(rows, weights)``, each (bags, 4), of a few positions' samples."""
    g = layout.g
    height, width = g.height, g.width
    index, raw, valid = zero_padded_taps(y, x, height, width)
    if rule == "torchvision":  # same weights; the corners of points on -1 as torchvision reads them
        index, _, valid = zero_padded_taps(_nudged(y), _nudged(x), height, width)
    pc = y.size(0)
    pixel = index + (image * (height * width)).view(pc, 1, 1, 1)
    rows = layout.to_bags(pixel).view(pc, -1, 4) * g.units + layout.unit_of_bag
    rows = torch.where(layout.to_bags(valid).view(pc, -1, 4), rows, zero_row).view(-1, 4)
    return rows, layout.to_bags(raw)


# --- chunking ----------------------------------------------------------------------------------------


def _image_groups(g: Geometry, max_positions: int,
                  max_images: Optional[int]) -> Iterator[Tuple[int, int, List[Tuple[int, int]]]]:
    """``(n0, n1, [(q0, q1), ...])``: images ``[n0, n1)`` share a table; positions ``[q0, q1)`` (flat
    ``n * L + l``) are gathered at once, at most ``max_positions`` and ``max_images`` images' worth."""
    n, length = g.batch, g.positions
    max_images = n if max_images is None else max_images
    if max_positions >= length:
        per = max(1, min(max_images, max_positions // length))
        for n0 in range(0, n, per):
            n1 = min(n, n0 + per)
            yield n0, n1, [(n0 * length, n1 * length)]
        return
    for image in range(n):
        start = image * length
        yield image, image + 1, [(start + a, start + min(length, a + max_positions))
                                 for a in range(0, length, max_positions)]


def _table(input: Tensor, n0: int, n1: int, units: int) -> Tuple[Tensor, int]:
    """``(table, zero_row)``: images ``[n0, n1)`` as channels-last rows of ``C / units`` channels
    (``units`` rows per pixel), plus a zero row at the end."""
    _, c, h, w = input.shape
    rows = (n1 - n0) * h * w * units
    table = input.new_empty((rows + 1, c // units))
    table[:rows].view(n1 - n0, h, w, c).copy_(input[n0:n1].permute(0, 2, 3, 1))
    table[rows].zero_()
    return table, rows


def _sample_points(offset: Tensor, g: Geometry) -> Tuple[Tensor, Tensor]:
    """``(y, x)``, each (N * L, dg, K): the sampling points, ``base + offset`` in the offset's dtype,
    the integral base ``h * stride - pad + i * dilation`` added first as in the kernels."""
    kh, kw = g.kernel
    device = offset.device
    ho = torch.arange(g.out_h, device=device) * g.stride[0] - g.padding[0]
    wo = torch.arange(g.out_w, device=device) * g.stride[1] - g.padding[1]
    base_y = ho.view(-1, 1, 1, 1) + (torch.arange(kh, device=device) * g.dilation[0]).view(1, 1, -1, 1)
    base_x = wo.view(1, -1, 1, 1) + (torch.arange(kw, device=device) * g.dilation[1]).view(1, 1, 1, -1)
    shape = (g.out_h, g.out_w, kh, kw)
    base_y = base_y.expand(shape).reshape(1, g.positions, 1, g.taps).to(offset.dtype)
    base_x = base_x.expand(shape).reshape(1, g.positions, 1, g.taps).to(offset.dtype)
    off = offset.reshape(g.batch, g.deform_groups, g.taps, 2, g.positions).permute(0, 4, 1, 2, 3)
    y = (base_y + off[..., 0]).reshape(-1, g.deform_groups, g.taps)
    x = (base_x + off[..., 1]).reshape(-1, g.deform_groups, g.taps)
    return y, x


def _mask_rows(mask: Tensor, g: Geometry) -> Tensor:
    """(N, dg * K, Ho, Wo) -> (N * L, dg, K)."""
    return mask.reshape(g.batch, g.deform_groups * g.taps, g.positions).transpose(1, 2).reshape(
        -1, g.deform_groups, g.taps)


def _grouped_weight(weight: Tensor, g: Geometry) -> Tensor:
    """(Cout, C/G, kh, kw) -> (G, Cout/G, K * C/G), columns in the bags' (tap, channel) order."""
    groups = g.groups
    w = weight.reshape(groups, g.out_channels // groups, g.channels // groups, g.taps)
    return w.transpose(2, 3).reshape(groups, g.out_channels // groups, -1)


def _ungrouped_weight(w2: Tensor, g: Geometry) -> Tensor:
    kh, kw = g.kernel
    groups = g.groups
    w = w2.view(groups, g.out_channels // groups, g.taps, g.channels // groups).transpose(2, 3)
    return w.reshape(g.out_channels, g.channels // groups, kh, kw)




def _positions_per_chunk(g: Geometry, factor: int) -> int:
    return max(1, _COLUMN_ELEMENTS // max(1, g.taps * g.channels * factor))


def _check_rule(rule: str) -> None:
    if rule not in RULES:
        raise ValueError(f"deformable convolution: rule must be one of {RULES}, got {rule!r}")


def _trivial(g: Geometry) -> bool:
    return g.batch == 0 or g.channels == 0 or g.out_channels == 0


# --- forward -----------------------------------------------------------------------------------------


def deform_conv_forward(input: Tensor, offset: Tensor, mask: Optional[Tensor], weight: Tensor, bias: Optional[Tensor],
                        g: Geometry, rule: str = "mmcv", max_images: Optional[int] = None) -> Tensor:
    """(N, Cout, Ho, Wo) output of the (modulated, when ``mask`` is given) deformable convolution.

    All tensors in one dtype (half precision is computed in float32 and returned as given); ``g`` from
    :func:`check_arguments`; ``max_images`` bounds the images gathered at once (``im2col_step``).
    """
    _check_rule(rule)
    out_dtype = input.dtype
    dtype = compute_dtype(out_dtype)
    with torch.no_grad(), no_autocast(input.device):
        if _trivial(g):
            out = input.new_zeros(g.output_shape, dtype=dtype)
            if bias is not None:
                out += bias.to(dtype).view(1, -1, 1, 1)
            return out.to(out_dtype)
        input, offset, weight = input.to(dtype), offset.to(dtype), weight.to(dtype)
        bias = None if bias is None else bias.to(dtype)
        layout = _Layout(g, input.device, input.dtype)
        y, x = _sample_points(offset, g)
        m = None if mask is None else _mask_rows(mask.to(dtype), g)
        w2 = _grouped_weight(weight, g)
        out = input.new_empty((g.batch * g.positions, g.out_channels))
        positions = torch.arange(g.batch * g.positions, device=input.device)
        for n0, n1, ranges in _image_groups(g, _positions_per_chunk(g, 1), max_images):
            table, zero_row = _table(input, n0, n1, g.units)
            for q0, q1 in ranges:
                image = positions[q0:q1] // g.positions - n0
                taps = _chunk_taps(y[q0:q1], x[q0:q1], None if m is None else m[q0:q1], image, zero_row, layout,
                                   rule, slopes=False)
                cols = F.embedding_bag(taps.index, table, mode="sum", per_sample_weights=taps.weight)
                _columns_times_weight(cols.view(q1 - q0, g.groups, -1), w2, bias, out[q0:q1])
        out = out.view(g.batch, g.positions, g.out_channels).transpose(1, 2).reshape(g.output_shape)
        return out.to(out_dtype)


def _columns_times_weight(cols: Tensor, w2: Tensor, bias: Optional[Tensor], out: Tensor) -> None:
    """``out`` (pc, Cout) = per group ``cols[:, g]`` (pc, K * C/G) x ``w2[g]^T`` (+ bias)."""
    groups = w2.size(0)
    if groups == 1:
        if bias is None:
            torch.mm(cols[:, 0], w2[0].t(), out=out)
        else:
            torch.addmm(bias, cols[:, 0], w2[0].t(), out=out)
        return
    per = w2.size(1)
    for gi in range(groups):
        block = torch.mm(cols[:, gi], w2[gi].t())
        if bias is not None:
            block += bias[gi * per:(gi + 1) * per]
        out[:, gi * per:(gi + 1) * per] = block


# --- backward ----------------------------------------------------------------------------------------


class Needs(NamedTuple):
    """Which gradients to compute."""

    input: bool = True
    offset: bool = True
    mask: bool = True
    weight: bool = True
    bias: bool = True


class Grads(NamedTuple):
    input: Optional[Tensor]
    offset: Optional[Tensor]
    mask: Optional[Tensor]
    weight: Optional[Tensor]
    bias: Optional[Tensor]


def deform_conv_backward(grad_output: Tensor, input: Tensor, offset: Tensor, mask: Optional[Tensor], weight: Tensor,
                         g: Geometry, needs: Needs = Needs(), rule: str = "mmcv",
                         max_images: Optional[int] = None) -> Grads:
    """Gradients of :func:`deform_conv_forward` as mmcv's kernels compute them (see the module
    docstring), each in its tensor's dtype; None where not asked for (``mask`` and ``bias`` also
    when there is no mask)."""
    _check_rule(rule)
    dtype = compute_dtype(input.dtype)
    needs = needs._replace(mask=needs.mask and mask is not None)
    with torch.no_grad(), no_autocast(input.device):
        gout = grad_output.to(dtype).permute(0, 2, 3, 1).reshape(-1, g.out_channels)
        grad_bias = gout.sum(0).to(weight.dtype) if needs.bias else None
        if _trivial(g):
            return _zero_grads(input, offset, mask, weight, needs, grad_bias)
        input, weight = input.to(dtype), weight.to(dtype)
        layout = _Layout(g, input.device, input.dtype)
        y, x = _sample_points(offset.to(dtype), g)
        m = None if mask is None else _mask_rows(mask.to(dtype), g)
        w2 = _grouped_weight(weight, g)
        acc = _Accumulators(g, input, needs)
        sets = int(needs.weight or needs.mask) + 2 * int(needs.offset)
        positions = torch.arange(g.batch * g.positions, device=input.device)
        for n0, n1, ranges in _image_groups(g, _positions_per_chunk(g, 2 + sets), max_images):
            table, zero_row = _table(input, n0, n1, g.units)
            grad_table = table.new_zeros(table.shape) if needs.input else None
            for q0, q1 in ranges:
                image = positions[q0:q1] // g.positions - n0
                taps = _chunk_taps(y[q0:q1], x[q0:q1], None if m is None else m[q0:q1], image, zero_row, layout,
                                   rule, slopes=needs.offset)
                _backward_chunk(acc, layout, taps, table, grad_table, gout[q0:q1], w2, q0, q1, needs)
            if grad_table is not None:
                acc.input[n0:n1] = grad_table[:-1].view(n1 - n0, g.height, g.width, g.channels).permute(0, 3, 1, 2)
        return acc.grads(g, offset, mask, weight, grad_bias)


def _zero_grads(input: Tensor, offset: Tensor, mask: Optional[Tensor], weight: Tensor, needs: Needs,
                grad_bias: Optional[Tensor]) -> Grads:
    return Grads(torch.zeros_like(input) if needs.input else None,
                 torch.zeros_like(offset) if needs.offset else None,
                 torch.zeros_like(mask) if needs.mask else None,
                 torch.zeros_like(weight) if needs.weight else None, grad_bias)


class _Accumulators:
    def __init__(self, g: Geometry, input: Tensor, needs: Needs):
        shape = (g.batch * g.positions, g.deform_groups, g.taps)
        self.input = torch.zeros_like(input) if needs.input else None
        self.w2 = input.new_zeros((g.groups, g.out_channels // g.groups, g.taps * g.channels // g.groups)) \
            if needs.weight else None
        self.y = input.new_empty(shape) if needs.offset else None
        self.x = input.new_empty(shape) if needs.offset else None
        self.mask = input.new_empty(shape) if needs.mask else None

    def grads(self, g: Geometry, offset: Tensor, mask: Optional[Tensor], weight: Tensor,
              grad_bias: Optional[Tensor]) -> Grads:
        n, length, dg, k = g.batch, g.positions, g.deform_groups, g.taps
        grad_offset = grad_mask = grad_weight = None
        if self.y is not None:
            both = torch.stack([self.y, self.x], -1).view(n, length, dg * k * 2)
            grad_offset = both.transpose(1, 2).reshape(g.offset_shape).to(offset.dtype)
        if self.mask is not None:
            grad_mask = self.mask.view(n, length, dg * k).transpose(1, 2).reshape(g.mask_shape).to(mask.dtype)
        if self.w2 is not None:
            grad_weight = _ungrouped_weight(self.w2, g).to(weight.dtype)
        return Grads(self.input, grad_offset, grad_mask, grad_weight, grad_bias)


def _backward_chunk(acc: _Accumulators, layout: _Layout, taps: _Taps, table: Tensor, grad_table: Optional[Tensor],
                    gout: Tensor, w2: Tensor, q0: int, q1: int, needs: Needs) -> None:
    groups, pc, cu = w2.size(0), q1 - q0, table.size(1)
    gout_g = gout.view(pc, groups, -1)
    need_grad_cols = needs.input or needs.offset or needs.mask
    grad_cols = None
    if need_grad_cols:  # (bags, C/U): grad columns = grad_output x weight, per group
        grad_cols = torch.stack([torch.mm(gout_g[:, gi], w2[gi]) for gi in range(groups)], 1) if groups > 1 \
            else torch.mm(gout, w2[0])
        grad_cols = grad_cols.view(-1, cu)
    weights = [taps.raw] if needs.weight or needs.mask else []
    if needs.offset:
        weights += [taps.slope_y, taps.slope_x]
    sums = None
    if weights:  # sample, d sample / dy, d sample / dx of every bag: one gather
        index = taps.index.repeat(len(weights), 1) if len(weights) > 1 else taps.index
        sums = F.embedding_bag(index, table, mode="sum", per_sample_weights=torch.cat(weights))
        sums = sums.view(len(weights), -1, cu)
    at = 0
    if needs.weight or needs.mask:
        sample = sums[0]
        at = 1
        if needs.mask:
            acc.mask[q0:q1] = layout.from_bags(_rowwise_dot(sample, grad_cols), pc)
        if needs.weight:
            cols = sample if taps.bag_mask is None else sample * taps.bag_mask.unsqueeze(1)
            cols = cols.view(pc, groups, -1)
            for gi in range(groups):
                acc.w2[gi].addmm_(gout_g[:, gi].t(), cols[:, gi])
    if needs.offset:
        dy, dx = _rowwise_dot(sums[at], grad_cols), _rowwise_dot(sums[at + 1], grad_cols)
        if taps.bag_mask is not None:
            dy, dx = dy * taps.bag_mask, dx * taps.bag_mask
        acc.y[q0:q1] = layout.from_bags(dy, pc)
        acc.x[q0:q1] = layout.from_bags(dx, pc)
    if needs.input:
        flat = taps.index.view(-1)
        bag = torch.arange(taps.index.size(0), device=flat.device).repeat_interleave(4)
        grad_table += transposed_row_sum(grad_cols, flat, taps.weight.reshape(-1), bag, table.size(0))


def _rowwise_dot(a: Tensor, b: Tensor) -> Tensor:
    """(B,) ``<a[i], b[i]>`` of two (B, C) tensors."""
    return torch.einsum("bc,bc->b", a, b)
