"""``mmcv.ops.box_iou_quadri``: IoU / IoF of quadrilaterals ``(x1, y1, ..., x4, y4)``.

Same geometry as :mod:`.box_iou_rotated` (mmcv shares it): both quadrilaterals are shifted by the
mean of their eight corners (summed in the box dtype in mmcv's order, divided in double), areas
are fans of ``|cross|`` from the first corner, and areas below 1e-14 give 0. Only pairs whose
bounding rectangles overlap can intersect; the others are exactly 0.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import registry
from ._checks import check_box_pairs
from .box_iou_rotated import polygon_intersection_area

_PAIRS_PER_CHUNK = 1 << 15


def quadri_area(x: Tensor, y: Tensor) -> Tensor:
    """(P,) areas of (P, 4)-corner quadrilaterals, mmcv's fan of two triangles."""
    total = torch.zeros_like(x[:, 0])
    for i in (1, 2):
        ax, ay = x[:, i] - x[:, 0], y[:, i] - y[:, 0]
        bx, by = x[:, i + 1] - x[:, 0], y[:, i + 1] - y[:, 0]
        total = total + (ax * by - bx * ay).abs()
    return total / 2


def paired_iou_quadri(quads1: Tensor, quads2: Tensor, mode_flag: int = 0) -> Tensor:
    """(P,) IoU (0) or IoF (1) of ``quads1[k]`` with ``quads2[k]``, both (P, 8)."""
    out = quads1.new_zeros(quads1.size(0))
    for start in range(0, quads1.size(0), _PAIRS_PER_CHUNK):
        q1, q2 = quads1[start:start + _PAIRS_PER_CHUNK], quads2[start:start + _PAIRS_PER_CHUNK]
        shifted = []
        for axis in (0, 1):
            # mmcv sums p1[0] + p2[0] + p1[2] + p2[2] + ... left to right in the box dtype
            total = q1[:, axis] + q2[:, axis]
            for k in (2, 4, 6):
                total = total + q1[:, axis + k] + q2[:, axis + k]
            shift = total.double()[:, None] / 8.0
            shifted.append(((q1[:, axis::2].double() - shift).to(q1.dtype), (q2[:, axis::2].double() - shift).to(q1.dtype)))
        (x1, x2), (y1, y2) = shifted
        area1, area2 = quadri_area(x1, y1), quadri_area(x2, y2)
        inter = polygon_intersection_area(x1, y1, x2, y2)
        iou = inter / (area1 + area2 - inter if mode_flag == 0 else area1)
        out[start:start + _PAIRS_PER_CHUNK] = torch.where((area1 < 1e-14) | (area2 < 1e-14),
                                                          torch.zeros_like(iou), iou)
    return out


def bounding_rectangles(quads: Tensor) -> Tensor:
    """(N, 4) ``(x1, y1, x2, y2)`` around everything mmcv's geometry may count as (N, 8) quad ``q``.

    mmcv tests "point inside q" against the parallelogram spanned at corner 0 by edges 0->1 and
    0->3, which for a non-parallelogram reaches past q (to p1 + p3 - p0), and is an unbounded strip
    when either edge has zero length: such quads get an infinite rectangle.
    """
    xs, ys = quads[:, 0::2], quads[:, 1::2]
    fourth_x = xs[:, 1] + xs[:, 3] - xs[:, 0]
    fourth_y = ys[:, 1] + ys[:, 3] - ys[:, 0]
    xs, ys = torch.cat([xs, fourth_x[:, None]], 1), torch.cat([ys, fourth_y[:, None]], 1)
    rect = torch.stack([xs.min(1)[0], ys.min(1)[0], xs.max(1)[0], ys.max(1)[0]], 1)
    ab = (quads[:, 2] - quads[:, 0]) ** 2 + (quads[:, 3] - quads[:, 1]) ** 2
    ad = (quads[:, 6] - quads[:, 0]) ** 2 + (quads[:, 7] - quads[:, 1]) ** 2
    unbounded = (ab == 0) | (ad == 0)
    infinite = rect.new_tensor([float("-inf"), float("-inf"), float("inf"), float("inf")])
    return torch.where(unbounded[:, None], infinite, rect)


def box_iou_quadri(bboxes1: Tensor, bboxes2: Tensor, mode: str = "iou", aligned: bool = False) -> Tensor:
    """IoU (``'iou'``) or IoF (``'iof'``) of quadrilaterals ``(x1, y1, x2, y2, x3, y3, x4, y4)``.

    Returns (N, M), or (N,) when ``aligned`` (pairs ``(bboxes1[i], bboxes2[i])``).
    """
    op = "box_iou_quadri"
    check_box_pairs(op, bboxes1, bboxes2, 8, mode, aligned)
    rows, cols = bboxes1.size(0), bboxes2.size(0)
    if rows == 0 or cols == 0:
        return bboxes1.new_zeros(rows if aligned else (rows, cols))
    flag = 0 if mode == "iou" else 1
    dtype = bboxes1.dtype
    work = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    q1, q2 = bboxes1.to(work), bboxes2.to(work)
    if aligned:
        return paired_iou_quadri(q1, q2, flag).to(dtype)
    r1, r2 = bounding_rectangles(q1), bounding_rectangles(q2)
    meet = ~((r1[:, None, 0] > r2[None, :, 2]) | (r2[None, :, 0] > r1[:, None, 2])
             | (r1[:, None, 1] > r2[None, :, 3]) | (r2[None, :, 1] > r1[:, None, 3]))
    i, j = meet.nonzero().unbind(1)
    ious = q1.new_zeros((rows, cols))
    ious[i, j] = paired_iou_quadri(q1[i], q2[j], flag)
    return ious.to(dtype)


registry.register(registry.OpEntry(
    op="box_iou_quadri",
    names=("box_iou_quadri",),
    ext_functions=("box_iou_quadri",),
    backward="n/a",
    devices=("any",),
))
