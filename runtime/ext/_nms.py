"""``_ext`` adapters of mmcv.ops.nms: ``nms``, ``softnms``, ``nms_match`` (mmcv's pybind signatures)."""

from __future__ import annotations

from typing import List

from torch import Tensor

from mmcv_runtime.ops.nms import nms_indices, nms_match_groups, soft_nms_core

__all__ = ["nms", "softnms", "nms_match"]


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
