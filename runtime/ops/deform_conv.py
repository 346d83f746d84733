"""``mmcv.ops.deform_conv``: deformable convolution (DCNv1), as mmcv's CPU/CUDA kernels compute it.

The computation is the shared deformable im2col core (:mod:`._deform_columns`): samples read with the
zero-padded bilinear rule (inside ``(-1, H) x (-1, W)`` only, off-map corners read 0), the offset
gradient is the kernels' ``get_coordinate_weight`` (right-sided slope at integral coordinates, 0 for a
point on -1 or H), the input gradient their ``col2im``. ``groups`` and ``deform_groups`` are
independent; offsets are ``(N, deform_groups * 2 * kh * kw, H_out, W_out)`` with ``(y, x)`` pairs per
tap in row-major tap order.

mmcv behaviour kept on purpose:

- ``deform_conv2d`` has no bias (``bias`` must be ``False``); input and weight are cast to the offset's
  dtype (mmcv's amp workaround) and the output has that dtype;
- ``im2col_step``: the batch must be divisible by ``min(im2col_step, batch)`` (else an error that is an
  ``AssertionError`` too, with mmcv's message); it also bounds the images gathered at once;
- the input must be at least as large as the kernel (mmcv's kernel check); :class:`DeformConv2d`
  zero-pads smaller inputs at the bottom/right and crops the output, :class:`DeformConv2dPack` does not;
- :class:`DeformConv2dPack` (registry name ``DCN``) predicts offsets with a zero-initialised
  ``conv_offset``; state_dict version 2, and older checkpoints' sibling ``<name>_offset.*`` keys load
  into ``conv_offset`` when the loader shows each module the whole state_dict (mmengine's and mmcv
  1.x's ``load_state_dict``; torch's own shows a module only its own keys, so there, as with mmcv,
  they stay unexpected).

Unlike mmcv, an empty batch gives an empty output (mmcv raises in ``_output_size``), and bad input
raises a ``ValueError`` naming the op and the argument (also a ``RuntimeError``/``AssertionError`` where
mmcv raised those). ``DeformConv2dPack_MLU`` (mmcv defines it on Cambricon MLU only) is provided on
every device: the same layer computed through the torchvision-style API (groups and offset groups
inferred from the shapes) with mmcv's gradients, which is what mmcv's own tests expect of it.
"""

from __future__ import annotations

from typing import Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.autograd import Function
from torch.autograd.function import once_differentiable
from torch.nn.modules.utils import _pair, _single

from .. import registry
from ..model_registry import register_model
from ._checks import check_int, renamed_kwargs
from ._deform_columns import (DeformConvAssertionError, DeformConvError, Needs, check_arguments, deform_conv_backward,
                              deform_conv_forward)
from ._deform_pack import conv_output_size, offset_conv, upgrade_offset_keys
from .modulated_deform_conv import ModulatedDeformConv2dFunction  # noqa: F401  (mmcv's module imports it too)

__all__ = ["DeformConv2d", "DeformConv2dFunction", "DeformConv2dPack", "DeformConv2dPack_MLU", "deform_conv2d"]

_OP = "deform_conv2d"


def im2col_step_for(op: str, batch: int, im2col_step: int) -> int:
    """mmcv's ``min(im2col_step, batch)``, checking that it divides the batch (0 for an empty batch)."""
    try:
        im2col_step = check_int(op, "im2col_step", im2col_step, 1)
    except ValueError as error:
        raise DeformConvError(str(error)) from None
    step = min(im2col_step, batch)
    if step and batch % step:
        raise DeformConvAssertionError(
            f"{op}: batch size must be divisible by im2col_step (batch {batch}, im2col_step {step})")
    return step


class DeformConv2dFunction(Function):
    """mmcv's ``DeformConv2dFunction``; ``deform_conv2d = DeformConv2dFunction.apply``.

    Shapes: input (N, C, H, W), offset (N, deform_groups * 2 * kh * kw, H_out, W_out), weight
    (C_out, C / groups, kh, kw) -> (N, C_out, H_out, W_out).
    """

    @staticmethod
    def symbolic(g, input, offset, weight, stride, padding, dilation, groups, deform_groups, bias=False,
                 im2col_step=32):
        return g.op("mmcv::MMCVDeformConv2d", input, offset, weight, stride_i=stride, padding_i=padding,
                    dilation_i=dilation, groups_i=groups, deform_groups_i=deform_groups, bias_i=bias,
                    im2col_step_i=im2col_step)

    @staticmethod
    def forward(ctx, input: Tensor, offset: Tensor, weight: Tensor, stride: Union[int, Tuple[int, ...]] = 1,
                padding: Union[int, Tuple[int, ...]] = 0, dilation: Union[int, Tuple[int, ...]] = 1,
                groups: int = 1, deform_groups: int = 1, bias: bool = False, im2col_step: int = 32) -> Tensor:
        if isinstance(input, Tensor) and input.dim() != 4:
            raise DeformConvError(f"{_OP}: Expected 4D tensor as input, got {input.dim()}D tensor instead.")
        if bias is not False:
            raise DeformConvAssertionError(f"{_OP}: Only support bias is False.")
        if isinstance(offset, Tensor) and isinstance(input, Tensor) and offset.is_floating_point():
            # mmcv's amp workaround: the offset's dtype decides
            input = input.type_as(offset)
            if isinstance(weight, Tensor):
                weight = weight.type_as(input)
        geometry = check_arguments(_OP, input, offset, None, weight, None, stride, padding, dilation, groups,
                                   deform_groups, kernel_must_fit=True)
        ctx.geometry = geometry
        ctx.stride, ctx.padding, ctx.dilation = geometry.stride, geometry.padding, geometry.dilation
        ctx.groups, ctx.deform_groups = geometry.groups, geometry.deform_groups
        ctx.im2col_step = im2col_step
        ctx.step = im2col_step_for(_OP, geometry.batch, im2col_step)
        ctx.save_for_backward(input, offset, weight)
        return deform_conv_forward(input, offset, None, weight, None, geometry, max_images=ctx.step or None)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: Tensor):
        input, offset, weight = ctx.saved_tensors
        needs = Needs(input=ctx.needs_input_grad[0], offset=ctx.needs_input_grad[1], mask=False,
                      weight=ctx.needs_input_grad[2], bias=False)
        grads = deform_conv_backward(grad_output, input, offset, None, weight, ctx.geometry, needs,
                                     max_images=ctx.step or None)
        return grads.input, grads.offset, grads.weight, None, None, None, None, None, None, None

    _output_size = staticmethod(conv_output_size)


deform_conv2d = DeformConv2dFunction.apply


class DeformConv2d(nn.Module):
    r"""Deformable 2D convolution (mmcv's ``DeformConv2d``): no bias, offsets given to ``forward``.

    Args as mmcv: ``in_channels``, ``out_channels``, ``kernel_size``, ``stride``, ``padding``,
    ``dilation``, ``groups``, ``deform_groups`` (deprecated alias ``deformable_groups``), ``bias``
    (must be False), ``im2col_step`` (the batch must be divisible by ``min(im2col_step, batch)``).
    Parameter: ``weight`` (out_channels, in_channels // groups, *kernel_size).
    """

    @renamed_kwargs({"deformable_groups": "deform_groups"})
    def __init__(self, in_channels: int, out_channels: int, kernel_size: Union[int, Tuple[int, ...]],
                 stride: Union[int, Tuple[int, ...]] = 1, padding: Union[int, Tuple[int, ...]] = 0,
                 dilation: Union[int, Tuple[int, ...]] = 1, groups: int = 1, deform_groups: int = 1,
                 bias: bool = False, im2col_step: int = 32) -> None:
        super().__init__()
        if bias:
            raise DeformConvAssertionError(f"DeformConv2d: bias={bias} is not supported in DeformConv2d.")
        if in_channels % groups != 0:
            raise DeformConvAssertionError(
                f"DeformConv2d: in_channels {in_channels} cannot be divisible by groups {groups}")
        if out_channels % groups != 0:
            raise DeformConvAssertionError(
                f"DeformConv2d: out_channels {out_channels} cannot be divisible by groups {groups}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.dilation = _pair(dilation)
        self.groups = groups
        self.deform_groups = deform_groups
        self.im2col_step = im2col_step
        # compatibility with nn.Conv2d
        self.transposed = False
        self.output_padding = _single(0)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // self.groups, *self.kernel_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, nonlinearity="relu")

    def forward(self, x: Tensor, offset: Tensor) -> Tensor:
        """x (B, C_in, H, W), offset (B, deform_groups * 2 * kh * kw, H_out, W_out) -> (B, C_out, H_out, W_out).

        An input smaller than the kernel is zero-padded at the bottom/right (and the offset with it),
        and the output cropped back, as mmcv does.
        """
        pad_h = max(self.kernel_size[0] - x.size(2), 0) if x.dim() == 4 else 0
        pad_w = max(self.kernel_size[1] - x.size(3), 0) if x.dim() == 4 else 0
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), "constant", 0).contiguous()
            offset = F.pad(offset, (0, pad_w, 0, pad_h), "constant", 0).contiguous()
        out = deform_conv2d(x, offset, self.weight, self.stride, self.padding, self.dilation, self.groups,
                            self.deform_groups, False, self.im2col_step)
        if pad_h or pad_w:
            out = out[:, :, :out.size(2) - pad_h, :out.size(3) - pad_w].contiguous()
        return out

    def __repr__(self) -> str:
        s = self.__class__.__name__
        s += f"(in_channels={self.in_channels},\n"
        s += f"out_channels={self.out_channels},\n"
        s += f"kernel_size={self.kernel_size},\n"
        s += f"stride={self.stride},\n"
        s += f"padding={self.padding},\n"
        s += f"dilation={self.dilation},\n"
        s += f"groups={self.groups},\n"
        s += f"deform_groups={self.deform_groups},\n"
        s += "bias=False)"
        return s


@register_model("DCN", mmcv1_registry="CONV_LAYERS")
class DeformConv2dPack(DeformConv2d):
    """:class:`DeformConv2d` that predicts its own offsets with ``conv_offset`` (an ``nn.Conv2d`` with the
    layer's kernel/stride/padding/dilation and ``deform_groups * 2 * kh * kw`` outputs, zero-initialised),
    so it acts as a normal conv layer: ``forward(x)``. Registry name ``DCN``."""

    _version = 2

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.conv_offset = offset_conv(self, 2)
        self.init_offset()

    def init_offset(self) -> None:
        self.conv_offset.weight.data.zero_()
        self.conv_offset.bias.data.zero_()

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        offset = self.conv_offset(x)
        return deform_conv2d(x, offset, self.weight, self.stride, self.padding, self.dilation, self.groups,
                             self.deform_groups, False, self.im2col_step)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        upgrade_offset_keys(self, state_dict, prefix, local_metadata)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)


class DeformConv2dPack_MLU(DeformConv2d):
    """mmcv's MLU variant of ``DCN`` (defined by mmcv on Cambricon devices only): the same layer computed
    through the torchvision-style ``deform_conv2d`` (no bias, groups inferred from the weight), with
    mmcv's gradients as mmcv's tests expect. Not registered as ``DCN`` here (mmcv does so only on MLU)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.conv_offset = offset_conv(self, 2)
        self.init_offset()

    def init_offset(self) -> None:
        self.conv_offset.weight.data.zero_()
        self.conv_offset.bias.data.zero_()

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        from ..torchvision_ops import deform_conv2d_mmcv_rule as tv_deform_conv2d  # lazy: it imports ops

        im2col_step_for("DeformConv2dPack_MLU", x.size(0), self.im2col_step)
        offset = self.conv_offset(x)
        x = x.type_as(offset)
        weight = self.weight.type_as(x)
        return tv_deform_conv2d(x, offset, weight, None, self.stride, self.padding, self.dilation)


registry.register(registry.OpEntry(
    op="deform_conv",
    names=("DeformConv2d", "DeformConv2dFunction", "DeformConv2dPack", "DeformConv2dPack_MLU", "deform_conv2d"),
    ext_functions=("deform_conv_backward_input", "deform_conv_backward_parameters", "deform_conv_forward"),
    backward="yes",
    devices=("any",),
))
