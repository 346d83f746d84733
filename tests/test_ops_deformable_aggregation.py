"""Sparse4D / SparseDrive deformable aggregation in the runtime: against a scalar transcription of the
projects' CUDA kernels (forward and the three gradients), gradcheck, both layouts (v3 / SparseDrive and
Sparse4D v2), ``feature_maps_format`` in both directions, dtypes, chunking, edge cases and errors.
"""

from __future__ import annotations

import importlib
import math
import struct

import pytest
import torch
import torch.nn.functional as F

da = importlib.import_module("mmcv_runtime.ops.deformable_aggregation")
bilinear = importlib.import_module("mmcv_runtime.ops._bilinear")
DAF = da.DeformableAggregationFunction
daf = da.deformable_aggregation_function
feature_maps_format = da.feature_maps_format

# --- a scalar transcription of the kernels ------------------------------------------------------


def f32(x: float) -> float:
    return struct.unpack("f", struct.pack("f", x))[0]


def _sample(read, height, width, loc_w, loc_h, rnd=float):
    """The kernels' ``bilinear_sampling(_grad)`` for one channel: ``(val, taps, grad_w, grad_h)`` with
    taps ``[(row, col, weight)]`` of the corners on the map, or None for a sample the kernel skips.
    ``rnd`` rounds the pixel coordinates like the kernel (``f32``: float32 ``loc * H - 0.5``)."""
    if loc_w <= 0 or loc_w >= 1 or loc_h <= 0 or loc_h >= 1:
        return None
    h_im, w_im = rnd(rnd(loc_h * height) - 0.5), rnd(rnd(loc_w * width) - 0.5)
    h_low, w_low = math.floor(h_im), math.floor(w_im)
    h_high, w_high = h_low + 1, w_low + 1
    lh, lw = h_im - h_low, w_im - w_low
    hh, hw = 1 - lh, 1 - lw
    corners = [(h_low >= 0 and w_low >= 0, h_low, w_low, hh * hw, -hw, -hh),
               (h_low >= 0 and w_high <= width - 1, h_low, w_high, hh * lw, -lw, hh),
               (h_high <= height - 1 and w_low >= 0, h_high, w_low, lh * hw, hw, -lh),
               (h_high <= height - 1 and w_high <= width - 1, h_high, w_high, lh * lw, lw, lh)]
    val = grad_h = grad_w = 0.0
    taps = []
    for ok, r, c, wgt, dh, dw in corners:
        if ok:
            v = read(r, c)
            val += wgt * v
            grad_h += dh * v
            grad_w += dw * v
            taps.append((r, c, wgt))
    return val, taps, grad_w, grad_h


def reference_v3(feat, spatial_shape, start, loc, weights, grad_out, rnd=float):
    """The v3 / SparseDrive kernel and its backward, one thread (b, anchor, pt, cam, level, channel)
    at a time, in float64 (but the pixel coordinates, rounded by ``rnd``): returns ``(output,
    grad_feat, grad_loc, grad_weights)``."""
    f, hw, st, lc, wt, go = (t.double().tolist() for t in (feat, spatial_shape, start, loc, weights, grad_out))
    bs, num_feat, channels = feat.shape
    _, anchors, pts, cams = loc.shape[:4]
    levels, groups = weights.shape[-2:]
    out = torch.zeros(bs, anchors, channels, dtype=torch.float64)
    g_feat, g_loc, g_w = (torch.zeros(t.shape, dtype=torch.float64) for t in (feat, loc, weights))
    for b in range(bs):
        for a in range(anchors):
            for p in range(pts):
                for c in range(cams):
                    loc_w, loc_h = lc[b][a][p][c]
                    for lv in range(levels):
                        height, width = int(hw[c][lv][0]), int(hw[c][lv][1])
                        base = int(st[c][lv])
                        for ch in range(channels):
                            g = ch // (channels // groups)
                            res = _sample(lambda r, col: f[b][base + r * width + col][ch], height, width,
                                          loc_w, loc_h, rnd)
                            if res is None:
                                continue
                            val, taps, grad_w, grad_h = res
                            weight = wt[b][a][p][c][lv][g]
                            out[b, a, ch] += val * weight
                            top = go[b][a][ch] * weight
                            for r, col, wgt in taps:
                                g_feat[b, base + r * width + col, ch] += wgt * top
                            g_w[b, a, p, c, lv, g] += go[b][a][ch] * val
                            g_loc[b, a, p, c, 0] += width * grad_w * top
                            g_loc[b, a, p, c, 1] += height * grad_h * top
    return out, g_feat, g_loc, g_w


def reference_v2(feat, spatial_shape, start, loc, weights, grad_out):
    """Sparse4D v2's kernel and backward (feat (bs, cams, num_feat, C), shapes shared by the cameras,
    one output per point), one (b, pt, channel, cam, level) at a time, in float64."""
    f, hw, st, lc, wt, go = (t.double().tolist() for t in (feat, spatial_shape, start, loc, weights, grad_out))
    bs, cams, _, channels = feat.shape
    pts, levels, groups = loc.shape[1], weights.shape[3], weights.shape[4]
    out = torch.zeros(bs, pts, channels, dtype=torch.float64)
    g_feat, g_loc, g_w = (torch.zeros(t.shape, dtype=torch.float64) for t in (feat, loc, weights))
    for b in range(bs):
        for p in range(pts):
            for ch in range(channels):
                g = ch // (channels // groups)
                for c in range(cams):
                    loc_w, loc_h = lc[b][p][c]
                    for lv in range(levels):
                        height, width, base = int(hw[lv][0]), int(hw[lv][1]), int(st[lv])
                        res = _sample(lambda r, col: f[b][c][base + r * width + col][ch], height, width,
                                      loc_w, loc_h)
                        if res is None:
                            continue
                        val, taps, grad_w, grad_h = res
                        weight = wt[b][p][c][lv][g]
                        out[b, p, ch] += val * weight
                        top = go[b][p][ch] * weight
                        for r, col, wgt in taps:
                            g_feat[b, c, base + r * width + col, ch] += wgt * top
                        g_w[b, p, c, lv, g] += go[b][p][ch] * val
                        g_loc[b, p, c, 0] += width * grad_w * top
                        g_loc[b, p, c, 1] += height * grad_h * top
    return out, g_feat, g_loc, g_w


# --- inputs -------------------------------------------------------------------------------------

# per camera and level (H, W); camera 1 has its own shapes (the kernel allows any table)
SHAPES = [[[3, 4], [2, 2]], [[2, 5], [1, 3]]]


def v3_case(dtype=torch.float64, bs=2, anchors=3, pts=4, channels=6, groups=3, seed=0):
    """A small v3 problem whose locations cover every boundary rule: outside, exactly 0 and 1,
    integral pixel coordinates, corners off the map, and ordinary interior points."""
    g = torch.Generator().manual_seed(seed)
    hw = torch.tensor(SHAPES, dtype=torch.int64)
    cams, levels = hw.shape[:2]
    area = (hw[..., 0] * hw[..., 1]).flatten()
    start = (area.cumsum(0) - area).reshape(cams, levels)
    num_feat = int(area.sum()) + 2  # two trailing features nobody reads
    feat = torch.randn(bs, num_feat, channels, generator=g, dtype=torch.float64)
    loc = torch.rand(bs, anchors, pts, cams, 2, generator=g, dtype=torch.float64) * 1.2 - 0.1
    special = torch.tensor([[0.0, 0.5], [1.0, 0.5], [0.5, 0.0], [0.5, 1.0], [-1e-9, 0.5],
                            [0.5 / 4, 0.5 / 3], [1.5 / 4, 2.5 / 3], [0.02, 0.98], [0.99, 0.01],
                            [0.25, 0.5], [0.5, 0.5], [0.7, 0.3]], dtype=torch.float64)
    flat = loc.view(-1, 2)
    n = min(special.size(0), flat.size(0))
    flat[:n] = special[:n]
    weights = torch.randn(bs, anchors, pts, cams, levels, groups, generator=g, dtype=torch.float64)
    grad_out = torch.randn(bs, anchors, channels, generator=g, dtype=torch.float64)
    return [t.to(dtype) if t.is_floating_point() else t for t in (feat, hw, start, loc, weights)], grad_out.to(dtype)


def run_op(feat, hw, start, loc, weights, grad_out):
    leaves = [t.clone().requires_grad_() for t in (feat, loc, weights)]
    out = DAF.apply(leaves[0], hw, start, leaves[1], leaves[2])
    out.backward(grad_out)
    return out, leaves[0].grad, leaves[1].grad, leaves[2].grad


# --- the kernel's semantics ----------------------------------------------------------------------


def test_v3_matches_kernel_float64():
    inputs, grad_out = v3_case()
    got = run_op(*inputs, grad_out)
    want = reference_v3(*inputs, grad_out)
    for name, g, w in zip(("output", "grad mc_ms_feat", "grad sampling_location", "grad weights"), got, want):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12, msg=name)
    loc = inputs[3]
    dropped = (loc[..., 0] <= 0) | (loc[..., 0] >= 1) | (loc[..., 1] <= 0) | (loc[..., 1] >= 1)
    assert dropped.any() and (got[2][dropped] == 0).all() and (got[3][dropped] == 0).all()


def test_v3_matches_kernel_float32():
    inputs, grad_out = v3_case(torch.float32, seed=1)
    got = run_op(*inputs, grad_out)
    # the kernel computes x * W - 0.5 in float32, which decides the cell at integral coordinates
    want = reference_v3(*inputs, grad_out, rnd=f32)
    for g, w in zip(got, want):
        assert g.dtype == torch.float32
        torch.testing.assert_close(g.double(), w, rtol=1e-5, atol=1e-5)


def test_integral_pixels_take_the_kernels_one_sided_slope():
    # (x, y) on pixel centres: h_im integral, so the kernel's floor picks the right-hand cell
    hw = torch.tensor([[[4, 4]]])
    start = torch.zeros(1, 1, dtype=torch.long)
    feat = torch.arange(16, dtype=torch.float64).pow(2).view(1, 16, 1)
    loc = torch.tensor([[[[[1.5 / 4, 2.5 / 4]], [[3.5 / 4, 0.5 / 4]]]]], dtype=torch.float64)  # (1,1,2,1,2)
    weights = torch.ones(1, 1, 2, 1, 1, 1, dtype=torch.float64)
    grad_out = torch.ones(1, 1, 1, dtype=torch.float64)
    got = run_op(feat, hw, start, loc, weights, grad_out)
    want = reference_v3(feat, hw, start, loc, weights, grad_out)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-12)
    # value at (row 2, col 1) + (row 0, col 3); x slope of pixel 3 -> off-map column: -9 * W
    assert got[0].item() == 9 ** 2 + 3 ** 2
    assert got[2][0, 0, 1, 0].tolist() == [4 * (0 - 9), 4 * (7 ** 2 - 3 ** 2)]


def test_gradcheck_float64():
    inputs, _ = v3_case(bs=1, anchors=2, pts=2, channels=4, groups=2, seed=2)
    feat, hw, start, loc, weights = inputs
    loc = torch.rand(loc.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 1.4 - 0.2
    args = (feat.requires_grad_(), hw, start, loc.requires_grad_(), weights.requires_grad_())
    assert torch.autograd.gradcheck(DAF.apply, args, eps=1e-6, atol=1e-6)


def test_v2_layout_matches_its_kernel():
    g = torch.Generator().manual_seed(4)
    hw = torch.tensor([[3, 4], [2, 2]])
    start = torch.tensor([0, 12])
    bs, cams, pts, channels, groups = 2, 3, 5, 4, 2
    feat = torch.randn(bs, cams, 17, channels, generator=g, dtype=torch.float64)
    loc = torch.rand(bs, pts, cams, 2, generator=g, dtype=torch.float64) * 1.2 - 0.1
    loc[0, 0, 0] = torch.tensor([1.5 / 4, 0.5 / 3], dtype=torch.float64)
    weights = torch.randn(bs, pts, cams, 2, groups, generator=g, dtype=torch.float64)
    grad_out = torch.randn(bs, pts, channels, generator=g, dtype=torch.float64)
    got = run_op(feat, hw, start, loc, weights, grad_out)
    want = reference_v2(feat, hw, start, loc, weights, grad_out)
    for g_, w in zip(got, want):
        torch.testing.assert_close(g_, w, rtol=1e-12, atol=1e-12)
    assert got[0].shape == (bs, pts, channels)


def test_matches_the_projects_grid_sample_path_inside_the_image():
    # the non-deformable path of DeformableFeatureAggregation (grid_sample + weighted sums) agrees with
    # the op wherever the kernel reads, i.e. for points strictly inside every camera
    g = torch.Generator().manual_seed(5)
    bs, cams, channels, groups, anchors, pts = 2, 3, 8, 4, 5, 3
    maps = [torch.randn(bs, cams, channels, h, w, generator=g, dtype=torch.float64) for h, w in ((6, 10), (3, 5))]
    points = torch.rand(bs, anchors, pts, cams, 2, generator=g, dtype=torch.float64) * 0.98 + 0.01
    weights = torch.randn(bs, anchors, pts, cams, len(maps), groups, generator=g, dtype=torch.float64)
    got = daf(*feature_maps_format(maps), points, weights)
    grid = points.permute(0, 3, 1, 2, 4).flatten(0, 1) * 2 - 1  # (bs * cams, anchors, pts, 2)
    sampled = torch.stack([F.grid_sample(m.flatten(0, 1), grid, align_corners=False) for m in maps], 1)
    sampled = sampled.view(bs, cams, len(maps), groups, channels // groups, anchors, pts)
    want = torch.einsum("bclgkap,bapclg->bagk", sampled, weights).reshape(bs, anchors, channels)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


# --- dtypes, autocast, chunking, edge cases -----------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_compute_and_return_float32(dtype):
    inputs, grad_out = v3_case(dtype, seed=6)
    out, g_feat, g_loc, g_w = run_op(*inputs, grad_out)
    assert out.dtype == torch.float32
    assert g_feat.dtype == g_loc.dtype == g_w.dtype == dtype  # autograd casts back, as for the wrapper
    want = run_op(*[t.float() if t.is_floating_point() else t for t in inputs], grad_out.float())
    torch.testing.assert_close(out, want[0], rtol=0, atol=0)


def test_autocast_is_ignored():
    inputs, _ = v3_case(torch.float32, seed=7)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = daf(*inputs)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, daf(*inputs), rtol=0, atol=0)


@pytest.mark.parametrize("chunk_taps", [50, 400])  # one query per chunk; two, one chunk across images
def test_chunked_equals_whole(monkeypatch, chunk_taps):
    inputs, grad_out = v3_case(seed=8)  # 3 anchors, 192 taps per anchor
    whole = run_op(*inputs, grad_out)
    monkeypatch.setattr(da, "_CHUNK_TAPS", chunk_taps)
    for g, w in zip(run_op(*inputs, grad_out), whole):
        torch.testing.assert_close(g, w, rtol=1e-13, atol=1e-13)


def test_tap_gradients_without_the_fused_kernel(monkeypatch):
    inputs, grad_out = v3_case(seed=15)
    monkeypatch.setattr(bilinear, "_PER_SAMPLE_WEIGHTS_BACKWARD", None)  # the chunked gather instead
    for g, w in zip(run_op(*inputs, grad_out), reference_v3(*inputs, grad_out)):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


def test_only_the_requested_gradients():
    inputs, grad_out = v3_case(seed=9)
    feat, hw, start, loc, weights = inputs
    loc = loc.clone().requires_grad_()
    DAF.apply(feat, hw, start, loc, weights).backward(grad_out)
    torch.testing.assert_close(loc.grad, reference_v3(*inputs, grad_out)[2], rtol=1e-12, atol=1e-12)


def test_empty_problems():
    inputs, _ = v3_case()
    feat, hw, start, loc, weights = inputs
    for anchors, pts in ((0, 4), (3, 0)):
        l_, w_ = loc[:, :anchors, :pts].clone().requires_grad_(), weights[:, :anchors, :pts].clone().requires_grad_()
        f_ = feat.clone().requires_grad_()
        out = daf(f_, hw, start, l_, w_)
        assert out.shape == (2, anchors, 6) and not out.any()
        out.sum().backward()
        assert not f_.grad.any() and l_.grad.shape == l_.shape
    out = daf(feat[..., :0], hw, start, loc, weights)
    assert out.shape == (2, 3, 0)


def test_offmap_corners_and_dropped_samples_read_nothing():
    # non-finite pixels that the kernel never reads must not leak into the output
    hw = torch.tensor([[[2, 2]]])
    start = torch.zeros(1, 1, dtype=torch.long)
    feat = torch.tensor([[[float("nan")], [1.0], [2.0], [3.0], [float("inf")]]])  # pixel 4: unused
    loc = torch.tensor([[[[[0.9, 0.9]], [[-0.5, 0.5]], [[0.5, 1.5]]]]])  # one corner-case read, two dropped
    weights = torch.ones(1, 1, 3, 1, 1, 1)
    out = daf(feat, hw, start, loc, weights)
    # (0.9 * 2 - 0.5) = 1.3: rows/cols 1 and 2 (off-map): pixel (1, 1) = 3 with weight 0.7 * 0.7
    torch.testing.assert_close(out, torch.tensor([[[0.49 * 3.0]]]))
    # a NaN location passes the kernel's test and poisons the output, as there
    loc[0, 0, 0, 0, 0] = float("nan")
    assert daf(feat, hw, start, loc, weights).isnan().all()


def test_nan_location_is_dropped_by_v2s_kernel():
    # v2 reads when `loc > 0 && loc < 1`, which a NaN fails (v3 skips on `<= 0 || >= 1`, see above)
    g = torch.Generator().manual_seed(16)
    feat = torch.randn(1, 2, 12, 4, generator=g)
    hw, start = torch.tensor([[3, 4]]), torch.tensor([0])
    loc = torch.rand(1, 3, 2, 2, generator=g)
    weights = torch.rand(1, 3, 2, 1, 2, generator=g)
    poisoned = loc.clone()
    poisoned[0, 1, 0, 1] = float("nan")
    dropped = loc.clone()
    dropped[0, 1, 0] = -1.0
    torch.testing.assert_close(DAF.apply(feat, hw, start, poisoned, weights),
                               DAF.apply(feat, hw, start, dropped, weights))


def test_once_differentiable():
    inputs, grad_out = v3_case(seed=10)
    feat = inputs[0].clone().requires_grad_()
    out = DAF.apply(feat, *inputs[1:])
    (grad,) = torch.autograd.grad(out, feat, grad_out, create_graph=True)
    with pytest.raises(RuntimeError):
        grad.sum().backward()


# --- feature_maps_format -------------------------------------------------------------------------


def _maps(bs=2, cams=3, channels=4, shapes=((2, 3), (1, 2)), seed=11):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(bs, cams, channels, h, w, generator=g) for h, w in shapes]


def test_feature_maps_format_v3():
    maps = _maps()
    out = feature_maps_format(maps)
    assert isinstance(out, list) and len(out) == 3
    col, hw, start = out
    assert col.shape == (2, 3 * 8, 4) and col.is_contiguous()
    assert hw.dtype == start.dtype == torch.int64
    assert hw.tolist() == [[[2, 3], [1, 2]]] * 3
    assert start.tolist() == [[0, 6], [8, 14], [16, 22]]
    # camera 1, level 1, pixel (0, 1) is feature 8 + 6 + 1
    assert torch.equal(col[:, 15], maps[1][:, 1, :, 0, 1])
    back = feature_maps_format(out, inverse=True)
    assert isinstance(back, list) and len(back) == 1 and isinstance(back[0], list)
    for got, want in zip(back[0], maps):
        assert torch.equal(got, want)


def test_feature_maps_format_v3_camera_groups_keep_the_projects_offsets():
    group_a = _maps(cams=2, shapes=((2, 2), (1, 1)), seed=12)
    group_b = _maps(cams=1, shapes=((1, 3), (2, 1)), seed=13)
    col, hw, start = feature_maps_format([group_a, group_b])
    assert col.shape == (2, 2 * 5 + 5, 4)
    assert hw.tolist() == [[[2, 2], [1, 1]], [[2, 2], [1, 1]], [[1, 3], [2, 1]]]
    assert start.tolist() == [[0, 4], [5, 9], [0, 3]]  # group b counts from 0 again, as in the projects
    back = feature_maps_format([col, hw, start], inverse=True)
    assert [[tuple(m.shape) for m in run] for run in back] == [[(2, 2, 4, 2, 2), (2, 2, 4, 1, 1)],
                                                             [(2, 1, 4, 1, 3), (2, 1, 4, 2, 1)]]
    for run, group in zip(back, (group_a, group_b)):
        for got, want in zip(run, group):
            assert torch.equal(got, want)


def test_feature_maps_format_v2_static_method():
    maps = _maps()
    col, hw, start = DAF.feature_maps_format(maps)
    assert col.shape == (2, 3, 8, 4)
    assert hw.tolist() == [[2, 3], [1, 2]] and start.tolist() == [0, 6]
    assert torch.equal(col[:, 1, 7], maps[1][:, 1, :, 0, 1])
    back = DAF.feature_maps_format([col, hw, start], inverse=True)
    assert len(back) == 2 and all(torch.equal(g, w) for g, w in zip(back, maps))


def test_formats_feed_the_op_and_pass_gradients():
    maps = [m.double().requires_grad_() for m in _maps(channels=4)]
    g = torch.Generator().manual_seed(14)
    loc = torch.rand(2, 5, 3, 2, generator=g, dtype=torch.float64)
    weights = torch.randn(2, 5, 3, 2, 2, generator=g, dtype=torch.float64)
    v2 = DAF.apply(*DAF.feature_maps_format(maps), loc, weights)  # (bs, pts, C)
    v3 = daf(*feature_maps_format(maps), loc[:, :, None], weights[:, :, None])  # (bs, anchors, C)
    torch.testing.assert_close(v2, v3, rtol=1e-12, atol=1e-12)
    v2.sum().backward()
    assert all(m.grad is not None and m.grad.abs().sum() > 0 for m in maps)


# --- errors ---------------------------------------------------------------------------------------


def _bad(**change):
    inputs, _ = v3_case()
    args = dict(zip(("mc_ms_feat", "spatial_shape", "scale_start_index", "sampling_location", "weights"), inputs))
    args.update(change)
    return list(args.values())


@pytest.mark.parametrize("change, exc, text", [
    (dict(mc_ms_feat=torch.zeros(2, 30)), ValueError, "mc_ms_feat"),
    (dict(spatial_shape=torch.tensor([[3, 4], [2, 2]])), ValueError, "spatial_shape"),
    (dict(scale_start_index=torch.zeros(2, 3, dtype=torch.long)), ValueError, "scale_start_index"),
    (dict(sampling_location=torch.zeros(2, 3, 4, 3, 2)), ValueError, "sampling_location"),
    (dict(sampling_location=torch.zeros(2, 3, 4, 2, 3)), ValueError, "sampling_location"),
    (dict(weights=torch.zeros(2, 3, 4, 2, 3, 3)), ValueError, "weights"),
    (dict(weights=torch.zeros(2, 3, 4, 2, 2, 4)), ValueError, "num_groups"),
    (dict(mc_ms_feat=torch.zeros(2, 20, 6)), ValueError, "does not fit"),
    (dict(scale_start_index=torch.tensor([[0, 12], [16, 29]])), ValueError, "does not fit"),
    (dict(scale_start_index=torch.tensor([[-1, 12], [16, 26]])), ValueError, "does not fit"),
    (dict(spatial_shape=torch.tensor([[[3, 4], [2, -2]], [[2, 5], [1, 3]]])), ValueError, "does not fit"),
    (dict(sampling_location=torch.zeros(2, 3, 4, 2, 2, device="meta")), ValueError, "device"),
    (dict(weights=[0.5]), TypeError, "weights"),
    (dict(mc_ms_feat=torch.zeros(2, 30, 6, dtype=torch.complex64)), TypeError, "mc_ms_feat"),
])
def test_bad_input(change, exc, text):
    with pytest.raises(exc, match=text):
        daf(*_bad(**change))


def test_errors_name_the_op():
    with pytest.raises(ValueError, match="deformable_aggregation"):
        daf(*_bad(mc_ms_feat=torch.zeros(2, 30)))


def test_cores_for_an_ext_adapter():
    # what deformable_aggregation_ext's forward returns and its backward accumulates, without autograd
    inputs, grad_out = v3_case(seed=17)
    torch.testing.assert_close(da.forward_core(*inputs), daf(*inputs), rtol=0, atol=0)
    want = reference_v3(*inputs, grad_out)[1:]
    for got, w in zip(da.backward_core(*inputs, grad_out), want):
        torch.testing.assert_close(got, w, rtol=1e-12, atol=1e-12)
    assert da.backward_core(*inputs, grad_out, needs=(False, True, False))[::2] == (None, None)


def test_public_names():
    assert set(da.__all__) == {"DeformableAggregationFunction", "deformable_aggregation_function",
                               "feature_maps_format"}
    assert issubclass(DAF, torch.autograd.Function)
    import inspect
    assert list(inspect.signature(DAF.forward).parameters) == [
        "ctx", "mc_ms_feat", "spatial_shape", "scale_start_index", "sampling_location", "weights"]
    assert list(inspect.signature(feature_maps_format).parameters) == ["feature_maps", "inverse"]
