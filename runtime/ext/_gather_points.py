"""``_ext`` adapters of mmcv.ops.gather_points (mmcv's pybind signatures, in-place outputs)."""

from __future__ import annotations

from torch import Tensor

from mmcv_runtime.ops.gather_points import gather_backward, gather_forward

__all__ = ["gather_points_forward", "gather_points_backward"]


def gather_points_forward(points_tensor: Tensor, idx_tensor: Tensor, out_tensor: Tensor,
                          b: int, c: int, n: int, npoints: int) -> None:
    """``out_tensor[b, c, m] = points_tensor[b, c, idx_tensor[b, m]]``."""
    out_tensor.copy_(gather_forward(points_tensor, idx_tensor))


def gather_points_backward(grad_out_tensor: Tensor, idx_tensor: Tensor, grad_points_tensor: Tensor,
                           b: int, c: int, n: int, npoints: int) -> None:
    """Accumulates (adds) ``grad_out_tensor`` into ``grad_points_tensor`` at the gathered indices."""
    gather_backward(grad_out_tensor, idx_tensor, grad_points_tensor)
