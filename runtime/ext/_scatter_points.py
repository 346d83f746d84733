"""``_ext`` adapters of mmcv.ops.scatter_points (mmcv's pybind signatures)."""

from __future__ import annotations

from typing import List

from torch import Tensor

from mmcv_runtime.ops.scatter_points import check_inputs, dynamic_point_to_voxel, scatter_grad

__all__ = ["dynamic_point_to_voxel_forward", "dynamic_point_to_voxel_backward"]


def dynamic_point_to_voxel_forward(feats: Tensor, coors: Tensor, reduce_type: str) -> List[Tensor]:
    """``[voxel_feats (M, C), voxel_coors (M, ndim), coors_map (N,) int32 (-1: dropped),
    reduce_count (M,) int32]``."""
    check_inputs("dynamic_point_to_voxel_forward", feats, coors, reduce_type)
    return dynamic_point_to_voxel(feats, coors, reduce_type)


def dynamic_point_to_voxel_backward(grad_feats: Tensor, grad_reduced_feats: Tensor, feats: Tensor,
                                    reduced_feats: Tensor, coors_idx: Tensor, reduce_count: Tensor,
                                    reduce_type: str) -> None:
    """Writes the (N, C) point gradient into ``grad_feats``. Like the CUDA launcher, which starts
    with ``grad_feats.fill_(0)``, this overwrites rather than accumulates."""
    grad = scatter_grad(grad_reduced_feats, feats, reduced_feats, coors_idx, reduce_count, reduce_type)
    grad_feats.copy_(grad)
