"""``_ext`` adapters of mmcv.ops.ball_query (mmcv's pybind signatures, in-place outputs)."""

from __future__ import annotations

import torch
from torch import Tensor

from mmcv_runtime.ops.ball_query import ball_query_indices, stack_ball_query_indices

__all__ = ["ball_query_forward", "stack_ball_query_forward"]


def ball_query_forward(new_xyz_tensor: Tensor, xyz_tensor: Tensor, idx_tensor: Tensor, b: int, n: int, m: int,
                       min_radius: float, max_radius: float, nsample: int) -> None:
    """(B, m, 3) centres, (B, n, 3) points -> ``idx_tensor`` (B, m, nsample).

    Like the kernel, a centre with no point in its ball leaves its row of ``idx_tensor`` untouched.
    """
    idx, count = ball_query_indices(new_xyz_tensor, xyz_tensor, min_radius, max_radius, int(nsample))
    idx_tensor.copy_(torch.where((count > 0).unsqueeze(-1), idx, idx_tensor))


def stack_ball_query_forward(new_xyz_tensor: Tensor, new_xyz_batch_cnt: Tensor, xyz_tensor: Tensor,
                             xyz_batch_cnt: Tensor, idx_tensor: Tensor, max_radius: float, nsample: int) -> None:
    """(M, 3) stacked centres, (N, 3) stacked points -> ``idx_tensor`` (M, nsample), batch-local indices.

    Like the kernel, a centre with no point gets -1 in slot 0 and the rest of its row untouched.
    """
    idx, count = stack_ball_query_indices(new_xyz_tensor, new_xyz_batch_cnt, xyz_tensor, xyz_batch_cnt,
                                          max_radius, int(nsample))
    keep = (count == 0).unsqueeze(-1) & (torch.arange(idx.size(1), device=idx.device) > 0)
    idx_tensor.copy_(torch.where(keep, idx_tensor, idx))
