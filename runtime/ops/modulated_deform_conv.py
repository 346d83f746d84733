"""``mmcv.ops.modulated_deform_conv``: modulated deformable convolution (DCNv2), as mmcv's kernels.

Like :mod:`.deform_conv` (same core, :mod:`._deform_columns`), each sample is also scaled by its mask
``(N, deform_groups * kh * kw, H_out, W_out)``; gradients as the kernels: the mask's is the unmasked
sample dotted with the column gradient (0 for a point outside the map), the offset's and the input's
carry the mask. An optional bias (``(C_out,)``) is added.

mmcv behaviour kept on purpose: input, weight, mask and bias are cast to the offset's dtype (output in
that dtype); no ``im2col_step`` (mmcv's kernel goes image by image; here memory is bounded by chunking
output positions); :class:`ModulatedDeformConv2dPack` (registry name ``DCNv2``) predicts offsets and
mask with one zero-initialised ``conv_offset`` (``3 * deform_groups * kh * kw`` outputs: the first two
thirds are the offset, the last third the mask through a sigmoid), state_dict version 2 with the old
``<name>_offset.*`` keys upgraded, and the weights initialised in mmcv's order (so a seed gives the
same parameters).

Unlike mmcv, an empty batch gives an empty output, and bad input (including a mask or channels that do
not fit, which mmcv does not check) raises a ``ValueError`` naming the op and the argument.
``ModulatedDeformConv2dPack_MLU`` (mmcv: Cambricon MLU only) is provided on every device, computed
through the torchvision-style API with mmcv's gradients, as mmcv's own tests expect of it.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import torch
import torch.nn as nn
from torch import Tensor
from torch.autograd import Function
from torch.autograd.function import once_differentiable
from torch.nn.modules.utils import _pair, _single

from .. import registry
from ..model_registry import register_model
from ._checks import renamed_kwargs
from ._deform_columns import DeformConvError, Needs, check_arguments, deform_conv_backward, deform_conv_forward
from ._deform_pack import conv_output_size, offset_conv, upgrade_offset_keys

__all__ = ["ModulatedDeformConv2d", "ModulatedDeformConv2dFunction", "ModulatedDeformConv2dPack",
           "ModulatedDeformConv2dPack_MLU", "modulated_deform_conv2d"]

_OP = "modulated_deform_conv2d"


class ModulatedDeformConv2dFunction(Function):
    """mmcv's ``ModulatedDeformConv2dFunction``; ``modulated_deform_conv2d = ModulatedDeformConv2dFunction.apply``.

    Shapes: input (N, C, H, W), offset (N, deform_groups * 2 * kh * kw, H_out, W_out), mask
    (N, deform_groups * kh * kw, H_out, W_out), weight (C_out, C / groups, kh, kw), bias (C_out,) or
    None -> (N, C_out, H_out, W_out).
    """

    @staticmethod
    def symbolic(g, input, offset, mask, weight, bias, stride, padding, dilation, groups, deform_groups):
        input_tensors = [input, offset, mask, weight]
        if bias is not None:
            input_tensors.append(bias)
        return g.op("mmcv::MMCVModulatedDeformConv2d", *input_tensors, stride_i=stride, padding_i=padding,
                    dilation_i=dilation, groups_i=groups, deform_groups_i=deform_groups)

    @staticmethod
    def forward(ctx, input: Tensor, offset: Tensor, mask: Tensor, weight: nn.Parameter,
                bias: Optional[nn.Parameter] = None, stride: int = 1, padding: int = 0, dilation: int = 1,
                groups: int = 1, deform_groups: int = 1) -> Tensor:
        if isinstance(input, Tensor) and input.dim() != 4:
            raise DeformConvError(f"{_OP}: Expected 4D tensor as input, got {input.dim()}D tensor instead.")
        ctx.with_bias = bias is not None
        if isinstance(offset, Tensor) and offset.is_floating_point():
            # mmcv's amp workaround: the offset's dtype decides
            input, weight, mask, bias = (t.type_as(offset) if isinstance(t, Tensor) else t
                                         for t in (input, weight, mask, bias))
        if not isinstance(mask, Tensor):
            raise DeformConvError(f"{_OP}: mask must be a tensor (N, deform_groups * kh * kw, H_out, W_out), "
                                  f"got {type(mask).__name__}")
        geometry = check_arguments(_OP, input, offset, mask, weight, bias, stride, padding, dilation, groups,
                                   deform_groups)
        ctx.geometry = geometry
        ctx.stride, ctx.padding, ctx.dilation = geometry.stride, geometry.padding, geometry.dilation
        ctx.groups, ctx.deform_groups = geometry.groups, geometry.deform_groups
        ctx.save_for_backward(input, offset, mask, weight)
        return deform_conv_forward(input, offset, mask, weight, bias, geometry)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: Tensor) -> tuple:
        input, offset, mask, weight = ctx.saved_tensors
        wants = ctx.needs_input_grad
        needs = Needs(input=wants[0], offset=wants[1], mask=wants[2], weight=wants[3],
                      bias=ctx.with_bias and wants[4])
        grads = deform_conv_backward(grad_output, input, offset, mask, weight, ctx.geometry, needs)
        return (grads.input, grads.offset, grads.mask, grads.weight, grads.bias, None, None, None, None, None)

    _output_size = staticmethod(conv_output_size)


modulated_deform_conv2d = ModulatedDeformConv2dFunction.apply


class ModulatedDeformConv2d(nn.Module):
    """Modulated deformable 2D convolution (mmcv's ``ModulatedDeformConv2d``): ``forward(x, offset, mask)``.

    Parameters: ``weight`` (out_channels, in_channels // groups, *kernel_size), ``bias`` (out_channels,)
    unless ``bias`` is false. ``deformable_groups`` is a deprecated alias of ``deform_groups``.
    """

    @renamed_kwargs({"deformable_groups": "deform_groups"})
    def __init__(self, in_channels: int, out_channels: int, kernel_size: Union[int, Tuple[int]], stride: int = 1,
                 padding: int = 0, dilation: int = 1, groups: int = 1, deform_groups: int = 1,
                 bias: Union[bool, str] = True):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.dilation = _pair(dilation)
        self.groups = groups
        self.deform_groups = deform_groups
        # compatibility with nn.Conv2d
        self.transposed = False
        self.output_padding = _single(0)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels))
        else:
            self.register_parameter("bias", None)
        self.init_weights()

    def init_weights(self) -> None:
        n = self.in_channels
        for k in self.kernel_size:
            n *= k
        stdv = 1. / math.sqrt(n)
        self.weight.data.uniform_(-stdv, stdv)
        if self.bias is not None:
            self.bias.data.zero_()

    def forward(self, x: Tensor, offset: Tensor, mask: Tensor) -> Tensor:
        return modulated_deform_conv2d(x, offset, mask, self.weight, self.bias, self.stride, self.padding,
                                       self.dilation, self.groups, self.deform_groups)


def _offset_and_mask(conv_offset: nn.Conv2d, x: Tensor) -> Tuple[Tensor, Tensor]:
    out = conv_offset(x)
    o1, o2, mask = torch.chunk(out, 3, dim=1)
    return torch.cat((o1, o2), dim=1), torch.sigmoid(mask)


@register_model("DCNv2", mmcv1_registry="CONV_LAYERS")
class ModulatedDeformConv2dPack(ModulatedDeformConv2d):
    """:class:`ModulatedDeformConv2d` predicting offsets and mask with ``conv_offset`` (zero-initialised),
    so it acts as a normal conv layer: ``forward(x)``. Registry name ``DCNv2``."""

    _version = 2

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.conv_offset = offset_conv(self, 3)
        self.init_weights()

    def init_weights(self) -> None:
        super().init_weights()
        if hasattr(self, "conv_offset"):
            self.conv_offset.weight.data.zero_()
            self.conv_offset.bias.data.zero_()

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        offset, mask = _offset_and_mask(self.conv_offset, x)
        return modulated_deform_conv2d(x, offset, mask, self.weight, self.bias, self.stride, self.padding,
                                       self.dilation, self.groups, self.deform_groups)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        upgrade_offset_keys(self, state_dict, prefix, local_metadata)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)


class ModulatedDeformConv2dPack_MLU(ModulatedDeformConv2d):
    """mmcv's MLU variant of ``DCNv2`` (mmcv defines it on Cambricon devices only): the same layer
    computed through the torchvision-style ``deform_conv2d`` with mmcv's gradients. Not registered as
    ``DCNv2`` here (mmcv does so only on MLU)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.conv_offset = offset_conv(self, 3)
        self.init_weights()

    def init_weights(self) -> None:
        super().init_weights()
        if hasattr(self, "conv_offset"):
            self.conv_offset.weight.data.zero_()
            self.conv_offset.bias.data.zero_()

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        from ..torchvision_ops import deform_conv2d_mmcv_rule as tv_deform_conv2d  # lazy: it imports ops

        offset, mask = _offset_and_mask(self.conv_offset, x)
        x = x.type_as(offset)
        weight = self.weight.type_as(x)
        mask = mask.type_as(x)
        return tv_deform_conv2d(x, offset, weight, bias=self.bias, stride=self.stride, padding=self.padding,
                                dilation=self.dilation, mask=mask)


registry.register(registry.OpEntry(
    op="modulated_deform_conv",
    names=("ModulatedDeformConv2d", "ModulatedDeformConv2dFunction", "ModulatedDeformConv2dPack",
           "ModulatedDeformConv2dPack_MLU", "modulated_deform_conv2d"),
    ext_functions=("modulated_deform_conv_backward", "modulated_deform_conv_forward"),
    backward="yes",
    devices=("any",),
))
