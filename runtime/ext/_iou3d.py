"""``_ext`` adapters of mmcv.ops.iou3d (mmcv's pybind signatures, outputs written in place)."""

from __future__ import annotations

from torch import Tensor

from mmcv_runtime.ops.iou3d import nms3d_keep, overlap_bev_matrix

__all__ = ["iou3d_boxes_overlap_bev_forward", "iou3d_nms3d_forward", "iou3d_nms3d_normal_forward"]


def iou3d_boxes_overlap_bev_forward(boxes_a: Tensor, boxes_b: Tensor, ans_iou: Tensor) -> None:
    """Writes the (M, N) BEV overlaps of (M, 7) x (N, 7) boxes into ``ans_iou``."""
    ans_iou.copy_(overlap_bev_matrix(boxes_a, boxes_b))


def _nms(boxes: Tensor, keep: Tensor, num_out: Tensor, thresh: float, normal: bool) -> None:
    kept = nms3d_keep(boxes, float(thresh), normal)
    keep[:kept.numel()] = kept.to(device=keep.device, dtype=keep.dtype)
    num_out.fill_(kept.numel())


def iou3d_nms3d_forward(boxes: Tensor, keep: Tensor, num_out: Tensor, nms_overlap_thresh: float) -> None:
    """Greedy rotated NMS over (N, 7) boxes already in score order: kept positions into
    ``keep[:K]``, ``K`` into ``num_out``."""
    _nms(boxes, keep, num_out, nms_overlap_thresh, normal=False)


def iou3d_nms3d_normal_forward(boxes: Tensor, keep: Tensor, num_out: Tensor, nms_overlap_thresh: float) -> None:
    """As :func:`iou3d_nms3d_forward` with headings ignored (axis-aligned IoU)."""
    _nms(boxes, keep, num_out, nms_overlap_thresh, normal=True)
