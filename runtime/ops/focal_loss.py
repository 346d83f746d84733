"""``mmcv.ops.focal_loss``: sigmoid and softmax focal losses, forward and mmcv's analytic backward.

Semantics follow mmcv's CUDA kernels (mmcv has no CPU kernel; 1.7.2 and 2.2.0 share them), with
``p`` the probability, ``g = gamma``, ``a = alpha`` and ``log`` clamped as ``log(max(p, FLT_MIN))``:

- **sigmoid** (input (N, C) logits, target (N,) int64): ``p = 1 / (1 + exp(-x))`` per element;
  element (n, c) is positive when ``target[n] == c`` with loss ``-a (1-p)^g log p``, negative otherwise
  with loss ``-(1-a) p^g log(1-p)``. So ``target == C`` is background (every class negative), and so is
  a negative label (mmcv does not reject those). Labels above C are rejected, as mmcv's launcher
  asserts (the one host sync per call, as in mmcv). The gradient is the kernel's formula,
  ``-a (1-p)^g (1 - p - g p log p)`` and ``-(1-a) p^g (g (1-p) log(1-p) - p)``: the true derivative
  away from the clamps, and ``1 - a`` (not 0) where ``1 - p`` underflows to 0, as mmcv.
- **softmax** (same shapes): probabilities as mmcv's wrapper computes them (``exp(x - max)`` over its
  row sum); per row ``pred = softmax[n, target[n]]``, loss ``-a (1-pred)^g log pred`` and the backward
  buffer ``buff = a (-(1-pred)^g + g (1-pred)^(g-1) pred log pred)``, gradient
  ``buff * (onehot - softmax)``. A negative label ignores the row (loss and gradient 0). mmcv reads
  ``pred`` at the flat offset ``n * C + label`` without a bounds check, so ``label == C`` (which the
  launcher allows) reads the NEXT row's class-0 probability: reproduced; for the last row that read is
  past the tensor (undefined in mmcv), and the runtime then ignores the row.
- ``weight`` (C,) scales a row by ``weight[target[n]]`` (the sample's label, not the column's class).
  For labels outside ``[0, C)`` (background included) mmcv reads out of bounds, undefined; the runtime
  uses 1 (the row unweighted).
- ``reduction``: ``'none'`` gives (N, C) (sigmoid) or (N,) (softmax); ``'sum'`` the sum; ``'mean'`` the
  sum divided by N (rows, not elements), also for sigmoid. Backward multiplies the kernel gradient by
  ``grad_output`` and divides by N for ``'mean'``.
- ``gamma`` and ``alpha`` are rounded to float32 (the pybind signature takes ``float``), also for
  float64 input; ``1 - alpha`` and ``gamma - 1`` are computed in the input's precision, as ``T`` is.

Deliberate differences from mmcv, each where mmcv fails or is undefined:

- half (float16, and bfloat16 which mmcv rejects) is computed in float32 and returned in the input's
  dtype; mmcv's half kernel clamps at ``(half)FLT_MIN == 0``, so it gives ``inf`` where float32 stays
  finite (e.g. a positive logit below about -17).
- mmcv's float64 sigmoid forward calls ``expf`` (float32 ``exp``); the runtime uses float64 ``exp``, so
  the forward is the exact float64 function its gradient is the derivative of (differences ~1e-7
  relative).
- softmax with ``reduction='none'``: mmcv multiplies the (N, C) gradient by the (N,) ``grad_output``
  in place, which broadcasts over classes: it raises unless ``N == C`` or ``N == 1``, and is wrong for
  ``N == C`` unless ``grad_output`` is uniform. The runtime scales each row by its ``grad_output``.
- an empty batch: mmcv's launcher raises (``target.max()`` of nothing); the runtime returns an empty
  loss, a zero sum and a ``nan`` mean (``0 / 0``, mmcv's formula).

Speed: the sigmoid forward computes the gradient too when the input requires grad (one pass over
the shared terms instead of two; the backward then only scales it), gives every element its negative
term in cache-sized row chunks and then overwrites the one positive element per row, and folds the
constant ``-(1-a) p^g`` once for loss and gradient. The softmax forward keeps the probabilities and
the (N,) buffer; its backward folds ``grad_output`` (and the 'mean' division) into the buffer, so the
gradient is one pass over (N, C). Results equal the kernels' formulas, clamps included, up to float
rounding (an ulp or so, as between GPUs).
"""

from __future__ import annotations

from typing import Any, Optional, Tuple, Union

import torch
from torch import Tensor, nn
from torch.autograd import Function
from torch.autograd.function import once_differentiable

from .. import registry
from ._checks import check_choice, check_same_device, compute_dtype

__all__ = ["SigmoidFocalLoss", "SigmoidFocalLossFunction", "SoftmaxFocalLoss", "SoftmaxFocalLossFunction",
           "sigmoid_focal_loss", "softmax_focal_loss"]

FLT_MIN = 1.1754943508222875e-38  # the kernels' clamp, (T)FLT_MIN
_REDUCTIONS = {"none": 0, "mean": 1, "sum": 2}
_CPU_CHUNK = 1 << 20  # elements per row chunk of the sigmoid loss on CPU (4 MiB per float32 temporary)
_DEVICE_CHUNK = 1 << 26  # elsewhere: a bound on each temporary only


# --- scalars as the kernels see them -------------------------------------------------------------


def _f32(value: float) -> float:
    """``value`` rounded to float32, as pybind's ``float`` argument rounds it."""
    return torch.tensor(float(value), dtype=torch.float32).item()


def _in(dtype: torch.dtype, value: float) -> float:
    """``value`` computed in ``dtype`` (float32 or float64) and returned as a Python float."""
    return _f32(value) if dtype == torch.float32 else float(value)


def _clamped_log(x: Tensor, nan_to_floor: bool) -> Tensor:
    """``log(max(x, FLT_MIN))``, a new tensor.

    CUDA's ``max`` is ``fmaxf``, which turns NaN into FLT_MIN; that shows only where ``pow(nan, gamma)``
    is not NaN, i.e. ``gamma == 0`` (``nan_to_floor``), so the faster NaN-propagating clamp serves otherwise.
    """
    if nan_to_floor:
        return torch.where(x > FLT_MIN, x, FLT_MIN).log_()
    return x.clamp_min(FLT_MIN).log_()


def _row_weight(weight: Optional[Tensor], target: Tensor, num_classes: int, dtype: torch.dtype) -> Optional[Tensor]:
    """(N,) ``weight[target]``, 1 where the label is outside ``[0, C)`` (mmcv reads out of bounds)."""
    if weight is None:
        return None
    inside = (target >= 0) & (target < num_classes)
    picked = weight.to(dtype).gather(0, target.clamp(0, max(num_classes - 1, 0)))
    return torch.where(inside, picked, picked.new_ones(()))


def _empty_weight_is_none(weight: Optional[Tensor]) -> Optional[Tensor]:
    # mmcv passes ``input.new_empty(0)`` for "no weight": its data pointer is NULL in the kernel
    return None if weight is None or weight.numel() == 0 else weight


# --- functional cores (shared with the _ext adapters) -----------------------------------------------


def sigmoid_focal_loss_core(input: Tensor, target: Tensor, weight: Optional[Tensor], gamma: float, alpha: float,
                            want_loss: bool = True, want_grad: bool = False
                            ) -> Tuple[Optional[Tensor], Optional[Tensor]]:
    """mmcv's sigmoid focal loss kernels: ``(loss, grad)``, each (N, C) in the compute dtype or None.

    ``grad`` is the kernel's per-element d(loss)/d(input), before ``grad_output`` and reduction.
    Every element is first given its negative term (in row chunks, to stay in cache and bound the
    temporaries), then each row's positive element (at most one) is overwritten.
    """
    dtype = compute_dtype(input.dtype)
    target = target.long()
    weight = _empty_weight_is_none(weight)
    n, c = input.shape
    g, a = _f32(gamma), _f32(alpha)
    neg_b = -_in(dtype, 1.0 - a)  # -(1 - alpha), with 1 - alpha computed in T as the kernel does
    loss = input.new_empty((n, c), dtype=dtype) if want_loss else None
    grad = input.new_empty((n, c), dtype=dtype) if want_grad else None
    rows = max(1, _chunk_elements(input) // max(c, 1))
    for lo in range(0, n, rows):
        hi = min(lo + rows, n)
        _sigmoid_negative_terms(input[lo:hi].to(dtype), g, neg_b, None if loss is None else loss[lo:hi],
                                None if grad is None else grad[lo:hi])
    if c == 0:
        return loss, grad

    # the positive terms: one element per row (where 0 <= target < C), from the gathered logit
    positive = (target >= 0) & (target < c)
    column = target.clamp(0, c - 1)[:, None]
    pp = input.gather(1, column).squeeze(1).to(dtype).sigmoid()
    qp = torch.rsub(pp, 1)
    qp_pow = qp.pow(g)
    log_pp = _clamped_log(pp, g == 0)
    row_w = _row_weight(weight, target, c, dtype)
    if loss is not None:
        _put_positive(loss, column, positive, (qp_pow * log_pp).mul_(-a), row_w)
    if grad is not None:
        # -alpha (1-p)^g (1 - p - g p log p)
        grad_pos = qp_pow.mul_(torch.rsub(pp.mul(g).mul_(log_pp), qp)).mul_(-a)
        _put_positive(grad, column, positive, grad_pos, row_w)
    return loss, grad


def _put_positive(values: Tensor, column: Tensor, positive: Tensor, at_target: Tensor,
                  row_w: Optional[Tensor]) -> None:
    """Write the positive term of each row at its target column, then apply the row weight."""
    current = values.gather(1, column).squeeze(1)
    values.scatter_(1, column, torch.where(positive, at_target, current)[:, None])
    if row_w is not None:
        values.mul_(row_w[:, None])


def _chunk_elements(input: Tensor) -> int:
    # CPU: chunks that stay in cache and reuse the allocator's blocks; elsewhere only bound the memory
    return _CPU_CHUNK if input.device.type == "cpu" else _DEVICE_CHUNK


def _sigmoid_negative_terms(x: Tensor, g: float, neg_b: float, loss: Optional[Tensor],
                            grad: Optional[Tensor]) -> None:
    """Every element as a negative: loss ``-(1-a) p^g log(1-p)``, gradient
    ``-(1-a) p^g (g (1-p) log(1-p) - p)``, written into ``loss`` / ``grad`` (row chunks of the outputs).

    ``p = 1 / (1 + exp(-x))`` (``torch.sigmoid`` computes that expression) and ``log(max(1 - p, FLT_MIN))``
    as in the kernel, so ``1 - p`` loses precision as it does there; the constant ``-(1-a)`` is folded
    into ``p^g`` once for both outputs.
    """
    p = x.sigmoid()
    q = torch.rsub(p, 1)
    scaled_pow = p.pow(g).mul_(neg_b)
    log_q = _clamped_log(q, g == 0)
    if grad is not None:
        # -p + g q log q, then times -(1-a) p^g; p's storage is free after this
        torch.mul(p.neg_().addcmul_(q, log_q, value=g), scaled_pow, out=grad)
    if loss is not None:
        torch.mul(log_q, scaled_pow, out=loss)


def softmax_probs(input: Tensor) -> Tensor:
    """(N, C) softmax in the compute dtype: mmcv's wrapper computes ``exp(x - rowmax)`` over its row
    sum; ``torch.softmax`` is that computation fused (equal up to float rounding)."""
    return torch.softmax(input, dim=1, dtype=compute_dtype(input.dtype))


def softmax_focal_loss_core(softmax: Tensor, target: Tensor, weight: Optional[Tensor], gamma: float,
                            alpha: float, want_loss: bool = True, want_buff: bool = False, want_grad: bool = False
                            ) -> Tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
    """mmcv's softmax focal loss kernels on probabilities: ``(loss (N,), buff (N,), grad (N, C))``.

    ``buff`` (the backward's per-row factor, weighted) comes with ``want_buff`` or ``want_grad``;
    ``grad`` is ``buff * (onehot - softmax)``, before ``grad_output``.
    """
    dtype = compute_dtype(softmax.dtype)
    s = softmax.to(dtype)
    target = target.long()
    weight = _empty_weight_is_none(weight)
    n, c = s.shape
    g, a = _f32(gamma), _f32(alpha)

    # the kernels read softmax[n * C + label] unchecked: label == C is the next row's class 0
    flat, readable = _softmax_offsets(target, n, c)
    pred = s.reshape(-1).gather(0, flat.clamp(0, max(n * c - 1, 0))) if n * c else s.new_zeros(n)
    one_minus = torch.rsub(pred, 1)
    log_pred = _clamped_log(pred, g == 0)
    one_minus_pow = one_minus.pow(g)
    row_w = _row_weight(weight, target, c, dtype)
    zero = s.new_zeros(())

    loss = buff = grad = None
    if want_loss:
        loss = torch.where(readable, (one_minus_pow * -a).mul_(log_pred), zero)
        if row_w is not None:
            loss.mul_(row_w)
    if want_buff or want_grad:
        g_minus_1 = _in(dtype, g - 1.0)
        buff = one_minus.pow(g_minus_1).mul_(g).mul_(pred).mul_(log_pred).sub_(one_minus_pow).mul_(a)
        buff = torch.where(readable, buff, zero)
        if row_w is not None:
            buff.mul_(row_w)
    if want_grad:
        grad = softmax_focal_loss_grad(s, target, buff)
    return loss, buff, grad


def _softmax_offsets(target: Tensor, n: int, c: int) -> Tuple[Tensor, Tensor]:
    """(N,) flat offsets ``n * C + label`` the kernels read, and the rows they compute: a label >= 0
    whose offset is inside the tensor."""
    flat = torch.arange(n, device=target.device).mul_(c).add_(target)
    return flat, (target >= 0) & (flat < n * c)


def softmax_focal_loss_grad(s: Tensor, target: Tensor, buff: Tensor) -> Tensor:
    """(N, C) ``buff[n] * (flag - softmax)`` (backward kernel 2), 0 on rows the kernels skip.

    With ``buff`` pre-multiplied by a per-row factor this is also the scaled gradient, in one pass.
    """
    n, c = s.shape
    target = target.long()
    grad = torch.mul(s, buff.neg()[:, None])  # buff * (0 - s): the same value, one pass
    if c:
        in_range = (target >= 0) & (target < c)
        column = target.clamp(0, c - 1)[:, None]
        current = grad.gather(1, column).squeeze(1)
        at_target = torch.rsub(s.gather(1, column).squeeze(1), 1).mul_(buff)
        grad.scatter_(1, column, torch.where(in_range, at_target, current)[:, None])
    # mmcv writes 0 on skipped rows, whatever the softmax holds there (NaN included)
    return grad.masked_fill_(~_softmax_offsets(target, n, c)[1][:, None], 0)


# --- the autograd Functions and modules -------------------------------------------------------------


def _check(op: str, input: Any, target: Any, weight: Any, reduction: Any) -> None:
    """mmcv's wrapper assertions, as clear errors, plus device and dtype agreement."""
    for name, value in (("input", input), ("target", target)):
        if not isinstance(value, Tensor):
            raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(value).__name__}")
    if target.dtype != torch.long:
        raise TypeError(f"{op}: target must be an int64 (torch.long) tensor of class indices, got {target.dtype}")
    if input.dim() != 2:
        raise ValueError(f"{op}: input must have shape (N, num_classes), got {tuple(input.shape)}")
    if not input.is_floating_point():
        raise TypeError(f"{op}: input must be a floating point tensor, got {input.dtype}")
    if target.dim() != 1:
        raise ValueError(f"{op}: target must have shape (N,), got {tuple(target.shape)}")
    if input.size(0) != target.size(0):
        raise ValueError(f"{op}: input has {input.size(0)} rows but target has {target.size(0)} labels")
    if weight is not None:
        if not isinstance(weight, Tensor):
            raise TypeError(f"{op}: weight must be a torch.Tensor or None, got {type(weight).__name__}")
        if weight.dim() != 1 or weight.size(0) != input.size(1):
            raise ValueError(f"{op}: weight must have shape ({input.size(1)},) (one per class), "
                             f"got {tuple(weight.shape)}")
        if weight.dtype != input.dtype and not _autocast_on(input.device.type):
            # mmcv's kernels read weight as the input's scalar type; under autocast the runtime mixes them
            raise TypeError(f"{op}: weight must have the dtype of input ({input.dtype}), got {weight.dtype}")
    check_choice(op, "reduction", reduction, tuple(_REDUCTIONS))
    check_same_device(op, input=input, target=target, weight=weight)


def _autocast_on(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except (RuntimeError, TypeError, ValueError):  # a device type autocast does not know
        return False


def _check_labels(op: str, target: Tensor, num_classes: int) -> None:
    """mmcv's launchers assert ``target.max() <= num_classes`` (one host sync, as there)."""
    if target.numel() and bool((target > num_classes).any()):
        raise ValueError(f"{op}: target labels must be <= num_classes ({num_classes}, which means background), "
                         f"got {int(target.max())}")


def _reduce(output: Tensor, reduction: int, rows: int) -> Tensor:
    if reduction == _REDUCTIONS["mean"]:
        return output.sum() / rows
    if reduction == _REDUCTIONS["sum"]:
        return output.sum()
    return output


def _scale_grad(grad: Tensor, grad_output: Tensor, reduction: int, rows: int) -> Tensor:
    """The Functions' backward: ``grad`` times ``grad_output``, divided by N for 'mean'.

    ``grad`` is the sigmoid's (N, C) gradient (``grad_output`` (N, C) or a scalar) or the softmax's
    (N,) buffer (``grad_output`` (N,) or a scalar: each row by its own, see the module docstring).
    """
    scale = grad_output.to(grad.dtype)
    if reduction == _REDUCTIONS["mean"]:
        scale = scale / rows  # a scalar: one pass over the gradient instead of two
    return grad * scale


class SigmoidFocalLossFunction(Function):
    """mmcv's ``SigmoidFocalLossFunction``; ``sigmoid_focal_loss = SigmoidFocalLossFunction.apply``.

    Shapes: input (N, C), target (N,) int64 in ``[0, C]`` (C: background), weight (C,) or None;
    output (N, C) for ``'none'``, else a scalar.
    """

    @staticmethod
    def forward(ctx: Any, input: Tensor, target: Union[torch.LongTensor, Tensor], gamma: float = 2.0,
                alpha: float = 0.25, weight: Optional[Tensor] = None, reduction: str = "mean") -> Tensor:
        _check("sigmoid_focal_loss", input, target, weight, reduction)
        _check_labels("sigmoid_focal_loss", target, input.size(1))
        ctx.reduction_dict = dict(_REDUCTIONS)
        ctx.gamma, ctx.alpha, ctx.reduction = float(gamma), float(alpha), _REDUCTIONS[reduction]
        ctx.rows, ctx.input_dtype = input.size(0), input.dtype
        # needs_input_grad is also True under no_grad for a leaf that requires grad: a rare wasted pass
        loss, grad = sigmoid_focal_loss_core(input, target, weight, ctx.gamma, ctx.alpha,
                                             want_grad=bool(ctx.needs_input_grad[0]))
        if grad is not None:
            ctx.save_for_backward(grad)
        return _reduce(loss, ctx.reduction, ctx.rows).to(input.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_output: Tensor) -> tuple:
        (grad,) = ctx.saved_tensors
        grad_input = _scale_grad(grad, grad_output, ctx.reduction, ctx.rows).to(ctx.input_dtype)
        return grad_input, None, None, None, None, None


sigmoid_focal_loss = SigmoidFocalLossFunction.apply


class SoftmaxFocalLossFunction(Function):
    """mmcv's ``SoftmaxFocalLossFunction``; ``softmax_focal_loss = SoftmaxFocalLossFunction.apply``.

    Shapes: input (N, C) logits, target (N,) int64 (negative: ignored), weight (C,) or None;
    output (N,) for ``'none'``, else a scalar.
    """

    @staticmethod
    def forward(ctx: Any, input: Tensor, target: Union[torch.LongTensor, Tensor], gamma: float = 2.0,
                alpha: float = 0.25, weight: Optional[Tensor] = None, reduction: str = "mean") -> Tensor:
        _check("softmax_focal_loss", input, target, weight, reduction)
        if input.size(1) == 0:
            raise ValueError("softmax_focal_loss: input needs at least one class, got shape "
                             f"{tuple(input.shape)}")
        _check_labels("softmax_focal_loss", target, input.size(1))
        ctx.reduction_dict = dict(_REDUCTIONS)
        ctx.gamma, ctx.alpha, ctx.reduction = float(gamma), float(alpha), _REDUCTIONS[reduction]
        ctx.rows, ctx.input_dtype = input.size(0), input.dtype
        probs = softmax_probs(input)
        loss, buff, _ = softmax_focal_loss_core(probs, target, weight, ctx.gamma, ctx.alpha,
                                                want_buff=bool(ctx.needs_input_grad[0]))
        if buff is not None:
            ctx.save_for_backward(probs, target, buff)
        return _reduce(loss, ctx.reduction, ctx.rows).to(input.dtype)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple:
        probs, target, buff = ctx.saved_tensors
        # grad_output and the 'mean' division fold into the (N,) buffer: one pass over (N, C)
        grad_input = softmax_focal_loss_grad(probs, target, _scale_grad(buff, grad_output, ctx.reduction, ctx.rows))
        return grad_input.to(ctx.input_dtype), None, None, None, None, None


softmax_focal_loss = SoftmaxFocalLossFunction.apply


class _FocalLoss(nn.Module):
    """The shared body of mmcv's two focal loss modules (same attributes, buffer and repr)."""

    def __init__(self, gamma: float, alpha: float, weight: Optional[Tensor] = None, reduction: str = "mean"):
        super().__init__()
        self.gamma = gamma
        self.alpha = alpha
        self.register_buffer("weight", weight)
        self.reduction = reduction

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(gamma={self.gamma}, alpha={self.alpha}, reduction={self.reduction})"


class SigmoidFocalLoss(_FocalLoss):
    """Sigmoid focal loss, as mmcv's: ``forward(input (N, C), target (N,))`` -> (N, C) or a scalar.

    Args:
        gamma (float): focusing exponent.
        alpha (float): weight of the positive term (``1 - alpha`` for the negatives).
        weight (Tensor, optional): (C,) per-class weight, a buffer, applied by each row's label.
        reduction (str): ``'none'``, ``'mean'`` (sum over N) or ``'sum'``.
    """

    def forward(self, input: Tensor, target: Union[torch.LongTensor, Tensor]) -> Tensor:
        return sigmoid_focal_loss(input, target, self.gamma, self.alpha, self.weight, self.reduction)


class SoftmaxFocalLoss(_FocalLoss):
    """Softmax focal loss, as mmcv's: ``forward(input (N, C), target (N,))`` -> (N,) or a scalar.

    Args: as :class:`SigmoidFocalLoss`.
    """

    def forward(self, input: Tensor, target: Union[torch.LongTensor, Tensor]) -> Tensor:
        return softmax_focal_loss(input, target, self.gamma, self.alpha, self.weight, self.reduction)


registry.register(registry.OpEntry(
    op="focal_loss",
    names=("SigmoidFocalLoss", "SigmoidFocalLossFunction", "SoftmaxFocalLoss", "SoftmaxFocalLossFunction",
           "sigmoid_focal_loss", "softmax_focal_loss"),
    ext_functions=("sigmoid_focal_loss_backward", "sigmoid_focal_loss_forward", "softmax_focal_loss_backward",
                   "softmax_focal_loss_forward"),
    backward="yes",
    devices=("any",),
))
