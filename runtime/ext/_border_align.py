"""``_ext`` adapters of mmcv.ops.border_align: ``border_align_forward``, ``border_align_backward``."""

from __future__ import annotations

from torch import Tensor

from mmcv_runtime.ops._checks import check_int
from mmcv_runtime.ops.border_align import border_align_backward_core, border_align_forward_core, check_inputs

__all__ = ["border_align_forward", "border_align_backward"]


def border_align_forward(input: Tensor, boxes: Tensor, output: Tensor, argmax_idx: Tensor, pool_size: int) -> None:
    """Writes the pooled features (N, C, K, 4) into ``output`` and the argmax points into ``argmax_idx``."""
    check_inputs(input, boxes)
    result, argmax = border_align_forward_core(input, boxes, check_int("border_align", "pool_size", pool_size, 0))
    output.copy_(result)
    argmax_idx.copy_(argmax)


def border_align_backward(grad_output: Tensor, boxes: Tensor, argmax_idx: Tensor, grad_input: Tensor,
                          pool_size: int) -> None:
    """Adds to ``grad_input`` (N, 4C, H, W) the gradient of ``grad_output`` (N, C, K, 4),
    as the kernel's atomicAdd does."""
    border_align_backward_core(grad_output.contiguous(), boxes, argmax_idx, grad_input, check_int("border_align", "pool_size", pool_size, 0))
