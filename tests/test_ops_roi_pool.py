"""mmcv.ops.roi_pool in the runtime: mmcv's test expectations, a scalar transcription of the CUDA
kernel (mmcv has no CPU kernel) on ties, clipped and degenerate RoIs, gradcheck, errors, adapters."""

from __future__ import annotations

import importlib

import pytest
import torch

from mmcv_runtime import ext_loader

roi_pool_mod = importlib.import_module("mmcv_runtime.ops.roi_pool")
roi_pool, RoIPool = roi_pool_mod.roi_pool, roi_pool_mod.RoIPool

# mmcv's tests/test_ops/test_roi_pool.py: (input, rois) -> (output, input gradient for ones)
MMCV_CASES = [
    ([[[[1., 2.], [3., 4.]]]], [[0., 0., 0., 1., 1.]],
     [[[[1., 2.], [3., 4.]]]], [[[[1., 1.], [1., 1.]]]]),
    ([[[[1., 2.], [3., 4.]], [[4., 3.], [2., 1.]]]], [[0., 0., 0., 1., 1.]],
     [[[[1., 2.], [3., 4.]], [[4., 3.], [2., 1.]]]], [[[[1., 1.], [1., 1.]], [[1., 1.], [1., 1.]]]]),
    ([[[[1., 2., 5., 6.], [3., 4., 7., 8.], [9., 10., 13., 14.], [11., 12., 15., 16.]]]], [[0., 0., 0., 3., 3.]],
     [[[[4., 8.], [12., 16.]]]], [[[[0., 0., 0., 0.], [0., 1., 0., 1.], [0., 0., 0., 0.], [0., 1., 0., 1.]]]]),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", MMCV_CASES)
def test_mmcv_expectations(case, dtype):
    x = torch.tensor(case[0], dtype=dtype, requires_grad=True)
    out = roi_pool(x, torch.tensor(case[1], dtype=dtype), (2, 2), 1.0)
    out.backward(torch.ones_like(out))
    assert torch.equal(out.detach(), torch.tensor(case[2], dtype=dtype))
    assert torch.equal(x.grad, torch.tensor(case[3], dtype=dtype))


def kernel_transcription(x, rois, ph, pw, s):
    """mmcv's roi_pool_forward_cuda_kernel, one output element at a time."""
    k_count, (_, c_count, height, width) = rois.size(0), x.shape
    out = torch.zeros(k_count, c_count, ph, pw, dtype=x.dtype)
    arg = torch.zeros(k_count, c_count, ph, pw, dtype=torch.int32)
    for k in range(k_count):
        b = int(rois[k, 0])
        x1, y1 = rois[k, 1] * s, rois[k, 2] * s
        roi_w, roi_h = (rois[k, 3] + 1) * s - x1, (rois[k, 4] + 1) * s - y1
        if roi_w <= 0 or roi_h <= 0:
            continue
        bin_w, bin_h = roi_w / pw, roi_h / ph
        for c in range(c_count):
            for i in range(ph):
                for j in range(pw):
                    cx1 = min(max(int(torch.floor(j * bin_w + x1)), 0), width)
                    cy1 = min(max(int(torch.floor(i * bin_h + y1)), 0), height)
                    cx2 = min(max(int(torch.ceil((j + 1) * bin_w + x1)), 0), width)
                    cy2 = min(max(int(torch.ceil((i + 1) * bin_h + y1)), 0), height)
                    best, where = (0.0 if cy2 <= cy1 or cx2 <= cx1 else -3.4028234663852886e38), -1
                    for h in range(cy1, cy2):
                        for w in range(cx1, cx2):
                            if float(x[b, c, h, w]) > best:
                                best, where = float(x[b, c, h, w]), h * width + w
                    out[k, c, i, j], arg[k, c, i, j] = best, where
    return out, arg


ROIS = torch.tensor([[0, 1.3, 2.2, 7.9, 6.1], [1, -3, -2, 4, 5], [0, 8, 7, 15, 12], [1, 2, 2, 2.3, 2.1],
                     [0, 5, 5, 3, 3],  # x2 + 1 <= x1: skipped by the kernel
                     [1, 0, 0, 0, 0], [0, 20, 20, 30, 30]])


@pytest.mark.parametrize("scale", [1.0, 0.6])
def test_matches_the_kernel_with_ties_clipping_and_degenerate_rois(scale):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 9, 11, generator=g).round()  # many ties: the first maximum must win
    x[0, 1, :4, :4] = float("-inf")  # no pixel beats -FLT_MAX
    out, argmax = roi_pool_mod.roi_pool_forward(x, ROIS, (3, 2), scale)
    want_out, want_arg = kernel_transcription(x, ROIS, 3, 2, scale)
    assert torch.equal(out, want_out)
    assert torch.equal(argmax, want_arg)


def test_skipped_roi_sends_its_gradient_to_pixel_zero_like_mmcv():
    x = torch.arange(50.0).reshape(2, 1, 5, 5).requires_grad_()
    out = roi_pool(x, torch.tensor([[1, 0, 0, 2, 2.], [0, 5, 5, 3, 3]]), 1)
    assert out.flatten().tolist() == [37.0, 0.0]
    out.sum().backward()
    assert x.grad[0, 0, 0, 0] == 1 and x.grad[1, 0, 2, 2] == 1 and x.grad.sum() == 2


def test_gradcheck():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 2, 6, 7, dtype=torch.float64, generator=g, requires_grad=True)  # distinct values
    assert torch.autograd.gradcheck(lambda i: roi_pool(i, ROIS.double()[[0, 1, 2, 3, 5]], (3, 2), 0.6), (x,))


def test_empty_and_chunked():
    assert roi_pool(torch.randn(1, 2, 5, 5), torch.zeros((0, 5)), 2).shape == (0, 2, 2, 2)
    x = torch.randn(2, 3, 20, 20)
    rois = torch.tensor([[0, 0, 0, 19, 19.0], [1, 3, 2, 12, 17]]).repeat(20, 1)
    whole, _ = roi_pool_mod.roi_pool_forward(x, rois, (4, 4), 1.0)
    old = roi_pool_mod._PIXELS_PER_CHUNK
    roi_pool_mod._PIXELS_PER_CHUNK = 300
    try:
        chunked, _ = roi_pool_mod.roi_pool_forward(x, rois, (4, 4), 1.0)
    finally:
        roi_pool_mod._PIXELS_PER_CHUNK = old
    assert torch.equal(whole, chunked)


@pytest.mark.parametrize("call, error, message", [
    (lambda: roi_pool(torch.rand(1, 2, 4, 4), torch.rand(3, 6), 2), ValueError, "roi_pool: rois must have shape"),
    (lambda: roi_pool(torch.rand(1, 2, 4, 4), torch.tensor([[3.0, 0, 0, 2, 2]]), 2), ValueError, "batch index"),
    (lambda: roi_pool(torch.rand(1, 2, 4, 4), torch.rand(1, 5).double(), 2), TypeError, "dtype"),
])
def test_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_module_and_adapters():
    assert repr(RoIPool(7, 0.5)) == "RoIPool(output_size=(7, 7), spatial_scale=0.5)"
    ext = ext_loader.load_ext("_ext", ["roi_pool_forward", "roi_pool_backward"])
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 9, 11, generator=g)
    out, argmax = torch.full((7, 3, 3, 2), 5.0), torch.full((7, 3, 3, 2), 7, dtype=torch.int32)
    ext.roi_pool_forward(x, ROIS, out, argmax, pooled_height=3, pooled_width=2, spatial_scale=1.0)
    want_out, want_arg = kernel_transcription(x, ROIS, 3, 2, 1.0)
    assert torch.equal(out[[0, 1, 2, 3, 5, 6]], want_out[[0, 1, 2, 3, 5, 6]])
    assert torch.equal(argmax[[0, 1, 2, 3, 5, 6]], want_arg[[0, 1, 2, 3, 5, 6]])
    assert bool((out[4] == 5).all()) and bool((argmax[4] == 7).all())  # the kernel skips it: left as given
    grad_input = torch.ones_like(x)
    grad_output = torch.randn(out.shape, generator=g)
    argmax[4] = 0
    ext.roi_pool_backward(grad_output, ROIS, argmax, grad_input, pooled_height=3, pooled_width=2, spatial_scale=1.0)
    want = roi_pool_mod.roi_pool_backward(grad_output, ROIS, argmax, x.shape) + 1
    torch.testing.assert_close(grad_input, want)
