"""mmcv_runtime.torchvision_ops.deform_conv2d: torchvision.ops.deform_conv2d's signature, semantics and checks.

torchvision is not a dependency (nor installed here), so its kernels' rules are checked against a scalar
transcription of their formulas (``_torchvision_offset_grad``), and everything they share with mmcv's
kernels against mmcv's goldens (fixtures/golden/deform_conv_family.pt).
"""

from __future__ import annotations

import importlib
import inspect
import math
from pathlib import Path

import pytest
import torch

from mmcv_runtime import torchvision_ops as tv

core = importlib.import_module("mmcv_runtime.ops._deform_columns")
mdc = importlib.import_module("mmcv_runtime.ops.modulated_deform_conv")

GOLDEN = Path(__file__).resolve().parent.parent / "fixtures" / "golden" / "deform_conv_family.pt"
CASES = torch.load(GOLDEN, weights_only=True)["cases"]


def _inputs(case):
    return {k: v["q"].to(case["dtype"]) * v["scale"] for k, v in case["inputs"].items()}


def test_signature_is_torchvisions():
    params = inspect.signature(tv.deform_conv2d).parameters
    assert [(p.name, p.default) for p in params.values()] == [
        ("input", inspect.Parameter.empty), ("offset", inspect.Parameter.empty), ("weight", inspect.Parameter.empty),
        ("bias", None), ("stride", (1, 1)), ("padding", (0, 0)), ("dilation", (1, 1)), ("mask", None)]


def _sample_on_minus_one(case):
    """(N, dg * K, Ho, Wo) bool: samples lying exactly on y = -1 or x = -1 (where the rules differ)."""
    t = _inputs(case)
    kw = case["kwargs"]
    g = core.check_arguments("t", t["input"], t["offset"], None, t["weight"], None, kw["stride"], kw["padding"],
                             kw["dilation"], kw["groups"], kw["deform_groups"])
    y, x = core._sample_points(t["offset"], g)
    on = (y == -1) | (x == -1)  # (N * L, dg, K)
    return on.reshape(g.batch, g.positions, -1).transpose(1, 2).reshape(g.batch, -1, g.out_h, g.out_w)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['op']}-{c['name']}-{c['dtype']}")
def test_shares_mmcvs_results_away_from_minus_one(case):
    t = _inputs(case)
    names = ["input", "offset", "weight"] + [k for k in ("mask", "bias") if k in t]
    leaves = {k: t[k].clone().requires_grad_() for k in names}
    kw = case["kwargs"]
    out = tv.deform_conv2d(leaves["input"], leaves["offset"], leaves["weight"], leaves.get("bias"), kw["stride"],
                           kw["padding"], kw["dilation"], mask=leaves.get("mask"))
    tol = dict(rtol=1e-4, atol=2e-5) if case["dtype"] == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out, case["output"], **tol)
    out.backward(t["grad_output"])
    for name in names:
        if name != "offset":
            torch.testing.assert_close(leaves[name].grad, case["grads"][name], **tol, msg=name)
    on = _sample_on_minus_one(case).repeat_interleave(2, dim=1)  # both offset channels of a sample
    torch.testing.assert_close(leaves["offset"].grad[~on], case["grads"]["offset"][~on], **tol)


def _torchvision_offset_grad(x, offset, weight, mask, grad_output, stride, padding, dilation):
    """Scalar transcription of torchvision's offset (and mask) gradient kernels for one group."""
    n, c, height, width = x.shape
    cout, _, kh, kw = weight.shape
    _, _, out_h, out_w = grad_output.shape
    grad_offset = torch.zeros_like(offset)
    grad_cols = torch.einsum("ockl,nohw->nckhlw", weight, grad_output)  # (N, C, kh, Ho, kw, Wo)

    def pixel(b, ch, yy, xx):
        return float(x[b, ch, yy, xx]) if 0 <= yy < height and 0 <= xx < width else 0.0

    for b in range(n):
        for i in range(kh):
            for j in range(kw):
                k = i * kw + j
                for ho in range(out_h):
                    for wo in range(out_w):
                        y = ho * stride[0] - padding[0] + i * dilation[0] + float(offset[b, 2 * k, ho, wo])
                        xx = wo * stride[1] - padding[1] + j * dilation[1] + float(offset[b, 2 * k + 1, ho, wo])
                        m = 1.0 if mask is None else float(mask[b, k, ho, wo])
                        yl, xl = math.floor(y), math.floor(xx)
                        dy, dx = y - yl, xx - xl
                        for ch in range(c):
                            col = float(grad_cols[b, ch, i, ho, j, wo])
                            v_yx, v_yX = pixel(b, ch, yl, xl), pixel(b, ch, yl, xl + 1)
                            v_Yx, v_YX = pixel(b, ch, yl + 1, xl), pixel(b, ch, yl + 1, xl + 1)
                            grad_offset[b, 2 * k, ho, wo] += m * col * (dx * (v_YX - v_yX) + (1 - dx) * (v_Yx - v_yx))
                            grad_offset[b, 2 * k + 1, ho, wo] += m * col * (dy * (v_YX - v_Yx)
                                                                            + (1 - dy) * (v_yX - v_yx))
    return grad_offset


@pytest.mark.parametrize("with_mask", [False, True])
def test_offset_gradient_follows_torchvision_on_minus_one(with_mask):
    """Zero offsets with padding put the first row/column of samples exactly on -1: torchvision's
    coordinate gradient takes the slope towards pixel 0 there, mmcv's is 0."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 2, 4, 5, generator=g, dtype=torch.float64)
    weight = torch.randn(3, 2, 3, 3, generator=g, dtype=torch.float64)
    offset = torch.zeros(1, 18, 4, 5, dtype=torch.float64)
    offset[0, 4:8, 1:3, 1:3] = torch.tensor([0.25, -0.5]).repeat(2).view(4, 1, 1)  # a few fractional ones
    offset.requires_grad_()
    mask = torch.rand(1, 9, 4, 5, generator=g, dtype=torch.float64) if with_mask else None
    grad_output = torch.randn(1, 3, 4, 5, generator=g, dtype=torch.float64)
    tv.deform_conv2d(x, offset, weight, padding=1, mask=mask).backward(grad_output)
    expected = _torchvision_offset_grad(x, offset.detach(), weight, mask, grad_output, (1, 1), (1, 1), (1, 1))
    torch.testing.assert_close(offset.grad, expected, rtol=1e-10, atol=1e-10)
    # mmcv's rule (the *_MLU modules): zero there
    mmcv_offset = offset.detach().clone().requires_grad_()
    tv.deform_conv2d_mmcv_rule(x, mmcv_offset, weight, padding=1, mask=mask).backward(grad_output)
    assert not mmcv_offset.grad[0, 0, 0].any() and offset.grad[0, 0, 0].abs().sum() > 0
    reference = mdc.modulated_deform_conv2d(x, mmcv_offset.detach().requires_grad_(),
                                            mask if with_mask else torch.ones(1, 9, 4, 5, dtype=torch.float64),
                                            weight, None, 1, 1)
    torch.testing.assert_close(tv.deform_conv2d(x, offset, weight, padding=1, mask=mask), reference.detach())


def test_groups_and_offset_groups_are_inferred_and_bias_is_added():
    case = next(c for c in CASES if c["op"] == "modulated_deform_conv2d" and c["name"] == "groups3-dg2-lcm")
    t = _inputs(case)
    kw = case["kwargs"]
    out = tv.deform_conv2d(t["input"], t["offset"], t["weight"], t["bias"], kw["stride"], kw["padding"],
                           kw["dilation"], t["mask"])
    torch.testing.assert_close(out, case["output"], rtol=1e-4, atol=2e-5)
    without_bias = tv.deform_conv2d(t["input"], t["offset"], t["weight"], None, kw["stride"], kw["padding"],
                                    kw["dilation"], t["mask"])
    torch.testing.assert_close(out - without_bias, t["bias"].view(1, -1, 1, 1).expand_as(out), rtol=1e-5, atol=1e-5)


def test_mask_none_is_deformable_v1_and_grads_follow_inputs():
    x = torch.randn(2, 2, 5, 5, requires_grad=True)
    offset = (torch.rand(2, 18, 5, 5) * 0.8 + 0.1).requires_grad_()
    weight = torch.randn(3, 2, 3, 3, requires_grad=True)
    bias = torch.randn(3, requires_grad=True)
    out = tv.deform_conv2d(x, offset, weight, bias, padding=1)
    torch.testing.assert_close(out, tv.deform_conv2d(x, offset, weight, bias, padding=1, mask=torch.ones(2, 9, 5, 5)))
    out.sum().backward()
    assert all(t.grad is not None for t in (x, offset, weight, bias))
    torch.testing.assert_close(bias.grad, torch.full((3,), 50.0))


def test_gradcheck():
    g = torch.Generator().manual_seed(0)
    dt = torch.float64
    x = torch.randn(2, 4, 5, 4, generator=g, dtype=dt, requires_grad=True)
    weight = torch.randn(4, 2, 3, 3, generator=g, dtype=dt, requires_grad=True)
    bias = torch.randn(4, generator=g, dtype=dt, requires_grad=True)
    offset = (torch.rand(2, 36, 5, 4, generator=g, dtype=dt) * 0.8 + 0.1
              + torch.randint(-2, 2, (2, 36, 5, 4), generator=g)).requires_grad_()
    mask = torch.rand(2, 18, 5, 4, generator=g, dtype=dt, requires_grad=True)

    def fn(x, offset, weight, bias, mask):
        return tv.deform_conv2d(x, offset, weight, bias, padding=1, mask=mask)

    assert torch.autograd.gradcheck(fn, (x, offset, weight, bias, mask), fast_mode=True)


def test_empty_batch():
    out = tv.deform_conv2d(torch.zeros(0, 2, 4, 4), torch.zeros(0, 18, 4, 4), torch.zeros(3, 2, 3, 3),
                           torch.ones(3), padding=1)
    assert out.shape == (0, 3, 4, 4)


def _args(**change):
    args = dict(input=torch.zeros(1, 4, 5, 5), offset=torch.zeros(1, 18, 5, 5), weight=torch.zeros(2, 4, 3, 3),
                bias=None, stride=1, padding=1, dilation=1, mask=None)
    args.update(change)
    return args


@pytest.mark.parametrize("change, error, message", [
    (dict(offset=torch.zeros(1, 17, 5, 5)), AssertionError, "offset"),  # torchvision's torch._assert
    (dict(offset=torch.zeros(1, 27, 5, 5)), RuntimeError, "offset"),
    (dict(offset=torch.zeros(1, 18, 4, 5)), RuntimeError, "offset"),
    (dict(mask=torch.zeros(1, 8, 5, 5)), RuntimeError, "mask"),
    (dict(mask=torch.zeros(2, 9, 5, 5)), RuntimeError, "mask"),
    (dict(weight=torch.zeros(2, 3, 3, 3)), RuntimeError, "groups"),
    (dict(weight=torch.zeros(3, 2, 3, 3)), RuntimeError, "out_channels"),
    (dict(offset=torch.zeros(1, 54, 5, 5)), RuntimeError, "deform_groups"),
    (dict(padding=-1), RuntimeError, "padding"),
    (dict(stride=(1, 0)), RuntimeError, "stride"),
    (dict(bias=torch.zeros(3)), RuntimeError, "bias"),
    (dict(input=torch.zeros(1, 4, 5)), RuntimeError, "input"),
    (dict(offset=torch.zeros(1, 18, 5, 5, dtype=torch.float64)), TypeError, "dtype"),
    (dict(weight=torch.zeros(2, 4, 3, 3, device="meta")), ValueError, "device"),
])
def test_bad_input(change, error, message):
    with pytest.raises(error, match=message) as info:
        tv.deform_conv2d(**_args(**change))
    assert "deform_conv2d" in str(info.value)
    assert isinstance(info.value, (ValueError, TypeError))
