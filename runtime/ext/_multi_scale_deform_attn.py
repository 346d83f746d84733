"""``_ext`` adapters of mmcv.ops.multi_scale_deform_attn: ``ms_deform_attn_forward`` / ``ms_deform_attn_backward``.

mmcv's pybind signatures (csrc/pytorch/ms_deform_attn.cpp), called directly by projects that carry
their own copy of the autograd Function (BEVFormer's ``MultiScaleDeformableAttnFunction_fp16/_fp32``,
MapTR, ...). The backward writes its gradients in place as mmcv's CUDA kernels do:

- ``grad_value`` is added into (``atomicAdd``; callers pass zeros);
- ``grad_sampling_loc`` and ``grad_attn_weight`` are overwritten when ``head_dim <= 512`` (the
  kernels reduce a (query, head) in one block and store the sum) and added into above 512 (the
  multi-block and global-memory kernels ``atomicAdd``).

Locations and weights are read in the value's dtype (mmcv's Function casts them so before the call);
``im2col_step`` must be an int >= 1 and is otherwise unused.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from mmcv_runtime.ops._checks import check_int, check_same_device
from mmcv_runtime.ops.multi_scale_deform_attn import ms_deform_attn_backward as _backward
from mmcv_runtime.ops.multi_scale_deform_attn import ms_deform_attn_forward as _forward

__all__ = ["ms_deform_attn_backward", "ms_deform_attn_forward"]

_OP = "ms_deform_attn"
#: the kernels' THREADS_PER_BLOCK: above it the backward accumulates the point gradients
_THREADS_PER_BLOCK = 512


def ms_deform_attn_forward(value: Tensor, value_spatial_shapes: Tensor, value_level_start_index: Tensor,
                           sampling_locations: Tensor, attention_weights: Tensor, im2col_step: Any) -> Tensor:
    """(bs, num_queries, num_heads * head_dim) in the value's dtype."""
    check_int(f"{_OP}_forward", "im2col_step", im2col_step, 1)
    return _forward(value, value_spatial_shapes, value_level_start_index, sampling_locations, attention_weights,
                    op=f"{_OP}_forward")


def ms_deform_attn_backward(value: Tensor, value_spatial_shapes: Tensor, value_level_start_index: Tensor,
                            sampling_locations: Tensor, attention_weights: Tensor, grad_output: Tensor,
                            grad_value: Tensor, grad_sampling_loc: Tensor, grad_attn_weight: Tensor,
                            im2col_step: Any) -> None:
    """Adds the value gradient into ``grad_value``; writes (or, for head_dim > 512, adds) the location
    and attention-weight gradients into ``grad_sampling_loc`` / ``grad_attn_weight``."""
    op = f"{_OP}_backward"
    check_int(op, "im2col_step", im2col_step, 1)
    for name, buffer, like in (("grad_value", grad_value, value),
                               ("grad_sampling_loc", grad_sampling_loc, sampling_locations),
                               ("grad_attn_weight", grad_attn_weight, attention_weights)):
        if not isinstance(buffer, Tensor):
            raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(buffer).__name__}")
        if isinstance(like, Tensor) and tuple(buffer.shape) != tuple(like.shape):
            raise ValueError(f"{op}: {name} must have shape {tuple(like.shape)}, got {tuple(buffer.shape)}")
    check_same_device(op, value=value, grad_sampling_loc=grad_sampling_loc, grad_attn_weight=grad_attn_weight)
    _, grad_loc, grad_attn = _backward(value, value_spatial_shapes, value_level_start_index, sampling_locations,
                                       attention_weights, grad_output, grad_value=grad_value, op=op)
    if value.size(3) > _THREADS_PER_BLOCK:
        grad_sampling_loc.add_(grad_loc.to(grad_sampling_loc.dtype))
        grad_attn_weight.add_(grad_attn.to(grad_attn_weight.dtype))
    else:
        grad_sampling_loc.copy_(grad_loc)
        grad_attn_weight.copy_(grad_attn)
