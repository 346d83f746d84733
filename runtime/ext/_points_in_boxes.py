"""``_ext`` adapters of mmcv.ops.points_in_boxes (mmcv's pybind signatures, outputs written in place).

Like the kernels, ``points_in_boxes_part_forward`` only sets the entries of points that are in a box
(the wrapper pre-fills -1) and ``points_in_boxes_all_forward`` only sets the 1s (the wrapper pre-fills
0), while ``points_in_boxes_cpu_forward`` writes every entry of its (T, M) output with 0 or 1.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mmcv_runtime.ops.points_in_boxes import write_all, write_cpu, write_part

__all__ = ["points_in_boxes_part_forward", "points_in_boxes_all_forward", "points_in_boxes_cpu_forward"]


def _check(op: str, boxes: Tensor, pts: Tensor, out: Tensor, out_shape: tuple, dims: int) -> None:
    if boxes.dim() != dims or boxes.size(-1) != 7:
        raise ValueError(f"{op}: boxes_tensor must have {dims} dims and 7 columns, got {tuple(boxes.shape)}")
    if pts.dim() != dims or pts.size(-1) != 3:
        raise ValueError(f"{op}: pts_tensor must have {dims} dims and 3 columns, got {tuple(pts.shape)}")
    if dims == 3 and pts.size(0) != boxes.size(0):
        raise ValueError(f"{op}: pts_tensor and boxes_tensor must have the same batch size, "
                         f"got {pts.size(0)} and {boxes.size(0)}")
    if tuple(out.shape) != out_shape:
        raise ValueError(f"{op}: the output tensor must have shape {out_shape}, got {tuple(out.shape)}")
    if out.dtype != torch.int32:
        raise TypeError(f"{op}: the output tensor must be int32, got {out.dtype}")
    if not boxes.is_floating_point() or pts.dtype != boxes.dtype:
        raise TypeError(f"{op}: boxes_tensor and pts_tensor must share one floating dtype, "
                        f"got {boxes.dtype} and {pts.dtype}")


def points_in_boxes_part_forward(boxes_tensor: Tensor, pts_tensor: Tensor, box_idx_of_points_tensor: Tensor) -> None:
    """boxes (B, T, 7), pts (B, M, 3) -> sets box_idx_of_points (B, M) int32 to the first containing box."""
    _check("points_in_boxes_part_forward", boxes_tensor, pts_tensor, box_idx_of_points_tensor,
           tuple(pts_tensor.shape[:2]), 3)
    write_part(pts_tensor, boxes_tensor, box_idx_of_points_tensor)


def points_in_boxes_all_forward(boxes_tensor: Tensor, pts_tensor: Tensor, box_idx_of_points_tensor: Tensor) -> None:
    """boxes (B, T, 7), pts (B, M, 3) -> sets box_idx_of_points (B, M, T) int32 to 1 where inside."""
    _check("points_in_boxes_all_forward", boxes_tensor, pts_tensor, box_idx_of_points_tensor,
           (pts_tensor.size(0), pts_tensor.size(1), boxes_tensor.size(1)), 3)
    write_all(pts_tensor, boxes_tensor, box_idx_of_points_tensor)


def points_in_boxes_cpu_forward(boxes_tensor: Tensor, pts_tensor: Tensor, pts_indices_tensor: Tensor) -> None:
    """boxes (T, 7), pts (M, 3) float32 -> fills pts_indices (T, M) int32 with 0/1."""
    op = "points_in_boxes_cpu_forward"
    _check(op, boxes_tensor, pts_tensor, pts_indices_tensor, (boxes_tensor.size(0), pts_tensor.size(0)), 2)
    if boxes_tensor.dtype != torch.float32:  # the kernel reads float data
        raise TypeError(f"{op}: boxes_tensor and pts_tensor must be float32, got {boxes_tensor.dtype}")
    write_cpu(pts_tensor[None], boxes_tensor[None], pts_indices_tensor[None])
