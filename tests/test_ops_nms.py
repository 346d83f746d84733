"""mmcv.ops.nms / mmcv.ops.bbox in the runtime: golden parity with compiled mmcv, edge cases, errors.

Goldens: fixtures/golden/nms_family.pt, made by fixtures/golden/make_nms_golden.py with mmcv 2.2.0's
compiled CPU ops (see that script). Scores there are distinct, so kept indices and their order are
fully determined and compared exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mmcv_runtime import ext_loader
from mmcv_runtime.ops import (batched_nms, bbox_overlaps, box_iou_quadri, box_iou_rotated, nms, nms_match,
                              nms_quadri, nms_rotated, soft_nms)

GOLDEN = Path(__file__).resolve().parent.parent / "fixtures" / "golden" / "nms_family.pt"
CASES = torch.load(GOLDEN, weights_only=False)["cases"] if GOLDEN.exists() else []


def _ids(case):
    return f"{case['op']}-{case['name']}-{'-'.join(str(v) for v in case['kwargs'].values())}"


@pytest.mark.parametrize("case", [c for c in CASES if c["op"] == "nms"], ids=_ids)
def test_nms_matches_mmcv(case):
    dets, inds = nms(case["boxes"], case["scores"], **case["kwargs"])
    assert torch.equal(inds, case["inds"])
    torch.testing.assert_close(dets, case["dets"], rtol=0, atol=0)


@pytest.mark.parametrize("case", [c for c in CASES if c["op"] == "soft_nms"], ids=_ids)
def test_soft_nms_matches_mmcv(case):
    dets, inds = soft_nms(case["boxes"], case["scores"], **case["kwargs"])
    assert torch.equal(inds, case["inds"])
    torch.testing.assert_close(dets, case["dets"], rtol=1e-5, atol=1e-6, equal_nan=True)


@pytest.mark.parametrize("case", [c for c in CASES if c["op"] == "batched_nms"], ids=_ids)
def test_batched_nms_matches_mmcv(case):
    dets, keep = batched_nms(case["boxes"], case["scores"], case["idxs"], **case["kwargs"])
    assert torch.equal(keep, case["inds"])
    torch.testing.assert_close(dets, case["dets"], rtol=1e-5, atol=1e-6, equal_nan=True)


@pytest.mark.parametrize("case", [c for c in CASES if c["op"] == "nms_match"], ids=_ids)
def test_nms_match_matches_mmcv(case):
    dets = torch.cat([case["boxes"], case["scores"][:, None]], 1)
    groups = nms_match(dets, **case["kwargs"])
    assert [g.tolist() for g in groups] == case["groups"]


@pytest.mark.parametrize("case", [c for c in CASES if c["op"] == "bbox_overlaps"], ids=_ids)
def test_bbox_overlaps_matches_mmcv(case):
    ious = bbox_overlaps(case["boxes"], case["boxes2"], **case["kwargs"])
    torch.testing.assert_close(ious, case["ious"], rtol=1e-5, atol=1e-5, equal_nan=True)


@pytest.mark.parametrize("case", [c for c in CASES if c["op"] == "box_iou_rotated"], ids=_ids)
def test_box_iou_rotated_matches_mmcv(case):
    ious = box_iou_rotated(case["boxes"], case["boxes2"], **case["kwargs"])
    torch.testing.assert_close(ious, case["ious"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", [c for c in CASES if c["op"] == "nms_rotated"], ids=_ids)
def test_nms_rotated_matches_mmcv(case):
    dets, keep = nms_rotated(case["boxes"], case["scores"], **case["kwargs"])
    assert torch.equal(keep, case["inds"])
    torch.testing.assert_close(dets, case["dets"], rtol=0, atol=0)


@pytest.mark.parametrize("case", [c for c in CASES if c["op"] == "box_iou_quadri"], ids=_ids)
def test_box_iou_quadri_matches_mmcv(case):
    ious = box_iou_quadri(case["boxes"], case["boxes2"], **case["kwargs"])
    torch.testing.assert_close(ious, case["ious"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", [c for c in CASES if c["op"] == "nms_quadri"], ids=_ids)
def test_nms_quadri_matches_mmcv(case):
    dets, keep = nms_quadri(case["boxes"], case["scores"], **case["kwargs"])
    assert torch.equal(keep, case["inds"])
    torch.testing.assert_close(dets, case["dets"], rtol=0, atol=0)


def test_goldens_are_present():
    assert len(CASES) > 40, "fixtures/golden/nms_family.pt is missing; see make_nms_golden.py"


# --- the _ext ABI --------------------------------------------------------------------------


def test_ext_adapters_follow_mmcv_signatures():
    ext = ext_loader.load_ext("_ext", ["nms", "softnms", "nms_match", "bbox_overlaps"])
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert ext.nms(boxes, scores, iou_threshold=0.5, offset=0).tolist() == [0, 2]
    dets = boxes.new_empty((3, 5))
    inds = ext.softnms(boxes, scores, dets, iou_threshold=0.3, sigma=0.5, min_score=0.5, method=1, offset=0)
    assert inds.tolist() == [0, 2]
    assert dets[:2, 4].tolist() == pytest.approx([0.9, 0.7])
    assert ext.nms_match(torch.cat([boxes, scores[:, None]], 1), iou_threshold=0.5) == [[0, 1], [2]]
    ious = boxes.new_zeros((3, 3))
    assert ext.bbox_overlaps(boxes, boxes, ious, mode=0, aligned=False, offset=0) is None
    assert torch.allclose(ious.diagonal(), torch.ones(3))
    aligned = boxes.new_zeros(3)
    ext.bbox_overlaps(boxes, boxes.flip(0), aligned, mode=1, aligned=True, offset=0)
    assert aligned.tolist() == [0.0, 1.0, 0.0]


# --- edge cases ----------------------------------------------------------------------------


def test_empty_inputs_give_empty_results_of_the_right_shape():
    empty = torch.zeros((0, 4))
    dets, inds = nms(empty, torch.zeros(0), 0.5)
    assert dets.shape == (0, 5) and inds.shape == (0,) and inds.dtype == torch.long
    dets, inds = soft_nms(empty, torch.zeros(0))
    assert dets.shape == (0, 5) and inds.shape == (0,)
    dets, keep = batched_nms(empty, torch.zeros(0), torch.zeros(0, dtype=torch.long), dict(iou_threshold=0.5))
    assert dets.shape == (0, 5) and keep.shape == (0,)
    assert nms_match(torch.zeros((0, 5)), 0.5) == []
    assert bbox_overlaps(empty, torch.rand(3, 4)).shape == (0, 3)
    assert bbox_overlaps(torch.rand(2, 4), empty).shape == (2, 0)
    assert bbox_overlaps(empty, empty, aligned=True).shape == (0,)


def test_numpy_in_numpy_out():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11]], dtype=np.float32)
    scores = np.array([0.5, 0.9], dtype=np.float32)
    dets, inds = nms(boxes, scores, 0.5)
    assert isinstance(dets, np.ndarray) and isinstance(inds, np.ndarray)
    assert inds.tolist() == [1] and dets.shape == (1, 5)
    dets, inds = soft_nms(boxes, scores, 0.3, min_score=0.5)
    assert isinstance(dets, np.ndarray) and inds.tolist() == [1]
    groups = nms_match(np.concatenate([boxes, scores[:, None]], 1), 0.5)
    assert [g.tolist() for g in groups] == [[1, 0]] and isinstance(groups[0], np.ndarray)


def test_deprecated_iou_thr_keyword():
    boxes, scores = torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([1.0])
    with pytest.warns(DeprecationWarning):
        _, inds = nms(boxes, scores, iou_thr=0.5)
    assert inds.tolist() == [0]


def test_half_and_double_inputs():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(200, 2, generator=g) * 100
    boxes = torch.cat([xy, xy + 5 + torch.rand(200, 2, generator=g) * 20], 1)
    scores = torch.rand(200, generator=g)
    _, reference = nms(boxes, scores, 0.5)
    _, double = nms(boxes.double(), scores.double(), 0.5)
    assert torch.equal(double, reference)
    dets, half = nms(boxes.half(), scores.half(), 0.5)
    assert dets.dtype == torch.float16 and half.dtype == torch.long
    assert len(set(half.tolist()) ^ set(reference.tolist())) <= 4  # rounding of fp16 boxes only


def test_large_input_matches_sequential_greedy():
    """The blocked algorithm equals the plain sequential definition across block boundaries."""
    g = torch.Generator().manual_seed(1)
    ctr = torch.rand(1500, 2, generator=g) * 300
    boxes = torch.cat([ctr, ctr + 10 + torch.rand(1500, 2, generator=g) * 30], 1)
    scores = torch.rand(1500, generator=g)
    _, inds = nms(boxes, scores, 0.4)
    order = scores.sort(descending=True)[1].tolist()
    from mmcv_runtime.ops.bbox import pairwise_iou

    beats = (pairwise_iou(boxes, boxes) > 0.4).numpy()
    removed, expected = np.zeros(len(order), dtype=bool), []
    for i in order:
        if not removed[i]:
            expected.append(i)
            removed |= beats[i]
    assert inds.tolist() == expected


def test_batched_nms_offsets_separate_classes_and_accept_a_callable():
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7])
    idxs = torch.tensor([0, 1, 0])
    _, keep = batched_nms(boxes, scores, idxs, dict(iou_threshold=0.5))
    assert keep.tolist() == [0, 1]
    _, keep = batched_nms(boxes, scores, idxs, dict(iou_threshold=0.5), class_agnostic=True)
    assert keep.tolist() == [0]
    calls = []

    def custom(b, s, **kwargs):
        calls.append(kwargs)
        return nms(b, s, **kwargs)

    _, keep = batched_nms(boxes, scores, idxs, dict(type=custom, iou_threshold=0.5))
    assert keep.tolist() == [0, 1] and calls == [dict(iou_threshold=0.5)]


def test_unknown_nms_types_are_named():
    boxes, scores, idxs = torch.rand(3, 4), torch.rand(3), torch.zeros(3, dtype=torch.long)
    with pytest.raises(ValueError, match="nms_cfg type"):
        batched_nms(boxes, scores, idxs, dict(type="no_such_nms", iou_threshold=0.5))


# --- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize("call, error, match", [
    (lambda: nms(torch.rand(3, 5), torch.rand(3), 0.5), ValueError, r"nms: boxes must have shape \(N, 4\)"),
    (lambda: nms(torch.rand(3, 4), torch.rand(2), 0.5), ValueError, "nms: scores must have shape"),
    (lambda: nms(torch.ones(3, 4, dtype=torch.long), torch.rand(3), 0.5), TypeError, "nms: boxes must be a floating"),
    (lambda: nms([[0, 0, 1, 1]], torch.rand(1), 0.5), TypeError, "nms: boxes must be a torch.Tensor or numpy"),
    (lambda: nms(torch.rand(3, 4), torch.rand(3), 0.5, offset=2), ValueError, "nms: offset must be one of"),
    (lambda: soft_nms(torch.rand(3, 4), torch.rand(3), method="cubic"), ValueError, "soft_nms: method"),
    (lambda: batched_nms(torch.rand(3, 4), torch.rand(3), torch.zeros(2), {}), ValueError, "batched_nms: idxs"),
    (lambda: nms_match(torch.rand(3, 4), 0.5), ValueError, r"nms_match: dets must have shape \(N, 5\)"),
    (lambda: bbox_overlaps(torch.rand(3, 4), torch.rand(3, 4), mode="giou"), ValueError, "bbox_overlaps: mode"),
    (lambda: bbox_overlaps(torch.rand(3, 4), torch.rand(2, 4), aligned=True), ValueError, "bbox_overlaps: aligned"),
    (lambda: bbox_overlaps(torch.rand(3, 3), torch.rand(2, 4)), ValueError, "bbox_overlaps: bboxes1"),
    (lambda: nms(torch.rand(3, 4), torch.rand(3, device="meta"), 0.5), ValueError, "one device"),
])
def test_bad_input_is_named(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("kind", ["spread", "dense-cluster", "large-boxes", "zero-width", "huge-coordinates"])
@pytest.mark.parametrize("threshold, offset, inclusive", [(0.0, 0, False), (0.5, 0, False), (0.3, 1, False),
                                                          (0.5, 0, True), (0.0, 0, True)])
def test_sparse_sweep_equals_dense_blocks(kind, threshold, offset, inclusive):
    """The overlap sweep (fast path) and the dense blocks (any threshold) give the same greedy answer."""
    import sys

    core = sys.modules["mmcv_runtime.ops.nms"]
    g = torch.Generator().manual_seed(sum(map(ord, kind)))  # stable across runs (str hash is salted)
    n = 600
    xy = torch.rand(n, 2, generator=g) * (50 if kind == "dense-cluster" else 800)
    wh = torch.rand(n, 2, generator=g) * (400 if kind == "large-boxes" else 80)
    boxes = torch.cat([xy, xy + wh], 1)
    if kind == "zero-width":
        boxes[: n // 3, 2] = boxes[: n // 3, 0]
    if kind == "huge-coordinates":
        boxes = boxes * 1e4 + 1e6
    boxes = boxes[torch.rand(n, generator=g).sort(descending=True)[1]]
    dense = core.greedy_keep(boxes, threshold, offset, inclusive)
    if core._sparse_ok(threshold, inclusive):
        sparse = core.resolve_greedy(n, *core.suppression_edges(boxes, threshold, offset, inclusive))
        assert torch.equal(dense, sparse)
    assert torch.equal(core.nms_keep(boxes, threshold, offset, inclusive), dense)


def test_batched_nms_split_path_one_call_equals_the_class_loop():
    """Above split_thr, one NMS over the class-offset boxes gives what mmcv's per-class loop gives."""
    g = torch.Generator().manual_seed(4)
    xy = torch.rand(3000, 2, generator=g) * 300
    boxes = torch.cat([xy, xy + 5 + torch.rand(3000, 2, generator=g) * 40], 1)
    scores = (torch.rand(3000, generator=g) * 20).round() / 20  # many ties
    idxs = torch.randint(0, 30, (3000,), generator=g)
    cfg = dict(iou_threshold=0.5, split_thr=100, max_num=500)
    fast = batched_nms(boxes, scores, idxs, dict(cfg, type="nms"))
    loop = batched_nms(boxes, scores, idxs, dict(cfg, type=lambda b, s, **k: nms(b, s, **k)))
    assert torch.equal(fast[1], loop[1]) and torch.equal(fast[0], loop[0])


@pytest.mark.parametrize("method", [0, 1, 2])
@pytest.mark.parametrize("seed", range(4))
def test_soft_nms_sparse_replay_equals_the_kernel_loop_with_ties(method, seed):
    """The heap replay keeps the kernel's working order: ties and min_score drops come out the same."""
    import sys

    core = sys.modules["mmcv_runtime.ops.nms"]
    g = torch.Generator().manual_seed(seed)
    n = 300
    xy = torch.rand(n, 2, generator=g) * 120
    boxes = torch.cat([xy, xy + 4 + torch.rand(n, 2, generator=g) * 30], 1)
    scores = (torch.rand(n, generator=g) * 8).ceil() / 8  # heavy ties
    args = (0.3, 0.5, 0.2 if seed % 2 else 1e-3, method, seed % 2)
    fast = core._soft_nms_sparse(boxes, scores, *args)
    assert fast is not None
    slow = core._soft_nms_dense(boxes, scores, *args)
    assert torch.equal(fast[1], slow[1])
    torch.testing.assert_close(fast[0], slow[0], rtol=2e-7, atol=0)


@pytest.mark.parametrize("method", [0, 1, 2])
@pytest.mark.parametrize("seed", range(4))
def test_soft_nms_untied_replay_equals_the_kernel_loop(method, seed, monkeypatch):
    """Without score ties the score-only replay answers alone (isolated boxes merged in by score),
    and equals the kernel's step-for-step loop; with ties it hands over to the positional replay."""
    import sys

    core = sys.modules["mmcv_runtime.ops.nms"]
    g = torch.Generator().manual_seed(seed)
    n = 400
    xy = torch.rand(n, 2, generator=g) * (150 + 200 * (seed % 2))  # dense and sparse layouts
    boxes = torch.cat([xy, xy + 4 + torch.rand(n, 2, generator=g) * 30], 1)
    scores = torch.randperm(n, generator=g).float() / n + 0.5 / n  # distinct
    args = (0.3, 0.5, 0.3 if seed % 2 else 1e-3, method, seed % 2)
    handed_over = []
    monkeypatch.setattr(core, "_replay_soft_nms", lambda *a: handed_over.append(a) or ([], []))
    fast = core._soft_nms_sparse(boxes, scores, *args)
    assert not handed_over
    slow = core._soft_nms_dense(boxes, scores, *args)
    assert torch.equal(fast[1], slow[1])
    assert torch.equal(fast[0], slow[0])
    tied = scores.clone()
    tied[:2] = 2.0  # two boxes share the top score
    assert core._soft_nms_untied(*_untied_inputs(core, boxes, tied, args)) is None


def _untied_inputs(core, boxes, scores, args):
    """The arguments ``_soft_nms_sparse`` hands to ``_soft_nms_untied`` when every pair moves."""
    a, b, _ = core.overlapping_pairs(boxes, args[4])
    src = torch.cat([a, b])
    order = src.argsort(stable=True)
    degree = torch.bincount(src, minlength=boxes.size(0))
    start = [0] + degree.cumsum(0).tolist()
    return scores, degree, start, torch.cat([b, a])[order].tolist(), [0.5] * src.numel(), 1e-3, "f"


# --- rotated boxes -----------------------------------------------------------------------


def test_rotated_edge_cases_labels_and_abi():
    assert nms_rotated(torch.zeros((0, 5)), torch.zeros(0), 0.5)[1] is None  # mmcv's empty result
    assert box_iou_rotated(torch.zeros((0, 5)), torch.rand(3, 5)).shape == (0, 3)
    assert box_iou_rotated(torch.zeros((0, 5)), torch.zeros((0, 5)), aligned=True).shape == (0,)
    box = torch.tensor([[10.0, 10, 8, 4, 0.3]])
    assert box_iou_rotated(box, box).item() == pytest.approx(1.0, abs=1e-6)
    dets = torch.cat([box, box, box + torch.tensor([100.0, 0, 0, 0, 0])])
    scores = torch.tensor([0.9, 0.8, 0.7])
    _, keep = nms_rotated(dets, scores, 0.5)
    assert keep.tolist() == [0, 2]
    _, keep = nms_rotated(dets, scores, 0.5, labels=torch.tensor([0, 1, 0]))
    assert keep.tolist() == [0, 1, 2]  # different labels never suppress each other
    ext = ext_loader.load_ext("_ext", ["nms_rotated", "box_iou_rotated"])
    order = scores.sort(descending=True)[1]
    keep = ext.nms_rotated(dets, scores, order, dets[order], torch.empty(0, dtype=torch.int), 0.5, 0)
    assert keep.tolist() == [0, 2]
    ious = dets.new_zeros(9)
    ext.box_iou_rotated(dets, dets, ious, mode_flag=0, aligned=False)
    assert ious.view(3, 3).diagonal().tolist() == pytest.approx([1, 1, 1], abs=1e-6)
    # batched_nms accepts the rotated type by name
    _, keep = batched_nms(dets, scores, torch.tensor([0, 0, 1]), dict(type="nms_rotated", iou_threshold=0.5))
    assert keep.tolist() == [0, 2]


def test_rotated_nms_any_threshold_matches_all_pairs():
    """The circle-overlap pruning changes nothing: compare with IoUs of every pair."""
    g = torch.Generator().manual_seed(8)
    boxes = torch.cat([torch.rand(200, 2, generator=g) * 80, 4 + torch.rand(200, 2, generator=g) * 20,
                       torch.rand(200, 1, generator=g) * 3], 1)
    scores = torch.rand(200, generator=g)
    full = box_iou_rotated(boxes, boxes)
    order = scores.sort(descending=True)[1].tolist()
    for threshold in (0.0, 0.2, 0.6):
        removed, expected = set(), []
        for i in order:
            if i in removed:
                continue
            expected.append(i)
            removed.update(j for j in order if j != i and full[i, j] >= threshold)
        assert nms_rotated(boxes, scores, threshold)[1].tolist() == expected


@pytest.mark.parametrize("call, error, match", [
    (lambda: box_iou_rotated(torch.rand(3, 4), torch.rand(3, 5)), ValueError, r"box_iou_rotated: bboxes1 must have shape \(N, 5\)"),
    (lambda: box_iou_rotated(torch.rand(3, 5), torch.rand(2, 5), aligned=True), ValueError, "aligned"),
    (lambda: box_iou_rotated(torch.rand(3, 5), torch.rand(3, 5), mode="giou"), ValueError, "mode"),
    (lambda: nms_rotated(torch.rand(3, 4), torch.rand(3), 0.5), ValueError, r"nms_rotated: dets must have shape \(N, 5\)"),
    (lambda: nms_rotated(torch.rand(3, 5), torch.rand(3), 0.5, labels=torch.zeros(2)), ValueError, "labels"),
])
def test_rotated_bad_input_is_named(call, error, match):
    with pytest.raises(error, match=match):
        call()
