"""mmcv.ops.prroi_pool in the runtime: mmcv's own test expectations, a loop-for-loop reference of the CUDA
kernels (forward, input gradient, coordinate gradient), gradcheck, edge cases, errors, the _ext ABI."""

from __future__ import annotations

import importlib
import math

import pytest
import torch

pp = importlib.import_module("mmcv_runtime.ops.prroi_pool")
ext = importlib.import_module("mmcv_runtime.ext._prroi_pool")
from mmcv_runtime import registry  # noqa: E402

# --- mmcv's tests/test_ops/test_prroi_pool.py: inputs, then (output, input grad, rois grad), pool 2x2 --

MMCV_CASES = [
    ([[[[1., 2.], [3., 4.]]]], [[0., 0., 0., 1., 1.]],
     [[[[1.75, 2.25], [2.75, 3.25]]]], [[[[1., 1.], [1., 1.]]]], [[0., 2., 4., 2., 4.]]),
    ([[[[1., 2.], [3., 4.]], [[4., 3.], [2., 1.]]]], [[0., 0., 0., 1., 1.]],
     [[[[1.75, 2.25], [2.75, 3.25]], [[3.25, 2.75], [2.25, 1.75]]]],
     [[[[1., 1.], [1., 1.]], [[1., 1.], [1., 1.]]]], [[0., 0., 0., 0., 0.]]),
    ([[[[1., 2., 5., 6.], [3., 4., 7., 8.], [9., 10., 13., 14.], [11., 12., 15., 16.]]]], [[0., 0., 0., 3., 3.]],
     [[[[3.75, 6.91666651], [10.08333302, 13.25]]]],
     [[[[0.11111111, 0.22222224, 0.22222222, 0.11111111], [0.22222224, 0.444444448, 0.44444448, 0.22222224],
        [0.22222224, 0.44444448, 0.44444448, 0.22222224], [0.11111111, 0.22222224, 0.22222224, 0.11111111]]]],
     [[0.0, 3.33333302, 6.66666603, 3.33333349, 6.66666698]]),
]


@pytest.mark.parametrize("case", MMCV_CASES, ids=["2x2", "2ch", "4x4"])
def test_mmcv_expectations(case):
    x = torch.tensor(case[0], requires_grad=True)
    rois = torch.tensor(case[1], requires_grad=True)
    out = pp.prroi_pool(x, rois, (2, 2), 1.0)
    out.backward(torch.ones_like(out))
    torch.testing.assert_close(out, torch.tensor(case[2]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x.grad, torch.tensor(case[3]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rois.grad, torch.tensor(case[4]), rtol=1e-5, atol=1e-5)


# --- a reference that walks the kernels' loops (unit cell by unit cell), in float64 -----------------


def _pixel(data, h, w):
    height, width = len(data), len(data[0])
    return data[h][w] if 0 <= h < height and 0 <= w < width else 0.0


def _interp(data, y, x):
    """The hat-function interpolation with zero padding (PrRoIPoolingInterpolation)."""
    y0, x0 = math.floor(y), math.floor(x)
    return sum(_pixel(data, y0 + a, x0 + b) * (1 - abs(y - y0 - a)) * (1 - abs(x - x0 - b))
               for a in (0, 1) for b in (0, 1))


def _cell_weights(y0, x0, y1, x1, sh, sw):
    """Corner pixels of unit cell (sh, sw) and the integrals of their hat weights over [y0,y1]x[x0,x1]."""
    def lo(a, b):  # integral of (1 - t) over [a, b]
        return (b - b * b / 2) - (a - a * a / 2)

    def hi(a, b):  # integral of t over [a, b]
        return (b * b - a * a) / 2
    ya, yb, xa, xb = y0 - sh, y1 - sh, x0 - sw, x1 - sw
    return [((sh, sw), lo(ya, yb) * lo(xa, xb)), ((sh, sw + 1), lo(ya, yb) * hi(xa, xb)),
            ((sh + 1, sw), hi(ya, yb) * lo(xa, xb)), ((sh + 1, sw + 1), hi(ya, yb) * hi(xa, xb))]


def _bins(roi, ph_n, pw_n, scale):
    x1, y1, x2, y2 = (v * scale for v in roi[1:])
    bw, bh = max(x2 - x1, 0.0) / pw_n, max(y2 - y1, 0.0) / ph_n
    for ph in range(ph_n):
        for pw in range(pw_n):
            bx1, by1 = x1 + bw * pw, y1 + bh * ph
            yield ph, pw, bx1, by1, bx1 + bw, by1 + bh, bw * bh


def _cells(bx1, by1, bx2, by2):
    for cx in range(math.floor(bx1), math.ceil(bx2)):
        for cy in range(math.floor(by1), math.ceil(by2)):
            yield cy, cx, max(by1, cy), max(bx1, cx), min(by2, cy + 1), min(bx2, cx + 1)


def reference(features, rois, pooled, scale, grad_out):
    """(output, input grad, rois grad) by the kernels' loops and formulas."""
    feats, rois_l, g = features.double().tolist(), rois.double().tolist(), grad_out.double().tolist()
    k, c = len(rois_l), features.size(1)
    out = torch.zeros(k, c, *pooled, dtype=torch.float64)
    gin = torch.zeros(features.shape, dtype=torch.float64)
    groi = torch.zeros(k, 5, dtype=torch.float64)
    for r, roi in enumerate(rois_l):
        b = int(roi[0])
        for ch in range(c):
            data = feats[b][ch]
            for ph, pw, bx1, by1, bx2, by2, area in _bins(roi, *pooled, scale):
                if area == 0:
                    continue
                total = 0.0
                for cy, cx, y0, x0, y1, x1 in _cells(bx1, by1, bx2, by2):
                    for (py, px), wgt in _cell_weights(y0, x0, y1, x1, cy, cx):
                        total += _pixel(data, py, px) * wgt
                        if 0 <= py < len(data) and 0 <= px < len(data[0]):
                            gin[b, ch, py, px] += g[r][ch][ph][pw] / area * wgt
                val = total / area
                out[r, ch, ph, pw] = val

                def line(at, s, t, along_y):  # integral of f along a bin edge, piecewise linear
                    acc = 0.0
                    for u in range(math.floor(s), math.ceil(t)):
                        a, bb = max(s, u) - u, min(t, u + 1) - u
                        c1 = _interp(data, u, at) if along_y else _interp(data, at, u)
                        c2 = _interp(data, u + 1, at) if along_y else _interp(data, at, u + 1)
                        acc += 0.5 * (bb * bb - a * a) * (c2 - c1) + (bb - a) * c1
                    return acc
                px1 = (-line(bx1, by1, by2, True) + (by2 - by1) * val) / area * scale
                px2 = (line(bx2, by1, by2, True) - (by2 - by1) * val) / area * scale
                py1 = (-line(by1, bx1, bx2, False) + (bx2 - bx1) * val) / area * scale
                py2 = (line(by2, bx1, bx2, False) - (bx2 - bx1) * val) / area * scale
                go = g[r][ch][ph][pw]
                fw0, fw1 = pw / pooled[1], (pw + 1) / pooled[1]
                fh0, fh1 = ph / pooled[0], (ph + 1) / pooled[0]
                groi[r, 1] += (px1 * (1 - fw0) + px2 * (1 - fw1)) * go
                groi[r, 2] += (py1 * (1 - fh0) + py2 * (1 - fh1)) * go
                groi[r, 3] += (px2 * fw1 + px1 * fw0) * go
                groi[r, 4] += (py2 * fh1 + py1 * fh0) * go
    return out, gin, groi


def _random_case(seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(2, 3, 5, 6, generator=g, dtype=dtype)
    rois = torch.tensor([
        [0.0, 0.3, 0.6, 4.2, 3.7],  # inside
        [1.7, -2.4, -1.3, 3.1, 2.2],  # batch 1.7 -> 1; starts outside the map
        [1.0, 4.1, 3.3, 8.6, 7.9],  # runs past the bottom-right, into the zero padding
        [0.0, -6.0, -5.0, -3.0, -2.5],  # entirely outside: reads zeros
        [0.0, 2.0, 1.0, 2.0, 4.0],  # zero width: empty bins
        [1.0, 3.0, 3.0, 1.0, 4.0],  # x2 < x1: empty
        [0.0, 1.25, 2.1, 1.65, 2.35],  # bins far smaller than a pixel
    ], dtype=dtype)
    moved = [0, 1, 2, 3, 6]  # the degenerate RoIs stay exactly degenerate
    rois[moved, 1:] += 0.05 * torch.rand(len(moved), 4, generator=g, dtype=dtype)
    return feats, rois, torch.randn(rois.size(0), 3, 2, 3, generator=g, dtype=dtype)


@pytest.mark.parametrize("scale", [1.0, 0.5, 2.0])
def test_matches_kernel_loops(scale):
    feats, rois, grad = _random_case(int(scale * 10))
    rois[:, 1:] = rois[:, 1:] / scale
    x, r = feats.clone().requires_grad_(), rois.clone().requires_grad_()
    out = pp.prroi_pool(x, r, (2, 3), scale)
    out.backward(grad)
    ref_out, ref_gin, ref_groi = reference(feats, rois, (2, 3), scale, grad)
    torch.testing.assert_close(out, ref_out, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(x.grad, ref_gin, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(r.grad, ref_groi, rtol=1e-8, atol=1e-8)
    assert out[3].abs().max() < 1e-12 and out[4:6].abs().max() == 0


def test_float32_matches_kernel_loops():
    feats, rois, grad = _random_case(3, torch.float32)
    x, r = feats.clone().requires_grad_(), rois.clone().requires_grad_()
    out = pp.prroi_pool(x, r, (2, 3), 1.0)
    out.backward(grad)
    ref_out, ref_gin, ref_groi = reference(feats, rois, (2, 3), 1.0, grad)
    assert out.dtype == x.grad.dtype == r.grad.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x.grad.double(), ref_gin, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(r.grad.double(), ref_groi, rtol=1e-4, atol=1e-4)


# --- gradcheck ------------------------------------------------------------------------------------


def test_gradcheck_features_and_rois():
    g = torch.Generator().manual_seed(7)
    feats = torch.randn(2, 2, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    batch = torch.tensor([[0.0], [1.0], [1.0]], dtype=torch.float64)
    # bin edges stay clear of integers, so the finite differences see one quadratic piece
    coords = torch.tensor([[0.33, 0.71, 4.17, 3.62], [-1.56, -0.81, 2.89, 2.46], [3.14, 2.27, 7.44, 6.58]],
                          dtype=torch.float64, requires_grad=True)

    def fn(x, c):
        return pp.prroi_pool(x, torch.cat([batch, c], 1), (2, 2), 0.9)

    assert torch.autograd.gradcheck(fn, (feats, coords), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_gradcheck_module_like_mmcv():
    x = torch.tensor([[[[1., 2., 5., 6.], [3., 4., 7., 8.], [9., 10., 13., 14.], [11., 12., 15., 16.]]]],
                     dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0., 0.1, 0.2, 2.9, 2.7]], dtype=torch.float64)
    assert torch.autograd.gradcheck(pp.PrRoIPool((2, 2), 1.0), (x, rois))


# --- edge cases -----------------------------------------------------------------------------------


def test_empty_rois():
    x = torch.randn(2, 4, 5, 5, requires_grad=True)
    rois = torch.zeros(0, 5, requires_grad=True)
    out = pp.prroi_pool(x, rois, (3, 3))
    assert out.shape == (0, 4, 3, 3)
    out.sum().backward()
    assert x.grad.abs().sum() == 0 and rois.grad.shape == (0, 5)


@pytest.mark.parametrize("shape", [(2, 0, 5, 5), (2, 3, 0, 4), (2, 3, 4, 0)])
def test_empty_channels_or_map(shape):
    x = torch.randn(shape, requires_grad=True)
    rois = torch.tensor([[1.0, 0.5, 0.5, 3.0, 2.5]], requires_grad=True)
    out = pp.prroi_pool(x, rois, (2, 2))
    assert out.shape == (1, shape[1], 2, 2) and out.abs().sum() == 0  # an empty map reads 0 everywhere
    out.sum().backward()
    assert x.grad.shape == shape and rois.grad.abs().sum() == 0


def test_single_roi_and_int_output_size():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    out = pp.prroi_pool(x, torch.tensor([[0.0, 1.0, 1.0, 2.0, 2.0]]), 1)
    # the bilinear map is affine inside the map: its mean over the square is its value at the centre
    assert out.shape == (1, 1, 1, 1) and out.item() == pytest.approx(1.5 * 4 + 1.5)


def test_degenerate_and_nan_rois_give_zero_and_no_gradient():
    x = torch.randn(1, 2, 4, 4, requires_grad=True)
    rois = torch.tensor([[0.0, 1.0, 1.0, 1.0, 3.0], [0.0, 3.0, 1.0, 1.0, 3.0], [0.0, float("nan"), 1.0, 2.0, 3.0],
                         [0.0, 1.0, 2.0, 3.0, float("nan")]], requires_grad=True)
    out = pp.prroi_pool(x, rois, (2, 2))
    assert out.abs().sum() == 0  # mmcv's fmax(NaN, 0) = 0 makes a NaN-sized RoI empty too
    out.backward(torch.ones_like(out))
    assert x.grad.abs().sum() == 0 and rois.grad.abs().sum() == 0


def test_out_of_map_reads_zero_padding():
    x = torch.ones(1, 1, 3, 3)
    far = pp.prroi_pool(x, torch.tensor([[0.0, 10.0, 10.0, 20.0, 20.0], [0.0, -9.0, -9.0, -1.0, -1.0]]), (2, 2))
    assert far.abs().max() < 1e-12  # zero up to the rounding of cancelling prefix sums
    # [2, 3] x [0, 2]: over x the map fades from 1 at column 2 to 0 one pixel past it -> mean 0.5
    edge = pp.prroi_pool(x, torch.tensor([[0.0, 2.0, 0.0, 3.0, 2.0]]), 1)
    assert edge.item() == pytest.approx(0.5)
    huge = pp.prroi_pool(x, torch.tensor([[0.0, -1e20, -1e20, 1e20, 1e20]]), 1)
    assert torch.isfinite(huge).all()


def _small_bins_case(dtype):
    # values near 1000, affine in x: a bin's mean is the map at the bin's centre
    x = (torch.full((1, 1, 100, 168), 1000.0, dtype=torch.float64) + torch.arange(168) / 167).to(dtype)
    rois = torch.tensor([[0.0, 150.3, 80.2, 151.1, 81.0]], dtype=dtype)
    return x, rois


def test_small_bins_on_a_large_map_are_exact_in_float64():
    # a bin is a small difference of large prefix sums: the float64 table keeps it exact
    x, rois = _small_bins_case(torch.float64)
    out = pp.prroi_pool(x, rois, (4, 4))
    centre = 150.3 + 0.2 * (torch.arange(4, dtype=torch.float64) + 0.5)
    torch.testing.assert_close(out[0, 0], (1000.0 + centre / 167).expand(4, 4), rtol=1e-9, atol=0)


def test_float32_bin_edges_round_like_the_kernel():
    # The kernel's float32 bin is [first, first + size] with first = start + size * p, each rounded;
    # near y = 80 that bin is an ulp (7.6e-6) off 0.2 high, while the area it divides by is
    # size_w * size_h: mmcv's output is off by that ratio, and so is the runtime's, bin by bin.
    x, rois = _small_bins_case(torch.float32)
    out = pp.prroi_pool(x, rois, (4, 4))[0, 0].double()
    f32 = torch.float32
    size = (rois[0, 3] - rois[0, 1]) / 4, (rois[0, 4] - rois[0, 2]) / 4
    first_x = rois[0, 1] + size[0] * torch.arange(4, dtype=f32)
    first_y = rois[0, 2] + size[1] * torch.arange(4, dtype=f32)
    width, height = (first_x + size[0]).double() - first_x.double(), (first_y + size[1]).double() - first_y.double()
    x_mean = (1000.0 + (first_x.double() + width / 2) / 167).to(f32).double()
    expected = x_mean[None, :] * height[:, None] * width[None, :] / (size[0] * size[1]).double()
    torch.testing.assert_close(out, expected, rtol=2e-7, atol=0)
    assert (out[2] - out[1]).abs().max() > 1e-2  # the rounding is visible: row 2 differs from rows 1 and 3


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs(dtype):
    feats, rois, _ = _random_case(11, torch.float32)
    ref = pp.prroi_pool(feats, rois, (2, 3))
    x, r = feats.to(dtype).requires_grad_(), rois.to(dtype).requires_grad_()
    out = pp.prroi_pool(x, r, (2, 3))
    out.float().sum().backward()
    assert out.dtype == x.grad.dtype == r.grad.dtype == dtype
    torch.testing.assert_close(out.float(), ref, rtol=0.05, atol=0.05)


def test_mixed_dtypes_keep_each_dtype():
    feats, rois, _ = _random_case(12, torch.float32)
    r = rois.double().requires_grad_()
    out = pp.prroi_pool(feats, r, (2, 3))
    out.sum().backward()
    assert out.dtype == torch.float32 and r.grad.dtype == torch.float64


def test_chunking_gives_the_same_result(monkeypatch):
    feats, rois, grad = _random_case(5)
    x, r = feats.clone().requires_grad_(), rois.clone().requires_grad_()
    out = pp.prroi_pool(x, r, (2, 3))
    out.backward(grad)
    monkeypatch.setattr(pp, "_CHUNK_ELEMENTS", 1)
    x2, r2 = feats.clone().requires_grad_(), rois.clone().requires_grad_()
    out2 = pp.prroi_pool(x2, r2, (2, 3))
    out2.backward(grad)
    torch.testing.assert_close(out2, out, rtol=0, atol=1e-12)
    torch.testing.assert_close(x2.grad, x.grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(r2.grad, r.grad, rtol=0, atol=1e-12)


# --- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("feats, rois, size, error, match", [
    (torch.zeros(1, 4, 4), torch.zeros(1, 5), 2, ValueError, "features must have shape"),
    (torch.zeros(1, 1, 4, 4), torch.zeros(1, 4), 2, ValueError, "rois must have shape"),
    (torch.zeros(1, 1, 4, 4, dtype=torch.int32), torch.zeros(1, 5), 2, TypeError, "features must be a floating"),
    (torch.zeros(1, 1, 4, 4), torch.zeros(1, 5, dtype=torch.long), 2, TypeError, "rois must be a floating"),
    (torch.zeros(1, 1, 4, 4), [[0, 0, 0, 1, 1]], 2, TypeError, "rois must be a torch.Tensor"),
    (torch.zeros(1, 1, 4, 4), torch.tensor([[1.0, 0, 0, 1, 1]]), 2, ValueError, "batch index"),
    (torch.zeros(1, 1, 4, 4), torch.tensor([[-1.0, 0, 0, 1, 1]]), 2, ValueError, "batch index"),
    (torch.zeros(1, 1, 4, 4), torch.zeros(1, 5), (0, 2), ValueError, "output_size must be positive"),
    (torch.zeros(1, 1, 4, 4), torch.zeros(1, 5, device="meta"), 2, ValueError, "one device"),
])
def test_bad_input(feats, rois, size, error, match):
    with pytest.raises(error, match=f"prroi_pool: .*{match}"):
        pp.prroi_pool(feats, rois, size)


# --- the _ext ABI, the module, the registry -------------------------------------------------------


def test_ext_adapters_match_the_functional_api():
    feats, rois, grad = _random_case(21)
    x, r = feats.clone().requires_grad_(), rois.clone().requires_grad_()
    out = pp.prroi_pool(x, r, (2, 3), 0.75)
    out.backward(grad)
    output = torch.zeros_like(out)
    assert ext.prroi_pool_forward(feats, rois, output, pooled_height=2, pooled_width=3, spatial_scale=0.75) is None
    torch.testing.assert_close(output, out.detach(), rtol=0, atol=0)
    grad_input = torch.zeros_like(feats)
    for _ in range(2):  # the kernels accumulate
        ext.prroi_pool_backward(grad, rois, grad_input, pooled_height=2, pooled_width=3, spatial_scale=0.75)
    torch.testing.assert_close(grad_input, 2 * x.grad)
    grad_rois = torch.full_like(rois, 5.0)
    ext.prroi_pool_coor_backward(output, grad, feats, rois, grad_rois, pooled_height=2, pooled_width=3,
                                 spatial_scale=0.75)
    torch.testing.assert_close(grad_rois[:, 1:], 5.0 + r.grad[:, 1:])
    # the batch column is zeroed where a thread of the RoI reached the atomicAdds, else left alone
    assert grad_rois[:, 0].tolist() == [0.0, 0.0, 0.0, 0.0, 5.0, 5.0, 0.0]
    assert ext.__all__ == ["prroi_pool_backward", "prroi_pool_coor_backward", "prroi_pool_forward"]


def test_module_repr_state_dict_and_registry():
    pool = pp.PrRoIPool(7, spatial_scale=1 / 16)
    assert repr(pool) == "PrRoIPool(output_size=(7, 7), spatial_scale=0.0625)"
    assert pool.output_size == (7, 7) and pool.spatial_scale == 0.0625
    assert pool.state_dict() == {}
    out = pool(torch.randn(1, 3, 8, 8), torch.tensor([[0.0, 0.0, 0.0, 100.0, 90.0]]))
    assert out.shape == (1, 3, 7, 7)
    assert pp.prroi_pool == pp.PrRoIPoolFunction.apply
    entry = registry.entries()["prroi_pool"]
    assert set(entry.names) == {"PrRoIPool", "PrRoIPoolFunction", "prroi_pool"}
    assert set(entry.ext_functions) == set(ext.__all__) and entry.backward == "yes"


def test_autocast_and_memory_layouts():
    x = torch.randn(2, 3, 6, 7)
    rois = torch.tensor([[1.0, 0.5, 0.5, 5.0, 4.5], [0.0, 1.2, 1.1, 3.3, 3.4]])
    ref = pp.prroi_pool(x, rois, (2, 2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = pp.prroi_pool(x, rois, (2, 2))
    assert out.dtype == torch.float32 and torch.equal(out, ref)
    assert torch.equal(pp.prroi_pool(x.to(memory_format=torch.channels_last), rois.t().contiguous().t(), (2, 2)), ref)


def test_ext_signatures_follow_the_catalogue():
    import inspect

    from mmcv_migrate.rewrites.catalogue import load_catalogue

    functions = load_catalogue().ext_functions
    for name in ext.__all__:
        assert list(inspect.signature(getattr(ext, name)).parameters) == list(functions[name].args), name
