"""``_ext`` adapters of mmcv.ops.nms: ``nms``, ``softnms``, ``nms_match`` (mmcv's pybind signatures)."""

from __future__ import annotations

from typing import List

from torch import Tensor

from mmcv_runtime.ops.nms import (nms_indices, nms_match_groups, quadri_nms_indices, rotated_nms_indices,
                                    soft_nms_core)

__all__ = ["nms", "softnms", "nms_match", "nms_rotated", "nms_quadri"]


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float, offset: int) -> Tensor:
    """Indices of the kept boxes, in descending score order."""
    return nms_indices(boxes, scores, float(iou_threshold), int(offset))


def softnms(boxes: Tensor, scores: Tensor, dets: Tensor, iou_threshold: float, sigma: float, min_score: float,
            method: int, offset: int) -> Tensor:
    """Indices of the kept boxes in pick order; writes their ``(x1, y1, x2, y2, score)`` rows into ``dets``."""
    kept, inds = soft_nms_core(boxes, scores, float(iou_threshold), float(sigma), float(min_score), int(method),
                               int(offset))
    dets[:kept.size(0)] = kept.to(dets.dtype)
    return inds


def nms_match(dets: Tensor, iou_threshold: float) -> List[List[int]]:
    """Per kept box (score order): ``[kept, suppressed...]`` indices."""
    return nms_match_groups(dets, float(iou_threshold))


def nms_rotated(dets: Tensor, scores: Tensor, order: Tensor, dets_sorted: Tensor, labels: Tensor,
                iou_threshold: float, multi_label: int) -> Tensor:
    """Kept indices of rotated NMS in score order (``order``/``dets_sorted`` are recomputed)."""
    label_column = None
    if multi_label:
        label_column = labels if labels.numel() == dets.size(0) else dets[:, 5]
    return rotated_nms_indices(dets[:, :5], scores, float(iou_threshold), label_column)


def nms_quadri(dets: Tensor, scores: Tensor, order: Tensor, dets_sorted: Tensor, iou_threshold: float,
               multi_label: int) -> Tensor:
    """Kept indices of quadrilateral NMS in score order (labels, if any, in ``dets[:, 8]``)."""
    label_column = dets[:, 8] if multi_label and dets.size(1) > 8 else None
    return quadri_nms_indices(dets[:, :8], scores, float(iou_threshold), label_column)
