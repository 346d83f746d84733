"""mmcv.ops.point_sample in the runtime: F.grid_sample parity, hand-computed values, mmcv's own test
expectations (tests/test_ops/test_bilinear_grid_sample.py), gradcheck, edge cases and errors.

mmcv has no compiled kernel for this module (it is torch code over ``F.grid_sample``), so the reference
for :class:`SimpleRoIAlign` is mmcv's per-image algorithm re-stated below with ``F.grid_sample``.
"""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F

ps = importlib.import_module("mmcv_runtime.ops.point_sample")

IDENTITY = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])


def _map_2x2(dtype=torch.float32):
    return torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]], dtype=dtype)


def _linear_map(h=4, w=4, dtype=torch.float32):
    """(1, 1, h, w) with value 4 * row + col + 1: bilinear sampling inside reads the same formula."""
    rows = torch.arange(h, dtype=dtype)[:, None]
    cols = torch.arange(w, dtype=dtype)[None, :]
    return (4 * rows + cols + 1)[None, None]


def _rois(n, batches, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=dtype) * 40 - 4
    wh = torch.rand(n, 2, generator=g, dtype=dtype) * 20 + 1
    idx = torch.randint(0, batches, (n, 1), generator=g).to(dtype).sort(0)[0]
    return torch.cat([idx, xy, xy + wh], 1)


def _simple_roi_align_reference(features, rois, output_size, spatial_scale, aligned):
    """mmcv's SimpleRoIAlign algorithm: one F.grid_sample per image, results concatenated by image."""
    out_h, out_w = output_size
    # mmcv's grid: float32 cell centres from F.affine_grid
    cells = (F.affine_grid(IDENTITY, torch.Size((1, 1, out_h, out_w)), align_corners=False) + 1.0) / 2.0
    cells = cells.reshape(-1, 2).to(torch.float64)
    height, width = features.shape[-2:]
    pieces = []
    for b in range(features.size(0)):
        mine = rois[rois[:, 0].long() == b].to(torch.float64)
        if not len(mine):
            continue
        lo, hi = mine[:, None, 1:3], mine[:, None, 3:5]
        pts = (lo + cells * (hi - lo)) * spatial_scale / torch.tensor([width, height], dtype=torch.float64)
        grid = (pts * 2 - 1).to(features.dtype)[None]
        sampled = F.grid_sample(features[b:b + 1], grid, align_corners=not aligned)  # (1, C, R, P)
        pieces.append(sampled[0].permute(1, 0, 2))
    return torch.cat(pieces).reshape(rois.size(0), features.size(1), out_h, out_w)


# --- mmcv's own test: bilinear_grid_sample equals F.grid_sample -----------------------------------


MMCV_BGS_CASES = [(torch.double, False, 1), (torch.double, True, 1), (torch.float, False, 1),
                  (torch.float, True, 1), (torch.float, True, 5), (torch.float, False, 10),
                  (torch.float, True, -6), (torch.float, False, -10), (torch.double, True, 5),
                  (torch.double, False, 10), (torch.double, True, -6), (torch.double, False, -10)]


@pytest.mark.parametrize("dtype,align_corners,multiplier", MMCV_BGS_CASES)
def test_bilinear_grid_sample_matches_grid_sample_mmcv_cases(dtype, align_corners, multiplier):
    torch.manual_seed(0)
    im = torch.rand(1, 1, 20, 20, dtype=dtype)
    grid = F.affine_grid(IDENTITY, (1, 1, 15, 15), align_corners=align_corners).to(dtype) * multiplier
    out = ps.bilinear_grid_sample(im, grid, align_corners=align_corners)
    ref = F.grid_sample(im, grid, align_corners=align_corners)
    tol = 1e-6 if dtype == torch.float else 1e-12
    torch.testing.assert_close(out, ref, rtol=0, atol=tol)
    assert out.shape == (1, 1, 15, 15) and out.dtype == dtype and out.is_contiguous()


@pytest.mark.parametrize("align_corners", [False, True])
def test_bilinear_grid_sample_gradients_equal_grid_sample(align_corners):
    torch.manual_seed(1)
    im = torch.randn(2, 3, 7, 9, dtype=torch.double, requires_grad=True)
    grid = (torch.rand(2, 5, 4, 2, dtype=torch.double) * 3 - 1.5).requires_grad_()  # many points outside
    out = ps.bilinear_grid_sample(im, grid, align_corners)
    ref = F.grid_sample(im, grid, align_corners=align_corners)
    torch.testing.assert_close(out, ref)
    go = torch.randn_like(out)
    for mine, theirs in zip(torch.autograd.grad(out, (im, grid), go), torch.autograd.grad(ref, (im, grid), go)):
        torch.testing.assert_close(mine, theirs)


def test_bilinear_grid_sample_hand_values():
    im = _map_2x2()
    grid = torch.tensor([[[[-1.0, -1.0], [0.0, 0.0], [1.0, 1.0], [1.0, -1.0], [3.0, 0.0]]]])
    assert ps.bilinear_grid_sample(im, grid, False).flatten().tolist() == [0.25, 2.5, 1.0, 0.5, 0.0]
    assert ps.bilinear_grid_sample(im, grid, True).flatten().tolist() == [1.0, 2.5, 4.0, 2.0, 0.0]


def test_bilinear_grid_sample_non_finite_and_far_points_read_zero():
    im = _map_2x2().expand(2, 3, 2, 2).contiguous()
    grid = torch.tensor([[[[float("inf"), 0.0], [0.0, float("-inf")]]], [[[1e30, -1e30], [-1e9, 1e9]]]])
    out = ps.bilinear_grid_sample(im, grid)
    assert torch.equal(out, torch.zeros(2, 3, 1, 2))
    nan = ps.bilinear_grid_sample(im, torch.full((2, 1, 1, 2), float("nan")))
    assert torch.equal(nan, torch.zeros(2, 3, 1, 1))


def test_bilinear_grid_sample_gradcheck():
    torch.manual_seed(2)
    im = torch.randn(2, 1, 3, 4, dtype=torch.double, requires_grad=True)
    grid = (torch.rand(2, 3, 2, 2, dtype=torch.double) * 2.4 - 1.2).requires_grad_()
    for align_corners in (False, True):
        assert torch.autograd.gradcheck(lambda a, b: ps.bilinear_grid_sample(a, b, align_corners), (im, grid))


def test_bilinear_grid_sample_dtypes():
    torch.manual_seed(3)
    im = torch.randn(1, 4, 6, 6)
    grid = torch.rand(1, 3, 3, 2) * 2 - 1
    ref = F.grid_sample(im, grid, align_corners=False)
    for dtype in (torch.float16, torch.bfloat16):
        out = ps.bilinear_grid_sample(im.to(dtype), grid.to(dtype))
        assert out.dtype == dtype
        torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=3e-2)
    # mixed dtypes promote, like mmcv's arithmetic
    assert ps.bilinear_grid_sample(im, grid.double()).dtype == torch.float64


def test_bilinear_grid_sample_empty():
    im = torch.randn(2, 3, 4, 4, requires_grad=True)
    assert ps.bilinear_grid_sample(im, torch.zeros(2, 0, 5, 2)).shape == (2, 3, 0, 5)
    assert ps.bilinear_grid_sample(torch.zeros(0, 3, 4, 4), torch.zeros(0, 2, 2, 2)).shape == (0, 3, 2, 2)
    assert ps.bilinear_grid_sample(torch.zeros(1, 0, 4, 4), torch.zeros(1, 2, 2, 2)).shape == (1, 0, 2, 2)
    zero_map = ps.bilinear_grid_sample(torch.zeros(1, 2, 0, 4), torch.zeros(1, 2, 2, 2))
    assert torch.equal(zero_map, torch.zeros(1, 2, 2, 2))
    out = ps.bilinear_grid_sample(im, torch.zeros(2, 0, 1, 2))
    out.sum().backward()
    assert torch.equal(im.grad, torch.zeros_like(im))


# --- point_sample ----------------------------------------------------------------------------------


def test_point_sample_hand_values_and_shapes():
    im = _map_2x2()
    points = torch.tensor([[[0.5, 0.5], [0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]])
    out = ps.point_sample(im, points)
    assert out.shape == (1, 1, 4)
    assert out.flatten().tolist() == [2.5, 0.25, 0.5, 1.0]
    assert ps.point_sample(im, points, align_corners=True).flatten().tolist() == [2.5, 1.0, 2.0, 4.0]
    grid_out = ps.point_sample(im, points.view(1, 2, 2, 2))
    assert grid_out.shape == (1, 1, 2, 2) and torch.equal(grid_out.flatten(), out.flatten())


@pytest.mark.parametrize("align_corners", [False, True])
def test_point_sample_is_grid_sample_on_denormalized_points(align_corners):
    torch.manual_seed(4)
    im = torch.randn(2, 5, 8, 6)
    points = torch.rand(2, 11, 2) * 1.4 - 0.2
    out = ps.point_sample(im, points, align_corners)
    ref = F.grid_sample(im, (points * 2 - 1).unsqueeze(2), align_corners=align_corners).squeeze(3)
    assert torch.equal(out, ref)
    # kwargs reach F.grid_sample
    near = ps.point_sample(im, points, align_corners, mode="nearest", padding_mode="border")
    ref = F.grid_sample(im, (points * 2 - 1).unsqueeze(2), mode="nearest", padding_mode="border",
                        align_corners=align_corners).squeeze(3)
    assert torch.equal(near, ref)
    # the pure sampler agrees with point_sample's F.grid_sample
    pure = ps.bilinear_grid_sample(im, ps.denormalize(points).unsqueeze(2), align_corners).squeeze(3)
    torch.testing.assert_close(pure, out)


def test_point_sample_volumetric_passes_through():
    im = torch.randn(1, 2, 3, 4, 5)
    points = torch.rand(1, 2, 2, 2, 3)
    assert torch.equal(ps.point_sample(im, points), F.grid_sample(im, points * 2 - 1, align_corners=False))


def test_point_sample_gradcheck():
    torch.manual_seed(5)
    im = torch.randn(1, 2, 4, 4, dtype=torch.double, requires_grad=True)
    points = torch.rand(1, 6, 2, dtype=torch.double).requires_grad_()
    for align_corners in (False, True):
        assert torch.autograd.gradcheck(lambda a, b: ps.point_sample(a, b, align_corners), (im, points))
    assert torch.autograd.gradcheck(lambda a, b: ps.point_sample(a, b), (im, points.detach().view(1, 3, 2, 2)
                                                                            .requires_grad_()))


def test_point_sample_empty_points():
    im = torch.randn(2, 3, 4, 4)
    assert ps.point_sample(im, torch.zeros(2, 0, 2)).shape == (2, 3, 0)


# --- coordinate helpers ----------------------------------------------------------------------------


def test_normalize_denormalize():
    grid = torch.tensor([-1.0, 0.0, 1.0, 3.0])
    assert ps.normalize(grid).tolist() == [0.0, 0.5, 1.0, 2.0]
    assert ps.denormalize(ps.normalize(grid)).tolist() == grid.tolist()


@pytest.mark.parametrize("size", [(1, 1), (7, 7), (3, 5), (14, 1), 2])
def test_generate_grid_matches_mmcv_affine_grid_construction(size):
    hw = (size, size) if isinstance(size, int) else size
    ref = (F.affine_grid(IDENTITY, torch.Size((1, 1, *hw)), align_corners=False) + 1.0) / 2.0
    ref = ref.view(1, -1, 2).expand(3, -1, -1)
    grid = ps.generate_grid(3, size, device=torch.device("cpu"))
    assert torch.equal(grid, ref) and grid.dtype == torch.float32 and grid.stride(0) == 0


def test_generate_grid_values():
    grid = ps.generate_grid(1, (2, 2), "cpu")
    assert grid.tolist() == [[[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]]]
    assert ps.generate_grid(0, (2, 3), "cpu").shape == (0, 6, 2)


def test_rel_roi_point_to_abs_img_point():
    boxes = torch.tensor([[10.0, 20.0, 30.0, 60.0]], requires_grad=True)
    rel = torch.tensor([[[0.0, 0.0], [0.5, 0.25], [1.0, 1.0]]])
    out = ps.rel_roi_point_to_abs_img_point(boxes, rel)
    assert out.tolist() == [[[10.0, 20.0], [20.0, 30.0], [30.0, 60.0]]]
    assert not out.requires_grad  # mmcv computes it under no_grad
    rois = torch.cat([torch.full((1, 1), 3.0), boxes.detach()], 1)
    assert torch.equal(ps.rel_roi_point_to_abs_img_point(rois, rel), out)
    assert ps.rel_roi_point_to_abs_img_point(boxes.double(), rel).dtype == torch.float64
    assert ps.rel_roi_point_to_abs_img_point(torch.zeros(0, 5), torch.zeros(0, 4, 2)).shape == (0, 4, 2)


def test_shape_and_relative_points():
    feat = torch.zeros(2, 3, 10, 40)
    shape = ps.get_shape_from_feature_map(feat)
    assert shape.tolist() == [[[40.0, 10.0]]] and shape.dtype == torch.float32
    abs_pts = torch.tensor([[[20.0, 5.0], [40.0, 0.0]]])
    expected = [[[0.5, 0.5], [1.0, 0.0]]]
    assert ps.abs_img_point_to_rel_img_point(abs_pts, feat).tolist() == expected
    assert ps.abs_img_point_to_rel_img_point(abs_pts, (10, 40)).tolist() == expected
    assert ps.abs_img_point_to_rel_img_point(abs_pts, torch.Size([10, 40])).tolist() == expected
    assert ps.abs_img_point_to_rel_img_point(abs_pts, (10, 40), 0.5).tolist() == [[[0.25, 0.25], [0.5, 0.0]]]
    # the float32 scale promotes half points, as in mmcv
    assert ps.abs_img_point_to_rel_img_point(abs_pts.half(), (10, 40)).dtype == torch.float32
    rois = torch.tensor([[0.0, 0.0, 0.0, 40.0, 10.0]])
    centre = torch.tensor([[[0.5, 0.5]]])
    assert ps.rel_roi_point_to_rel_img_point(rois, centre, feat, 1.0).tolist() == [[[0.5, 0.5]]]
    assert ps.rel_roi_point_to_rel_img_point(rois, centre, (20, 80), 2.0).tolist() == [[[0.5, 0.5]]]


def test_is_in_onnx_export_without_custom_ops():
    assert ps.is_in_onnx_export_without_custom_ops() is False


# --- SimpleRoIAlign ------------------------------------------------------------------------------


def test_simple_roi_align_hand_values():
    feat = _linear_map()  # value 4 * y + x + 1
    rois = torch.tensor([[0.0, 0.0, 0.0, 4.0, 4.0]])
    out = ps.SimpleRoIAlign((2, 2), 1.0)(feat, rois)
    # aligned: cell centres at image x = 1, 3 -> pixels 0.5, 2.5
    assert out.tolist() == [[[[3.5, 5.5], [11.5, 13.5]]]]
    legacy = ps.SimpleRoIAlign((2, 2), 1.0, aligned=False)(feat, rois)
    # align_corners=True: pixel = p * (W - 1) = 0.75, 2.25
    torch.testing.assert_close(legacy, torch.tensor([[[[4.75, 6.25], [10.75, 12.25]]]]))
    # half outside: centre (0, 0) reads pixel (-0.5, -0.5): a quarter of pixel (0, 0), zero padding
    corner = ps.SimpleRoIAlign(1, 1.0)(feat, torch.tensor([[0.0, -2.0, -2.0, 2.0, 2.0]]))
    assert corner.tolist() == [[[[0.25]]]]
    # spatial_scale: image box (0, 0, 8, 8) on a 1/2 map is the map box (0, 0, 4, 4)
    scaled = ps.SimpleRoIAlign((2, 2), 0.5)(feat, torch.tensor([[0.0, 0.0, 0.0, 8.0, 8.0]]))
    assert torch.equal(scaled, out)


@pytest.mark.parametrize("aligned", [True, False])
def test_simple_roi_align_matches_mmcv_algorithm(aligned):
    torch.manual_seed(6)
    feat = torch.randn(3, 4, 12, 10, dtype=torch.double)
    rois = _rois(9, 3, dtype=torch.double)
    module = ps.SimpleRoIAlign((3, 4), 0.5, aligned)
    out = module(feat, rois)
    assert out.shape == (9, 4, 3, 4) and out.is_contiguous()
    torch.testing.assert_close(out, _simple_roi_align_reference(feat, rois, (3, 4), 0.5, aligned))
    out32 = module(feat.float(), rois.float())
    torch.testing.assert_close(out32, out.float(), rtol=1e-5, atol=1e-5)


def test_simple_roi_align_groups_rois_by_image_like_mmcv():
    torch.manual_seed(7)
    feat = torch.randn(2, 3, 8, 8)
    rois = _rois(5, 2)
    shuffled = rois[[3, 0, 4, 1, 2]].clone()
    shuffled[:, 0] = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0])
    out = ps.SimpleRoIAlign(2, 1.0)(feat, shuffled)
    torch.testing.assert_close(out, _simple_roi_align_reference(feat, shuffled, (2, 2), 1.0, True))
    # image 0's RoIs (input rows 1, 3, 4) first, then image 1's (rows 0, 2)
    by_image = ps.SimpleRoIAlign(2, 1.0)(feat, shuffled[[1, 3, 4, 0, 2]])
    assert torch.equal(out, by_image)


def test_simple_roi_align_truncates_batch_index():
    feat = torch.randn(2, 3, 6, 6)
    rois = torch.tensor([[0.9, 1.0, 1.0, 4.0, 4.0], [-0.5, 1.0, 1.0, 4.0, 4.0], [1.7, 1.0, 1.0, 4.0, 4.0]])
    out = ps.SimpleRoIAlign(2, 1.0)(feat, rois)
    ref = ps.SimpleRoIAlign(2, 1.0)(feat, torch.cat([torch.tensor([[0.0], [0.0], [1.0]]), rois[:, 1:]], 1))
    assert torch.equal(out, ref)


def test_simple_roi_align_degenerate_single_and_outside():
    feat = _linear_map(5, 5)
    point = ps.SimpleRoIAlign((2, 3), 1.0)(feat, torch.tensor([[0.0, 2.5, 1.5, 2.5, 1.5]]))
    # a zero-size box reads the same point everywhere: pixel (2, 1) -> 4 * 1 + 2 + 1
    torch.testing.assert_close(point, torch.full((1, 1, 2, 3), 7.0))
    far = ps.SimpleRoIAlign(3, 1.0)(feat, torch.tensor([[0.0, 100.0, 100.0, 120.0, 130.0]]))
    assert torch.equal(far, torch.zeros(1, 1, 3, 3))


def test_simple_roi_align_empty_rois():
    feat = torch.randn(2, 3, 6, 6, requires_grad=True)
    out = ps.SimpleRoIAlign((2, 4), 1.0)(feat, torch.zeros(0, 5))
    assert out.shape == (0, 3, 2, 4)
    out.sum().backward()
    assert torch.equal(feat.grad, torch.zeros_like(feat))


def test_simple_roi_align_gradcheck():
    torch.manual_seed(8)
    feat = torch.randn(2, 1, 4, 5, dtype=torch.double, requires_grad=True)
    rois = _rois(4, 2, dtype=torch.double)
    rois[:, 1:] /= 4
    for aligned in (True, False):
        module = ps.SimpleRoIAlign((2, 3), 0.8, aligned)
        assert torch.autograd.gradcheck(lambda f: module(f, rois), (feat,))


def test_simple_roi_align_gradient_equals_reference_and_no_roi_gradient():
    torch.manual_seed(9)
    feat = torch.randn(2, 3, 9, 7, dtype=torch.double, requires_grad=True)
    rois = _rois(6, 2, dtype=torch.double).requires_grad_()
    out = ps.SimpleRoIAlign(3, 0.5)(feat, rois)
    ref = _simple_roi_align_reference(feat, rois.detach(), (3, 3), 0.5, True)
    go = torch.randn_like(out)
    (mine,) = torch.autograd.grad(out, feat, go)
    (theirs,) = torch.autograd.grad(ref, feat, go)
    torch.testing.assert_close(mine, theirs)
    assert out.grad_fn is not None and torch.autograd.grad(out, rois, go, allow_unused=True)[0] is None


def test_simple_roi_align_half_features():
    torch.manual_seed(10)
    feat = torch.randn(2, 4, 8, 8)
    rois = _rois(5, 2)
    ref = ps.SimpleRoIAlign(2, 1.0)(feat, rois)
    for dtype in (torch.float16, torch.bfloat16):
        out = ps.SimpleRoIAlign(2, 1.0)(feat.to(dtype), rois.to(dtype))
        assert out.dtype == dtype
        torch.testing.assert_close(out.float(), ref, rtol=3e-2, atol=1e-1)


def test_simple_roi_align_module_attributes_repr_state_dict():
    module = ps.SimpleRoIAlign(7, 0.25)
    assert module.output_size == (7, 7) and module.spatial_scale == 0.25 and isinstance(module.spatial_scale, float)
    assert module.aligned is True and module.use_torchvision is False
    assert repr(module) == "SimpleRoIAlign(output_size=(7, 7), spatial_scale=0.25"  # unclosed, as mmcv
    assert repr(ps.SimpleRoIAlign((2, 3), 1, aligned=False)) == "SimpleRoIAlign(output_size=(2, 3), spatial_scale=1.0"
    assert module.state_dict() == {} and list(module.parameters()) == []
    module.load_state_dict({}, strict=True)


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize("call,error,words", [
    (lambda: ps.bilinear_grid_sample(torch.zeros(1, 4, 4), torch.zeros(1, 2, 2, 2)), ValueError, "im"),
    (lambda: ps.bilinear_grid_sample(torch.zeros(1, 1, 4, 4), torch.zeros(1, 2, 2)), ValueError, "grid"),
    (lambda: ps.bilinear_grid_sample(torch.zeros(2, 1, 4, 4), torch.zeros(1, 2, 2, 2)), ValueError, "batch"),
    (lambda: ps.bilinear_grid_sample(torch.zeros(1, 1, 4, 4, dtype=torch.long), torch.zeros(1, 2, 2, 2)),
     TypeError, "im"),
    (lambda: ps.bilinear_grid_sample([1.0], torch.zeros(1, 2, 2, 2)), TypeError, "im"),
    (lambda: ps.point_sample(torch.zeros(1, 1, 4, 4), torch.zeros(1, 3, 3)), ValueError, "points"),
    (lambda: ps.point_sample(torch.zeros(1, 1, 4, 4), torch.zeros(2, 3, 2)), ValueError, "batch"),
    (lambda: ps.point_sample(torch.zeros(1, 4, 4), torch.zeros(1, 3, 2)), ValueError, "input"),
    (lambda: ps.point_sample(torch.zeros(1, 1, 4, 4), torch.zeros(1, 3, 2, dtype=torch.double)), TypeError,
     "dtype"),
    (lambda: ps.rel_roi_point_to_abs_img_point(torch.zeros(2, 5), torch.zeros(3, 4, 2)), ValueError, "roi"),
    (lambda: ps.rel_roi_point_to_abs_img_point(torch.zeros(2, 6), torch.zeros(2, 4, 2)), ValueError, "rois"),
    (lambda: ps.rel_roi_point_to_abs_img_point(torch.zeros(2, 5), torch.zeros(2, 4, 3)), ValueError,
     "rel_roi_points"),
    (lambda: ps.abs_img_point_to_rel_img_point(torch.zeros(1, 2, 2), [4, 4]), TypeError, "img"),
    (lambda: ps.abs_img_point_to_rel_img_point(torch.zeros(1, 2, 2), (4, 4, 4)), ValueError, "img"),
    (lambda: ps.abs_img_point_to_rel_img_point(torch.zeros(1, 2, 2), torch.zeros(4, 4)), ValueError, "img"),
    (lambda: ps.get_shape_from_feature_map(torch.zeros(3, 4)), ValueError, "x"),
    (lambda: ps.SimpleRoIAlign(2, 1.0)(torch.zeros(2, 1, 4, 4), torch.tensor([[2.0, 0, 0, 1, 1]])),
     ValueError, "batch indices"),
    (lambda: ps.SimpleRoIAlign(2, 1.0)(torch.zeros(2, 1, 4, 4), torch.tensor([[-1.0, 0, 0, 1, 1]])),
     ValueError, "batch indices"),
    (lambda: ps.SimpleRoIAlign(2, 1.0)(torch.zeros(2, 1, 4, 4), torch.zeros(3, 4)), ValueError, "rois"),
    (lambda: ps.SimpleRoIAlign(2, 1.0)(torch.zeros(1, 4, 4), torch.zeros(3, 5)), ValueError, "features"),
    (lambda: ps.SimpleRoIAlign(2, 1.0)(torch.zeros(1, 1, 4, 4), torch.zeros(3, 5, dtype=torch.long)), TypeError,
     "rois"),
])
def test_bad_input_raises_clear_errors(call, error, words):
    with pytest.raises(error, match=words) as info:
        call()
    assert isinstance(info.value, AssertionError)  # mmcv asserted these
    op_names = ("bilinear_grid_sample", "point_sample", "rel_roi_point_to_abs_img_point",
                "abs_img_point_to_rel_img_point", "get_shape_from_feature_map", "SimpleRoIAlign")
    assert any(str(info.value).startswith(name + ":") for name in op_names)


def test_device_mismatch_is_reported():
    with pytest.raises(ValueError, match="one device"):
        ps.bilinear_grid_sample(torch.zeros(1, 1, 4, 4), torch.zeros(1, 2, 2, 2, device="meta"))


MMCV_SIGNATURES = {  # parameter names and defaults of mmcv 2.2.0 / mmcv-full 1.7.2
    "bilinear_grid_sample": "(im, grid, align_corners=False)",
    "normalize": "(grid)",
    "denormalize": "(grid)",
    "generate_grid": "(num_grid, size, device)",
    "rel_roi_point_to_abs_img_point": "(rois, rel_roi_points)",
    "get_shape_from_feature_map": "(x)",
    "abs_img_point_to_rel_img_point": "(abs_img_points, img, spatial_scale=1.0)",
    "rel_roi_point_to_rel_img_point": "(rois, rel_roi_points, img, spatial_scale=1.0)",
    "point_sample": "(input, points, align_corners=False, **kwargs)",
    "is_in_onnx_export_without_custom_ops": "()",
    "SimpleRoIAlign": "(output_size, spatial_scale, aligned=True)",
}


@pytest.mark.parametrize("name", sorted(MMCV_SIGNATURES))
def test_signatures_match_mmcv(name):
    import inspect

    sig = inspect.signature(getattr(ps, name))
    plain = sig.replace(parameters=[p.replace(annotation=inspect.Parameter.empty) for p in sig.parameters.values()],
                        return_annotation=inspect.Signature.empty)
    assert str(plain) == MMCV_SIGNATURES[name]


# --- registry ------------------------------------------------------------------------------------


def test_registry_entry_lists_every_mmcv_name():
    from mmcv_migrate.rewrites.catalogue import load_catalogue
    from mmcv_runtime import registry

    entry = registry._ENTRIES["point_sample"]
    assert set(entry.names) == set(load_catalogue().submodules["point_sample"].names)
    assert all(hasattr(ps, name) for name in entry.names)
    assert entry.ext_functions == () and entry.backward == "yes" and entry.devices == ("any",)
