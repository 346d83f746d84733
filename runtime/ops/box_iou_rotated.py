"""``mmcv.ops.box_iou_rotated``: IoU / IoF of rotated boxes ``(x_ctr, y_ctr, w, h, angle)``.

The geometry follows mmcv's ``box_iou_rotated_utils``: vertices from ``cos``/``sin`` of the angle
taken in double and rounded to the box dtype, both boxes shifted by their mean centre, the same
edge-intersection and point-inside tests with the same tolerances, areas below 1e-14 giving 0. The
intersection is the convex hull of those points; its area is computed from the points sorted by
angle around their centroid (one vectorised sort for a whole batch of pairs) instead of mmcv's
per-pair Graham scan: the same polygon, so areas agree up to float rounding.

Only pairs whose circumscribed circles meet can intersect; the others are exactly 0, so the pair
matrix is computed on those pairs alone.
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from .. import registry
from ._checks import check_box_pairs

_PAIRS_PER_CHUNK = 1 << 15


def _cross(ax: Tensor, ay: Tensor, bx: Tensor, by: Tensor) -> Tensor:
    return ax * by - bx * ay


def rotated_vertices(boxes: Tensor) -> Tuple[Tensor, Tensor]:
    """(P, 4) x and y of each box's corners, mmcv's corner order and arithmetic."""
    x, y, w, h, angle = boxes.unbind(1)
    theta = angle.double()
    cos2 = torch.cos(theta).to(boxes.dtype) * 0.5
    sin2 = torch.sin(theta).to(boxes.dtype) * 0.5
    p0x = x - sin2 * h - cos2 * w
    p0y = y + cos2 * h - sin2 * w
    p1x = x + sin2 * h - cos2 * w
    p1y = y - cos2 * h - sin2 * w
    return (torch.stack([p0x, p1x, 2 * x - p0x, 2 * x - p1x], 1),
            torch.stack([p0y, p1y, 2 * y - p0y, 2 * y - p1y], 1))


def _inside(px: Tensor, py: Tensor, qx: Tensor, qy: Tensor) -> Tensor:
    """(P, 4): which points (px, py) lie in the parallelogram with corners (qx, qy)."""
    abx, aby = qx[:, 1] - qx[:, 0], qy[:, 1] - qy[:, 0]
    dax, day = qx[:, 0] - qx[:, 3], qy[:, 0] - qy[:, 3]
    ab_ab = (abx * abx + aby * aby)[:, None]
    ad_ad = (dax * dax + day * day)[:, None]
    apx, apy = px - qx[:, :1], py - qy[:, :1]
    ap_ab = apx * abx[:, None] + apy * aby[:, None]
    ap_ad = -(apx * dax[:, None] + apy * day[:, None])
    return (ap_ab >= 0) & (ap_ad >= 0) & (ap_ab <= ab_ab) & (ap_ad <= ad_ad)


def polygon_intersection_area(x1: Tensor, y1: Tensor, x2: Tensor, y2: Tensor) -> Tensor:
    """(P,) areas of the intersections of convex quadrilaterals given by (P, 4) corner coordinates."""
    v1x, v1y = x1.roll(-1, 1) - x1, y1.roll(-1, 1) - y1
    v2x, v2y = x2.roll(-1, 1) - x2, y2.roll(-1, 1) - y2
    # edge i of polygon 1 against edge j of polygon 2: (P, 4, 4)
    a1x, a1y, d1x, d1y = x1[:, :, None], y1[:, :, None], v1x[:, :, None], v1y[:, :, None]
    d2x, d2y = v2x[:, None, :], v2y[:, None, :]
    det = _cross(d2x, d2y, d1x, d1y)
    ox, oy = x2[:, None, :] - a1x, y2[:, None, :] - a1y
    safe = torch.where(det.abs() <= 1e-14, torch.ones_like(det), det)
    t1 = _cross(d2x, d2y, ox, oy) / safe
    t2 = _cross(d1x, d1y, ox, oy) / safe
    hit = (det.abs() > 1e-14) & (t1 >= 0) & (t1 <= 1) & (t2 >= 0) & (t2 <= 1)
    px = torch.cat([(a1x + d1x * t1).flatten(1), x1, x2], 1)
    py = torch.cat([(a1y + d1y * t1).flatten(1), y1, y2], 1)
    valid = torch.cat([hit.flatten(1), _inside(x1, y1, x2, y2), _inside(x2, y2, x1, y1)], 1)
    count = valid.sum(1)
    return _hull_area(px, py, valid, count)


def _hull_area(px: Tensor, py: Tensor, valid: Tensor, count: Tensor) -> Tensor:
    """(P,) area of the convex hull of the valid points of each row (0 for 2 points or fewer).

    The points are sorted by angle around their centroid (a star-shaped polygon); vertices where
    that polygon turns clockwise are never hull vertices, so they are dropped until none is left.
    Turns smaller than 1e-6 of the polygon's squared size count as straight, so near-duplicate
    points (the same corner found twice) never drop each other.
    """
    rows, width = px.shape
    weight = valid.to(px.dtype)
    cx = (px * weight).sum(1, keepdim=True) / count.clamp(min=1)[:, None]
    cy = (py * weight).sum(1, keepdim=True) / count.clamp(min=1)[:, None]
    angle = torch.atan2(py - cy, px - cx).masked_fill(~valid, float("inf"))
    # turns are judged against the polygon's size: a near-duplicate point's turn is negligible
    scale = (((px - cx) ** 2 + (py - cy) ** 2) * weight).amax(1, keepdim=True)
    order = angle.argsort(1)  # valid points first, by angle; invalid ones (angle inf) last
    px, py, alive = px.gather(1, order), py.gather(1, order), valid.gather(1, order)
    index = torch.arange(width, device=px.device).expand(rows, width)
    for _ in range(width):
        # alive points are the first ``live`` slots of each row: neighbours are index arithmetic
        live = alive.sum(1, keepdim=True)
        before = torch.where(index == 0, live - 1, index - 1).clamp(min=0)
        after = torch.where(index + 1 >= live, torch.zeros_like(index), index + 1)
        ax, ay = px - px.gather(1, before), py - py.gather(1, before)
        bx, by = px.gather(1, after) - px, py.gather(1, after) - py
        reflex = alive & (_cross(ax, ay, bx, by) < -1e-6 * scale)
        if not bool(reflex.any()):
            break
        alive = alive & ~reflex
        keep_first = (~alive).to(torch.int8).argsort(dim=1, stable=True)
        px, py, alive = px.gather(1, keep_first), py.gather(1, keep_first), alive.gather(1, keep_first)
    x0, y0 = px[:, :1], py[:, :1]
    fan = _cross(px - x0, py - y0, px.gather(1, after) - x0, py.gather(1, after) - y0)
    area = (fan * alive.to(px.dtype)).sum(1).abs() / 2
    return torch.where(count > 2, area, torch.zeros_like(area))


def paired_iou_rotated(boxes1: Tensor, boxes2: Tensor, mode_flag: int = 0) -> Tensor:
    """(P,) IoU (``mode_flag`` 0) or IoF (1) of ``boxes1[k]`` with ``boxes2[k]``, both (P, 5)."""
    out = boxes1.new_zeros(boxes1.size(0))
    for start in range(0, boxes1.size(0), _PAIRS_PER_CHUNK):
        b1, b2 = boxes1[start:start + _PAIRS_PER_CHUNK], boxes2[start:start + _PAIRS_PER_CHUNK]
        # mmcv shifts both boxes by their mean centre, computed in double, for precision
        shift = ((b1[:, :2] + b2[:, :2]).double() / 2.0)
        c1 = (b1[:, :2].double() - shift).to(b1.dtype)
        c2 = (b2[:, :2].double() - shift).to(b1.dtype)
        b1 = torch.cat([c1, b1[:, 2:]], 1)
        b2 = torch.cat([c2, b2[:, 2:]], 1)
        area1 = b1[:, 2] * b1[:, 3]
        area2 = b2[:, 2] * b2[:, 3]
        inter = polygon_intersection_area(*rotated_vertices(b1), *rotated_vertices(b2))
        base = area1 + area2 - inter if mode_flag == 0 else area1
        iou = inter / base
        out[start:start + _PAIRS_PER_CHUNK] = torch.where((area1 < 1e-14) | (area2 < 1e-14),
                                                          torch.zeros_like(iou), iou)
    return out


def _radius(boxes: Tensor) -> Tensor:
    return 0.5 * torch.sqrt(boxes[:, 2] * boxes[:, 2] + boxes[:, 3] * boxes[:, 3])


def circle_squares(boxes: Tensor) -> Tensor:
    """(N, 4) axis-aligned squares around each box's circumscribed circle (a hair larger)."""
    r = _radius(boxes) * (1 + 1e-4) + 1e-6
    return torch.stack([boxes[:, 0] - r, boxes[:, 1] - r, boxes[:, 0] + r, boxes[:, 1] + r], 1)


def meeting_pairs(boxes1: Tensor, boxes2: Tensor) -> Tuple[Tensor, Tensor]:
    """``(i, j)`` of pairs whose circumscribed circles meet (a small margin keeps touching ones)."""
    r = (_radius(boxes1)[:, None] + _radius(boxes2)[None, :]) * (1 + 1e-4) + 1e-6
    dx = boxes1[:, None, 0] - boxes2[None, :, 0]
    dy = boxes1[:, None, 1] - boxes2[None, :, 1]
    meet = ~(dx * dx + dy * dy > r * r)  # NaN boxes are kept (their IoU is NaN in mmcv too)
    i, j = meet.nonzero().unbind(1)
    return i, j


def box_iou_rotated(bboxes1: Tensor, bboxes2: Tensor, mode: str = "iou", aligned: bool = False,
                    clockwise: bool = True) -> Tensor:
    """IoU (``'iou'``) or IoF (``'iof'``) of rotated boxes ``(x_ctr, y_ctr, w, h, angle in radians)``.

    Args:
        bboxes1: (N, 5); bboxes2: (M, 5); with ``aligned`` N == M and pairs are ``(bboxes1[i], bboxes2[i])``.
        clockwise: angles grow clockwise (mmcv's default); False flips their sign first.

    Returns:
        (N, M), or (N,) when ``aligned``.
    """
    op = "box_iou_rotated"
    check_box_pairs(op, bboxes1, bboxes2, 5, mode, aligned)
    rows, cols = bboxes1.size(0), bboxes2.size(0)
    flag = 0 if mode == "iou" else 1
    if rows == 0 or cols == 0:
        return bboxes1.new_zeros(rows if aligned else (rows, cols))
    dtype = bboxes1.dtype
    work = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    b1, b2 = bboxes1.to(work), bboxes2.to(work)
    if not clockwise:
        flip = b1.new_tensor([1, 1, 1, 1, -1])
        b1, b2 = b1 * flip, b2 * flip
    if aligned:
        return paired_iou_rotated(b1, b2, flag).to(dtype)
    ious = b1.new_zeros((rows, cols))
    i, j = meeting_pairs(b1, b2)
    ious[i, j] = paired_iou_rotated(b1[i], b2[j], flag)
    return ious.to(dtype)


registry.register(registry.OpEntry(
    op="box_iou_rotated",
    names=("box_iou_rotated",),
    ext_functions=("box_iou_rotated",),
    backward="n/a",
    devices=("any",),
))
