"""``_ext`` adapters of mmcv.ops.modulated_deform_conv (mmcv's pybind signatures), as the kernels write:

- ``modulated_deform_conv_forward`` overwrites ``output`` (bias added when ``with_bias``);
- ``modulated_deform_conv_backward`` *adds* into ``grad_input``, ``grad_weight`` and (``with_bias``)
  ``grad_bias``, and *overwrites* ``grad_offset`` and ``grad_mask``.

``ones`` and ``columns`` are scratch buffers the kernels reallocate locally: accepted and left untouched;
``bias`` is ignored unless ``with_bias``.
"""

from __future__ import annotations

from torch import Tensor

from mmcv_runtime.ops import _deform_columns as _core
from mmcv_runtime.ops._deform_columns import DeformConvError, Geometry, Needs, check_arguments

__all__ = ["modulated_deform_conv_backward", "modulated_deform_conv_forward"]


def _geometry(op: str, input: Tensor, weight: Tensor, bias: Tensor, offset: Tensor, mask: Tensor, kernel_h: int,
              kernel_w: int, stride_h: int, stride_w: int, pad_h: int, pad_w: int, dilation_h: int, dilation_w: int,
              group: int, deformable_group: int) -> Geometry:
    if isinstance(weight, Tensor) and weight.dim() == 4 and tuple(weight.shape[2:]) != (int(kernel_h), int(kernel_w)):
        raise DeformConvError(f"{op}: Input shape and kernel shape won't match: ({kernel_h} x {kernel_w} vs "
                              f"{weight.size(2)} x {weight.size(3)}).")
    return check_arguments(op, input, offset, mask, weight, bias, (int(stride_h), int(stride_w)),
                           (int(pad_h), int(pad_w)), (int(dilation_h), int(dilation_w)), int(group),
                           int(deformable_group))


def _write(op: str, name: str, target: Tensor, value: Tensor, accumulate: bool) -> None:
    if target.numel() != value.numel():
        raise DeformConvError(f"{op}: {name} must hold {tuple(value.shape)}, got {tuple(target.shape)}")
    value = value.reshape(target.shape).to(target.dtype)
    if accumulate:
        target.add_(value)
    else:
        target.copy_(value)


def modulated_deform_conv_forward(input: Tensor, weight: Tensor, bias: Tensor, ones: Tensor, offset: Tensor,
                                  mask: Tensor, output: Tensor, columns: Tensor, kernel_h: int, kernel_w: int,
                                  stride_h: int, stride_w: int, pad_h: int, pad_w: int, dilation_h: int,
                                  dilation_w: int, group: int, deformable_group: int, with_bias: bool) -> None:
    """Writes the (N, C_out, H_out, W_out) modulated deformable convolution into ``output``."""
    op = "modulated_deform_conv_forward"
    bias = bias if with_bias else None
    g = _geometry(op, input, weight, bias, offset, mask, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                  dilation_h, dilation_w, group, deformable_group)
    _write(op, "output", output, _core.deform_conv_forward(input, offset, mask, weight, bias, g), accumulate=False)


def modulated_deform_conv_backward(input: Tensor, weight: Tensor, bias: Tensor, ones: Tensor, offset: Tensor,
                                   mask: Tensor, columns: Tensor, grad_input: Tensor, grad_weight: Tensor,
                                   grad_bias: Tensor, grad_offset: Tensor, grad_mask: Tensor, grad_output: Tensor,
                                   kernel_h: int, kernel_w: int, stride_h: int, stride_w: int, pad_h: int, pad_w: int,
                                   dilation_h: int, dilation_w: int, group: int, deformable_group: int,
                                   with_bias: bool) -> None:
    """Adds the input, weight (and bias) gradients; writes the offset and mask gradients."""
    op = "modulated_deform_conv_backward"
    g = _geometry(op, input, weight, bias if with_bias else None, offset, mask, kernel_h, kernel_w, stride_h,
                  stride_w, pad_h, pad_w, dilation_h, dilation_w, group, deformable_group)
    if not isinstance(grad_output, Tensor) or tuple(grad_output.shape) != g.output_shape:
        shape = tuple(grad_output.shape) if isinstance(grad_output, Tensor) else type(grad_output).__name__
        raise DeformConvError(f"{op}: grad_output must have shape {g.output_shape}, got {shape}")
    grads = _core.deform_conv_backward(grad_output, input, offset, mask, weight, g, Needs(bias=bool(with_bias)))
    _write(op, "grad_input", grad_input, grads.input, accumulate=True)
    _write(op, "grad_weight", grad_weight, grads.weight, accumulate=True)
    if with_bias:
        _write(op, "grad_bias", grad_bias, grads.bias, accumulate=True)
    _write(op, "grad_offset", grad_offset, grads.offset, accumulate=False)
    _write(op, "grad_mask", grad_mask, grads.mask, accumulate=False)
