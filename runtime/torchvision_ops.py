"""torchvision-style deformable convolution on the runtime's core, for code written against
``torchvision.ops.deform_conv2d`` (mmcv's MLU modules call it) on any device, without torchvision.

:func:`deform_conv2d` has torchvision's signature and semantics: groups inferred from the weight
(``in_channels // weight.size(1)``), offset groups from the offset (``offset.size(1) // (2 * kh * kw)``),
DCNv2 when a mask is given, an optional bias, no ``im2col_step`` (and no batch divisibility rule), an
empty batch giving an empty output. Its checks are torchvision's (offset/mask channels and sizes, groups,
positive stride and dilation, non-negative padding), raised as ``ValueError`` naming the argument (also
``RuntimeError``, or ``AssertionError`` for the check torchvision makes with ``torch._assert``).

The only difference from mmcv's kernels is the coordinate gradient of a sample lying exactly on -1
(e.g. the first row of a padded layer with zero offsets): torchvision's kernels take the slope towards
pixel 0, mmcv's return 0. :func:`deform_conv2d` follows torchvision; :func:`deform_conv2d_mmcv_rule` (the
same function with mmcv's rule) is what mmcv's ``*Pack_MLU`` modules use, since mmcv's tests expect them
to give mmcv's gradients.
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

from torch import Tensor
from torch.autograd import Function
from torch.autograd.function import once_differentiable
from torch.nn.modules.utils import _pair

from .ops._deform_columns import (DeformConvAssertionError, DeformConvError, DeformConvTypeError, Needs,
                                  check_arguments, deform_conv_backward, deform_conv_forward)

__all__ = ["deform_conv2d"]

_OP = "deform_conv2d"
_IntPair = Union[int, Tuple[int, int]]


def _check_torchvision(input: Tensor, offset: Tensor, weight: Tensor, mask: Optional[Tensor],
                       bias: Optional[Tensor]) -> Tuple[int, int]:
    """torchvision's own checks, before the shared ones: ``(groups, offset groups)``."""
    for name, value in (("input", input), ("offset", offset), ("weight", weight), ("mask", mask), ("bias", bias)):
        if value is not None and not isinstance(value, Tensor):
            raise DeformConvTypeError(f"{_OP}: {name} must be a torch.Tensor, got {type(value).__name__}")
    for name, value in (("input", input), ("offset", offset), ("weight", weight), ("mask", mask)):
        if value is not None and value.dim() != 4:
            raise DeformConvError(f"{_OP}: {name} must be a 4-D tensor, got shape {tuple(value.shape)}")
    dtypes = {name: t.dtype for name, t in (("input", input), ("offset", offset), ("weight", weight),
                                             ("mask", mask), ("bias", bias)) if t is not None}
    if len(set(dtypes.values())) > 1:
        listing = ", ".join(f"{name} {dtype}" for name, dtype in dtypes.items())
        raise DeformConvTypeError(f"{_OP}: all tensors must have one dtype, got {listing}")
    kh, kw = weight.shape[-2:]
    if kh < 1 or kw < 1 or weight.size(1) < 1:
        raise DeformConvError(f"{_OP}: weight must be (out_channels, in_channels / groups >= 1, kh >= 1, kw >= 1), "
                              f"got {tuple(weight.shape)}")
    offset_groups = offset.size(1) // (2 * kh * kw)
    if offset_groups == 0:
        raise DeformConvAssertionError(
            f"{_OP}: the shape of the offset tensor at dimension 1 is not valid. It should be a multiple of "
            f"2 * weight.size[2] * weight.size[3]. Got offset.shape[1]={offset.size(1)}, while "
            f"2 * weight.size[2] * weight.size[3]={2 * kh * kw}")
    if offset.size(1) != offset_groups * 2 * kh * kw:
        raise DeformConvError(f"{_OP}: offset.shape[1] is not valid: got {offset.size(1)}, expected "
                              f"{offset_groups * 2 * kh * kw}")
    if mask is not None and mask.size(1) != offset_groups * kh * kw:
        raise DeformConvError(f"{_OP}: mask.shape[1] is not valid: got {mask.size(1)}, expected "
                              f"{offset_groups * kh * kw}")
    return input.size(1) // weight.size(1), offset_groups


class _TorchvisionDeformConv2d(Function):
    @staticmethod
    def forward(ctx, input, offset, weight, bias, mask, stride, padding, dilation, rule):
        groups, offset_groups = _check_torchvision(input, offset, weight, mask, bias)
        geometry = check_arguments(_OP, input, offset, mask, weight, bias, stride, padding, dilation, groups,
                                   offset_groups, negative_padding=False)
        ctx.geometry, ctx.rule = geometry, rule
        ctx.has_mask, ctx.has_bias = mask is not None, bias is not None
        ctx.save_for_backward(input, offset, weight, mask)
        return deform_conv_forward(input, offset, mask, weight, bias, geometry, rule=rule)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        input, offset, weight, mask = ctx.saved_tensors
        wants = ctx.needs_input_grad
        needs = Needs(input=wants[0], offset=wants[1], weight=wants[2], bias=ctx.has_bias and wants[3],
                      mask=ctx.has_mask and wants[4])
        grads = deform_conv_backward(grad_output, input, offset, mask, weight, ctx.geometry, needs, rule=ctx.rule)
        return grads.input, grads.offset, grads.weight, grads.bias, grads.mask, None, None, None, None


def deform_conv2d(input: Tensor, offset: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
                  stride: _IntPair = (1, 1), padding: _IntPair = (0, 0), dilation: _IntPair = (1, 1),
                  mask: Optional[Tensor] = None) -> Tensor:
    """Deformable convolution v1, or v2 when ``mask`` is given, as ``torchvision.ops.deform_conv2d``.

    Args:
        input: (N, C_in, H, W).
        offset: (N, 2 * offset_groups * kh * kw, H_out, W_out), ``(y, x)`` per tap.
        weight: (C_out, C_in / groups, kh, kw).
        bias: (C_out,) or None.
        stride, padding, dilation: int or (h, w).
        mask: (N, offset_groups * kh * kw, H_out, W_out) or None.

    Returns:
        (N, C_out, H_out, W_out).
    """
    return _TorchvisionDeformConv2d.apply(input, offset, weight, bias, mask, _pair(stride), _pair(padding),
                                          _pair(dilation), "torchvision")


def deform_conv2d_mmcv_rule(input: Tensor, offset: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
                            stride: _IntPair = (1, 1), padding: _IntPair = (0, 0), dilation: _IntPair = (1, 1),
                            mask: Optional[Tensor] = None) -> Tensor:
    """:func:`deform_conv2d` with mmcv's coordinate gradient (0 for a point exactly on -1): what mmcv's
    MLU modules compute, by mmcv's own tests of them."""
    return _TorchvisionDeformConv2d.apply(input, offset, weight, bias, mask, _pair(stride), _pair(padding),
                                          _pair(dilation), "mmcv")
