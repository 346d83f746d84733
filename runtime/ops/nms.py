"""``mmcv.ops.nms``: non-maximum suppression of axis-aligned boxes, soft-NMS, NMS match, batched NMS.

Semantics follow mmcv's CPU kernels: boxes are visited in ``scores.sort(descending=True)`` order
(the same call, so score ties resolve the same way as mmcv on the same device and torch version),
IoUs use the kernels' float arithmetic, ``nms`` suppresses at ``iou > iou_threshold`` and
``nms_match`` at ``iou >= iou_threshold``. mmcv's CUDA ``nms`` tests ``inter > thr * union``
instead, which differs only for IoUs exactly at the threshold.

Speed: with a threshold that only overlapping boxes can pass (the usual case), greedy NMS looks
only at overlapping pairs: a sort-and-sweep on x lists the pairs whose x-ranges meet, the exact
IoU is computed for those alone, and the greedy order is resolved on the resulting sparse
suppression graph by a fixed-point iteration (as many steps as its longest suppression chain). Other
thresholds use dense blocks of the score order, each tested against every box kept so far.
"""

from __future__ import annotations

import heapq
from array import array
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor

from .. import registry
from ._checks import (check_boxes, check_choice, check_same_device, check_scores, compute_dtype, renamed_kwargs,
                      to_tensor)
from .bbox import box_areas, pairwise_iou, pairwise_overlap

try:  # only for the type alias mmcv exposes; numpy is optional for the runtime
    import numpy as _np

    array_like_type = Union[Tensor, _np.ndarray]
except ImportError:  # pragma: no cover
    array_like_type = Tensor  # type: ignore[misc]

_BLOCK = 256  # boxes resolved together; a (kept x 256) and a (256 x 256) IoU matrix per block
_KEPT_CHUNK = 4096  # kept boxes tested against a block at a time, to bound memory


# --- the greedy core ------------------------------------------------------------------------


def _suppressed_by(kept: Tensor, kept_areas: Tensor, block: Tensor, block_areas: Tensor, threshold: float,
                   offset: int, inclusive: bool) -> Tensor:
    """(B,) bool: block boxes whose IoU with any kept box passes the threshold."""
    hit = torch.zeros(block.size(0), dtype=torch.bool, device=block.device)
    for start in range(0, kept.size(0), _KEPT_CHUNK):
        iou = pairwise_iou(kept[start:start + _KEPT_CHUNK], block, offset,
                           areas1=kept_areas[start:start + _KEPT_CHUNK], areas2=block_areas)
        hit |= ((iou >= threshold) if inclusive else (iou > threshold)).any(0)
    return hit


def greedy_keep(boxes: Tensor, threshold: float, offset: int = 0, inclusive: bool = False) -> Tensor:
    """(N,) keep mask of greedy NMS over (N, 4) boxes in visiting order, by dense blocks (any threshold)."""
    n = boxes.size(0)
    keep = torch.zeros(n, dtype=torch.bool, device=boxes.device)
    if n == 0:
        return keep
    areas = box_areas(boxes, offset)
    kept_boxes = boxes.new_empty((n, boxes.size(1)))
    kept_areas = areas.new_empty(n)
    n_kept = 0
    for start in range(0, n, _BLOCK):
        block, block_areas = boxes[start:start + _BLOCK], areas[start:start + _BLOCK]
        alive = torch.ones(block.size(0), dtype=torch.bool, device=boxes.device)
        if n_kept:
            alive &= ~_suppressed_by(kept_boxes[:n_kept], kept_areas[:n_kept], block, block_areas,
                                     threshold, offset, inclusive)
        inner = pairwise_iou(block, block, offset, areas1=block_areas, areas2=block_areas)
        beats = ((inner >= threshold) if inclusive else (inner > threshold)).triu_(1)
        # Fixed point of keep[j] = alive[j] and no kept i < j beats j (the greedy answer).
        current = alive
        while True:
            update = alive & ~(beats & current[:, None]).any(0)
            if torch.equal(update, current):
                break
            current = update
        keep[start:start + _BLOCK] = current
        count = int(current.sum())
        kept_boxes[n_kept:n_kept + count] = block[current]
        kept_areas[n_kept:n_kept + count] = block_areas[current]
        n_kept += count
    return keep


_PAIR_CHUNK = 1 << 21  # candidate pairs examined at a time, to bound memory


def _sparse_ok(threshold: float, inclusive: bool) -> bool:
    """True when only boxes that overlap with positive area can pass the threshold."""
    return threshold > 0 or (threshold == 0 and not inclusive)


def _strip_height(boxes: Tensor, offset: int) -> Tensor:
    """Height of the horizontal strips the sweep runs in: about two median box heights, and at
    most ~sqrt(N)/2 strips, so that each box touches one or two strips and strips stay full."""
    heights = (boxes[:, 3] - boxes[:, 1] + offset).clamp(min=0)
    span = (boxes[:, 3].max() - boxes[:, 1].min()).clamp(min=1)
    strips = max(1, int(boxes.size(0) ** 0.5 / 2))
    return torch.maximum(2 * heights.median(), span / strips).clamp(min=1e-6)


def suppression_edges(boxes: Tensor, threshold: float, offset: int = 0,
                      inclusive: bool = False) -> Tuple[Tensor, Tensor]:
    """``(src, dst)`` pairs, src < dst in visiting order, whose IoU passes the threshold.

    Only overlapping pairs are examined (:func:`overlapping_pairs`); see :func:`_sparse_ok` for
    when skipping the others is exact.
    """
    a, b, iou = overlapping_pairs(boxes, offset)
    passed = ((iou >= threshold) if inclusive else (iou > threshold)).nonzero().squeeze(1)
    a, b = a[passed], b[passed]
    return torch.minimum(a, b), torch.maximum(a, b)


def overlapping_pairs(boxes: Tensor, offset: int = 0) -> Tuple[Tensor, Tensor, Tensor]:
    """``(a, b, iou)`` for every pair of boxes whose intersection has a positive height, IoU in the
    kernels' arithmetic.

    Boxes are cut into horizontal strips, and inside each strip a sort on x1 plus a binary search
    for each box's right edge lists the boxes whose x-ranges meet; a pair is examined in the strip
    holding the top of its intersection only. Boxes with a NaN or infinite coordinate are left out.
    """
    n = boxes.size(0)
    device = boxes.device
    empty = torch.empty(0, dtype=torch.long, device=device)
    finite = torch.isfinite(boxes).all(1)
    if not bool(finite.all()):  # NaN/inf boxes never pass a threshold an overlap must pass
        a, b, iou = overlapping_pairs(boxes[finite], offset)
        index = finite.nonzero().squeeze(1)
        return index[a], index[b], iou
    if n < 2:
        return empty, empty, boxes.new_empty(0)
    columns = boxes.t().contiguous()
    x1, y1, x2, y2 = columns
    areas = box_areas(boxes, offset)
    strip = _strip_height(boxes, offset)
    top = y1.min()
    first_strip = ((y1 - top) / strip).floor().long()
    last_strip = torch.maximum(((y2 + offset - top) / strip).floor().long(), first_strip)
    span = last_strip - first_strip + 1
    # one registration per (box, strip it touches)
    reg_box = torch.repeat_interleave(torch.arange(n, device=device), span)
    reg_strip = torch.repeat_interleave(first_strip, span)
    reg_strip += torch.arange(reg_box.numel(), device=device) - torch.repeat_interleave(torch.cumsum(span, 0) - span, span)
    x_sorted, by_x = x1.sort()
    rank = torch.empty_like(by_x)
    rank[by_x] = torch.arange(n, device=device)
    key, order = (reg_strip * (n + 1) + rank[reg_box]).sort()
    reg_box, reg_strip = reg_box[order], reg_strip[order]
    right_edge = torch.searchsorted(x_sorted, (x2 + offset if offset else x2)[reg_box], right=False)
    ends = torch.searchsorted(key, reg_strip * (n + 1) + right_edge, right=False)
    counts = (ends - torch.arange(1, key.numel() + 1, device=device)).clamp_(min=0)
    firsts = torch.cumsum(counts, 0) - counts
    total = int(counts.sum())
    a_parts, b_parts, iou_parts = [], [], []
    if total:
        cuts = torch.searchsorted(firsts, torch.arange(0, total, _PAIR_CHUNK, device=device), right=True) - 1
        bounds = cuts.tolist() + [key.numel()]
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            if hi <= lo:
                continue
            c = counts[lo:hi]
            left = torch.repeat_interleave(torch.arange(lo, hi, device=device), c)
            right = torch.arange(int(firsts[lo]), int(firsts[lo]) + left.numel(), device=device)
            right += torch.repeat_interleave(torch.arange(lo + 1, hi + 1, device=device) - firsts[lo:hi], c)
            a, b, where = reg_box.index_select(0, left), reg_box.index_select(0, right), reg_strip.index_select(0, left)
            # one gather per side from the (4, n) coordinate rows keeps every operand contiguous
            pair_a, pair_b = columns.index_select(1, a), columns.index_select(1, b)
            lo_corner = torch.maximum(pair_a[:2], pair_b[:2])
            wh = torch.minimum(pair_a[2:], pair_b[2:]) - lo_corner
            if offset:
                wh += offset
            meet = ((wh[1] > 0) & (((lo_corner[1] - top) / strip).floor().long() == where)).nonzero().squeeze(1)
            a, b, wh = a[meet], b[meet], wh[:, meet]
            inter = wh[0].clamp_(min=0) * wh[1]
            a_parts.append(a)
            b_parts.append(b)
            iou_parts.append(inter / (areas[a] + areas[b] - inter))
    if not a_parts:
        return empty, empty, boxes.new_empty(0)
    return torch.cat(a_parts), torch.cat(b_parts), torch.cat(iou_parts)


def resolve_greedy(n: int, src: Tensor, dst: Tensor) -> Tensor:
    """(n,) keep mask: keep[j] iff no kept i < j has an edge i -> j (the greedy answer).

    Iterating ``keep = not any(kept source)`` from all-kept settles one more level of the
    suppression graph per step, so it stops after (longest chain + 1) steps.
    """
    keep = torch.ones(n, dtype=torch.bool, device=src.device)
    while src.numel():
        suppressed = torch.zeros(n, dtype=torch.bool, device=src.device)
        suppressed[dst[keep[src]]] = True
        update = ~suppressed
        if torch.equal(update, keep):
            break
        keep = update
    return keep


def nms_keep(boxes: Tensor, threshold: float, offset: int = 0, inclusive: bool = False) -> Tensor:
    """(N,) keep mask of greedy NMS over (N, 4) boxes already in visiting order."""
    if _sparse_ok(threshold, inclusive):
        src, dst = suppression_edges(boxes, threshold, offset, inclusive)
        return resolve_greedy(boxes.size(0), src, dst)
    return greedy_keep(boxes, threshold, offset, inclusive)


def nms_indices(boxes: Tensor, scores: Tensor, iou_threshold: float, offset: int = 0) -> Tensor:
    """Indices of the boxes NMS keeps, in descending score order (the ``_ext.nms`` contract)."""
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    order = scores.sort(0, descending=True)[1]
    keep = nms_keep(_compute_dtype(boxes[order, :4]).contiguous(), float(iou_threshold), offset)
    return order[keep]


def _compute_dtype(boxes: Tensor) -> Tensor:
    """Half-precision boxes are compared in float32 (IoUs of fp16 boxes lose too much)."""
    return boxes.to(compute_dtype(boxes.dtype))


# --- soft-NMS ---------------------------------------------------------------------------------

_SOFT_METHODS = {"naive": 0, "linear": 1, "gaussian": 2}


def _first_max(window: Tensor) -> int:
    """The kernel's scan ``if (max_score < sc[pos])`` from ``window[0]``: the first maximum,
    NaN scores never win (every comparison with NaN is false), and a NaN in front stays put."""
    if bool(torch.isnan(window[0])):
        return 0
    return int(torch.argmax(torch.nan_to_num(window, nan=float("-inf"))))


def soft_nms_core(boxes: Tensor, scores: Tensor, iou_threshold: float, sigma: float, min_score: float,
                  method: int, offset: int) -> Tuple[Tensor, Tensor]:
    """``(dets (K, 5), inds (K,))`` of soft-NMS, exactly as mmcv's CPU kernel computes them."""
    fast = _soft_nms_sparse(boxes, scores, iou_threshold, sigma, min_score, method, offset)
    if fast is not None:
        return fast
    return _soft_nms_dense(boxes, scores, iou_threshold, sigma, min_score, method, offset)


def _soft_nms_sparse(boxes: Tensor, scores: Tensor, iou_threshold: float, sigma: float, min_score: float,
                     method: int, offset: int) -> Optional[Tuple[Tensor, Tensor]]:
    """The kernel's loop replayed on the overlapping pairs only; None where that is not exact.

    For boxes of positive area an IoU of 0 gives weight exactly 1 (gaussian and linear; naive with
    a positive threshold), so a pick changes only the scores of boxes it overlaps. The kernel's
    working order (swap the pick to the front, fill dropped slots from the back) decides ties, so
    it is kept as positions, and the next pick is the heap's first ``(highest score, lowest
    position)`` entry that is still current.
    """
    if method == 0 and not iou_threshold > 0:
        return None
    work = _compute_dtype(boxes[:, :4]).detach().cpu()
    score = scores.detach().cpu().to(work.dtype)
    n = work.size(0)
    if (n < 2 or not bool(torch.isfinite(work).all()) or not bool(torch.isfinite(score).all())
            or not bool((box_areas(work, offset) > 0).all())):
        return None
    a, b, ovr = overlapping_pairs(work, offset)
    if method == 0:
        weight = (~(ovr >= iou_threshold)).to(ovr.dtype)
    elif method == 1:
        weight = torch.where(ovr >= iou_threshold, 1 - ovr, torch.ones_like(ovr))
    else:
        weight = torch.exp(-(ovr * ovr) / sigma)
    moved = (weight != 1).nonzero().squeeze(1)
    # each box's moved neighbours, as a CSR list: neighbours of k are other[start[k]:start[k + 1]]
    src = torch.cat([a[moved], b[moved]])
    order = src.argsort(stable=True)
    other = torch.cat([b[moved], a[moved]])[order].tolist()
    factor = weight[moved].repeat(2)[order].tolist()
    degree = torch.bincount(src, minlength=n)
    start = [0] + degree.cumsum(0).tolist()
    # array('f') stores every value rounded to float32, as the kernel's ``float`` scores are (the
    # product of two float32 values is exact in a Python float, so rounding it once is exact too).
    typecode = "d" if work.dtype == torch.float64 else "f"
    floor = array(typecode, [min_score])[0]
    picked = _soft_nms_untied(score, degree, start, other, factor, floor, typecode)
    if picked is None:
        neighbours = [list(zip(other[start[k]:start[k + 1]], factor[start[k]:start[k + 1]])) for k in range(n)]
        picks, pick_scores = _replay_soft_nms(array(typecode, score.tolist()), neighbours, floor)
        picked = torch.tensor(picks, dtype=torch.long), torch.tensor(pick_scores, dtype=work.dtype)
    index, pick_score = picked
    dets = torch.cat([work[index], pick_score[:, None]], 1)
    return dets.to(device=boxes.device, dtype=boxes.dtype), index.to(boxes.device)


def _soft_nms_untied(score: Tensor, degree: Tensor, start: List[int], other: List[int], factor: List[float],
                     min_score: float, typecode: str) -> Optional[Tuple[Tensor, Tensor]]:
    """Soft-NMS picks ``(index, score at pick)`` while no two live boxes share the top score; None
    if they ever may (then the kernel's working order decides, see :func:`_replay_soft_nms`).

    Without a tie for the top, each pick is simply the highest current score, whatever the kernel's
    working order, and scores only ever fall. So a box under ``min_score`` at the start is never
    picked (the kernel's first pass drops it), a box overlapping nobody keeps its score and is
    merged in by it, and only the others are replayed, on a heap with lazy deletion.
    """
    if not bool(score.max() >= min_score):
        return None  # the kernel still outputs its first pick then; rare, left to the full replay
    live = score >= min_score
    isolated = ((degree == 0) & live).nonzero().squeeze(1)
    linked = ((degree > 0) & live).nonzero().squeeze(1)
    sc = array(typecode, score.tolist())
    dead = (~live).tolist()
    heap = sorted(zip((-score[linked]).tolist(), linked.tolist()))  # a sorted list is a heap
    held = {-neg for neg, _ in heap}  # every score a linked box holds while live
    picked, picked_scores = [], []
    pop, push = heapq.heappop, heapq.heappush
    while heap:
        neg, box = pop(heap)
        if dead[box] or neg != -sc[box]:
            continue  # a stale entry: the box was picked, dropped or decayed since
        if heap and heap[0][0] == neg:
            return None  # a tie for the top (or a stale twin of it)
        dead[box] = True
        picked.append(box)
        picked_scores.append(sc[box])
        for k in range(start[box], start[box + 1]):
            j = other[k]
            if not dead[j]:
                sc[j] = sc[j] * factor[k]
                if sc[j] < min_score:
                    dead[j] = True
                else:
                    push(heap, (-sc[j], j))
                    held.add(sc[j])
    alone = score[isolated]
    if not held.isdisjoint(alone.tolist()):
        return None  # an isolated box ties with a linked one at some point
    index = torch.cat([torch.tensor(picked, dtype=torch.long), isolated])
    pick_score = torch.cat([torch.tensor(picked_scores, dtype=score.dtype), alone])
    pick_score, order = pick_score.sort(descending=True, stable=True)
    if bool((pick_score[1:] == pick_score[:-1]).any()):
        return None  # two isolated boxes tie
    return index[order], pick_score


def _replay_soft_nms(sc, neighbours: List[List[Tuple[int, float]]],
                     min_score: float) -> Tuple[List[int], List[float]]:
    """The kernel's picks with its working order kept as positions, so that ties resolve as there:
    the next pick is the heap's first ``(highest score, lowest position)`` entry still current."""
    n = len(sc)
    arr = list(range(n))  # working order: arr[position] = box
    where = list(range(n))  # where[box] = position
    alive = [True] * n
    heap = [(-sc[k], k, k) for k in range(n)]
    heapq.heapify(heap)
    picked, picked_scores = [], []
    count, i = n, 0
    pop, push = heapq.heappop, heapq.heappush
    while i < count:
        while True:  # the first current entry: highest score, then lowest position
            neg, position, box = pop(heap)
            if alive[box] and where[box] == position and -neg == sc[box]:
                break
        if position != i:  # swap the pick to the front of the working order
            other = arr[i]
            arr[i], arr[position] = box, other
            where[box], where[other] = i, position
            push(heap, (-sc[other], position, other))
        alive[box] = False
        picked.append(box)
        picked_scores.append(sc[box])
        touched = []
        for other, weight in neighbours[box]:
            if alive[other]:
                sc[other] = sc[other] * weight
                touched.append(other)
        if i == 0:  # the first pass checks every box against min_score
            dropped = [arr[p] for p in range(1, count) if sc[arr[p]] < min_score]
        else:
            dropped = [other for other in touched if sc[other] < min_score]
        if dropped:
            dropped_positions = sorted(where[d] for d in dropped)
            limit = count - len(dropped_positions)
            gone = set(dropped_positions)
            holes = [p for p in dropped_positions if p < limit]
            back = [p for p in range(count - 1, limit - 1, -1) if p not in gone]
            for d in dropped:
                alive[d] = False
            for hole, source in zip(holes, back):  # fill the front slots from the back, last first
                mover = arr[source]
                arr[hole] = mover
                where[mover] = hole
                touched.append(mover)
            count = limit
        for other in touched:
            if alive[other]:
                push(heap, (-sc[other], where[other], other))
        i += 1
    return picked, picked_scores


def _soft_nms_dense(boxes: Tensor, scores: Tensor, iou_threshold: float, sigma: float, min_score: float,
                    method: int, offset: int) -> Tuple[Tensor, Tensor]:
    """Soft-NMS reproducing mmcv's CPU kernel step for step (any input, also degenerate boxes).

    The kernel picks the highest remaining score (the first one in its working order), decays the
    others by their overlap with it, and drops a box falling under ``min_score`` by moving the last
    box into its slot. The working order matters for ties, so it is reproduced exactly; the decay
    of all remaining boxes is one vectorised step per picked box.
    """
    n = boxes.size(0)
    box = _compute_dtype(boxes[:, :4]).clone()
    score = scores.to(box.dtype).clone()
    area = box_areas(box, offset)
    index = torch.arange(n, device=boxes.device)
    dets = boxes.new_empty((n, 5))
    count = n
    for i in range(n):
        if i >= count:
            break
        best = i + _first_max(score[i:count])
        if best != i:
            for t in (box, score, area, index):
                t[[i, best]] = t[[best, i]]
        dets[i, :4], dets[i, 4] = box[i], score[i]
        rest = slice(i + 1, count)
        if i + 1 >= count:
            continue
        inter = pairwise_overlap(box[i:i + 1], box[rest], offset)[0]
        ovr = inter / (area[i] + area[rest] - inter)
        if method == 0:  # the kernel's ``ovr >= thr`` is false for NaN: such boxes keep their score
            weight = (~(ovr >= iou_threshold)).to(score.dtype)
        elif method == 1:
            weight = torch.where(ovr >= iou_threshold, 1 - ovr, torch.ones_like(ovr))
        else:
            weight = torch.exp(-(ovr * ovr) / sigma)
        score[rest] *= weight
        dropped = score[rest] < min_score
        if bool(dropped.any()):
            # Replay the kernel's swap-with-last compaction: survivors keep their slot, holes are
            # filled by the survivors from the back, last first.
            survivors = (~dropped).nonzero().squeeze(1)
            m = survivors.numel()
            front = survivors[survivors < m]
            holes = torch.ones(m, dtype=torch.bool, device=boxes.device)
            holes[front] = False
            back = survivors[survivors >= m].flip(0)
            slots = torch.empty(m, dtype=torch.long, device=boxes.device)
            slots[front] = front
            slots[holes.nonzero().squeeze(1)] = back
            slots += i + 1
            for t in (box, score, area, index):
                t[i + 1:i + 1 + m] = t[slots].clone()
            count = i + 1 + m
    return dets[:count], index[:count]


# --- autograd Functions (mmcv's names; NMS has no gradient) -----------------------------------


class NMSop(torch.autograd.Function):
    """mmcv's ``NMSop``: score filtering, NMS, ``max_num`` truncation; returns kept indices."""

    @staticmethod
    def forward(ctx: Any, bboxes: Tensor, scores: Tensor, iou_threshold: float, offset: int,
                score_threshold: float, max_num: int) -> Tensor:
        valid = None
        if score_threshold > 0:
            mask = scores > score_threshold
            bboxes, scores = bboxes[mask], scores[mask]
            valid = mask.nonzero().squeeze(1)
        inds = nms_indices(bboxes, scores, iou_threshold, offset)
        if max_num > 0:
            inds = inds[:max_num]
        return valid[inds] if valid is not None else inds


class SoftNMSop(torch.autograd.Function):
    """mmcv's ``SoftNMSop``: returns ``(dets, inds)`` with dets padded to N rows like mmcv's."""

    @staticmethod
    def forward(ctx: Any, boxes: Tensor, scores: Tensor, iou_threshold: float, sigma: float,
                min_score: float, method: int, offset: int) -> Tuple[Tensor, Tensor]:
        kept, inds = soft_nms_core(boxes, scores, float(iou_threshold), float(sigma), float(min_score),
                                   int(method), int(offset))
        dets = boxes.new_zeros((boxes.size(0), 5))
        dets[:kept.size(0)] = kept
        return dets, inds


# --- public API -------------------------------------------------------------------------------


def _inputs(op: str, boxes, scores, offset: int) -> Tuple[Tensor, Tensor, bool]:
    boxes, boxes_numpy = to_tensor(op, "boxes", boxes)
    scores, _ = to_tensor(op, "scores", scores)
    check_boxes(op, "boxes", boxes, 4)
    check_scores(op, "scores", scores, boxes.size(0))
    check_same_device(op, boxes=boxes, scores=scores)
    check_choice(op, "offset", offset, (0, 1))
    return boxes, scores.to(boxes.dtype), boxes_numpy


@renamed_kwargs({"iou_thr": "iou_threshold"})
def nms(boxes: array_like_type, scores: array_like_type, iou_threshold: float, offset: int = 0,
        score_threshold: float = 0, max_num: int = -1) -> Tuple[array_like_type, array_like_type]:
    """Greedy NMS: ``(dets (K, 5) = boxes + score column, inds (K,))`` in descending score order.

    Args:
        boxes: (N, 4) ``(x1, y1, x2, y2)``, tensor or numpy array (results then come back as numpy).
        scores: (N,).
        iou_threshold: a box is dropped when its IoU with a kept, higher-scored box exceeds this.
        offset: 0 or 1, added to widths and heights.
        score_threshold: boxes scoring at or below it are dropped first (when > 0).
        max_num: keep at most this many (when > 0).
    """
    boxes, scores, was_numpy = _inputs("nms", boxes, scores, offset)
    inds = NMSop.apply(boxes, scores, iou_threshold, offset, score_threshold, max_num)
    dets = torch.cat((boxes[inds], scores[inds].reshape(-1, 1)), dim=1)
    if was_numpy:
        return dets.cpu().numpy(), inds.cpu().numpy()
    return dets, inds


@renamed_kwargs({"iou_thr": "iou_threshold"})
def soft_nms(boxes: array_like_type, scores: array_like_type, iou_threshold: float = 0.3, sigma: float = 0.5,
             min_score: float = 1e-3, method: str = "linear",
             offset: int = 0) -> Tuple[array_like_type, array_like_type]:
    """Soft-NMS (``method`` ``'naive'``, ``'linear'`` or ``'gaussian'``): ``(dets (K, 5), inds (K,))``.

    ``dets`` holds the decayed scores, in the order the boxes were picked; boxes whose score falls
    under ``min_score`` are dropped. Results are on the input's device (computed where it lives).
    """
    check_choice("soft_nms", "method", method, tuple(_SOFT_METHODS))
    boxes, scores, was_numpy = _inputs("soft_nms", boxes, scores, offset)
    dets, inds = SoftNMSop.apply(boxes, scores, float(iou_threshold), float(sigma), float(min_score),
                                 _SOFT_METHODS[method], int(offset))
    dets = dets[:inds.size(0)]
    if was_numpy:
        return dets.cpu().numpy(), inds.cpu().numpy()
    return dets, inds


# Names an nms_cfg's ``type`` may take (mmcv evaluates the string in its nms module).
def _nms_type(name: str) -> Callable:
    known: Dict[str, Callable] = {"nms": nms, "soft_nms": soft_nms, "nms_rotated": nms_rotated,
                                  "nms_quadri": nms_quadri}
    if name in known:
        return known[name]
    raise ValueError(f"batched_nms: nms_cfg type must be 'nms', 'soft_nms', 'nms_rotated', 'nms_quadri' "
                     f"or a callable, got {name!r}")


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, nms_cfg: Optional[Dict],
                class_agnostic: bool = False) -> Tuple[Tensor, Tensor]:
    """NMS run independently per ``idxs`` value (e.g. class); ``(dets (K, 5|6), keep (K,))`` by score.

    Boxes of different classes are shifted apart so that one NMS call never mixes them (mmcv's
    trick). ``nms_cfg``: ``None`` skips NMS and only sorts; else ``iou_threshold`` and the like,
    ``type`` (``'nms'``, ``'soft_nms'``, ... or a callable), ``class_agnostic`` and ``split_thr``
    (from that many boxes on, NMS runs class by class, bounding memory; default 10000).
    """
    op = "batched_nms"
    for name, value in (("boxes", boxes), ("scores", scores), ("idxs", idxs)):
        if not isinstance(value, Tensor):
            raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(value).__name__}")
    check_boxes(op, "boxes", boxes, (4, 5))
    check_scores(op, "scores", scores, boxes.size(0))
    if idxs.dim() != 1 or idxs.size(0) != boxes.size(0):
        raise ValueError(f"{op}: idxs must have shape ({boxes.size(0)},), got {tuple(idxs.shape)}")
    check_same_device(op, boxes=boxes, scores=scores, idxs=idxs)
    if nms_cfg is None:
        scores, inds = scores.sort(descending=True)
        return torch.cat([boxes[inds], scores[:, None]], -1), inds
    cfg = dict(nms_cfg)
    class_agnostic = cfg.pop("class_agnostic", class_agnostic)
    if class_agnostic:
        boxes_for_nms = boxes
    elif boxes.size(-1) == 5:
        max_coordinate = boxes[..., :2].max() + boxes[..., 2:4].max()
        offsets = idxs.to(boxes) * (max_coordinate + torch.tensor(1).to(boxes))
        boxes_for_nms = torch.cat([boxes[..., :2] + offsets[:, None], boxes[..., 2:5]], dim=-1)
    else:
        max_coordinate = boxes.max() if boxes.numel() else boxes.new_tensor(0)
        offsets = idxs.to(boxes) * (max_coordinate + torch.tensor(1).to(boxes))
        boxes_for_nms = boxes + offsets[:, None]
    nms_op = cfg.pop("type", "nms")
    if isinstance(nms_op, str):
        nms_op = _nms_type(nms_op)
    split_thr = cfg.pop("split_thr", 10000)
    if boxes_for_nms.shape[0] < split_thr:
        dets, keep = nms_op(boxes_for_nms, scores, **cfg)
        boxes = boxes[keep]
        scores = dets[:, -1]
    else:
        max_num = cfg.pop("max_num", -1)
        total_mask = scores.new_zeros(scores.size(), dtype=torch.bool)
        scores_after_nms = scores.new_zeros(scores.size())
        threshold = cfg.get("iou_threshold", cfg.get("iou_thr", 0))
        if (nms_op is nms and not class_agnostic and boxes.size(-1) == 4 and float(threshold) >= 0
                and bool((boxes >= 0).all())):
            # The class offsets keep non-negative boxes of different classes from touching, and
            # NMS only suppresses overlapping boxes, so one call gives every class's answer.
            _, keep = nms(boxes_for_nms, scores, **cfg)
            total_mask[keep] = True
            scores_after_nms[keep] = scores[keep]
        else:
            for cls in torch.unique(idxs):
                mask = (idxs == cls).nonzero().view(-1)
                dets, keep = nms_op(boxes_for_nms[mask], scores[mask], **cfg)
                total_mask[mask[keep]] = True
                scores_after_nms[mask[keep]] = dets[:, -1]
        keep = total_mask.nonzero().view(-1)
        scores, inds = scores_after_nms[keep].sort(descending=True)
        keep = keep[inds]
        boxes = boxes[keep]
        if max_num > 0:
            keep, boxes, scores = keep[:max_num], boxes[:max_num], scores[:max_num]
    return torch.cat([boxes, scores[:, None]], -1), keep


def nms_match_groups(dets: Tensor, iou_threshold: float) -> List[List[int]]:
    """mmcv's ``_ext.nms_match``: per kept box (score order), ``[kept, suppressed...]`` indices."""
    if dets.size(0) == 0:
        return []
    threshold = float(iou_threshold)
    order = dets[:, 4].sort(0, descending=True)[1]
    boxes = _compute_dtype(dets[order, :4]).contiguous()
    n = boxes.size(0)
    if _sparse_ok(threshold, inclusive=True):
        src, dst = suppression_edges(boxes, threshold, 0, inclusive=True)
        keep = resolve_greedy(n, src, dst)
        # A suppressed box belongs to the first kept box (in score order) that reaches the threshold.
        by_kept = keep[src]
        owner = torch.full((n,), n, dtype=torch.long, device=boxes.device)
        owner.scatter_reduce_(0, dst[by_kept], src[by_kept], reduce="amin")
    else:
        keep = greedy_keep(boxes, threshold, offset=0, inclusive=True)
        kept_positions = keep.nonzero().squeeze(1)
        owner = torch.full((n,), n, dtype=torch.long, device=boxes.device)
        dropped = (~keep).nonzero().squeeze(1)
        for start in range(0, dropped.numel(), _KEPT_CHUNK):
            part = dropped[start:start + _KEPT_CHUNK]
            iou = pairwise_iou(boxes[kept_positions], boxes[part], 0)
            owner[part] = kept_positions[(iou >= threshold).to(torch.int8).argmax(0)]
    kept = keep.nonzero().squeeze(1).tolist()
    groups = {position: [index] for position, index in zip(kept, order[keep].tolist())}
    dropped = (~keep).nonzero().squeeze(1)
    for position, member in zip(owner[dropped].tolist(), order[dropped].tolist()):
        groups[position].append(member)
    return [groups[position] for position in kept]


def nms_match(dets: array_like_type, iou_threshold: float) -> List[array_like_type]:
    """Group boxes by NMS: each group is a kept box followed by the boxes it suppressed, score order.

    Args:
        dets: (N, 5) boxes with scores, tensor or numpy array.
        iou_threshold: a box joins the first kept box its IoU reaches (``>=``).

    Returns:
        list of index tensors (or numpy arrays, following the input).
    """
    op = "nms_match"
    tensor, was_numpy = to_tensor(op, "dets", dets)
    if tensor.shape[0] == 0:
        matched: List[List[int]] = []
    else:
        check_boxes(op, "dets", tensor, 5)
        matched = nms_match_groups(tensor.detach(), iou_threshold)
    if was_numpy:
        import numpy as np

        return [np.array(m, dtype=int) for m in matched]
    return [tensor.new_tensor(m, dtype=torch.long) for m in matched]


def _polygon_nms_indices(polygons: Tensor, scores: Tensor, iou_threshold: float, labels: Optional[Tensor],
                         bounds: Callable[[Tensor], Tensor], paired_iou: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """Kept indices of polygon NMS (suppress at IoU >= threshold, within a label), in score order.

    ``bounds`` gives each polygon an axis-aligned rectangle no overlap can leave (infinite where
    none exists); only pairs whose rectangles meet are compared, unless the threshold lets
    non-overlapping pairs pass too.
    """
    if polygons.size(0) == 0:
        return torch.empty(0, dtype=torch.long, device=polygons.device)
    order = scores.sort(0, descending=True)[1]
    polygons = _compute_dtype(polygons[order]).contiguous()
    n = polygons.size(0)
    threshold = float(iou_threshold)
    rects = bounds(polygons)
    if threshold > 0 and bool(torch.isfinite(rects).all()):
        a, b, _ = overlapping_pairs(rects)
        src, dst = torch.minimum(a, b), torch.maximum(a, b)
    else:
        src, dst = torch.triu_indices(n, n, 1, device=polygons.device)
    if labels is not None:
        sorted_labels = labels[order]
        same = (sorted_labels[src] == sorted_labels[dst]).nonzero().squeeze(1)
        src, dst = src[same], dst[same]
    passed = (paired_iou(polygons[src], polygons[dst]) >= threshold).nonzero().squeeze(1)
    return order[resolve_greedy(n, src[passed], dst[passed])]


def _check_polygon_nms(op: str, dets: Tensor, scores: Tensor, labels: Optional[Tensor], width: int) -> bool:
    """Validate the inputs of nms_rotated / nms_quadri; True when ``dets`` is empty."""
    if not isinstance(dets, Tensor) or not isinstance(scores, Tensor):
        raise TypeError(f"{op}: dets and scores must be torch.Tensors")
    if dets.shape[0] == 0:
        return True
    check_boxes(op, "dets", dets, width)
    check_scores(op, "scores", scores, dets.size(0))
    check_same_device(op, dets=dets, scores=scores, labels=labels)
    if labels is not None and (labels.dim() != 1 or labels.size(0) != dets.size(0)):
        raise ValueError(f"{op}: labels must have shape ({dets.size(0)},), got {tuple(labels.shape)}")
    return False


def rotated_nms_indices(dets: Tensor, scores: Tensor, iou_threshold: float,
                        labels: Optional[Tensor] = None) -> Tensor:
    """Kept indices of rotated NMS, score order (see :func:`_polygon_nms_indices`)."""
    from .box_iou_rotated import circle_squares, paired_iou_rotated

    return _polygon_nms_indices(dets[:, :5], scores, iou_threshold, labels, circle_squares, paired_iou_rotated)


def nms_rotated(dets: Tensor, scores: Tensor, iou_threshold: float, labels: Optional[Tensor] = None,
                clockwise: bool = True) -> Tuple[Tensor, Optional[Tensor]]:
    """NMS of rotated boxes ``(x_ctr, y_ctr, w, h, angle)``: ``(dets (K, 6), keep (K,))`` by score.

    A box is dropped when its IoU with a kept, higher-scored box reaches ``iou_threshold``; with
    ``labels`` only boxes of the same label suppress each other (mmcv's CUDA kernel; its CPU kernel
    ignores labels). Empty input returns ``(dets, None)``, as mmcv does.
    """
    if _check_polygon_nms("nms_rotated", dets, scores, labels, 5):
        return dets, None
    boxes = dets if clockwise else dets * dets.new_tensor([1, 1, 1, 1, -1])
    keep = rotated_nms_indices(boxes, scores, iou_threshold, labels)
    return torch.cat((dets[keep], scores[keep].reshape(-1, 1)), dim=1), keep


def quadri_nms_indices(dets: Tensor, scores: Tensor, iou_threshold: float,
                       labels: Optional[Tensor] = None) -> Tensor:
    """Kept indices of quadrilateral NMS, score order (see :func:`_polygon_nms_indices`)."""
    from .box_iou_quadri import bounding_rectangles, paired_iou_quadri

    return _polygon_nms_indices(dets[:, :8], scores, iou_threshold, labels, bounding_rectangles, paired_iou_quadri)


def nms_quadri(dets: Tensor, scores: Tensor, iou_threshold: float,
               labels: Optional[Tensor] = None) -> Tuple[Tensor, Optional[Tensor]]:
    """NMS of quadrilaterals ``(x1, y1, ..., x4, y4)``: ``(dets (K, 9), keep (K,))`` by score.

    Same rules as :func:`nms_rotated` (IoU >= threshold suppresses; ``labels`` keep classes apart,
    as mmcv's CUDA kernel; empty input returns ``(dets, None)``).
    """
    if _check_polygon_nms("nms_quadri", dets, scores, labels, 8):
        return dets, None
    keep = quadri_nms_indices(dets, scores, iou_threshold, labels)
    return torch.cat((dets[keep], scores[keep].reshape(-1, 1)), dim=1), keep


registry.register(registry.OpEntry(
    op="nms",
    names=("NMSop", "SoftNMSop", "array_like_type", "batched_nms", "nms", "nms_match", "nms_quadri",
           "nms_rotated", "soft_nms"),
    ext_functions=("nms", "nms_match", "nms_quadri", "nms_rotated", "softnms"),
    backward="n/a",
    devices=("any",),
))
