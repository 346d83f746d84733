"""``_ext`` adapter of mmcv.ops.bbox: ``bbox_overlaps`` (mmcv's pybind signature, in-place ``ious``)."""

from __future__ import annotations

from torch import Tensor

from mmcv_runtime.ops.bbox import bbox_overlaps as _bbox_overlaps

__all__ = ["bbox_overlaps"]

_MODES = ("iou", "iof")


def bbox_overlaps(bboxes1: Tensor, bboxes2: Tensor, ious: Tensor, mode: int, aligned: bool, offset: int) -> None:
    """Writes IoU (``mode=0``) or IoF (``mode=1``) of the boxes into ``ious`` ((m, n), or (m,) aligned)."""
    ious.copy_(_bbox_overlaps(bboxes1, bboxes2, _MODES[int(mode)], bool(aligned), int(offset)).view_as(ious))
