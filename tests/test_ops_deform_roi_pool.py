"""mmcv.ops.deform_roi_pool in the runtime: mmcv's test expectations, a scalar transcription of the
CUDA kernel's forward and backward (mmcv has no CPU kernel; its offset gradient is not autograd's
at clamped samples), gradcheck where the two agree, modules, errors and _ext adapters."""

from __future__ import annotations

import importlib
import math

import pytest
from kernel_reference import mmcv_bilinear
import torch

from mmcv_runtime import ext_loader

drp = importlib.import_module("mmcv_runtime.ops.deform_roi_pool")

# mmcv's tests/test_ops/test_deform_roi_pool.py (DeformRoIPoolPack, 2x2 bins, sampling_ratio 2)
MMCV_CASES = [
    ([[[[1., 2.], [3., 4.]]]], [[0., 0., 0., 1., 1.]],
     [[[[1, 1.25], [1.5, 1.75]]]], [[[[3.0625, 0.4375], [0.4375, 0.0625]]]]),
    ([[[[1., 2.], [3., 4.]], [[4., 3.], [2., 1.]]]], [[0., 0., 0., 1., 1.]],
     [[[[1., 1.25], [1.5, 1.75]], [[4, 3.75], [3.5, 3.25]]]],
     [[[[3.0625, 0.4375], [0.4375, 0.0625]], [[3.0625, 0.4375], [0.4375, 0.0625]]]]),
    ([[[[1., 2., 5., 6.], [3., 4., 7., 8.], [9., 10., 13., 14.], [11., 12., 15., 16.]]]], [[0., 0., 0., 3., 3.]],
     [[[[1.9375, 4.75], [7.5625, 10.375]]]],
     [[[[0.47265625, 0.4296875, 0.4296875, 0.04296875], [0.4296875, 0.390625, 0.390625, 0.0390625],
        [0.4296875, 0.390625, 0.390625, 0.0390625], [0.04296875, 0.0390625, 0.0390625, 0.00390625]]]]),
]


@pytest.mark.parametrize("pack", [drp.DeformRoIPoolPack, drp.ModulatedDeformRoIPoolPack])
@pytest.mark.parametrize("case", MMCV_CASES)
def test_mmcv_expectations(case, pack):
    x = torch.tensor(case[0], requires_grad=True)
    out = pack((2, 2), x.size(1), spatial_scale=1.0, sampling_ratio=2)(x, torch.tensor(case[1]))
    out.backward(torch.ones_like(out))
    scale = 0.5 if pack is drp.ModulatedDeformRoIPoolPack else 1.0  # the untrained mask is sigmoid(0)
    torch.testing.assert_close(out.detach(), torch.tensor(case[2]) * scale)
    torch.testing.assert_close(x.grad, torch.tensor(case[3]) * scale)


def _interpolate(img, y, x):
    """mmcv's bilinear_interpolate(_gradient): (value, (taps, y_low, y_high, x_low, x_high)) or (0, None)."""
    point = mmcv_bilinear(*img.shape, y, x)
    if point is None:
        return 0.0, None
    value = sum(w * float(img[r, c]) for r, c, w in point.taps)
    return value, ([(w, r, c) for r, c, w in point.taps], point.y_low, point.y_high, point.x_low, point.x_high)


def kernel_transcription(x, rois, offset, grad_output, ph_n, pw_n, scale, ratio, gamma):
    """mmcv's deform_roi_pool forward and backward CUDA kernels, one output element at a time."""
    out = torch.zeros(rois.size(0), x.size(1), ph_n, pw_n, dtype=x.dtype)
    grad_input, grad_offset = torch.zeros_like(x), torch.zeros_like(offset)
    for k in range(rois.size(0)):
        b = int(rois[k, 0])
        start_w, start_h = float(rois[k, 1]) * scale - 0.5, float(rois[k, 2]) * scale - 0.5
        roi_w = float(rois[k, 3]) * scale - 0.5 - start_w
        roi_h = float(rois[k, 4]) * scale - 0.5 - start_h
        bin_h, bin_w = roi_h / ph_n, roi_w / pw_n
        grid_h = ratio if ratio > 0 else math.ceil(roi_h / ph_n)
        grid_w = ratio if ratio > 0 else math.ceil(roi_w / pw_n)
        for c in range(x.size(1)):
            img = x[b, c]
            for ph in range(ph_n):
                for pw in range(pw_n):
                    sw = start_w + gamma * roi_w * float(offset[k, 0, ph, pw])
                    sh = start_h + gamma * roi_h * float(offset[k, 1, ph, pw])
                    count = max(grid_h * grid_w, 1)
                    g = float(grad_output[k, c, ph, pw]) / (grid_h * grid_w) if grid_h * grid_w else 0.0
                    total = 0.0
                    for iy in range(grid_h):
                        y = sh + ph * bin_h + (iy + 0.5) * bin_h / grid_h
                        for ix in range(grid_w):
                            xx = sw + pw * bin_w + (ix + 0.5) * bin_w / grid_w
                            value, detail = _interpolate(img, y, xx)
                            total += value
                            if detail is None:
                                continue
                            taps, yl, yh, xl, xh = detail
                            for w, r, col in taps:
                                grad_input[b, c, r, col] += g * w
                            v00, v10, v01, v11 = (float(img[yl, xl]), float(img[yl, xh]), float(img[yh, xl]),
                                                  float(img[yh, xh]))
                            grad_offset[k, 0, ph, pw] += gamma * roi_w * g * (
                                v11 * (y - yl) + v10 * (yh - y) + v01 * (yl - y) + v00 * (y - yh))
                            grad_offset[k, 1, ph, pw] += gamma * roi_h * g * (
                                v11 * (xx - xl) + v01 * (xh - xx) + v10 * (xl - xx) + v00 * (xx - xh))
                    out[k, c, ph, pw] = total / count
    return out, grad_input, grad_offset


@pytest.mark.parametrize("ratio", [0, 2])
def test_matches_the_kernel_including_its_offset_gradient_at_clamped_samples(ratio):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 2, 6, 7, dtype=torch.float64, generator=g)
    rois = torch.tensor([[0, 1.2, 0.7, 5.1, 4.4], [1, -2.0, -1.5, 3.0, 2.5], [0, 4.0, 3.0, 9.0, 8.0],
                         [1, 0.2, 0.3, 0.6, 0.4], [0, -12.0, -9.0, -7.0, -5.0]], dtype=torch.float64)
    offset = torch.randn(5, 2, 3, 2, dtype=torch.float64, generator=g)
    grad_output = torch.randn(5, 2, 3, 2, dtype=torch.float64, generator=g)
    out = drp.deform_roi_pool_forward(x, rois, offset, (3, 2), 1.0, ratio, 0.3)
    grad_input, grad_offset = drp.deform_roi_pool_backward(grad_output, x, rois, offset, (3, 2), 1.0, ratio, 0.3)
    want = kernel_transcription(x, rois, offset, grad_output, 3, 2, 1.0, ratio, 0.3)
    for got, expected in zip((out, grad_input, grad_offset), want):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_gradcheck_inside_the_map():
    """Away from clamped samples mmcv's offset gradient is the true derivative."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 2, 9, 9, dtype=torch.float64, generator=g, requires_grad=True)
    rois = torch.tensor([[0, 2.1, 2.3, 6.2, 5.9]], dtype=torch.float64)
    offset = (torch.rand(1, 2, 2, 2, dtype=torch.float64, generator=g) * 0.2).requires_grad_()
    fn = lambda i, o: drp.deform_roi_pool(i, rois, o, (2, 2), 1.0, 2, 0.1)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, offset))


def test_no_offset_and_empty():
    x = torch.randn(1, 3, 5, 5)
    rois = torch.tensor([[0, 0.5, 0.5, 4.0, 3.0]])
    plain = drp.deform_roi_pool(x, rois, None, 2)
    assert torch.equal(plain, drp.deform_roi_pool(x, rois, torch.zeros(1, 2, 2, 2), 2))
    assert drp.deform_roi_pool(x, torch.zeros((0, 5)), None, 2).shape == (0, 3, 2, 2)
    xg = x.clone().requires_grad_()
    offset = torch.zeros(1, 2, 2, 2, requires_grad=True)
    drp.DeformRoIPool(2)(xg, rois, offset).sum().backward()
    assert xg.grad is not None and offset.grad is not None


def test_modules_keep_mmcv_state_dict_keys_and_init_order():
    torch.manual_seed(0)
    pack = drp.ModulatedDeformRoIPoolPack((2, 2), 4, deform_fc_channels=8)
    assert list(pack.state_dict()) == ["offset_fc.0.weight", "offset_fc.0.bias", "offset_fc.2.weight",
                                       "offset_fc.2.bias", "offset_fc.4.weight", "offset_fc.4.bias",
                                       "mask_fc.0.weight", "mask_fc.0.bias", "mask_fc.2.weight", "mask_fc.2.bias"]
    assert torch.count_nonzero(pack.offset_fc[4].weight) == 0 and torch.count_nonzero(pack.mask_fc[2].weight) == 0
    assert list(drp.DeformRoIPoolPack(2, 4, 8).state_dict())[-1] == "offset_fc.4.bias"
    with pytest.raises(ValueError, match="deform_roi_pool: input has 3 channels"):
        drp.DeformRoIPoolPack(2, 4, 8)(torch.rand(1, 3, 5, 5), torch.tensor([[0.0, 0, 0, 3, 3]]))


@pytest.mark.parametrize("call, error, message", [
    (lambda: drp.deform_roi_pool(torch.rand(1, 2, 4, 4), torch.rand(3, 4), None, 2), ValueError, "rois must"),
    (lambda: drp.deform_roi_pool(torch.rand(1, 2, 4, 4), torch.rand(3, 5), torch.rand(3, 2, 3, 3), 2), ValueError,
     "offset must have shape"),
    (lambda: drp.deform_roi_pool(torch.rand(1, 2, 4, 4), torch.tensor([[2.0, 0, 0, 1, 1]]), None, 2), ValueError,
     "batch index"),
])
def test_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_ext_adapters():
    ext = ext_loader.load_ext("_ext", ["deform_roi_pool_forward", "deform_roi_pool_backward"])
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 2, 6, 7, generator=g)
    rois = torch.tensor([[0, 1.2, 0.7, 5.1, 4.4], [1, -2.0, -1.5, 3.0, 2.5]])
    offset = torch.randn(2, 2, 2, 2, generator=g) * 0.1
    out = torch.zeros(2, 2, 2, 2)
    ext.deform_roi_pool_forward(x, rois, offset, out, pooled_height=2, pooled_width=2, spatial_scale=1.0,
                                sampling_ratio=0, gamma=0.1)
    torch.testing.assert_close(out, drp.deform_roi_pool(x, rois, offset, 2, 1.0, 0, 0.1))
    grad_output = torch.randn(2, 2, 2, 2, generator=g)
    grad_input, grad_offset = torch.ones_like(x), torch.ones_like(offset)
    ext.deform_roi_pool_backward(grad_output, x, rois, offset, grad_input, grad_offset, pooled_height=2,
                                 pooled_width=2, spatial_scale=1.0, sampling_ratio=0, gamma=0.1)
    want_input, want_offset = drp.deform_roi_pool_backward(grad_output, x, rois, offset, (2, 2), 1.0, 0, 0.1)
    torch.testing.assert_close(grad_input, want_input + 1)
    torch.testing.assert_close(grad_offset, want_offset + 1)


def test_offset_gradient_ignores_off_map_samples_next_to_an_infinite_pixel():
    x = torch.randn(1, 1, 6, 6, dtype=torch.float64)
    x[0, 0, 0, 0] = float("inf")
    rois = torch.tensor([[0, 1.5, 1.5, 4.5, 4.5], [0, 20.0, 20.0, 24.0, 24.0]], dtype=torch.float64)
    offset = torch.zeros(2, 2, 2, 2, dtype=torch.float64)
    grad_output = torch.ones(2, 1, 2, 2, dtype=torch.float64)
    out = drp.deform_roi_pool_forward(x, rois, offset, (2, 2), 1.0, 2, 0.1)
    _, grad_offset = drp.deform_roi_pool_backward(grad_output, x, rois, offset, (2, 2), 1.0, 2, 0.1)
    assert torch.equal(out[1], torch.zeros_like(out[1]))
    assert torch.equal(grad_offset[1], torch.zeros_like(grad_offset[1]))
