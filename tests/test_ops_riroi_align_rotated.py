"""mmcv.ops.riroi_align_rotated in the runtime: mmcv's test expectations, a scalar re-statement of
mmcv's CUDA kernel (forward and backward) as a reference, gradcheck, edge cases, errors, _ext ABI."""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
from kernel_reference import mmcv_bilinear
import torch
from torch.autograd import gradcheck

op = importlib.import_module("mmcv_runtime.ops.riroi_align_rotated")
ext = importlib.import_module("mmcv_runtime.ext._riroi_align_rotated")
RiRoIAlignRotated = op.RiRoIAlignRotated
RiRoIAlignRotatedFunction = op.RiRoIAlignRotatedFunction
riroi_align_rotated = op.riroi_align_rotated

# --- mmcv's own test (tests/test_ops/test_riroi_align_rotated.py), as literals ----------------

MMCV_FEATURE = [[[[1, 2], [3, 4]], [[1, 2], [4, 3]], [[4, 3], [2, 1]], [[1, 2], [5, 6]], [[3, 4], [7, 8]],
                 [[9, 10], [13, 14]], [[11, 12], [15, 16]], [[1, 1], [2, 2]]]]
MMCV_ROIS = [[0., 0.5, 0.5, 1., 1., math.pi / 3], [0., 1., 1., 3., 3., math.pi / 2]]
MMCV_OUTPUT = [[[[1.8425, 1.3516], [2.3151, 1.8241]], [[2.4779, 1.7416], [3.2173, 2.5632]],
                [[2.7149, 2.2638], [2.6540, 2.3673]], [[2.9461, 2.8638], [2.8028, 2.7205]],
                [[4.1943, 2.7214], [5.6119, 4.1391]], [[7.5276, 6.0547], [8.9453, 7.4724]],
                [[12.1943, 10.7214], [13.6119, 12.1391]], [[9.5489, 8.4237], [10.5763, 9.4511]]],
               [[[7.6562, 12.5625], [4.0000, 6.6250]], [[1.0000, 1.3125], [0.5000, 0.6562]],
                [[1.6562, 1.9375], [1.0000, 1.3125]], [[1.8438, 2.0547], [0.7500, 1.1562]],
                [[0.8438, 3.0625], [0.2500, 1.1875]], [[2.6562, 2.5625], [1.5000, 1.6250]],
                [[3.6562, 4.5625], [2.0000, 2.6250]], [[6.6562, 10.5625], [3.5000, 5.6250]]]]
MMCV_GRAD = [[[[1.4727, 1.5586], [1.5586, 1.6602]]] * 8]


def test_mmcv_expectations():
    x = torch.tensor(MMCV_FEATURE, dtype=torch.float, requires_grad=True)
    rois = torch.tensor(MMCV_ROIS, dtype=torch.float)
    pool = RiRoIAlignRotated((2, 2), 1.0, 2, 8, False)
    output = pool(x, rois)
    output.backward(torch.ones_like(output))
    torch.testing.assert_close(output.detach(), torch.tensor(MMCV_OUTPUT), rtol=0, atol=1e-3)
    torch.testing.assert_close(x.grad, torch.tensor(MMCV_GRAD), rtol=0, atol=1e-3)


def test_mmcv_gradcheck_setting():
    x = torch.tensor(MMCV_FEATURE, dtype=torch.double, requires_grad=True)
    rois = torch.tensor(MMCV_ROIS, dtype=torch.double)
    assert gradcheck(RiRoIAlignRotated((2, 2), 1.0, 2, 8, False), (x, rois), eps=1e-3, atol=1e-3)


# --- a scalar re-statement of mmcv's kernel -------------------------------------------------


def _cmod(a: int, b: int) -> int:
    """C's % (truncating)."""
    return int(math.fmod(a, b))


def _taps(height, width, y, x):
    """mmcv's bilinear_interpolate(_gradient): [(row, col, weight)]."""
    point = mmcv_bilinear(height, width, y, x)
    return [] if point is None else point.taps


def _kernel_walk(shape, rois, pooled, scale, num_samples, orientations, clockwise):
    """Yields (n, out channel, ph, pw, [(in channel, row, col, weight)]) as mmcv's kernel (double)."""
    _, channels, height, width = shape
    scale = float(np.float32(scale))
    for n, roi in enumerate(rois.tolist()):
        b = int(roi[0])
        cw, ch = roi[1] * scale, roi[2] * scale
        rw, rh = max(roi[3] * scale, 1.0), max(roi[4] * scale, 1.0)
        theta = roi[5]
        bin_h, bin_w = rh / pooled[0], rw / pooled[1]
        t = theta * orientations / (2 * math.pi)
        ind = math.floor(float(np.float32(t)))  # floorf
        l_var = t - ind
        r_var = 1.0 - l_var
        ind = _cmod(ind + orientations, orientations)
        gh = num_samples if num_samples > 0 else math.ceil(float(np.float32(rh / pooled[0])))
        gw = num_samples if num_samples > 0 else math.ceil(float(np.float32(rw / pooled[1])))
        if clockwise:
            theta = -theta
        cos, sin = math.cos(theta), math.sin(theta)
        count = max(gh * gw, 1)
        for c in range(channels // orientations):
            for o in range(orientations):
                rot = _cmod(o - ind + orientations, orientations)
                rot_plus = _cmod(rot + 1 + orientations, orientations)
                for ph in range(pooled[0]):
                    for pw in range(pooled[1]):
                        taps = []
                        for iy in range(gh):
                            yy = -rh / 2 + ph * bin_h + (iy + .5) * bin_h / gh
                            for ix in range(gw):
                                xx = -rw / 2 + pw * bin_w + (ix + .5) * bin_w / gw
                                y = yy * cos - xx * sin + ch
                                x = yy * sin + xx * cos + cw
                                for row, col, w in _taps(height, width, y, x):
                                    taps.append((b, c * orientations + rot, row, col, w * r_var / count))
                                    taps.append((b, c * orientations + rot_plus, row, col, w * l_var / count))
                        yield n, c * orientations + o, ph, pw, taps


def reference_forward(features, rois, pooled, scale, num_samples, orientations, clockwise):
    feat = features.double().tolist()
    out = torch.zeros(rois.size(0), features.size(1), *pooled, dtype=torch.double)
    for n, oc, ph, pw, taps in _kernel_walk(features.shape, rois, pooled, scale, num_samples, orientations,
                                            clockwise):
        out[n, oc, ph, pw] = sum(w * feat[b][ic][row][col] for b, ic, row, col, w in taps)
    return out


def reference_backward(grad_output, rois, shape, pooled, scale, num_samples, orientations, clockwise):
    grad = torch.zeros(shape, dtype=torch.double)
    top = grad_output.double().tolist()
    for n, oc, ph, pw, taps in _kernel_walk(shape, rois, pooled, scale, num_samples, orientations, clockwise):
        for b, ic, row, col, w in taps:
            grad[b, ic, row, col] += top[n][oc][ph][pw] * w
    return grad


def _problem(seed=0, n=2, groups=2, orientations=4, height=7, width=9, k=5):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(n, groups * orientations, height, width, generator=g, dtype=torch.double)
    rois = torch.stack([
        torch.randint(0, n, (k,), generator=g).double(),
        torch.rand(k, generator=g, dtype=torch.double) * (width + 4) - 2,  # some centres off the map
        torch.rand(k, generator=g, dtype=torch.double) * (height + 4) - 2,
        torch.rand(k, generator=g, dtype=torch.double) * 8 + 0.2,  # some below 1 pixel
        torch.rand(k, generator=g, dtype=torch.double) * 8 + 0.2,
        (torch.rand(k, generator=g, dtype=torch.double) - 0.5) * 6 * math.pi,  # any angle, either sign
    ], 1)
    return features, rois


CONFIGS = [  # out_size, spatial_scale, num_samples, num_orientations, clockwise
    ((2, 3), 1.0, 0, 4, False),
    ((2, 3), 1.0, 0, 4, True),
    ((3, 2), 0.5, 2, 4, False),
    (2, 1.3, 1, 4, True),
    ((1, 2), 1.0, 3, 1, False),
    ((2, 2), 0.7, 0, 2, False),
]


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_matches_kernel_forward_and_backward(config):
    out_size, scale, samples, orientations, clockwise = config
    features, rois = _problem(orientations=orientations)
    pooled = (out_size, out_size) if isinstance(out_size, int) else out_size
    out = riroi_align_rotated(features, rois, out_size, scale, samples, orientations, clockwise)
    expected = reference_forward(features, rois, pooled, scale, samples, orientations, clockwise)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    grad_out = torch.randn(out.shape, dtype=torch.double, generator=torch.Generator().manual_seed(1))
    x = features.clone().requires_grad_()
    riroi_align_rotated(x, rois, out_size, scale, samples, orientations, clockwise).backward(grad_out)
    expected_grad = reference_backward(grad_out, rois, features.shape, pooled, scale, samples, orientations,
                                       clockwise)
    torch.testing.assert_close(x.grad, expected_grad, rtol=1e-10, atol=1e-10)


def test_float32_matches_kernel():
    features, rois = _problem(seed=3)
    out = riroi_align_rotated(features.float(), rois.float(), (2, 2), 1.0, 0, 4, False)
    expected = reference_forward(features.float(), rois.float(), (2, 2), 1.0, 0, 4, False)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), expected, rtol=1e-4, atol=1e-4)


def test_chunked_rois_match(monkeypatch):
    features, rois = _problem(seed=12, k=9)
    x = features.clone().requires_grad_()
    out = riroi_align_rotated(x, rois, (2, 3), 1.0, 0, 4)
    out.backward(torch.ones_like(out))
    monkeypatch.setattr(importlib.import_module("mmcv_runtime.ops._roi_sampling"), "_TAPS_PER_CHUNK", 64)
    y = features.clone().requires_grad_()
    chunked = riroi_align_rotated(y, rois, (2, 3), 1.0, 0, 4)
    chunked.backward(torch.ones_like(chunked))
    torch.testing.assert_close(chunked, out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(y.grad, x.grad, rtol=1e-12, atol=1e-12)


def test_orientation_step_quirks():
    # mmcv interpolates between orientations o - i and o - i + 1 (i = floor(t)), so the output jumps
    # where t crosses an integer; floorf() rounds a double t to float first, so a double angle just
    # below a step already counts as the step (as in the kernel)
    g = torch.Generator().manual_seed(5)
    features = torch.randn(1, 8, 6, 6, generator=g, dtype=torch.double)
    step = 2 * math.pi / 8
    rois = torch.tensor([[0, 3, 3, 4, 4, 3 * step], [0, 3, 3, 4, 4, 3 * step * (1 - 1e-12)],
                         [0, 3, 3, 4, 4, 3 * step * (1 - 1e-6)]], dtype=torch.double)
    out = riroi_align_rotated(features, rois, 2, 1.0, 2, 8)
    expected = reference_forward(features, rois, (2, 2), 1.0, 2, 8, False)
    torch.testing.assert_close(out, expected, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(out[1], out[0], rtol=1e-6, atol=1e-6)
    assert (out[2] - out[0]).abs().max() > 0.1


def test_full_turn_gives_same_output():
    features, rois = _problem(seed=7, orientations=8)
    turned = rois.clone()
    turned[:, 5] += 2 * math.pi
    a = riroi_align_rotated(features, rois, (2, 2), 1.0, 2, 8)
    b = riroi_align_rotated(features, turned, (2, 2), 1.0, 2, 8)
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("clockwise", [False, True])
@pytest.mark.parametrize("num_samples", [0, 2])
def test_gradcheck(clockwise, num_samples):
    features, rois = _problem(seed=11, n=2, groups=1, orientations=4, height=5, width=6, k=3)
    features.requires_grad_()
    assert gradcheck(lambda f: riroi_align_rotated(f, rois, (2, 2), 1.0, num_samples, 4, clockwise), (features,),
                     eps=1e-6, atol=1e-8, fast_mode=True)


# --- edge cases ----------------------------------------------------------------------------


def test_empty_rois():
    x = torch.randn(2, 8, 5, 5, requires_grad=True)
    out = riroi_align_rotated(x, torch.zeros(0, 6), (3, 4), 1.0)
    assert out.shape == (0, 8, 3, 4)
    out.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_degenerate_and_out_of_bounds_rois():
    x = torch.randn(1, 8, 5, 5, dtype=torch.double)
    rois = torch.tensor([[0, 2, 2, 0, 0, 0.3],  # zero size: a 1 x 1 RoI
                         [0, 50, 50, 2, 2, 0.1],  # far outside: reads zeros
                         [0, -0.5, 5.5, 1, 1, -2.0]], dtype=torch.double)  # straddles the border
    out = riroi_align_rotated(x, rois, 2, 1.0, 0)
    expected = reference_forward(x, rois, (2, 2), 1.0, 0, 8, False)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    assert torch.equal(out[1], torch.zeros_like(out[1]))


def test_non_finite_features_stay_in_the_orientations_read():
    # the kernel reads two orientations per output; an inf elsewhere must not leak through the
    # orientation mix (no 0 * inf). Pixel (0, 0) stays finite: the shared bilinear core points
    # samples outside the map at it with weight 0, where the kernel reads nothing.
    features, rois = _problem(seed=6, orientations=4, groups=2)
    features[:, 0, 1:, 1:] = float("inf")
    features[:, 5, 2, 3] = float("nan")
    out = riroi_align_rotated(features, rois, (2, 2), 1.0, 0, 4)
    expected = reference_forward(features, rois, (2, 2), 1.0, 0, 4, False)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10, equal_nan=True)
    assert torch.isfinite(out).any() and not torch.isfinite(out).all()


def test_half_precision():
    features, rois = _problem(seed=2, orientations=8, groups=1)
    out = riroi_align_rotated(features.half(), rois.half(), (2, 2), 1.0, 2, 8)
    assert out.dtype == torch.float16
    ref = riroi_align_rotated(features.half().float(), rois.half().float(), (2, 2), 1.0, 2, 8)
    torch.testing.assert_close(out.float(), ref, rtol=1e-2, atol=1e-2)


def test_autocast():
    features, rois = _problem(seed=8, orientations=8, groups=1)
    features, rois = features.float(), rois.float()
    expected = riroi_align_rotated(features, rois, (2, 2), 1.0, 2, 8)
    x = features.bfloat16().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(riroi_align_rotated(features, rois, (2, 2), 1.0, 2, 8), expected)  # no bf16 GEMM
        out = riroi_align_rotated(x, rois, (2, 2), 1.0, 2, 8)  # bf16 features, float32 rois: run in float32
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, riroi_align_rotated(x.detach().float(), rois, (2, 2), 1.0, 2, 8))
    out.sum().backward()
    assert x.grad.dtype == torch.bfloat16


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    features, rois = _problem(seed=10, orientations=8, groups=2, k=7)
    x = features.clone().requires_grad_()
    xc = features.cuda().requires_grad_()
    for num_samples in (0, 2):
        out = riroi_align_rotated(x, rois, (3, 2), 0.5, num_samples, 8, True)
        out_cuda = riroi_align_rotated(xc, rois.cuda(), (3, 2), 0.5, num_samples, 8, True)
        torch.testing.assert_close(out_cuda.cpu(), out)
        grad = torch.randn(out.shape, dtype=torch.double)
        out.backward(grad)
        out_cuda.backward(grad.cuda())
        torch.testing.assert_close(xc.grad.cpu(), x.grad)


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize("features, rois, kwargs, error, match", [
    (torch.zeros(8, 4, 4), torch.zeros(1, 6), {}, ValueError, "features"),
    (torch.zeros(1, 8, 4, 4), torch.zeros(1, 5), {}, ValueError, "rois"),
    (torch.zeros(1, 8, 4, 4), torch.zeros(1, 6, dtype=torch.long), {}, TypeError, "rois"),
    (torch.zeros(1, 8, 4, 4, dtype=torch.long), torch.zeros(1, 6), {}, TypeError, "features"),
    (torch.zeros(1, 6, 4, 4), torch.zeros(1, 6), {}, ValueError, "num_orientations"),
    (torch.zeros(1, 8, 4, 4), torch.tensor([[1.0, 1, 1, 1, 1, 0]]), {}, ValueError, "batch index"),
    (torch.zeros(1, 8, 4, 4), torch.tensor([[0.0, 1, 1, 1, 1, float("nan")]]), {}, ValueError, "finite"),
    (torch.zeros(1, 8, 4, 4), torch.zeros(1, 6), {"out_size": [2, 2]}, TypeError, "out_size"),
    (torch.zeros(1, 8, 4, 4), torch.zeros(1, 6), {"out_size": (2, 2, 2)}, ValueError, "out_size"),
    (torch.zeros(1, 8, 4, 4), torch.zeros(1, 6), {"out_size": 0}, ValueError, "out_size"),
    (torch.zeros(1, 8, 4, 4), torch.zeros(1, 6), {"num_orientations": 0}, ValueError, "num_orientations"),
    (torch.zeros(1, 8, 4, 4), torch.zeros(1, 6, device="meta"), {}, ValueError, "device"),
    (torch.zeros(1, 8, 4, 4), torch.zeros(1, 6, dtype=torch.double), {}, TypeError, "dtype"),
])
def test_bad_input(features, rois, kwargs, error, match):
    args = dict(out_size=2, spatial_scale=1.0, num_samples=2, num_orientations=8, clockwise=False)
    args.update(kwargs)
    with pytest.raises(error, match=match) as info:
        riroi_align_rotated(features, rois, *args.values())
    assert "riroi_align_rotated" in str(info.value)


# --- the _ext ABI, the module, the registry ------------------------------------------------


def test_ext_adapters_write_in_place_and_accumulate():
    assert sorted(ext.__all__) == ["riroi_align_rotated_backward", "riroi_align_rotated_forward"]
    features, rois = _problem(seed=9)
    kwargs = dict(pooled_height=2, pooled_width=3, spatial_scale=0.8, num_samples=0, num_orientations=4,
                  clockwise=True)
    output = features.new_zeros(rois.size(0), features.size(1), 2, 3)
    assert ext.riroi_align_rotated_forward(features, rois, output, **kwargs) is None
    x = features.clone().requires_grad_()
    expected = riroi_align_rotated(x, rois, (2, 3), 0.8, 0, 4, True)
    torch.testing.assert_close(output, expected.detach(), rtol=0, atol=0)
    top_grad = torch.randn(output.shape, dtype=torch.double)
    expected.backward(top_grad)
    bottom_grad = torch.zeros_like(features)
    ext.riroi_align_rotated_backward(top_grad, rois, bottom_grad, **kwargs)
    torch.testing.assert_close(bottom_grad, x.grad, rtol=0, atol=0)
    ext.riroi_align_rotated_backward(top_grad, rois, bottom_grad, **kwargs)  # gradients accumulate
    torch.testing.assert_close(bottom_grad, 2 * x.grad)


def test_module_api():
    pool = RiRoIAlignRotated((7, 7), 0.25, num_samples=2.0, num_orientations=8)
    assert (pool.out_size, pool.spatial_scale, pool.num_samples, pool.num_orientations, pool.clockwise) == \
        ((7, 7), 0.25, 2, 8, False)
    assert isinstance(pool.spatial_scale, float) and isinstance(pool.num_samples, int)
    assert repr(pool) == "RiRoIAlignRotated()"  # mmcv defines no __repr__
    assert pool.state_dict() == {}
    assert riroi_align_rotated is RiRoIAlignRotatedFunction.apply or \
        riroi_align_rotated.__self__ is RiRoIAlignRotatedFunction
    x = torch.randn(1, 16, 8, 8, requires_grad=True)
    out = pool(x, torch.tensor([[0.0, 12, 12, 16, 8, 0.4]]))
    assert out.shape == (1, 16, 7, 7) and out.grad_fn is not None


def test_registry_entry():
    from mmcv_runtime import registry

    entry = registry._ENTRIES["riroi_align_rotated"]
    assert set(entry.names) == {"RiRoIAlignRotated", "RiRoIAlignRotatedFunction", "riroi_align_rotated"}
    assert set(entry.ext_functions) == set(ext.__all__)
    assert all(hasattr(op, name) for name in entry.names)
