"""``mmcv.ops.bbox``: IoU / IoF between axis-aligned boxes, and the pairwise core the NMS ops share.

Arithmetic follows mmcv's CPU kernel operation for operation (``(x2 - x1 + offset)`` areas,
``overlap / (area1 + area2 - overlap)``), so results are bit-identical to it in float32. mmcv's
CUDA kernel differs only for inverted boxes (x2 < x1), where it clamps the denominator at
``offset``; the runtime keeps the CPU arithmetic on every device.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import registry
from ._checks import check_boxes, check_choice, check_same_device

# mmcv's CPU kernel clamps widths to [0, INT_MAX] (as a float32 value).
_WIDTH_MAX = 2147483647.0


def box_areas(boxes: Tensor, offset: int = 0) -> Tensor:
    """(N,) areas of (N, >=4) boxes ``(x1, y1, x2, y2)``, mmcv's way: ``(x2 - x1 + offset) * (y2 - y1 + offset)``."""
    return (boxes[:, 2] - boxes[:, 0] + offset) * (boxes[:, 3] - boxes[:, 1] + offset)


def pairwise_overlap(boxes1: Tensor, boxes2: Tensor, offset: int = 0, clamp_max: bool = False) -> Tensor:
    """(N, M) intersection areas of every pair of boxes1 (N, 4) and boxes2 (M, 4)."""
    lt = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.minimum(boxes1[:, None, 2:4], boxes2[None, :, 2:4])
    wh = (rb - lt + offset).clamp_(min=0, max=_WIDTH_MAX if clamp_max else None)
    return wh[..., 0] * wh[..., 1]


def pairwise_iou(boxes1: Tensor, boxes2: Tensor, offset: int = 0, *, areas1: Tensor = None,
                 areas2: Tensor = None) -> Tensor:
    """(N, M) IoU of every pair, with mmcv's NMS-kernel arithmetic."""
    overlap = pairwise_overlap(boxes1, boxes2, offset)
    areas1 = box_areas(boxes1, offset) if areas1 is None else areas1
    areas2 = box_areas(boxes2, offset) if areas2 is None else areas2
    return overlap / (areas1[:, None] + areas2[None, :] - overlap)


def bbox_overlaps(bboxes1: Tensor, bboxes2: Tensor, mode: str = "iou", aligned: bool = False,
                  offset: int = 0) -> Tensor:
    """IoU (``mode='iou'``) or intersection over ``bboxes1``'s area (``'iof'``) of boxes ``(x1, y1, x2, y2)``.

    Args:
        bboxes1: (m, 4) boxes, or empty.
        bboxes2: (n, 4) boxes, or empty; with ``aligned`` m must equal n.
        mode: ``'iou'`` or ``'iof'``.
        aligned: pair ``bboxes1[i]`` with ``bboxes2[i]`` instead of every pair.
        offset: 0 or 1, added to widths and heights (legacy pixel convention).

    Returns:
        (m, n) tensor, or (m,) when ``aligned``; same dtype and device as ``bboxes1``.
    """
    op = "bbox_overlaps"
    check_choice(op, "mode", mode, ("iou", "iof"))
    check_choice(op, "offset", offset, (0, 1))
    for name, boxes in (("bboxes1", bboxes1), ("bboxes2", bboxes2)):
        if not isinstance(boxes, torch.Tensor):
            raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(boxes).__name__}")
        if not (boxes.size(-1) == 4 or boxes.size(0) == 0):
            raise ValueError(f"{op}: {name} must have shape (N, 4) or be empty, got {tuple(boxes.shape)}")
    check_same_device(op, bboxes1=bboxes1, bboxes2=bboxes2)
    rows, cols = bboxes1.size(0), bboxes2.size(0)
    if aligned and rows != cols:
        raise ValueError(f"{op}: aligned needs as many bboxes1 as bboxes2, got {rows} and {cols}")
    if rows * cols == 0:
        return bboxes1.new_zeros(rows if aligned else (rows, cols))
    check_boxes(op, "bboxes1", bboxes1, 4)
    check_boxes(op, "bboxes2", bboxes2, 4)
    b2 = bboxes2.to(bboxes1.dtype)
    area1 = box_areas(bboxes1, offset)
    if aligned:
        lt = torch.maximum(bboxes1[:, :2], b2[:, :2])
        rb = torch.minimum(bboxes1[:, 2:], b2[:, 2:])
        wh = (rb - lt + offset).clamp_(min=0, max=_WIDTH_MAX)
        overlap = wh[:, 0] * wh[:, 1]
        denominator = area1 + box_areas(b2, offset) - overlap if mode == "iou" else area1
        return overlap / denominator
    overlap = pairwise_overlap(bboxes1, b2, offset, clamp_max=True)
    if mode == "iou":
        return overlap / (area1[:, None] + box_areas(b2, offset) - overlap)
    return overlap / area1[:, None]


registry.register(registry.OpEntry(
    op="bbox",
    names=("bbox_overlaps",),
    ext_functions=("bbox_overlaps",),
    backward="n/a",
    devices=("any",),
))
