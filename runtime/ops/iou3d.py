"""``mmcv.ops.iou3d``: BEV overlap / 3D IoU of (N, 7) boxes and 3D NMS (mmcv's CUDA-only kernels).

Boxes are ``[x, y, z, dx, dy, dz, heading]``. ``boxes_overlap_bev`` transcribes the kernel's own
``box_overlap`` in float32 (not box_iou_rotated's): corners rotated about the centre, the 16
edge/edge intersections (strict ``s1*s2 > 0 && s3*s4 > 0`` test, EPS = 1e-8 fallback to the line
formula), the corners inside the other box with the kernel's 1e-2 MARGIN (so boxes a hair apart
still get a thin positive overlap), a stable sort by ``atan2`` around the mean point (the kernel's
bubble sort with ``>``), and the fan area summed in order. A pair with no such points has overlap 0
(NaN boxes included, as in the kernel). ``nms3d`` / ``nms3d_normal`` sort by
``scores.sort(0, descending=True)`` and suppress a later box when ``iou > thresh`` (float32
compare), IoU = overlap / fmaxf(Sa + Sb - overlap, EPS); the greedy order is resolved on the
suppression graph as ``runtime/ops/nms.py`` does. Float64 input is computed in float32 (the kernel's
arithmetic) and returned in the input dtype.

The deprecated (N, 5) ``[x1, y1, x2, y2, ry]`` helpers ``boxes_iou_bev``, ``nms_bev`` and
``nms_normal_bev`` delegate to ``box_iou_rotated``, ``nms_rotated`` and ``nms`` exactly as mmcv's
wrapper does (with its DeprecationWarnings).
"""

from __future__ import annotations

import struct
import warnings
from typing import Optional, Tuple

import torch
from torch import Tensor

from .. import registry

_EPS = 1e-8
_MARGIN = 1e-2
_PAIR_CHUNK = 1 << 16  # pairs whose polygon is built at once: (chunk x 24 points) tensors
_ROW_CHUNK = 1024  # rows of a dense (rows x N) candidate / normal-IoU matrix at a time


def _f32(value: float) -> float:
    """``value`` rounded to float32, as the kernels receive ``nms_overlap_thresh``."""
    return struct.unpack("f", struct.pack("f", float(value)))[0]


def _check_boxes(op: str, name: str, boxes: Tensor, width: int = 7) -> None:
    if not isinstance(boxes, Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(boxes).__name__}")
    if boxes.dim() != 2 or boxes.size(1) != width:
        raise ValueError(f"{op}: {name} must have shape (N, {width}), got {tuple(boxes.shape)}")
    if not boxes.is_floating_point():
        raise TypeError(f"{op}: {name} must be a floating tensor, got {boxes.dtype}")


def _check_scores(op: str, boxes: Tensor, scores: Tensor) -> None:
    if not isinstance(scores, Tensor):
        raise TypeError(f"{op}: scores must be a torch.Tensor, got {type(scores).__name__}")
    if scores.dim() != 1 or scores.size(0) != boxes.size(0):
        raise ValueError(f"{op}: scores must have shape ({boxes.size(0)},), got {tuple(scores.shape)}")
    if scores.device != boxes.device:
        raise ValueError(f"{op}: boxes and scores must be on one device, got {boxes.device} and {scores.device}")


# --- the kernel's box_overlap, vectorised over pairs -----------------------------------------------


def _corners(b: Tensor) -> Tuple[Tensor, Tensor]:
    """(P, 4) x and y of the rotated corners, in the kernel's order and float arithmetic."""
    x, y, dxh, dyh, ang = b[:, 0], b[:, 1], b[:, 3] / 2, b[:, 4] / 2, b[:, 6]
    px = torch.stack([x - dxh, x + dxh, x + dxh, x - dxh], 1)
    py = torch.stack([y - dyh, y - dyh, y + dyh, y + dyh], 1)
    c, s = torch.cos(ang)[:, None], torch.sin(ang)[:, None]
    ux, uy = px - x[:, None], py - y[:, None]
    return ux * c - uy * s + x[:, None], ux * s + uy * c + y[:, None]


def _in_box(b: Tensor, px: Tensor, py: Tensor) -> Tensor:
    """(P, 4) ``check_in_box2d(b, p)``: the point rotated by -heading, within half size + MARGIN."""
    c, s = torch.cos(-b[:, 6])[:, None], torch.sin(-b[:, 6])[:, None]
    ux, uy = px - b[:, 0:1], py - b[:, 1:2]
    rx = ux * c + uy * (-s)
    ry = ux * s + uy * c
    return (rx.abs() < b[:, 3:4] / 2 + _MARGIN) & (ry.abs() < b[:, 4:5] / 2 + _MARGIN)


def _cross3(p1x, p1y, p2x, p2y, p0x, p0y):
    return (p1x - p0x) * (p2y - p0y) - (p2x - p0x) * (p1y - p0y)


def _edge_crossings(ax, ay, bx, by) -> Tuple[Tensor, Tensor, Tensor]:
    """(P, 16) points and flags of ``intersection(a[i+1], a[i], b[j+1], b[j])``, i-major."""
    nxt = [1, 2, 3, 0]
    p0x, p0y = ax[:, :, None], ay[:, :, None]
    p1x, p1y = ax[:, nxt, None], ay[:, nxt, None]
    q0x, q0y = bx[:, None, :], by[:, None, :]
    q1x, q1y = bx[:, None, nxt], by[:, None, nxt]
    rect = ((torch.minimum(p0x, p1x) <= torch.maximum(q0x, q1x)) & (torch.minimum(q0x, q1x) <= torch.maximum(p0x, p1x))
            & (torch.minimum(p0y, p1y) <= torch.maximum(q0y, q1y)) & (torch.minimum(q0y, q1y) <= torch.maximum(p0y, p1y)))
    s1 = _cross3(q0x, q0y, p1x, p1y, p0x, p0y)
    s2 = _cross3(p1x, p1y, q1x, q1y, p0x, p0y)
    s3 = _cross3(p0x, p0y, q1x, q1y, q0x, q0y)
    s4 = _cross3(q1x, q1y, p1x, p1y, q0x, q0y)
    flag = rect & (s1 * s2 > 0) & (s3 * s4 > 0)
    s5 = _cross3(q1x, q1y, p1x, p1y, p0x, p0y)
    den = s5 - s1
    ix = (s5 * q0x - s1 * q1x) / den
    iy = (s5 * q0y - s1 * q1y) / den
    # near-parallel fallback: intersection of the two lines in general form
    a0, b0, c0 = p0y - p1y, p1x - p0x, p0x * p1y - p1x * p0y
    a1, b1, c1 = q0y - q1y, q1x - q0x, q0x * q1y - q1x * q0y
    d = a0 * b1 - a1 * b0
    far = den.abs() > _EPS
    ix = torch.where(far, ix, (b0 * c1 - b1 * c0) / d)
    iy = torch.where(far, iy, (a1 * c0 - a0 * c1) / d)
    return ix.flatten(1), iy.flatten(1), flag.flatten(1)


def paired_overlap_bev(box_a: Tensor, box_b: Tensor) -> Tensor:
    """(P,) float32 ``box_overlap(box_a[p], box_b[p])`` for (P, 7) float32 boxes."""
    ax, ay = _corners(box_a)
    bx, by = _corners(box_b)
    cx, cy, cflag = _edge_crossings(ax, ay, bx, by)
    b_in_a, a_in_b = _in_box(box_a, bx, by), _in_box(box_b, ax, ay)
    # the kernel's order: 16 crossings, then per k: corner k of b, corner k of a
    px = torch.cat([cx, torch.stack([bx, ax], 2).flatten(1)], 1)
    py = torch.cat([cy, torch.stack([by, ay], 2).flatten(1)], 1)
    valid = torch.cat([cflag, torch.stack([b_in_a, a_in_b], 2).flatten(1)], 1)
    zero = px.new_zeros(())
    px, py = torch.where(valid, px, zero), torch.where(valid, py, zero)
    sx, sy = px.new_zeros(px.size(0)), px.new_zeros(px.size(0))
    for k in range(px.size(1)):  # sequential float sum, as the kernel accumulates poly_center
        sx = sx + px[:, k]
        sy = sy + py[:, k]
    cnt = valid.sum(1)
    cntf = cnt.to(px.dtype)
    mx, my = sx / cntf, sy / cntf
    ang = torch.atan2(py - my[:, None], px - mx[:, None])
    ang = torch.where(valid, ang, torch.full_like(ang, float("inf")))
    order = torch.sort(ang, dim=1, stable=True)[1]  # the kernel's bubble sort is stable
    px, py = px.gather(1, order), py.gather(1, order)
    x0, y0 = px[:, 0], py[:, 0]
    area = px.new_zeros(px.size(0))
    for k in range(px.size(1) - 1):
        ux, uy = px[:, k] - x0, py[:, k] - y0
        vx, vy = px[:, k + 1] - x0, py[:, k + 1] - y0
        term = ux * vy - uy * vx
        area = area + torch.where(k + 1 < cnt, term, zero)
    return area.abs() / 2.0


def _meeting(rows: Tensor, cols: Tensor) -> Tensor:
    """(R, C) bool: pairs whose margin-grown circumscribed circles meet, or with a non-finite box.
    Other pairs have no crossing and no corner within MARGIN of the other box, so overlap 0."""
    def radius(b):
        return torch.sqrt((b[:, 3].abs() / 2 + _MARGIN) ** 2 + (b[:, 4].abs() / 2 + _MARGIN) ** 2)
    r = (radius(rows)[:, None] + radius(cols)[None, :]) * (1 + 1e-4) + 1e-5
    dx = rows[:, None, 0] - cols[None, :, 0]
    dy = rows[:, None, 1] - cols[None, :, 1]
    return ~(dx * dx + dy * dy > r * r)  # NaN distances or radii stay candidates


def _pairs_overlap(a: Tensor, b: Tensor, i: Tensor, j: Tensor) -> Tensor:
    out = a.new_empty(i.numel())
    for s in range(0, i.numel(), _PAIR_CHUNK):
        out[s:s + _PAIR_CHUNK] = paired_overlap_bev(a[i[s:s + _PAIR_CHUNK]], b[j[s:s + _PAIR_CHUNK]])
    return out


def overlap_bev_matrix(boxes_a: Tensor, boxes_b: Tensor) -> Tensor:
    """(M, N) float32 BEV overlap areas of (M, 7) and (N, 7) boxes, the kernel's arithmetic."""
    a, b = boxes_a.float().contiguous(), boxes_b.float().contiguous()
    out = a.new_zeros((a.size(0), b.size(0)))
    if out.numel() == 0:
        return out
    for s in range(0, a.size(0), _ROW_CHUNK):
        i, j = _meeting(a[s:s + _ROW_CHUNK], b).nonzero().unbind(1)
        if i.numel():
            out[i + s, j] = _pairs_overlap(a, b, i + s, j)
    return out


def _iou_bev_pairs(boxes: Tensor, i: Tensor, j: Tensor) -> Tensor:
    """(P,) ``iou_bev(boxes[i], boxes[j])`` in float32."""
    ov = _pairs_overlap(boxes, boxes, i, j)
    sa = boxes[i, 3] * boxes[i, 4]
    sb = boxes[j, 3] * boxes[j, 4]
    return ov / torch.fmax(sa + sb - ov, ov.new_tensor(_EPS))


def _iou_normal_rows(rows: Tensor, cols: Tensor) -> Tensor:
    """(R, C) ``iou_normal`` (headings ignored) in float32, fmaxf/fminf NaN rules."""
    a, b = rows[:, None, :], cols[None, :, :]
    left = torch.fmax(a[..., 0] - a[..., 3] / 2, b[..., 0] - b[..., 3] / 2)
    right = torch.fmin(a[..., 0] + a[..., 3] / 2, b[..., 0] + b[..., 3] / 2)
    top = torch.fmax(a[..., 1] - a[..., 4] / 2, b[..., 1] - b[..., 4] / 2)
    bottom = torch.fmin(a[..., 1] + a[..., 4] / 2, b[..., 1] + b[..., 4] / 2)
    zero = rows.new_zeros(())
    inter = torch.fmax(right - left, zero) * torch.fmax(bottom - top, zero)
    union = a[..., 3] * a[..., 4] + b[..., 3] * b[..., 4] - inter
    return inter / torch.fmax(union, rows.new_tensor(_EPS))


def _suppression_edges(boxes: Tensor, thresh: float, normal: bool) -> Tuple[Tensor, Tensor]:
    """``(src, dst)``, src < dst, where ``iou(boxes[src], boxes[dst]) > thresh`` (kernel rule)."""
    n = boxes.size(0)
    srcs, dsts = [], []
    for s in range(0, n, _ROW_CHUNK):
        rows = boxes[s:s + _ROW_CHUNK]
        later = torch.arange(n, device=boxes.device)[None, :] > torch.arange(s, s + rows.size(0),
                                                                             device=boxes.device)[:, None]
        if normal:
            i, j = ((_iou_normal_rows(rows, boxes) > thresh) & later).nonzero().unbind(1)
            srcs.append(i + s)
            dsts.append(j)
            continue
        # below a zero threshold a pair of far-apart boxes (IoU 0) suppresses too
        cand = later if thresh < 0 else later & _meeting(rows, boxes)
        i, j = cand.nonzero().unbind(1)
        hit = _iou_bev_pairs(boxes, i + s, j) > thresh
        srcs.append(i[hit] + s)
        dsts.append(j[hit])
    if not srcs:
        empty = torch.empty(0, dtype=torch.long, device=boxes.device)
        return empty, empty
    return torch.cat(srcs), torch.cat(dsts)


def nms3d_keep(boxes: Tensor, thresh: float, normal: bool = False) -> Tensor:
    """(K,) long positions kept by the kernels' greedy NMS over (N, 7) boxes in visiting order."""
    from .nms import resolve_greedy

    boxes = boxes.float().contiguous()
    src, dst = _suppression_edges(boxes, _f32(thresh), normal)
    return resolve_greedy(boxes.size(0), src, dst).nonzero().squeeze(1)


# --- public API --------------------------------------------------------------------------------------


def boxes_overlap_bev(boxes_a: Tensor, boxes_b: Tensor) -> Tensor:
    """BEV overlap areas: (M, 7) and (N, 7) boxes ``[x, y, z, dx, dy, dz, heading]`` -> (M, N)."""
    _check_boxes("boxes_overlap_bev", "boxes_a", boxes_a)
    _check_boxes("boxes_overlap_bev", "boxes_b", boxes_b)
    if boxes_a.device != boxes_b.device:
        raise ValueError(f"boxes_overlap_bev: boxes_a and boxes_b must be on one device, "
                         f"got {boxes_a.device} and {boxes_b.device}")
    return overlap_bev_matrix(boxes_a, boxes_b).to(boxes_a.dtype)


def boxes_iou3d(boxes_a: Tensor, boxes_b: Tensor) -> Tensor:
    """3D IoU: BEV overlap times height overlap over the union volume, (M, 7) x (N, 7) -> (M, N)."""
    overlaps_bev = boxes_overlap_bev(boxes_a, boxes_b)
    a_max = (boxes_a[:, 2] + boxes_a[:, 5] / 2).view(-1, 1)
    a_min = (boxes_a[:, 2] - boxes_a[:, 5] / 2).view(-1, 1)
    b_max = (boxes_b[:, 2] + boxes_b[:, 5] / 2).view(1, -1)
    b_min = (boxes_b[:, 2] - boxes_b[:, 5] / 2).view(1, -1)
    overlaps_h = torch.clamp(torch.min(a_max, b_max) - torch.max(a_min, b_min), min=0)
    overlaps_3d = overlaps_bev * overlaps_h
    vol_a = (boxes_a[:, 3] * boxes_a[:, 4] * boxes_a[:, 5]).view(-1, 1)
    vol_b = (boxes_b[:, 3] * boxes_b[:, 4] * boxes_b[:, 5]).view(1, -1)
    return overlaps_3d / torch.clamp(vol_a + vol_b - overlaps_3d, min=1e-6)


def _nms3d(op: str, boxes: Tensor, scores: Tensor, iou_threshold: float, normal: bool) -> Tensor:
    _check_boxes(op, "boxes", boxes)
    _check_scores(op, boxes, scores)
    order = scores.sort(0, descending=True)[1]
    return order[nms3d_keep(boxes[order], float(iou_threshold), normal)].contiguous()


def nms3d(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Rotated BEV NMS of (N, 7) boxes: (K,) long indices of the kept boxes, by descending score."""
    return _nms3d("nms3d", boxes, scores, iou_threshold, normal=False)


def nms3d_normal(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """BEV NMS of (N, 7) boxes with headings ignored: (K,) long indices, by descending score."""
    return _nms3d("nms3d_normal", boxes, scores, iou_threshold, normal=True)


def _xyxyr2xywhr(boxes: Tensor) -> Tensor:
    """(N, 5) ``[x1, y1, x2, y2, heading]`` -> (N, 5) ``[x, y, dx, dy, heading]`` (deprecated)."""
    warnings.warn('This function is deprecated and will be removed in the future.', DeprecationWarning)
    return torch.stack(((boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2,
                        boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1], boxes[:, 4]), dim=-1)


def boxes_iou_bev(boxes_a: Tensor, boxes_b: Tensor) -> Tensor:
    """(M, N) rotated IoU of (M, 5) and (N, 5) ``[x1, y1, x2, y2, ry]`` boxes via box_iou_rotated."""
    from .box_iou_rotated import box_iou_rotated

    _check_boxes("boxes_iou_bev", "boxes_a", boxes_a, 5)
    _check_boxes("boxes_iou_bev", "boxes_b", boxes_b, 5)
    warnings.warn('`iou3d.boxes_iou_bev` is deprecated and will be removed in'
                  ' the future. Please, use `box_iou_rotated.box_iou_rotated`.', DeprecationWarning)
    return box_iou_rotated(_xyxyr2xywhr(boxes_a), _xyxyr2xywhr(boxes_b))


def nms_bev(boxes: Tensor, scores: Tensor, thresh: float, pre_max_size: Optional[int] = None,
            post_max_size: Optional[int] = None) -> Tensor:
    """Rotated NMS of (N, 5) ``[x1, y1, x2, y2, ry]`` boxes via nms_rotated (IoU >= thresh suppresses)."""
    from .nms import nms_rotated

    warnings.warn('`iou3d.nms_bev` is deprecated and will be removed in'
                  ' the future. Please, use `nms.nms_rotated`.', DeprecationWarning)
    _check_boxes("nms_bev", "boxes", boxes, 5)
    _check_scores("nms_bev", boxes, scores)
    order = scores.sort(0, descending=True)[1]
    if pre_max_size is not None:
        order = order[:pre_max_size]
    boxes = _xyxyr2xywhr(boxes)[order]
    scores = scores[order]
    keep = nms_rotated(boxes, scores, thresh)[1]
    if keep is None:  # nms_rotated returns (dets, None) for no boxes
        keep = order.new_empty(0)
    keep = order[keep]
    if post_max_size is not None:
        keep = keep[:post_max_size]
    return keep


def nms_normal_bev(boxes: Tensor, scores: Tensor, thresh: float) -> Tensor:
    """Axis-aligned NMS of (N, 5) ``[x1, y1, x2, y2, ry]`` boxes via nms (heading dropped)."""
    from .nms import nms

    warnings.warn('`iou3d.nms_normal_bev` is deprecated and will be removed in'
                  ' the future. Please, use `nms.nms`.', DeprecationWarning)
    _check_boxes("nms_normal_bev", "boxes", boxes, 5)
    return nms(boxes[:, :-1], scores, thresh)[1]


registry.register(registry.OpEntry(
    op="iou3d",
    names=("boxes_iou3d", "boxes_iou_bev", "boxes_overlap_bev", "nms3d", "nms3d_normal", "nms_bev",
           "nms_normal_bev"),
    ext_functions=("iou3d_boxes_overlap_bev_forward", "iou3d_nms3d_forward", "iou3d_nms3d_normal_forward"),
    backward="n/a",
    devices=("any",),
))
