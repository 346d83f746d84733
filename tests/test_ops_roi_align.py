"""mmcv.ops.roi_align / roi_align_rotated / bezier_align in the runtime: golden parity with compiled
mmcv (outputs and input gradients), gradcheck, edge cases, errors, modules and _ext adapters.

Goldens: fixtures/golden/roi_family.pt, made by fixtures/golden/make_roi_golden.py with mmcv 2.2.0's
compiled CPU ops (see that script).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch

from mmcv_runtime import ext_loader

roi_align_mod = importlib.import_module("mmcv_runtime.ops.roi_align")
rotated_mod = importlib.import_module("mmcv_runtime.ops.roi_align_rotated")
bezier_mod = importlib.import_module("mmcv_runtime.ops.bezier_align")
FUNCTIONS = {"roi_align": roi_align_mod.roi_align, "roi_align_rotated": rotated_mod.roi_align_rotated,
             "bezier_align": bezier_mod.bezier_align}

GOLDEN = Path(__file__).resolve().parent.parent / "fixtures" / "golden" / "roi_family.pt"
CASES = torch.load(GOLDEN, weights_only=False)["cases"]


def _ids(case):
    return f"{case['op']}-{case['input'].dtype}-" + "-".join(f"{k}={v}" for k, v in case["kwargs"].items())


def _tolerance(dtype):
    return dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_matches_mmcv_forward_and_backward(case):
    x = case["input"].clone().requires_grad_()
    out = FUNCTIONS[case["op"]](x, case["rois"], **case["kwargs"])
    torch.testing.assert_close(out, case["output"], **_tolerance(x.dtype))
    out.backward(case["grad_output"])
    torch.testing.assert_close(x.grad, case["grad_input"], **_tolerance(x.dtype))


@pytest.mark.parametrize("case", [c for c in CASES if "argmax_y" in c], ids=_ids)
def test_max_pooling_records_mmcv_argmax(case):
    kw = case["kwargs"]
    _, arg_y, arg_x = roi_align_mod.roi_align_forward(case["input"], case["rois"], kw["output_size"],
                                                      kw["spatial_scale"], kw["sampling_ratio"], 0, kw["aligned"])
    torch.testing.assert_close(arg_y, case["argmax_y"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(arg_x, case["argmax_x"], rtol=1e-5, atol=1e-5)


def _small(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 2, 7, 8, dtype=torch.float64, generator=g, requires_grad=True)


ROIS = torch.tensor([[0, 1.3, 2.2, 6.9, 5.1], [1, -3, -2, 4, 5], [0, 6, 5, 12, 9], [1, 2, 2, 2.3, 2.1]],
                    dtype=torch.float64)


@pytest.mark.parametrize("pool_mode", ["avg", "max"])
@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_roi_align_gradcheck(pool_mode, aligned, sampling_ratio):
    fn = lambda x: roi_align_mod.roi_align(x, ROIS, (3, 2), 0.9, sampling_ratio, pool_mode, aligned)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (_small(),), fast_mode=True)


@pytest.mark.parametrize("clockwise", [False, True])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_roi_align_rotated_gradcheck(clockwise, sampling_ratio):
    rois = torch.tensor([[0, 4, 3, 5, 3, 0.3], [1, 2, 2, 7, 4, -1.2], [0, 7, 6, 4, 4, 2.0]], dtype=torch.float64)
    fn = lambda x: rotated_mod.roi_align_rotated(x, rois, (2, 3), 0.8, sampling_ratio, True, clockwise)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (_small(1),), fast_mode=True)


@pytest.mark.parametrize("aligned", [True, False])
def test_bezier_align_gradcheck(aligned):
    beziers = torch.tensor([[0, 1, 1, 2.5, 0.6, 4, 1.4, 6, 1, 6, 4.5, 4, 5.2, 2.5, 4.4, 1, 5]], dtype=torch.float64)
    fn = lambda x: bezier_mod.bezier_align(x, beziers, (2, 3), 1.0, 0, aligned)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (_small(2),), fast_mode=True)


def test_adaptive_sampling_samples_what_the_roi_covers():
    """A small RoI on a huge map gets a grid from its own size, not the map's."""
    x = torch.zeros(1, 1, 4000, 4000)
    x[0, 0, 10:14, 10:14] = 1.0
    out = roi_align_mod.roi_align(x, torch.tensor([[0.0, 10, 10, 14, 14]]), 2, 1.0, 0, "avg", True)
    assert out.shape == (1, 1, 2, 2) and torch.all(out > 0.5)


def test_empty_rois_and_channels():
    x = torch.randn(2, 3, 5, 5)
    for name, width in (("roi_align", 5), ("roi_align_rotated", 6), ("bezier_align", 17)):
        out = FUNCTIONS[name](x, torch.zeros((0, width)), (2, 2), 1.0)
        assert out.shape == (0, 3, 2, 2)
    x = torch.randn(1, 3, 5, 5, requires_grad=True)
    roi_align_mod.roi_align(x, torch.zeros((0, 5)), 2).sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_max_pool_floor_and_tied_maxima():
    """mmcv starts the maximum at -10000 and keeps the first of equal samples."""
    low = torch.full((1, 1, 4, 4), -20000.0, requires_grad=True)
    out = roi_align_mod.roi_align(low, torch.tensor([[0.0, 0, 0, 3, 3]]), 1, 1.0, 2, "max", True)
    assert out.item() == -10000.0
    out.backward()
    assert torch.count_nonzero(low.grad) == 0  # no recorded maximum, no gradient
    flat = torch.ones(1, 1, 4, 4)
    _, arg_y, arg_x = roi_align_mod.roi_align_forward(flat, torch.tensor([[0.0, 0, 0, 3, 3]]), (1, 1), 1.0, 2, 0,
                                                      False)
    assert (arg_y.item(), arg_x.item()) == (0.75, 0.75)  # the first of four equal samples


@pytest.mark.parametrize("call, error, message", [
    (lambda: roi_align_mod.roi_align(torch.rand(1, 2, 4, 4), torch.rand(3, 4), 2), ValueError, "rois must have shape"),
    (lambda: roi_align_mod.roi_align(torch.rand(2, 4, 4), torch.rand(3, 5), 2), ValueError, "input must have shape"),
    (lambda: roi_align_mod.roi_align(torch.rand(1, 2, 4, 4), torch.tensor([[1.0, 0, 0, 2, 2]]), 2), ValueError,
     "batch index"),
    (lambda: roi_align_mod.roi_align(torch.rand(1, 2, 4, 4), torch.rand(3, 5).double(), 2), TypeError, "dtype"),
    (lambda: roi_align_mod.roi_align(torch.rand(1, 2, 4, 4), torch.tensor([[0.0, 3, 3, 1, 1]]), 2), ValueError,
     "x2 >= x1"),
    (lambda: roi_align_mod.roi_align(torch.rand(1, 2, 4, 4), torch.rand(1, 5), 2, 1.0, 0, "sum"), ValueError,
     "pool_mode"),
    (lambda: roi_align_mod.roi_align(torch.randint(0, 3, (1, 2, 4, 4)), torch.rand(1, 5), 2), TypeError,
     "floating point"),
    (lambda: rotated_mod.roi_align_rotated(torch.rand(1, 2, 4, 4), torch.rand(3, 5), 2, 1.0), ValueError,
     "roi_align_rotated: rois must have shape"),
    (lambda: bezier_mod.bezier_align(torch.rand(1, 2, 4, 4), torch.rand(3, 16), 2), ValueError,
     "bezier_align: beziers must have shape"),
])
def test_bad_input_names_op_and_argument(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_modules_repr_and_deprecated_kwargs():
    m = roi_align_mod.RoIAlign(7, 0.25, 2)
    assert repr(m) == ("RoIAlign(output_size=(7, 7), spatial_scale=0.25, sampling_ratio=2, pool_mode=avg, "
                       "aligned=True, use_torchvision=False)")
    with pytest.warns(DeprecationWarning):
        old = roi_align_mod.RoIAlign(out_size=3, sample_num=1)
    assert old.output_size == (3, 3) and old.sampling_ratio == 1
    assert repr(rotated_mod.RoIAlignRotated((2, 3), 0.5)) == (
        "RoIAlignRotated(output_size=(2, 3), spatial_scale=0.5, sampling_ratio=0, aligned=True, clockwise=False)")
    assert repr(bezier_mod.BezierAlign(4, 1.0, 0)) == (
        "BezierAlign(output_size=(4, 4), spatial_scale=1.0)sampling_ratio=0)aligned=True)")
    assert list(roi_align_mod.RoIAlign(7).state_dict()) == []
    x, rois = torch.randn(1, 2, 6, 6), torch.tensor([[0.0, 1, 1, 4, 5]])
    tv = roi_align_mod.RoIAlign(2, 1.0, 2, pool_mode="max", use_torchvision=True)(x, rois)
    assert torch.equal(tv, roi_align_mod.roi_align(x, rois, 2, 1.0, 2, "avg"))  # torchvision always averages


def test_ext_adapters_write_in_place():
    ext = ext_loader.load_ext("_ext", ["roi_align_forward", "roi_align_backward", "roi_align_rotated_forward",
                                       "roi_align_rotated_backward", "bezier_align_forward", "bezier_align_backward"])
    case = next(c for c in CASES if "argmax_y" in c and c["input"].dtype == torch.float32)
    x, rois, kw = case["input"], case["rois"], case["kwargs"]
    shape = case["output"].shape
    out, arg_y, arg_x = x.new_zeros(shape), x.new_zeros(shape), x.new_zeros(shape)
    ext.roi_align_forward(x, rois, out, arg_y, arg_x, aligned_height=3, aligned_width=4, spatial_scale=0.5,
                          sampling_ratio=kw["sampling_ratio"], pool_mode=0, aligned=kw["aligned"])
    torch.testing.assert_close(out, case["output"])
    grad_input = torch.zeros_like(x)
    ext.roi_align_backward(case["grad_output"], rois, arg_y, arg_x, grad_input, aligned_height=3, aligned_width=4,
                           spatial_scale=0.5, sampling_ratio=kw["sampling_ratio"], pool_mode=0, aligned=kw["aligned"])
    torch.testing.assert_close(grad_input, case["grad_input"])
    case = next(c for c in CASES if c["op"] == "roi_align_rotated" and c["input"].dtype == torch.float32)
    x, rois, kw = case["input"], case["rois"], case["kwargs"]
    out = x.new_zeros(case["output"].shape)
    ext.roi_align_rotated_forward(x, rois, out, 3, 2, 0.75, kw["sampling_ratio"], kw["aligned"], kw["clockwise"])
    torch.testing.assert_close(out, case["output"])
    grad_input = torch.zeros_like(x)
    # mmcv binds (grad_output, rois, grad_input) under the names (rois, grad_input, grad_output); positions rule
    ext.roi_align_rotated_backward(case["grad_output"], rois, grad_input, 3, 2, 0.75, kw["sampling_ratio"],
                                   kw["aligned"], kw["clockwise"])
    torch.testing.assert_close(grad_input, case["grad_input"])
    case = next(c for c in CASES if c["op"] == "bezier_align" and c["input"].dtype == torch.float32)
    x, rois, kw = case["input"], case["rois"], case["kwargs"]
    out = x.new_zeros(case["output"].shape)
    ext.bezier_align_forward(x, rois, out, 2, 5, 1.0, kw["sampling_ratio"], kw["aligned"])
    torch.testing.assert_close(out, case["output"])
    grad_input = torch.ones_like(x)
    ext.bezier_align_backward(case["grad_output"], rois, grad_input, 2, 5, 1.0, kw["sampling_ratio"], kw["aligned"])
    torch.testing.assert_close(grad_input, case["grad_input"] + 1)  # added into, like the kernel


@pytest.mark.parametrize("name", ["roi_align avg", "roi_align max", "roi_align_rotated", "bezier_align"])
def test_samples_off_the_map_read_nothing_even_next_to_an_infinite_pixel(name):
    """mmcv's kernels skip out-of-map samples; the runtime's taps for them must not touch pixel (0, 0)."""
    x = torch.randn(1, 2, 6, 6)
    x[0, :, 0, 0] = float("inf")
    far = {"roi_align avg": (torch.tensor([[0, 20.0, 20, 30, 30]]), dict(pool_mode="avg")),
           "roi_align max": (torch.tensor([[0, 20.0, 20, 30, 30]]), dict(pool_mode="max")),
           "roi_align_rotated": (torch.tensor([[0, 30.0, 30, 4, 4, 0.3]]), {}),
           "bezier_align": (torch.tensor([[0] + [40.0, 40.0] * 8]), {})}[name]
    fn = FUNCTIONS[name.split()[0]]
    out = fn(x, far[0], 2, 1.0, 2, **far[1]) if name.startswith("roi_align ") else fn(x, far[0], 2, 1.0, 2)
    assert torch.equal(out, torch.zeros_like(out))  # max pooling too: a sample reading 0 beats -10000
