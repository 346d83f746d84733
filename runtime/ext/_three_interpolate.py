"""``_ext`` adapters of mmcv.ops.three_interpolate (mmcv's pybind signatures, in-place outputs)."""

from __future__ import annotations

from torch import Tensor

from mmcv_runtime.ops.three_interpolate import interpolate_backward, interpolate_forward

__all__ = ["three_interpolate_forward", "three_interpolate_backward"]


def three_interpolate_forward(points_tensor: Tensor, idx_tensor: Tensor, weight_tensor: Tensor,
                              out_tensor: Tensor, b: int, c: int, m: int, n: int) -> None:
    """(B, C, M) features, (B, N, 3) indices and weights -> ``out_tensor`` (B, C, N)."""
    out_tensor.copy_(interpolate_forward(points_tensor, idx_tensor, weight_tensor))


def three_interpolate_backward(grad_out_tensor: Tensor, idx_tensor: Tensor, weight_tensor: Tensor,
                               grad_points_tensor: Tensor, b: int, c: int, n: int, m: int) -> None:
    """Accumulates (adds) ``grad_out * weight`` into ``grad_points_tensor`` (B, C, M)."""
    interpolate_backward(grad_out_tensor, idx_tensor, weight_tensor, grad_points_tensor)
