"""``mmcv.ops.border_align``: max pooling along the four borders of each box (BorderDet).

``input`` is (N, 4C, H, W): channels ``[0, C)`` hold the top-border features, ``[C, 2C)`` the left,
``[2C, 3C)`` the bottom and ``[3C, 4C)`` the right. ``boxes`` is (N, K, 4) ``(x1, y1, x2, y2)``
(K is usually H * W, one box per location). The output is (N, C, K, 4), last dim ordered
(top, left, bottom, right).

Semantics follow mmcv's CUDA kernel (mmcv has no CPU kernel for this op):

- each border is walked from a corner: top from ``(x1, y1)`` rightwards, left from ``(x1, y1)``
  downwards, bottom from ``(x2, y2)`` leftwards, right from ``(x2, y2)`` upwards, in steps of
  ``(x2 - x1) / pool_size`` (top, bottom) or ``(y2 - y1) / pool_size`` (left, right);
- the forward reaches point ``i`` by adding the step ``i`` times (``x += step``, rounded in the
  input dtype each time), as the kernel does; the backward recomputes the chosen point as
  ``start + step * i``. The two can differ in the last bit; we reproduce both;
- each of the ``pool_size + 1`` points is read with mmcv's ``bilinear_interpolate``
  (:mod:`._bilinear`; a point outside ``[-1, H] x [-1, W]`` reads 0);
- the max starts from point 0 and moves only on a strictly greater value, so ties keep the
  earliest point; the argmax index is kept for the backward;
- the backward sends each output gradient to the four bilinear taps of its argmax point only
  (no gradient for ``boxes``, as in mmcv).
"""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn as nn
from torch import Tensor
from torch.autograd import Function
from torch.autograd.function import once_differentiable

from .. import registry
from ._bilinear import bilinear_taps, redirect_outside_taps, weighted_row_sum
from ._checks import autocast_common_dtype, check_int, compute_dtype

_OP = "border_align"

#: Scalar gradient contributions (elements x 4 taps) scattered at a time in the backward.
_SCATTER_CHUNK = 1 << 22


# --- checks ---------------------------------------------------------------------------------


def check_inputs(input: Tensor, boxes: Tensor) -> None:
    """``input`` (N, 4C, H, W) and ``boxes`` (N, K, 4): floating, one dtype, one device."""
    for name, value in (("input", input), ("boxes", boxes)):
        if not isinstance(value, Tensor):
            raise TypeError(f"{_OP}: {name} must be a torch.Tensor, got {type(value).__name__}")
    if input.dim() != 4:
        raise ValueError(f"{_OP}: input must have shape (N, 4C, H, W), got {tuple(input.shape)}")
    if input.size(1) % 4 != 0:
        raise ValueError(f"{_OP}: the channels of input must be divisible by 4 (top, left, bottom, right), "
                         f"got {input.size(1)}")
    if boxes.dim() != 3 or boxes.size(2) != 4:
        raise ValueError(f"{_OP}: boxes must have shape (N, K, 4) as (x1, y1, x2, y2), got {tuple(boxes.shape)}")
    if boxes.size(0) != input.size(0):
        raise ValueError(f"{_OP}: boxes must have one batch per input image: input has {input.size(0)}, "
                         f"boxes {boxes.size(0)}")
    if not input.is_floating_point():
        raise TypeError(f"{_OP}: input must be a floating point tensor, got {input.dtype}")
    if boxes.dtype != input.dtype:
        # mmcv's kernel reads both through one scalar type
        raise TypeError(f"{_OP}: boxes must have the dtype of input ({input.dtype}), got {boxes.dtype}")
    if boxes.device != input.device:
        raise ValueError(f"{_OP}: input and boxes must be on one device, got input on {input.device} "
                         f"and boxes on {boxes.device}")


# --- the functional core ---------------------------------------------------------------------


def border_walk(boxes: Tensor, pool_size: int) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(x0, y0, dx, dy)``, each (N, K, 4): start point and step of the walk along each border,
    borders ordered (top, left, bottom, right), in the dtype of ``boxes``."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    if pool_size > 0:
        step_w, step_h = (x2 - x1) / pool_size, (y2 - y1) / pool_size
    else:  # one point per border: no step (mmcv would divide by zero but never use the step)
        step_w = step_h = torch.zeros_like(x1)
    zero = torch.zeros_like(x1)
    x0 = torch.stack([x1, x1, x2, x2], -1)
    y0 = torch.stack([y1, y1, y2, y2], -1)
    dx = torch.stack([step_w, zero, -step_w, zero], -1)
    dy = torch.stack([zero, step_h, zero, -step_h], -1)
    return x0, y0, dx, dy


def _feature_rows(input: Tensor) -> Tensor:
    """(N, 4C, H, W) -> (N * 4 * H * W, C): row ``(n * 4 + border) * H * W + pixel``."""
    n, c4, h, w = input.shape
    c = c4 // 4
    return input.reshape(n, 4, c, h, w).permute(0, 1, 3, 4, 2).reshape(n * 4 * h * w, c)


def _row_base(n: int, k: int, hw: int, device: torch.device) -> Tensor:
    """(N, K, 4, 1): first row of each (image, border) plane in :func:`_feature_rows`."""
    base = torch.arange(n * 4, device=device).view(n, 1, 4, 1) * hw
    return base.expand(n, k, 4, 1)


def border_align_forward_core(input: Tensor, boxes: Tensor, pool_size: int) -> Tuple[Tensor, Tensor]:
    """``(output, argmax_idx)``, each (N, C, K, 4); argmax int32 in ``[0, pool_size]``."""
    n, c4, h, w = input.shape
    c, k = c4 // 4, boxes.size(1)
    output = input.new_zeros((n, c, k, 4))
    argmax = torch.zeros((n, c, k, 4), dtype=torch.int32, device=input.device)
    if output.numel() == 0 or h * w == 0:  # no element, or nothing to read (mmcv would read garbage)
        return output, argmax
    compute = compute_dtype(input.dtype)
    rows = _feature_rows(input.detach().to(compute))
    zero_row = None
    if not bool(torch.isfinite(input[:, :, 0, 0]).all()):
        # out-of-map points tap pixel (0, 0) with weight 0, which 0 * inf would turn into NaN where
        # the kernel reads nothing: send them to an appended zero row instead
        zero_row = rows.size(0)
        rows = torch.cat([rows, rows.new_zeros((1, c))])
    base = _row_base(n, k, h * w, input.device)
    x, y, dx, dy = border_walk(boxes.detach(), pool_size)
    best = best_idx = None
    for i in range(pool_size + 1):
        if i:  # the kernel walks: x += step, rounded in the input dtype every time
            x, y = x + dx, y + dy
        index, weight = bilinear_taps(y.to(compute), x.to(compute), h, w)
        index = redirect_outside_taps(index + base, weight, zero_row)
        # rounded to the input dtype before comparing, as the kernel compares values of that dtype
        value = weighted_row_sum(rows, index.view(-1, 4), weight.view(-1, 4)).to(input.dtype)
        if best is None:
            best, best_idx = value, torch.zeros(value.shape, dtype=torch.int32, device=value.device)
        else:
            better = value > best  # strict: ties keep the earlier point
            torch.where(better, value, best, out=best)
            best_idx.masked_fill_(better, i)
    output.copy_(best.view(n, k, 4, c).permute(0, 3, 1, 2))
    argmax.copy_(best_idx.view(n, k, 4, c).permute(0, 3, 1, 2))
    return output, argmax


def border_align_backward_core(grad_output: Tensor, boxes: Tensor, argmax_idx: Tensor, grad_input: Tensor,
                               pool_size: int) -> Tensor:
    """Accumulate into ``grad_input`` (N, 4C, H, W) the gradient of ``grad_output`` (N, C, K, 4):
    each element's gradient goes to the bilinear taps of its argmax point. Returns ``grad_input``."""
    n, c4, h, w = grad_input.shape
    c, k = c4 // 4, boxes.size(1)
    if grad_output.numel() == 0 or h * w == 0:
        return grad_input
    compute = compute_dtype(grad_input.dtype)
    # Taps of every point of every walk: (N, K, 4 borders, P + 1 points, 4 taps); the backward
    # recomputes a point as start + step * i (not the forward's repeated addition), like mmcv.
    x0, y0, dx, dy = border_walk(boxes.detach().to(grad_input.dtype), pool_size)
    steps = torch.arange(pool_size + 1, device=boxes.device).to(x0.dtype)
    x = x0.unsqueeze(-1) + dx.unsqueeze(-1) * steps
    y = y0.unsqueeze(-1) + dy.unsqueeze(-1) * steps
    tap_index, tap_weight = bilinear_taps(y.to(compute), x.to(compute), h, w)
    tap_index, tap_weight = tap_index.view(-1, 4), tap_weight.view(-1, 4)
    # (N, K, 4) -> the first walk point of that (image, box, border), in tap_index rows
    walk = torch.arange(n * k * 4, device=boxes.device).view(n, 1, k, 4) * (pool_size + 1)
    # (N, 1, 1, 4) plane of each (image, border) in grad_input, without the channel offset
    plane = (torch.arange(n, device=boxes.device).view(n, 1, 1, 1) * 4
             + torch.arange(4, device=boxes.device).view(1, 1, 1, 4)) * c
    flat = grad_input.view(-1) if grad_input.is_contiguous() and grad_input.dtype == compute else None
    target = flat if flat is not None else torch.zeros(grad_input.numel(), dtype=compute, device=grad_input.device)
    step_c = max(1, _SCATTER_CHUNK // max(n * k * 16, 1))
    for c0 in range(0, c, step_c):
        c1 = min(c, c0 + step_c)
        channel = torch.arange(c0, c1, device=boxes.device).view(1, -1, 1, 1)
        # an index outside [0, pool_size] (only a hand-made argmax_idx) is clamped onto the border
        point = (walk + argmax_idx[:, c0:c1].long().clamp(0, pool_size)).reshape(-1)
        pixel = tap_index.index_select(0, point)
        offset = ((plane + channel) * (h * w)).expand(n, c1 - c0, k, 4).reshape(-1, 1)
        grad = grad_output[:, c0:c1].reshape(-1, 1).to(compute) * tap_weight.index_select(0, point)
        target.index_add_(0, (pixel + offset).view(-1), grad.view(-1))
    if flat is None:
        grad_input.add_(target.view(grad_input.shape).to(grad_input.dtype))
    return grad_input


# --- the public API (mmcv.ops.border_align) --------------------------------------------------


class BorderAlignFunction(Function):
    """autograd Function of :func:`border_align`; gradient for ``input`` only, as mmcv."""

    @staticmethod
    def symbolic(g, input, boxes, pool_size):
        return g.op("mmcv::MMCVBorderAlign", input, boxes, pool_size_i=pool_size)

    @staticmethod
    def forward(ctx, input: Tensor, boxes: Tensor, pool_size: int) -> Tensor:
        ctx.input_dtype = getattr(input, "dtype", None)
        input, boxes = autocast_common_dtype(input, boxes)
        check_inputs(input, boxes)
        ctx.pool_size = check_int(_OP, "pool_size", pool_size, 0)
        ctx.input_shape = input.size()
        output, argmax_idx = border_align_forward_core(input, boxes, ctx.pool_size)
        ctx.save_for_backward(boxes, argmax_idx)
        return output

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: Tensor) -> Tuple[Tensor, None, None]:
        boxes, argmax_idx = ctx.saved_tensors
        grad_input = grad_output.new_zeros(ctx.input_shape, dtype=boxes.dtype)
        border_align_backward_core(grad_output, boxes, argmax_idx, grad_input, ctx.pool_size)
        return grad_input.to(ctx.input_dtype), None, None


border_align = BorderAlignFunction.apply


class BorderAlign(nn.Module):
    r"""Border align pooling layer (`BorderDet <https://arxiv.org/abs/2007.11056>`_).

    For each border (top, left, bottom, right) of each box: samples ``pool_size + 1`` evenly spaced
    points on it, both ends included, reads them bilinearly, and max-pools them.

    Args:
        pool_size: number of steps along each border (``pool_size + 1`` points).
    """

    def __init__(self, pool_size: int):
        super().__init__()
        self.pool_size = pool_size

    def forward(self, input: Tensor, boxes: Tensor) -> Tensor:
        """
        Args:
            input: (N, 4C, H, W); channel groups top, left, bottom, right.
            boxes: (N, H*W, 4) as (x1, y1, x2, y2).

        Returns:
            (N, C, H*W, 4), last dim ordered (top, left, bottom, right).
        """
        return border_align(input, boxes, self.pool_size)

    def __repr__(self) -> str:
        s = self.__class__.__name__
        s += f"(pool_size={self.pool_size})"
        return s


registry.register(registry.OpEntry(
    op="border_align",
    names=("BorderAlign", "BorderAlignFunction", "border_align"),
    ext_functions=("border_align_backward", "border_align_forward"),
    backward="yes",
    devices=("any",),
))
