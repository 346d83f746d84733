"""``_ext`` adapters of mmcv.ops.group_points (mmcv's pybind signatures, in-place outputs)."""

from __future__ import annotations

from torch import Tensor

from mmcv_runtime.ops.group_points import (_stack_rows, group_backward, group_forward, stack_group_backward,
                                           stack_group_forward)

__all__ = ["group_points_forward", "group_points_backward", "stack_group_points_forward",
           "stack_group_points_backward"]


def group_points_forward(points_tensor: Tensor, idx_tensor: Tensor, out_tensor: Tensor, b: int, c: int, n: int,
                         npoints: int, nsample: int) -> None:
    """``out_tensor[b, c, m, s] = points_tensor[b, c, idx_tensor[b, m, s]]``."""
    out_tensor.copy_(group_forward(points_tensor, idx_tensor))


def group_points_backward(grad_out_tensor: Tensor, idx_tensor: Tensor, grad_points_tensor: Tensor, b: int, c: int,
                          n: int, npoints: int, nsample: int) -> None:
    """Accumulates (adds) ``grad_out_tensor`` into ``grad_points_tensor`` at the grouped indices."""
    group_backward(grad_out_tensor, idx_tensor, grad_points_tensor)


def stack_group_points_forward(features_tensor: Tensor, features_batch_cnt_tensor: Tensor, idx_tensor: Tensor,
                               idx_batch_cnt_tensor: Tensor, out_tensor: Tensor, b: int, c: int, m: int,
                               nsample: int) -> None:
    """(N, C) stacked features, (M, nsample) batch-local indices -> ``out_tensor`` (M, C, nsample).

    Like the kernel, entries it does not read (index past the batch) are left untouched.
    """
    out = stack_group_forward(features_tensor, features_batch_cnt_tensor, idx_tensor, idx_batch_cnt_tensor)
    out_tensor.copy_(out.where(_read(features_tensor, features_batch_cnt_tensor, idx_tensor,
                                     idx_batch_cnt_tensor).unsqueeze(1), out_tensor))


def _read(features: Tensor, features_batch_cnt: Tensor, idx: Tensor, idx_batch_cnt: Tensor):
    rows, end = _stack_rows(features_batch_cnt, idx, idx_batch_cnt)
    return (idx.long() < end) & (rows >= 0) & (rows < features.size(0))


def stack_group_points_backward(grad_out_tensor: Tensor, idx_tensor: Tensor, idx_batch_cnt_tensor: Tensor,
                                features_batch_cnt_tensor: Tensor, grad_features_tensor: Tensor, b: int, c: int,
                                m: int, n: int, nsample: int) -> None:
    """Accumulates (adds) (M, C, nsample) ``grad_out_tensor`` into (N, C) ``grad_features_tensor``."""
    stack_group_backward(grad_out_tensor, idx_tensor, idx_batch_cnt_tensor, features_batch_cnt_tensor,
                         grad_features_tensor)
