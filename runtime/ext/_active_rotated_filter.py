"""``_ext`` adapters of mmcv.ops.active_rotated_filter: ``active_rotated_filter_forward`` / ``_backward``.

mmcv's pybind signatures. The forward writes, in place, only the positions of ``output`` that the
indices name (the others keep what the caller passed: zeros in mmcv's wrapper). The backward
**overwrites** ``grad_in``, as both of mmcv's kernels do (they zero each entry before summing).
"""

from __future__ import annotations

import torch
from torch import Tensor

from mmcv_runtime.ops.active_rotated_filter import _forward_with_mask
from mmcv_runtime.ops.active_rotated_filter import active_rotated_filter_backward as _backward

__all__ = ["active_rotated_filter_backward", "active_rotated_filter_forward"]


def active_rotated_filter_forward(input: Tensor, indices: Tensor, output: Tensor) -> None:
    """Scatters the rotated copies of ``input`` (O_p, I_p, O, kH, kW) into ``output`` (O_p * R, I_p * O, kH, kW)."""
    with torch.no_grad():
        values, written = _forward_with_mask(input, indices)  # (O_p, R, I_p, E), (R, E)
        view = output.view(values.shape)
        view.copy_(torch.where(written[:, None, :], values.to(output.dtype), view))


def active_rotated_filter_backward(grad_out: Tensor, indices: Tensor, grad_in: Tensor) -> None:
    """Writes the input gradient of ``grad_out`` into ``grad_in`` (O_p, I_p, O, kH, kW)."""
    grad_in.copy_(_backward(grad_out, indices).reshape(grad_in.shape))
