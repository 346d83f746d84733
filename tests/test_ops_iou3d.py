"""mmcv.ops.iou3d in the runtime: mmcv's own test values, a scalar float32 transcription of the
CUDA kernel's ``box_overlap`` / ``iou_normal``, greedy NMS against a scalar loop, the deprecated
(N, 5) helpers, bad input, the ``_ext`` adapters and the registry entry."""

from __future__ import annotations

import importlib
import math
import warnings

import numpy as np
import pytest
import torch

iou3d = importlib.import_module("mmcv_runtime.ops.iou3d")
ext = importlib.import_module("mmcv_runtime.ext._iou3d")

F = np.float32
EPS = F(1e-8)
MARGIN = F(1e-2)

# --- scalar float32 transcription of iou3d_cuda_kernel.cuh ----------------------------------------


def _cross(p1, p2, p0):
    return F((p1[0] - p0[0]) * (p2[1] - p0[1]) - (p2[0] - p0[0]) * (p1[1] - p0[1]))


def _intersection(p1, p0, q1, q0):
    if not (min(p0[0], p1[0]) <= max(q0[0], q1[0]) and min(q0[0], q1[0]) <= max(p0[0], p1[0])
            and min(p0[1], p1[1]) <= max(q0[1], q1[1]) and min(q0[1], q1[1]) <= max(p0[1], p1[1])):
        return None
    s1, s2 = _cross(q0, p1, p0), _cross(p1, q1, p0)
    s3, s4 = _cross(p0, q1, q0), _cross(q1, p1, q0)
    if not (s1 * s2 > 0 and s3 * s4 > 0):
        return None
    s5 = _cross(q1, p1, p0)
    if abs(s5 - s1) > EPS:
        return (F((s5 * q0[0] - s1 * q1[0]) / (s5 - s1)), F((s5 * q0[1] - s1 * q1[1]) / (s5 - s1)))
    a0, b0, c0 = p0[1] - p1[1], p1[0] - p0[0], p0[0] * p1[1] - p1[0] * p0[1]
    a1, b1, c1 = q0[1] - q1[1], q1[0] - q0[0], q0[0] * q1[1] - q1[0] * q0[1]
    d = a0 * b1 - a1 * b0
    return (F((b0 * c1 - b1 * c0) / d), F((a1 * c0 - a0 * c1) / d))


def _in_box(box, p):
    c, s = F(np.cos(-box[6])), F(np.sin(-box[6]))
    rx = (p[0] - box[0]) * c + (p[1] - box[1]) * (-s)
    ry = (p[0] - box[0]) * s + (p[1] - box[1]) * c
    return abs(rx) < box[3] / F(2) + MARGIN and abs(ry) < box[4] / F(2) + MARGIN


def _corners(box):
    x, y, dxh, dyh = box[0], box[1], box[3] / F(2), box[4] / F(2)
    c, s = F(np.cos(box[6])), F(np.sin(box[6]))
    out = []
    for px, py in ((x - dxh, y - dyh), (x + dxh, y - dyh), (x + dxh, y + dyh), (x - dxh, y + dyh)):
        out.append((F((px - x) * c - (py - y) * s + x), F((px - x) * s + (py - y) * c + y)))
    return out + [out[0]]


def ref_overlap(box_a, box_b) -> float:
    box_a, box_b = np.asarray(box_a, F), np.asarray(box_b, F)
    ca, cb = _corners(box_a), _corners(box_b)
    pts = []
    for i in range(4):
        for j in range(4):
            p = _intersection(ca[i + 1], ca[i], cb[j + 1], cb[j])
            if p is not None:
                pts.append(p)
    for k in range(4):
        if _in_box(box_a, cb[k]):
            pts.append(cb[k])
        if _in_box(box_b, ca[k]):
            pts.append(ca[k])
    if not pts:
        return 0.0
    sx, sy = F(0), F(0)
    for p in pts:
        sx, sy = F(sx + p[0]), F(sy + p[1])
    mx, my = sx / F(len(pts)), sy / F(len(pts))
    for j in range(len(pts) - 1):  # the kernel's bubble sort by angle
        for i in range(len(pts) - j - 1):
            if math.atan2(pts[i][1] - my, pts[i][0] - mx) > math.atan2(pts[i + 1][1] - my, pts[i + 1][0] - mx):
                pts[i], pts[i + 1] = pts[i + 1], pts[i]
    area = F(0)
    for k in range(len(pts) - 1):
        ux, uy = pts[k][0] - pts[0][0], pts[k][1] - pts[0][1]
        vx, vy = pts[k + 1][0] - pts[0][0], pts[k + 1][1] - pts[0][1]
        area = F(area + (ux * vy - uy * vx))
    return float(abs(area) / F(2))


def ref_iou_bev(a, b) -> float:
    a, b = np.asarray(a, F), np.asarray(b, F)
    ov = F(ref_overlap(a, b))
    return float(ov / max(F(a[3] * a[4] + b[3] * b[4] - ov), EPS))


def ref_iou_normal(a, b) -> float:
    a, b = np.asarray(a, F), np.asarray(b, F)
    left, right = max(a[0] - a[3] / F(2), b[0] - b[3] / F(2)), min(a[0] + a[3] / F(2), b[0] + b[3] / F(2))
    top, bottom = max(a[1] - a[4] / F(2), b[1] - b[4] / F(2)), min(a[1] + a[4] / F(2), b[1] + b[4] / F(2))
    inter = F(max(right - left, F(0)) * max(bottom - top, F(0)))
    return float(inter / max(F(a[3] * a[4] + b[3] * b[4] - inter), EPS))


def ref_nms(boxes, scores, thr, iou_fn):
    order = scores.sort(0, descending=True)[1]
    b = boxes[order].numpy()
    removed = [False] * len(b)
    keep = []
    for i in range(len(b)):
        if removed[i]:
            continue
        keep.append(i)
        for j in range(i + 1, len(b)):
            if iou_fn(b[i], b[j]) > F(thr):
                removed[j] = True
    return order[torch.tensor(keep, dtype=torch.long)]


# --- mmcv's own tests -----------------------------------------------------------------------------

BOXES1 = torch.tensor([[1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 0.0],
                       [2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 0.0],
                       [3.0, 3.0, 3.0, 3.0, 2.0, 2.0, 0.0]])
BOXES2 = torch.tensor([[1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 0.0],
                       [1.0, 1.0, 1.0, 2.0, 2.0, 2.0, np.pi / 2],
                       [1.0, 1.0, 1.0, 2.0, 2.0, 2.0, np.pi / 4]])
NMS_BOXES = torch.tensor([[1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 0.0],
                          [2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 0.0],
                          [3.0, 3.0, 3.0, 3.0, 2.0, 2.0, 0.3],
                          [3.0, 3.0, 3.0, 3.0, 2.0, 2.0, 0.0],
                          [3.0, 3.2, 3.2, 3.0, 2.0, 2.0, 0.3]])
NMS_SCORES = torch.tensor([0.6, 0.9, 0.1, 0.2, 0.15])


def _random_555():
    rng = np.random.RandomState(42)
    boxes = torch.from_numpy(rng.rand(555, 7).astype(np.float32))
    scores = torch.from_numpy(rng.rand(555).astype(np.float32))
    return boxes, scores


def test_boxes_overlap_bev_mmcv():
    expect = torch.tensor([[4.0, 4.0, (8 + 8 * 2 ** 0.5) / (3 + 2 * 2 ** 0.5)], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    out = iou3d.boxes_overlap_bev(BOXES1, BOXES2)
    assert out.dtype == torch.float32 and out.shape == (3, 3)
    torch.testing.assert_close(out, expect, atol=1e-4, rtol=0)
    many = iou3d.boxes_overlap_bev(BOXES1, BOXES2.repeat_interleave(555, 0))
    torch.testing.assert_close(many, expect.repeat_interleave(555, 1), atol=1e-4, rtol=0)


def test_boxes_iou3d_mmcv():
    expect = torch.tensor([[1.0, 1.0, 1.0 / 2 ** 0.5], [1.0 / 15] * 3, [0.0] * 3])
    torch.testing.assert_close(iou3d.boxes_iou3d(BOXES1, BOXES2), expect, atol=1e-4, rtol=0)


@pytest.mark.parametrize("fn,count", [(iou3d.nms3d, 176), (iou3d.nms3d_normal, 148)])
def test_nms3d_mmcv(fn, count):
    inds = fn(NMS_BOXES, NMS_SCORES, iou_threshold=0.3)
    assert inds.dtype == torch.long and inds.tolist() == [1, 0, 3]
    boxes, scores = _random_555()
    assert len(fn(boxes, scores, iou_threshold=0.3)) == count


# --- the kernel's box_overlap on small cases ------------------------------------------------------

SMALL_PAIRS = [
    ("identical", [0, 0, 0, 2, 1, 1, 0.3], [0, 0, 0, 2, 1, 1, 0.3]),
    ("nested", [0, 0, 0, 4, 4, 1, 0.0], [0.5, -0.3, 0, 1, 2, 1, 0.7]),
    ("touching", [0, 0, 0, 2, 2, 1, 0.0], [2, 0, 0, 2, 2, 1, 0.0]),
    ("gap within margin", [0, 0, 0, 2, 2, 1, 0.0], [2.005, 0, 0, 2, 2, 1, 0.0]),
    ("apart", [0, 0, 0, 2, 2, 1, 0.0], [3, 0, 0, 2, 2, 1, 0.0]),
    ("rot45", [0, 0, 0, 2, 2, 1, 0.0], [0, 0, 0, 2, 2, 1, np.pi / 4]),
    ("rot45 shifted", [0, 0, 0, 2, 2, 1, 0.0], [1.0, 0.5, 0, 2, 1, 1, np.pi / 4]),
    ("rot90 thin", [0, 0, 0, 4, 0.5, 1, 0.0], [0, 0, 0, 4, 0.5, 1, np.pi / 2]),
    ("degenerate zero width", [0, 0, 0, 0, 2, 1, 0.0], [0, 0, 0, 2, 2, 1, 0.2]),
    ("degenerate point", [0.3, 0.1, 0, 0, 0, 1, 0.0], [0, 0, 0, 2, 2, 1, 0.0]),
    ("parallel offset", [0, 0, 0, 2, 2, 1, 0.1], [0.5, 0.5, 0, 2, 2, 1, 0.1]),
    ("negative heading", [1, -1, 0, 3, 1, 1, -0.6], [1.2, -0.8, 0, 2, 2, 1, 1.1]),
]


@pytest.mark.parametrize("name,a,b", SMALL_PAIRS, ids=[p[0] for p in SMALL_PAIRS])
def test_overlap_matches_kernel_transcription(name, a, b):
    out = iou3d.boxes_overlap_bev(torch.tensor([a]), torch.tensor([b]))
    assert out.item() == pytest.approx(ref_overlap(a, b), rel=1e-5, abs=1e-6)


def test_margin_quirk_reproduced():
    # boxes 0.005 apart: the kernel's 1e-2 MARGIN counts the near corners, giving a thin sliver
    out = iou3d.boxes_overlap_bev(torch.tensor([[0, 0, 0, 2, 2, 1, 0.0]]), torch.tensor([[2.005, 0, 0, 2, 2, 1, 0.0]]))
    assert out.item() == pytest.approx(0.01, rel=1e-2)


def test_overlap_random_against_transcription():
    g = torch.Generator().manual_seed(0)
    a = torch.cat([torch.rand(12, 3, generator=g) * 3, 0.2 + torch.rand(12, 3, generator=g) * 2,
                   (torch.rand(12, 1, generator=g) - 0.5) * 7], 1)
    b = torch.cat([torch.rand(10, 3, generator=g) * 3, 0.2 + torch.rand(10, 3, generator=g) * 2,
                   (torch.rand(10, 1, generator=g) - 0.5) * 7], 1)
    out = iou3d.boxes_overlap_bev(a, b)
    ref = torch.tensor([[ref_overlap(x, y) for y in b.numpy()] for x in a.numpy()])
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    assert (out > 0).any() and (out == 0).any()


def test_nan_box_overlap_is_zero():
    a = torch.tensor([[float("nan"), 0, 0, 2, 2, 1, 0.0]])
    out = iou3d.boxes_overlap_bev(a, BOXES2)
    assert torch.equal(out, torch.zeros(1, 3))


def test_empty_and_dtype():
    assert iou3d.boxes_overlap_bev(torch.zeros(0, 7), BOXES2).shape == (0, 3)
    assert iou3d.boxes_iou3d(BOXES1, torch.zeros(0, 7)).shape == (3, 0)
    out = iou3d.boxes_iou3d(BOXES1.double(), BOXES2.double())
    assert out.dtype == torch.float64
    torch.testing.assert_close(out.float(), iou3d.boxes_iou3d(BOXES1, BOXES2))
    assert iou3d.nms3d(torch.zeros(0, 7), torch.zeros(0), 0.5).shape == (0,)
    assert iou3d.nms3d_normal(torch.zeros(0, 7), torch.zeros(0), 0.5).dtype == torch.long


# --- NMS against a scalar loop ---------------------------------------------------------------------


def _cluster_boxes(n, seed):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 6
    return torch.cat([xy, torch.rand(n, 1, generator=g), 0.5 + torch.rand(n, 3, generator=g) * 2,
                      (torch.rand(n, 1, generator=g) - 0.5) * 6], 1), torch.rand(n, generator=g)


@pytest.mark.parametrize("thr", [0.0, 0.1, 0.3, 0.7, -0.5])
def test_nms3d_against_scalar_loop(thr):
    boxes, scores = _cluster_boxes(40, 1)
    assert iou3d.nms3d(boxes, scores, thr).tolist() == ref_nms(boxes, scores, thr, ref_iou_bev).tolist()
    assert iou3d.nms3d_normal(boxes, scores, thr).tolist() == ref_nms(boxes, scores, thr, ref_iou_normal).tolist()


def test_nms3d_ties_follow_sort():
    boxes = torch.tensor([[0, 0, 0, 2, 2, 1, 0.0]] * 4 + [[10, 10, 0, 1, 1, 1, 0.0]])
    scores = torch.full((5,), 0.5)
    order = scores.sort(0, descending=True)[1]
    first = order[0].item() if order[0].item() != 4 else order[1].item()
    expect = [i for i in order.tolist() if i in (first, 4)]
    assert iou3d.nms3d(boxes, scores, 0.5).tolist() == expect
    assert iou3d.nms3d_normal(boxes, scores, 0.5).tolist() == expect


# --- deprecated (N, 5) helpers -----------------------------------------------------------------------


def test_deprecated_helpers_delegate():
    from mmcv_runtime.ops.box_iou_rotated import box_iou_rotated
    from mmcv_runtime.ops.nms import nms, nms_rotated

    g = torch.Generator().manual_seed(3)
    xy = torch.rand(30, 2, generator=g) * 5
    boxes = torch.cat([xy, xy + 0.5 + torch.rand(30, 2, generator=g) * 2, torch.rand(30, 1, generator=g)], 1)
    scores = torch.rand(30, generator=g)
    xywhr = torch.stack(((boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2,
                         boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1], boxes[:, 4]), -1)
    with pytest.warns(DeprecationWarning):
        iou = iou3d.boxes_iou_bev(boxes, boxes[:7])
    torch.testing.assert_close(iou, box_iou_rotated(xywhr, xywhr[:7]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        keep = iou3d.nms_bev(boxes, scores, 0.2, pre_max_size=20, post_max_size=5)
        order = scores.sort(0, descending=True)[1][:20]
        expect = order[nms_rotated(xywhr[order], scores[order], 0.2)[1]][:5]
        assert keep.tolist() == expect.tolist()
        assert iou3d.nms_normal_bev(boxes, scores, 0.3).tolist() == nms(boxes[:, :4], scores, 0.3)[1].tolist()
        assert iou3d.nms_bev(boxes[:0], scores[:0], 0.2).shape == (0,)


# --- bad input ---------------------------------------------------------------------------------------


def test_bad_input():
    with pytest.raises(ValueError, match="boxes_overlap_bev.*boxes_a"):
        iou3d.boxes_overlap_bev(torch.zeros(3, 5), BOXES2)
    with pytest.raises(ValueError, match="boxes_iou3d|boxes_overlap_bev"):
        iou3d.boxes_iou3d(BOXES1, torch.zeros(3))
    with pytest.raises(TypeError, match="boxes_b"):
        iou3d.boxes_overlap_bev(BOXES1, BOXES2.numpy())
    with pytest.raises(TypeError, match="floating"):
        iou3d.boxes_overlap_bev(BOXES1.long(), BOXES2)
    with pytest.raises(ValueError, match="nms3d.*scores"):
        iou3d.nms3d(NMS_BOXES, NMS_SCORES[:3], 0.3)
    with pytest.raises(ValueError, match="nms3d_normal.*boxes"):
        iou3d.nms3d_normal(NMS_BOXES[:, :5], NMS_SCORES, 0.3)
    with pytest.raises(ValueError, match="nms_bev.*boxes"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            iou3d.nms_bev(NMS_BOXES, NMS_SCORES, 0.3)


# --- _ext adapters and registry ----------------------------------------------------------------------


def test_ext_adapters_match_api():
    assert set(ext.__all__) == {"iou3d_boxes_overlap_bev_forward", "iou3d_nms3d_forward", "iou3d_nms3d_normal_forward"}
    out = BOXES1.new_zeros((3, 3))
    assert ext.iou3d_boxes_overlap_bev_forward(BOXES1.contiguous(), BOXES2.contiguous(), out) is None
    torch.testing.assert_close(out, iou3d.boxes_overlap_bev(BOXES1, BOXES2), rtol=0, atol=0)
    boxes, scores = _random_555()
    for fn, api in ((ext.iou3d_nms3d_forward, iou3d.nms3d), (ext.iou3d_nms3d_normal_forward, iou3d.nms3d_normal)):
        order = scores.sort(0, descending=True)[1]
        sorted_boxes = boxes[order].contiguous()
        keep = sorted_boxes.new_zeros(555, dtype=torch.long)
        num_out = sorted_boxes.new_zeros(size=(), dtype=torch.long)
        fn(sorted_boxes, keep, num_out, nms_overlap_thresh=0.3)
        assert order[keep[:num_out]].tolist() == api(boxes, scores, 0.3).tolist()
        assert (keep[num_out:] == 0).all()


def test_registry_entry():
    from mmcv_runtime import registry

    entry = registry.entries()["iou3d"]
    assert set(entry.names) == {"boxes_iou3d", "boxes_iou_bev", "boxes_overlap_bev", "nms3d", "nms3d_normal",
                                "nms_bev", "nms_normal_bev"}
    assert set(entry.ext_functions) == set(ext.__all__)
    assert entry.backward == "n/a" and tuple(entry.devices) == ("any",)
    for name in entry.names:
        assert callable(getattr(iou3d, name))
