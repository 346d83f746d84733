"""``mmcv.ops.gather_points``: ``out[b, c, m] = features[b, c, indices[b, m]]`` (PointNet++).

As mmcv's CUDA kernels (csrc/common/cuda/gather_points_cuda_kernel.cuh): the forward copies, the
backward scatter-ADDS ``grad_out`` into a zero (B, C, N) gradient (repeated indices accumulate, as
the kernel's ``atomicAdd``). Any floating dtype; ``indices`` are integer (mmcv passes int32).
Unlike the kernel, an out-of-range index raises (torch's gather check) instead of reading garbage.
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor
from torch.autograd import Function

from .. import registry
from ._checks import check_same_device, is_integer_dtype

__all__ = ["GatherPoints", "gather_points"]


def check_inputs(op: str, features: Tensor, indices: Tensor) -> None:
    if not isinstance(features, Tensor) or not isinstance(indices, Tensor):
        raise TypeError(f"{op}: features and indices must be torch.Tensor")
    if features.dim() != 3:
        raise ValueError(f"{op}: features must have shape (B, C, N), got {tuple(features.shape)}")
    if indices.dim() != 2 or indices.size(0) != features.size(0):
        raise ValueError(f"{op}: indices must have shape (B, M) with B={features.size(0)}, "
                         f"got {tuple(indices.shape)}")
    if not features.is_floating_point():
        raise TypeError(f"{op}: features must be a floating point tensor, got {features.dtype}")
    if not is_integer_dtype(indices.dtype):
        raise TypeError(f"{op}: indices must be an integer tensor, got {indices.dtype}")
    check_same_device(op, features=features, indices=indices)


def _expanded(indices: Tensor, channels: int) -> Tensor:
    return indices.long().unsqueeze(1).expand(-1, channels, -1)


def gather_forward(features: Tensor, indices: Tensor) -> Tensor:
    """(B, C, N), (B, M) -> (B, C, M)."""
    return torch.gather(features, 2, _expanded(indices, features.size(1)))


def gather_backward(grad_out: Tensor, indices: Tensor, grad_points: Tensor) -> Tensor:
    """Accumulate (B, C, M) ``grad_out`` into (B, C, N) ``grad_points`` in place; returns it."""
    return grad_points.scatter_add_(2, _expanded(indices, grad_out.size(1)), grad_out.to(grad_points.dtype))


class GatherPoints(Function):
    """Gather points with given index."""

    @staticmethod
    def forward(ctx, features: Tensor, indices: Tensor) -> Tensor:
        check_inputs("gather_points", features, indices)
        output = gather_forward(features, indices)
        ctx.for_backwards = (indices, features.size(1), features.size(2))
        ctx.mark_non_differentiable(indices)
        return output

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> Tuple[Tensor, None]:
        idx, c, n = ctx.for_backwards
        grad_features = grad_out.new_zeros((idx.size(0), c, n))
        return gather_backward(grad_out.contiguous(), idx, grad_features), None


gather_points = GatherPoints.apply

registry.register(registry.OpEntry(
    op="gather_points",
    names=("GatherPoints", "gather_points"),
    ext_functions=("gather_points_forward", "gather_points_backward"),
    backward="yes",
    devices=("any",),
))
