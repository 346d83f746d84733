"""``_ext`` adapters of mmcv.ops.deform_conv (mmcv's pybind signatures), as the kernels write their outputs:

- ``deform_conv_forward`` overwrites ``output``;
- ``deform_conv_backward_input`` *adds* the input gradient into ``gradInput`` (``col2im`` accumulates)
  and *overwrites* ``gradOffset`` (``col2im_coord`` assigns);
- ``deform_conv_backward_parameters`` adds ``scale`` times the weight gradient into ``gradWeight``
  (``addmm_(beta=1, alpha=scale)``).

``columns`` and ``ones`` are scratch buffers the kernels reallocate locally: accepted and left untouched.
A 3-D ``input``/``offset``/``gradOutput`` is one image, as in the kernels. The batch must be divisible by
``im2col_step`` (which must not exceed it, unless the batch is empty), since the kernels view it so.
"""

from __future__ import annotations

from typing import Tuple

from torch import Tensor

from mmcv_runtime.ops import _deform_columns as _core
from mmcv_runtime.ops._deform_columns import DeformConvError, Geometry, Needs, check_arguments

__all__ = ["deform_conv_backward_input", "deform_conv_backward_parameters", "deform_conv_forward"]


def _batched(*tensors: Tensor) -> Tuple[Tensor, ...]:
    return tuple(t.unsqueeze(0) if isinstance(t, Tensor) and t.dim() == 3 else t for t in tensors)


def _geometry(op: str, input: Tensor, offset: Tensor, weight: Tensor, kW: int, kH: int, dW: int, dH: int, padW: int,
              padH: int, dilationW: int, dilationH: int, group: int, deformable_group: int,
              im2col_step: int) -> Geometry:
    if isinstance(weight, Tensor) and weight.dim() == 4 and tuple(weight.shape[2:]) != (int(kH), int(kW)):
        raise DeformConvError(f"{op}: kernel size should be consistent with weight, but got kH: {kH} kW: {kW} "
                              f"weight.size(2): {weight.size(2)}, weight.size(3): {weight.size(3)}")
    g = check_arguments(op, input, offset, None, weight, None, (int(dH), int(dW)), (int(padH), int(padW)),
                        (int(dilationH), int(dilationW)), int(group), int(deformable_group), kernel_must_fit=True)
    step = int(im2col_step)
    if step < 1 or (g.batch and (g.batch % step or step > g.batch)):
        raise DeformConvError(f"{op}: im2col_step ({step}) must divide the batch size ({g.batch})")
    return g


def _write(op: str, name: str, target: Tensor, value: Tensor, accumulate: bool, alpha: float = 1.0) -> None:
    if target.numel() != value.numel():
        raise DeformConvError(f"{op}: {name} must hold {tuple(value.shape)}, got {tuple(target.shape)}")
    value = value.reshape(target.shape).to(target.dtype)
    if accumulate:
        target.add_(value, alpha=alpha)
    else:
        target.copy_(value)


def _check_grad_output(op: str, grad_output: Tensor, g: Geometry) -> None:
    if not isinstance(grad_output, Tensor) or tuple(grad_output.shape) != g.output_shape:
        shape = tuple(grad_output.shape) if isinstance(grad_output, Tensor) else type(grad_output).__name__
        raise DeformConvError(f"{op}: gradOutput must have shape {g.output_shape}, got {shape}")


def deform_conv_forward(input: Tensor, weight: Tensor, offset: Tensor, output: Tensor, columns: Tensor, ones: Tensor,
                        kW: int, kH: int, dW: int, dH: int, padW: int, padH: int, dilationW: int, dilationH: int,
                        group: int, deformable_group: int, im2col_step: int) -> None:
    """Writes the (N, C_out, H_out, W_out) deformable convolution of ``input`` into ``output``."""
    op = "deform_conv_forward"
    input, offset = _batched(input, offset)
    g = _geometry(op, input, offset, weight, kW, kH, dW, dH, padW, padH, dilationW, dilationH, group,
                  deformable_group, im2col_step)
    _write(op, "output", output, _core.deform_conv_forward(input, offset, None, weight, None, g,
                                                           max_images=int(im2col_step)), accumulate=False)


def deform_conv_backward_input(input: Tensor, offset: Tensor, gradOutput: Tensor, gradInput: Tensor,
                               gradOffset: Tensor, weight: Tensor, columns: Tensor, kW: int, kH: int, dW: int, dH: int,
                               padW: int, padH: int, dilationW: int, dilationH: int, group: int,
                               deformable_group: int, im2col_step: int) -> None:
    """Adds the input gradient into ``gradInput``; writes the offset gradient into ``gradOffset``."""
    op = "deform_conv_backward_input"
    input, offset, gradOutput = _batched(input, offset, gradOutput)
    g = _geometry(op, input, offset, weight, kW, kH, dW, dH, padW, padH, dilationW, dilationH, group,
                  deformable_group, im2col_step)
    _check_grad_output(op, gradOutput, g)
    grads = _core.deform_conv_backward(gradOutput, input, offset, None, weight, g,
                                 Needs(input=True, offset=True, mask=False, weight=False, bias=False),
                                 max_images=int(im2col_step))
    _write(op, "gradInput", gradInput, grads.input, accumulate=True)
    _write(op, "gradOffset", gradOffset, grads.offset, accumulate=False)


def deform_conv_backward_parameters(input: Tensor, offset: Tensor, gradOutput: Tensor, gradWeight: Tensor,
                                    columns: Tensor, ones: Tensor, kW: int, kH: int, dW: int, dH: int, padW: int,
                                    padH: int, dilationW: int, dilationH: int, group: int, deformable_group: int,
                                    scale: float, im2col_step: int) -> None:
    """Adds ``scale`` times the weight gradient into ``gradWeight`` (which also gives the weight's shape)."""
    op = "deform_conv_backward_parameters"
    input, offset, gradOutput = _batched(input, offset, gradOutput)
    g = _geometry(op, input, offset, gradWeight, kW, kH, dW, dH, padW, padH, dilationW, dilationH, group,
                  deformable_group, im2col_step)
    _check_grad_output(op, gradOutput, g)
    grads = _core.deform_conv_backward(gradOutput, input, offset, None, gradWeight, g,
                                 Needs(input=False, offset=False, mask=False, weight=True, bias=False),
                                 max_images=int(im2col_step))
    _write(op, "gradWeight", gradWeight, grads.weight, accumulate=True, alpha=float(scale))
