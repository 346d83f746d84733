"""mmcv.ops.points_in_boxes in the runtime: golden parity with compiled mmcv's CPU kernel, mmcv's own
test expectations, a scalar transcription of the CUDA kernel, edge cases, errors, the _ext adapters.

Goldens: fixtures/golden/points_in_boxes.pt, made by fixtures/golden/make_points_in_boxes_golden.py
with mmcv 2.2.0's compiled ``points_in_boxes_cpu``.
"""

from __future__ import annotations

import importlib
import math
from pathlib import Path

import pytest
import torch

pib = importlib.import_module("mmcv_runtime.ops.points_in_boxes")
ext = importlib.import_module("mmcv_runtime.ext._points_in_boxes")
registry = importlib.import_module("mmcv_runtime.registry")

GOLDEN = Path(__file__).resolve().parent.parent / "fixtures" / "golden" / "points_in_boxes.pt"
CASES = ("random", "axis_aligned_faces", "rotated_faces", "zero_size", "bottom_top", "float64")


@pytest.fixture(scope="module")
def golden():
    return torch.load(GOLDEN)


def first_index(inside: torch.Tensor) -> torch.Tensor:
    """Reference first-True index along T by a plain loop (tiny tensors only)."""
    out = torch.full(inside.shape[:2], -1, dtype=torch.int32)
    for b in range(inside.size(0)):
        for m in range(inside.size(1)):
            hits = inside[b, m].nonzero()
            if len(hits):
                out[b, m] = int(hits[0, 0])
    return out


# --- golden parity ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_cpu_matches_compiled_mmcv(golden, case):
    data = golden[case]
    out = pib.points_in_boxes_cpu(data["points"], data["boxes"])
    assert out.dtype == torch.int32 and out.shape == data["inside"].shape
    assert torch.equal(out.bool(), data["inside"])


@pytest.mark.parametrize("case", [c for c in CASES if c != "float64"])
def test_all_and_part_agree_with_cpu_kernel_on_float32(golden, case):
    data = golden[case]
    inside = data["inside"]
    assert torch.equal(pib.points_in_boxes_all(data["points"], data["boxes"]), inside.int())
    assert torch.equal(pib.points_in_boxes_part(data["points"], data["boxes"]), first_index(inside))


def test_rotated_faces_golden_is_sensitive_to_arithmetic():
    """The rotated-face case decides some points by float32 rounding: float64 arithmetic disagrees."""
    data = torch.load(GOLDEN)["rotated_faces"]
    (_, _, wide), = pib.inside_chunks(data["points"].double(), data["boxes"].double(), torch.float64)
    assert not torch.equal(wide, data["inside"])


# --- mmcv's own test expectations (tests/test_ops/test_roiaware_pool3d.py, mmcv 1.x) ----------

BOXES_2 = [[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 0.3], [-10.0, 23.0, 16.0, 10, 20, 20, 0.5]]
PTS_15 = [[1, 2, 3.3], [1.2, 2.5, 3.0], [0.8, 2.1, 3.5], [1.6, 2.6, 3.6], [0.8, 1.2, 3.9], [-9.2, 21.0, 18.2],
          [3.8, 7.9, 6.3], [4.7, 3.5, -12.2], [3.8, 7.6, -2], [-10.6, -12.9, -20], [-16, -18, 9],
          [-21.3, -52, -5], [0, 0, 0], [6, 7, 8], [-2, -3, -4]]
EXPECTED_15 = [[[1, 0], [1, 0], [1, 0], [1, 0], [1, 0], [0, 1], [0, 0], [0, 0], [0, 0], [0, 0], [0, 0], [0, 0],
                [0, 0], [0, 0], [0, 0]]]
BOX_30DEG = [[[0.0, 0.0, 0.0, 1.0, 20.0, 1.0, 0.523598]]]
PTS_30DEG = [[[4, 6.928, 0], [6.928, 4, 0], [4, -6.928, 0], [6.928, -4, 0], [-4, 6.928, 0], [-6.928, 4, 0],
              [-4, -6.928, 0], [-6.928, -4, 0]]]


def test_mmcv_points_in_boxes_part():
    boxes = torch.tensor([[BOXES_2[0]], [BOXES_2[1]]])
    pts = torch.tensor([[[1, 2, 3.3], [1.2, 2.5, 3.0], [0.8, 2.1, 3.5], [1.6, 2.6, 3.6], [0.8, 1.2, 3.9],
                         [-9.2, 21.0, 18.2], [3.8, 7.9, 6.3], [4.7, 3.5, -12.2]],
                        [[3.8, 7.6, -2], [-10.6, -12.9, -20], [-16, -18, 9], [-21.3, -52, -5], [0, 0, 0],
                         [6, 7, 8], [-2, -3, -4], [6, 4, 9]]])
    out = pib.points_in_boxes_part(points=pts, boxes=boxes)
    assert out.shape == (2, 8) and out.dtype == torch.int32
    assert out.tolist() == [[0, 0, 0, 0, 0, -1, -1, -1], [-1] * 8]
    out = pib.points_in_boxes_part(points=torch.tensor(PTS_30DEG), boxes=torch.tensor(BOX_30DEG))
    assert out.tolist() == [[-1, -1, 0, -1, 0, -1, -1, -1]]


@pytest.mark.parametrize("fn", ["points_in_boxes_cpu", "points_in_boxes_all"])
def test_mmcv_points_in_boxes_cpu_and_all(fn):
    out = getattr(pib, fn)(points=torch.tensor([PTS_15]), boxes=torch.tensor([BOXES_2]))
    assert out.shape == (1, 15, 2) and out.dtype == torch.int32
    assert out.tolist() == EXPECTED_15
    out = getattr(pib, fn)(points=torch.tensor(PTS_30DEG), boxes=torch.tensor(BOX_30DEG))
    assert out.tolist() == [[[0], [0], [1], [0], [1], [0], [0], [0]]]


# --- a scalar transcription of the CUDA kernel ------------------------------------------------


def kernel_check(pt, box, dtype):
    """check_pt_in_box3d for one point and box, scalar by scalar in ``dtype`` (0-dim tensors)."""
    t = lambda v: torch.tensor(v, dtype=dtype)  # noqa: E731
    x, y, z = (t(v) for v in pt)
    cx, cy, cz, xs, ys, zs, rz = (t(v) for v in box)
    cz = t(float(cz) + float(zs) / 2.0)  # cz += z_size / 2.0 (double sum, stored as T)
    fabsf = torch.tensor(abs(float(z - cz)), dtype=torch.float32)  # fabsf takes a float
    if float(fabsf) > float(zs) / 2.0:
        return 0
    cosa, sina = t(math.cos(-float(rz))), t(math.sin(-float(rz)))
    sx, sy = x - cx, y - cy
    lx = sx * cosa + sy * (-sina)
    ly = sx * sina + sy * cosa
    return int(-float(xs) / 2.0 < float(lx) < float(xs) / 2.0 and -float(ys) / 2.0 < float(ly) < float(ys) / 2.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_scalar_kernel(golden, dtype):
    for case in ("rotated_faces", "bottom_top", "zero_size"):
        pts, boxes = golden[case]["points"].to(dtype), golden[case]["boxes"].to(dtype)
        pts, boxes = pts[:6], boxes[:6]
        expected = torch.zeros(pts.size(0), pts.size(1), boxes.size(1), dtype=torch.int32)
        for b in range(pts.size(0)):
            for m in range(pts.size(1)):
                for k in range(boxes.size(1)):
                    expected[b, m, k] = kernel_check(pts[b, m].tolist(), boxes[b, k].tolist(), dtype)
        assert torch.equal(pib.points_in_boxes_all(pts, boxes), expected), case
        assert torch.equal(pib.points_in_boxes_part(pts, boxes), first_index(expected.bool())), case


def test_float64_fabsf_rounds_the_height_difference():
    # |z - cz| = 1 + 2**-40 in double, exactly 1.0 after fabsf's float rounding: the kernel keeps the point.
    boxes = torch.tensor([[[0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 0.0]]], dtype=torch.float64)
    pts = torch.tensor([[[0.0, 0.0, 2.0 + 2.0 ** -40]]], dtype=torch.float64)
    assert pib.points_in_boxes_all(pts, boxes).tolist() == [[[1]]]
    assert pib.points_in_boxes_part(pts, boxes).tolist() == [[0]]


# --- semantics, edge cases -------------------------------------------------------------------


def test_part_returns_first_of_overlapping_boxes():
    boxes = torch.tensor([[[5.0, 5.0, 0.0, 1.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 4.0, 4.0, 4.0, 0.0],
                           [0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 0.0]]])
    pts = torch.tensor([[[0.0, 0.0, 1.0], [1.5, 0.0, 1.0], [5.0, 5.0, 0.5], [9.0, 9.0, 9.0]]])
    assert pib.points_in_boxes_part(pts, boxes).tolist() == [[1, 1, 0, -1]]
    assert pib.points_in_boxes_all(pts, boxes).tolist() == [[[0, 1, 1], [0, 1, 0], [1, 0, 0], [0, 0, 0]]]


def test_face_rules():
    """z faces are inside (>), x/y faces outside (strict <, >)."""
    boxes = torch.tensor([[[0.0, 0.0, 0.0, 2.0, 4.0, 6.0, 0.0]]])
    pts = torch.tensor([[[0.0, 0.0, 0.0], [0.0, 0.0, 6.0], [1.0, 0.0, 3.0], [-1.0, 0.0, 3.0], [0.0, 2.0, 3.0],
                         [0.0, -2.0, 3.0], [0.999, 1.999, 0.001], [0.0, 0.0, -0.001]]])
    assert pib.points_in_boxes_cpu(pts, boxes).flatten().tolist() == [1, 1, 0, 0, 0, 0, 1, 0]


def test_cpu_output_is_mmcv_transposed_view():
    out = pib.points_in_boxes_cpu(torch.zeros(2, 5, 3), torch.ones(2, 3, 7))
    assert out.shape == (2, 5, 3) and out.stride() == (15, 1, 5)


def test_cpu_casts_to_float32_like_mmcv():
    boxes = torch.tensor([[[0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 0.0]]], dtype=torch.float64)
    pts = torch.tensor([[[1.0 - 1e-12, 0.0, 1.0]]], dtype=torch.float64)  # rounds to 1.0 in float32: outside
    assert pib.points_in_boxes_cpu(pts, boxes).item() == 0
    assert pib.points_in_boxes_all(pts, boxes).item() == 1
    ints = pib.points_in_boxes_cpu(torch.tensor([[[0, 0, 1]]]), torch.tensor([[[0, 0, 0, 2, 2, 2, 0]]]))
    assert ints.item() == 1


def test_empty_and_single():
    boxes = torch.tensor([[[0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 0.3]]])
    no_pts = torch.zeros(1, 0, 3)
    assert pib.points_in_boxes_part(no_pts, boxes).shape == (1, 0)
    assert pib.points_in_boxes_all(no_pts, boxes).shape == (1, 0, 1)
    assert pib.points_in_boxes_cpu(no_pts, boxes).shape == (1, 0, 1)
    pts = torch.tensor([[[0.0, 0.0, 1.0], [3.0, 0.0, 1.0]]])
    no_boxes = torch.zeros(1, 0, 7)
    assert pib.points_in_boxes_part(pts, no_boxes).tolist() == [[-1, -1]]
    assert pib.points_in_boxes_all(pts, no_boxes).shape == (1, 2, 0)
    assert pib.points_in_boxes_cpu(pts, no_boxes).shape == (1, 2, 0)
    assert pib.points_in_boxes_part(torch.zeros(0, 4, 3), torch.zeros(0, 2, 7)).shape == (0, 4)
    assert pib.points_in_boxes_part(pts, boxes).tolist() == [[0, -1]]


def test_chunking_gives_the_same_answer(monkeypatch):
    g = torch.Generator().manual_seed(3)
    pts = torch.rand(2, 301, 3, generator=g) * 8 - 4
    boxes = torch.cat([torch.rand(2, 17, 3, generator=g) * 4 - 2, 1 + torch.rand(2, 17, 3, generator=g) * 3,
                       torch.rand(2, 17, 1, generator=g) * 6], -1)
    whole = [f(pts, boxes) for f in (pib.points_in_boxes_part, pib.points_in_boxes_all, pib.points_in_boxes_cpu)]
    monkeypatch.setattr(pib, "_BLOCK", 50)
    chunked = [f(pts, boxes) for f in (pib.points_in_boxes_part, pib.points_in_boxes_all, pib.points_in_boxes_cpu)]
    for a, b in zip(whole, chunked):
        assert torch.equal(a, b)
    assert whole[1].any() and (whole[0] >= 0).any()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision(dtype):
    out = pib.points_in_boxes_all(torch.tensor([PTS_15], dtype=dtype), torch.tensor([BOXES_2], dtype=dtype))
    assert out.dtype == torch.int32 and out.tolist() == EXPECTED_15
    part = pib.points_in_boxes_part(torch.tensor([PTS_15], dtype=dtype), torch.tensor([BOXES_2], dtype=dtype))
    assert part.tolist() == [[0, 0, 0, 0, 0, 1] + [-1] * 9]


def test_no_grad_needed():
    pts = torch.tensor([PTS_15], requires_grad=True)
    out = pib.points_in_boxes_all(pts, torch.tensor([BOXES_2]))
    assert not out.requires_grad


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", ["points_in_boxes_part", "points_in_boxes_all", "points_in_boxes_cpu"])
def test_bad_input(fn):
    f = getattr(pib, fn)
    pts, boxes = torch.zeros(2, 4, 3), torch.zeros(2, 3, 7)
    with pytest.raises(ValueError, match=f"{fn}: points and boxes should have the same batch size"):
        f(pts[:1], boxes)
    with pytest.raises(ValueError, match=f"{fn}: boxes must have shape"):
        f(pts, torch.zeros(2, 3, 5))
    with pytest.raises(ValueError, match=f"{fn}: points must have shape"):
        f(torch.zeros(2, 4, 2), boxes)
    with pytest.raises(ValueError, match=f"{fn}: points must have shape"):
        f(torch.zeros(4, 3), boxes)
    with pytest.raises(TypeError, match=f"{fn}: boxes must be a torch.Tensor"):
        f(pts, [[0.0] * 7])
    if fn != "points_in_boxes_cpu":
        with pytest.raises(TypeError, match=f"{fn}: points and boxes must have the same dtype"):
            f(pts.double(), boxes)
        with pytest.raises(TypeError, match=f"{fn}: points must be a floating point tensor"):
            f(pts.int(), boxes.int())
    with pytest.raises(ValueError, match=f"{fn}: all tensors must be on one device"):
        f(pts.to("meta"), boxes)


# --- _ext adapters ---------------------------------------------------------------------------


def test_ext_adapters_match_functional_and_only_set(golden):
    data = golden["random"]
    pts, boxes, inside = data["points"], data["boxes"], data["inside"]
    sentinel = torch.full(inside.shape[:2], 7, dtype=torch.int32)
    assert ext.points_in_boxes_part_forward(boxes, pts, sentinel) is None
    part = pib.points_in_boxes_part(pts, boxes)
    assert torch.equal(sentinel, torch.where(part >= 0, part, torch.tensor(7, dtype=torch.int32)))
    base = torch.full(inside.shape, 5, dtype=torch.int32)
    ext.points_in_boxes_all_forward(boxes, pts, base)
    assert torch.equal(base, torch.where(inside, 1, 5).int())
    out = torch.full((boxes.size(1), pts.size(1)), 9, dtype=torch.int32)  # the CPU kernel writes every entry
    ext.points_in_boxes_cpu_forward(boxes[1].contiguous(), pts[1].contiguous(), out)
    assert torch.equal(out, inside[1].t().int())


def test_ext_adapter_errors():
    with pytest.raises(TypeError, match="points_in_boxes_cpu_forward: boxes_tensor and pts_tensor must be float32"):
        ext.points_in_boxes_cpu_forward(torch.zeros(2, 7).double(), torch.zeros(3, 3).double(),
                                        torch.zeros(2, 3, dtype=torch.int32))
    with pytest.raises(ValueError, match="points_in_boxes_part_forward: the output tensor must have shape"):
        ext.points_in_boxes_part_forward(torch.zeros(1, 2, 7), torch.zeros(1, 3, 3), torch.zeros(1, 4, dtype=torch.int32))
    with pytest.raises(TypeError, match="points_in_boxes_all_forward: the output tensor must be int32"):
        ext.points_in_boxes_all_forward(torch.zeros(1, 2, 7), torch.zeros(1, 3, 3), torch.zeros(1, 3, 2))
    assert sorted(ext.__all__) == sorted(["points_in_boxes_part_forward", "points_in_boxes_all_forward",
                                          "points_in_boxes_cpu_forward"])


def test_registry_entry():
    entry = registry.entries()["points_in_boxes"]
    assert set(entry.names) == {"points_in_boxes_part", "points_in_boxes_cpu", "points_in_boxes_all"}
    assert set(entry.ext_functions) == set(ext.__all__)
    assert entry.backward == "n/a" and entry.devices == ("any",)
    for name in entry.names:
        assert callable(getattr(pib, name))
