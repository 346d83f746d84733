"""``mmcv.ops.three_interpolate``: weighted sum of 3 neighbour features (PointNet++ feature propagation).

As mmcv's CUDA kernels (csrc/common/cuda/three_interpolate_cuda_kernel.cuh):
``out[b, c, n] = w0 * f[idx0] + w1 * f[idx1] + w2 * f[idx2]`` summed left to right in the feature
dtype; the backward scatter-ADDS ``grad_out * w_j`` into a zero (B, C, M) feature gradient and, like
mmcv, returns NO gradient for ``weight`` (nor ``indices``), even when ``weight`` requires grad.
Out-of-range indices raise (torch's gather check) instead of reading garbage.
"""

from __future__ import annotations

from typing import Any, Tuple

import torch
from torch import Tensor
from torch.autograd import Function

from .. import registry
from ._checks import check_same_device, is_integer_dtype

__all__ = ["ThreeInterpolate", "three_interpolate"]


def check_inputs(op: str, features: Tensor, indices: Tensor, weight: Tensor) -> None:
    for name, t in (("features", features), ("indices", indices), ("weight", weight)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if features.dim() != 3:
        raise ValueError(f"{op}: features must have shape (B, C, M), got {tuple(features.shape)}")
    b = features.size(0)
    if indices.dim() != 3 or indices.size(0) != b or indices.size(2) != 3:
        raise ValueError(f"{op}: indices must have shape (B, N, 3) with B={b}, got {tuple(indices.shape)}")
    if weight.shape != indices.shape:
        raise ValueError(f"{op}: weight must have the shape of indices {tuple(indices.shape)}, "
                         f"got {tuple(weight.shape)}")
    if not features.is_floating_point() or not weight.is_floating_point():
        raise TypeError(f"{op}: features and weight must be floating point, got {features.dtype}, {weight.dtype}")
    if not is_integer_dtype(indices.dtype):
        raise TypeError(f"{op}: indices must be an integer tensor, got {indices.dtype}")
    check_same_device(op, features=features, indices=indices, weight=weight)


def _taps(indices: Tensor, channels: int):
    """The three (B, C, N) gather indices."""
    return [indices[:, :, j].long().unsqueeze(1).expand(-1, channels, -1) for j in range(3)]


def interpolate_forward(features: Tensor, indices: Tensor, weight: Tensor) -> Tensor:
    """(B, C, M), (B, N, 3), (B, N, 3) -> (B, C, N)."""
    w = weight.to(features.dtype).unsqueeze(1)  # (B, 1, N, 3)
    taps = _taps(indices, features.size(1))
    out = w[..., 0] * torch.gather(features, 2, taps[0])
    out = out + w[..., 1] * torch.gather(features, 2, taps[1])
    return out + w[..., 2] * torch.gather(features, 2, taps[2])


def interpolate_backward(grad_out: Tensor, indices: Tensor, weight: Tensor, grad_points: Tensor) -> Tensor:
    """Accumulate the (B, C, M) feature gradient into ``grad_points`` in place; returns it."""
    w = weight.to(grad_points.dtype).unsqueeze(1)
    grad = grad_out.to(grad_points.dtype)
    for j, tap in enumerate(_taps(indices, grad_out.size(1))):
        grad_points.scatter_add_(2, tap, grad * w[..., j])
    return grad_points


class ThreeInterpolate(Function):
    """Performs weighted linear interpolation on 3 features."""

    @staticmethod
    def forward(ctx: Any, features: Tensor, indices: Tensor, weight: Tensor) -> Tensor:
        check_inputs("three_interpolate", features, indices, weight)
        ctx.three_interpolate_for_backward = (indices, weight, features.size(2))
        return interpolate_forward(features, indices, weight)

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> Tuple[Tensor, None, None]:
        idx, weight, m = ctx.three_interpolate_for_backward
        b, c, _ = grad_out.size()
        grad_features = grad_out.new_zeros(b, c, m)
        return interpolate_backward(grad_out.contiguous(), idx, weight, grad_features), None, None


three_interpolate = ThreeInterpolate.apply

registry.register(registry.OpEntry(
    op="three_interpolate",
    names=("ThreeInterpolate", "three_interpolate"),
    ext_functions=("three_interpolate_forward", "three_interpolate_backward"),
    backward="yes",
    devices=("any",),
))
