"""``_ext`` adapter of mmcv.ops.box_iou_quadri (mmcv's pybind signature, in-place ``ious``)."""

from __future__ import annotations

from torch import Tensor

from mmcv_runtime.ops.box_iou_quadri import box_iou_quadri as _box_iou_quadri

__all__ = ["box_iou_quadri"]


def box_iou_quadri(boxes1: Tensor, boxes2: Tensor, ious: Tensor, mode_flag: int, aligned: bool) -> None:
    """Writes IoU (``mode_flag=0``) or IoF (1) into ``ious`` (flat (N*M,) or (N, M); (N,) aligned)."""
    mode = ("iou", "iof")[int(mode_flag)]
    ious.copy_(_box_iou_quadri(boxes1, boxes2, mode, bool(aligned)).reshape(ious.shape))
