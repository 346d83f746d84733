"""mmcv.ops.modulated_deform_conv in the runtime: golden parity with compiled mmcv (output and the gradients
of input, offset, mask, weight and bias), mmcv's own test expectations, checkpoints saved by mmcv,
gradcheck, edge cases, errors, modules and _ext adapters.

Goldens: fixtures/golden/deform_conv_family.pt (fixtures/golden/make_deform_conv_golden.py, mmcv 2.2.0 CPU).
"""

from __future__ import annotations

import importlib
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

mdc = importlib.import_module("mmcv_runtime.ops.modulated_deform_conv")
dc = importlib.import_module("mmcv_runtime.ops.deform_conv")
core = importlib.import_module("mmcv_runtime.ops._deform_columns")
ext = importlib.import_module("mmcv_runtime.ext._modulated_deform_conv")
from mmcv_runtime import registry  # noqa: E402

GOLDEN = Path(__file__).resolve().parent.parent / "fixtures" / "golden" / "deform_conv_family.pt"
DATA = torch.load(GOLDEN, weights_only=True)
CASES = [c for c in DATA["cases"] if c["op"] == "modulated_deform_conv2d"]


def _inputs(case):
    return {k: v["q"].to(case["dtype"]) * v["scale"] for k, v in case["inputs"].items()}


def _tolerance(dtype):
    return dict(rtol=1e-4, atol=2e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)


def _args(kwargs):
    return (kwargs["stride"], kwargs["padding"], kwargs["dilation"], kwargs["groups"], kwargs["deform_groups"])


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['name']}-{c['dtype']}")
def test_matches_mmcv_output_and_gradients(case):
    t = _inputs(case)
    names = ["input", "offset", "mask", "weight"] + (["bias"] if "bias" in t else [])
    leaves = {k: t[k].clone().requires_grad_() for k in names}
    out = mdc.modulated_deform_conv2d(leaves["input"], leaves["offset"], leaves["mask"], leaves["weight"],
                                      leaves.get("bias"), *_args(case["kwargs"]))
    tol = _tolerance(case["dtype"])
    torch.testing.assert_close(out, case["output"], **tol)
    out.backward(t["grad_output"])
    for name, leaf in leaves.items():
        torch.testing.assert_close(leaf.grad, case["grads"][name], **tol, msg=lambda m: f"grad {name}: {m}")


def test_module_matches_functional():
    case = next(c for c in CASES if c["name"] == "groups3-dg2-lcm")
    t, kw = _inputs(case), case["kwargs"]
    module = mdc.ModulatedDeformConv2d(6, 3, (3, 2), kw["stride"], kw["padding"], kw["dilation"], kw["groups"],
                                       kw["deform_groups"])
    with torch.no_grad():
        module.weight.copy_(t["weight"])
        module.bias.copy_(t["bias"])
    torch.testing.assert_close(module(t["input"], t["offset"], t["mask"]), case["output"], rtol=1e-4, atol=2e-5)


def test_chunking_does_not_change_results(monkeypatch):
    case = next(c for c in CASES if c["name"] == "groups1-dg4-dilated")
    t = _inputs(case)
    g = core.check_arguments("t", t["input"], t["offset"], t["mask"], t["weight"], t["bias"], *_args(case["kwargs"]))
    monkeypatch.setattr(core, "_COLUMN_ELEMENTS", 3 * g.taps * g.channels)
    monkeypatch.setattr(core, "_TAP_SAMPLES", 50)
    out = core.deform_conv_forward(t["input"], t["offset"], t["mask"], t["weight"], t["bias"], g)
    torch.testing.assert_close(out, case["output"], rtol=1e-4, atol=2e-5)
    grads = core.deform_conv_backward(t["grad_output"], t["input"], t["offset"], t["mask"], t["weight"], g)
    for name in ("input", "offset", "mask", "weight", "bias"):
        torch.testing.assert_close(getattr(grads, name), case["grads"][name], rtol=1e-4, atol=2e-5)


# --- mmcv's own test (tests/test_ops/test_modulated_deform_conv.py), literal values ---------------------

MMCV_INPUT = [[[[1., 2., 3.], [1., 2., 3.], [1., 2., 3.]]]]
MMCV_OUTPUT = [[[[0.5, 1.5, 2.5, 1.5], [1.0, 3.0, 5.0, 3.0], [1.0, 3.0, 5.0, 3.0], [0.5, 1.5, 2.5, 1.5]]]]
MMCV_INPUT_GRAD = [[[[2., 2., 2.], [2., 2., 2.], [2., 2., 2.]]]]
MMCV_W_GRAD = [[[[9., 9.], [9., 9.]]]]
MMCV_OFFSET_W_GRAD = [[[[-7.0, -4.0], [0.0, 0.0]]], [[[-9.0, 7.5], [-6.0, 5.0]]], [[[-4.0, -7.0], [0.0, 0.0]]],
                      [[[-7.5, -9.0], [-5.0, -6.0]]], [[[-7.0, -4.0], [-7.0, -4.0]]], [[[-6.0, 5.0], [-9.0, 7.5]]],
                      [[[-4.0, -7.0], [-4.0, -7.0]]], [[[-5.0, -6.0], [-7.5, -9.0]]], [[[10.5, 6.0], [7.0, 4.0]]],
                      [[[6.0, 10.5], [4.0, 7.0]]], [[[7.0, 4.0], [10.5, 6.0]]], [[[4.0, 7.0], [6.0, 10.5]]]]
MMCV_OFFSET_B_GRAD = [-3.0, -1.5, -3.0, -1.5, -3.0, -1.5, -3.0, -1.5, 4.5, 4.5, 4.5, 4.5]


@pytest.mark.parametrize("cls", [mdc.ModulatedDeformConv2dPack, mdc.ModulatedDeformConv2dPack_MLU])
@pytest.mark.parametrize("dtype", [torch.float, torch.double])
def test_mmcv_expectations(cls, dtype):
    x = torch.tensor(MMCV_INPUT, dtype=dtype, requires_grad=True)
    dcn = cls(1, 1, kernel_size=(2, 2), stride=1, padding=1, deform_groups=1, bias=False)
    dcn.weight.data.fill_(1.)
    dcn.type(dtype)
    output = dcn(x)
    output.sum().backward()
    assert np.allclose(output.detach().numpy(), MMCV_OUTPUT, 1e-2)
    assert np.allclose(x.grad.numpy(), MMCV_INPUT_GRAD, 1e-2)
    assert np.allclose(dcn.weight.grad.numpy(), MMCV_W_GRAD, 1e-2)
    assert np.allclose(dcn.conv_offset.weight.grad.numpy(), MMCV_OFFSET_W_GRAD, 1e-2)
    assert np.allclose(dcn.conv_offset.bias.grad.numpy(), MMCV_OFFSET_B_GRAD, 1e-2)


# --- checkpoints, initialisation, module API -----------------------------------------------------------


def _golden_module(name):
    return next(m for m in DATA["modules"] if m["class"] == name)


def test_mmcv_checkpoint_loads_strictly_and_gives_mmcv_output():
    saved = _golden_module("ModulatedDeformConv2dPack")
    model = mdc.ModulatedDeformConv2dPack(**saved["kwargs"])
    assert list(model.state_dict()) == list(saved["state_dict"]) == ["weight", "bias", "conv_offset.weight",
                                                                     "conv_offset.bias"]
    model.load_state_dict(saved["state_dict"], strict=True)
    torch.testing.assert_close(model(saved["input"]), saved["output"], rtol=1e-4, atol=1e-5)
    assert model.state_dict()._metadata[""]["version"] == 2


def test_version_1_checkpoint_keys_are_upgraded():
    from test_ops_deform_conv import mmengine_style_load

    saved = _golden_module("ModulatedDeformConv2dPack")
    parent = nn.Module()
    parent.dcn = mdc.ModulatedDeformConv2dPack(**saved["kwargs"])
    sd = saved["state_dict"]
    old = OrderedDict((("dcn.weight", sd["weight"]), ("dcn.bias", sd["bias"]),
                       ("dcn_offset.weight", sd["conv_offset.weight"]), ("dcn_offset.bias", sd["conv_offset.bias"])))
    old._metadata = OrderedDict({"dcn": {}})  # no version at all: as old as can be
    assert mmengine_style_load(parent, old) == ([], [])
    torch.testing.assert_close(parent.dcn(saved["input"]), saved["output"], rtol=1e-4, atol=1e-5)


def test_seeded_initialisation_matches_mmcv():
    """mmcv initialises the weight, builds conv_offset (drawing from the RNG) and initialises again."""
    saved = _golden_module("ModulatedDeformConv2dPack")
    torch.manual_seed(saved["seed"])
    model = mdc.ModulatedDeformConv2dPack(**saved["kwargs"])
    for key, value in saved["initial"].items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0)
    assert not model.conv_offset.weight.any() and not model.bias.any()


def test_module_attributes_repr_and_bias_option():
    model = mdc.ModulatedDeformConv2dPack(4, 6, 3, stride=2, padding=1, groups=2, deform_groups=2, bias=False)
    assert model.bias is None and "bias" not in model.state_dict()
    assert model.conv_offset.out_channels == 2 * 3 * 9 and model._version == 2
    assert (model.stride, model.padding, model.transposed, model.output_padding) == ((2, 2), (1, 1), False, (0,))
    assert repr(mdc.ModulatedDeformConv2d(2, 2, 3)) == "ModulatedDeformConv2d()"
    assert repr(model).startswith("ModulatedDeformConv2dPack(\n  (conv_offset): Conv2d(4, 54, kernel_size=(3, 3)")
    assert mdc.ModulatedDeformConv2d(2, 2, 3, bias="auto").bias is not None
    with pytest.warns(DeprecationWarning, match="deformable_groups"):
        assert mdc.ModulatedDeformConv2d(4, 4, 3, deformable_groups=2).deform_groups == 2


def test_registry_entry():
    entry = registry._ENTRIES["modulated_deform_conv"]
    assert set(entry.names) == {"ModulatedDeformConv2d", "ModulatedDeformConv2dFunction", "ModulatedDeformConv2dPack",
                                "ModulatedDeformConv2dPack_MLU", "modulated_deform_conv2d"}
    assert all(hasattr(mdc, name) for name in entry.names)
    assert set(entry.ext_functions) == set(ext.__all__)
    assert dc.ModulatedDeformConv2dFunction is mdc.ModulatedDeformConv2dFunction  # mmcv's deform_conv imports it


# --- gradients, dtypes, edge cases ---------------------------------------------------------------------------


@pytest.mark.parametrize("groups, deform_groups, stride, padding, dilation, bias", [
    (1, 1, 1, 1, 1, True), (2, 1, (2, 1), (1, 0), 1, False), (1, 2, 1, 2, 2, True), (3, 2, 1, 1, (1, 2), True)])
def test_gradcheck(groups, deform_groups, stride, padding, dilation, bias):
    g = torch.Generator().manual_seed(groups * 10 + deform_groups)
    c = 6
    x = torch.randn(2, c, 5, 5, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3 * groups, c // groups, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3 * groups, generator=g, dtype=torch.float64, requires_grad=True) if bias else None
    s, p, d = (torch.nn.modules.utils._pair(v) for v in (stride, padding, dilation))
    size = [core.output_extent(5, p[i], d[i], 3, s[i]) for i in range(2)]
    offset = torch.rand(2, deform_groups * 18, *size, generator=g, dtype=torch.float64) * 0.8 + 0.1
    offset = (offset + torch.randint(-2, 2, offset.shape, generator=g)).requires_grad_()
    mask = torch.rand(2, deform_groups * 9, *size, generator=g, dtype=torch.float64, requires_grad=True)

    def fn(x, offset, mask, weight, b):
        return mdc.modulated_deform_conv2d(x, offset, mask, weight, b, stride, padding, dilation, groups,
                                           deform_groups)

    assert torch.autograd.gradcheck(fn, (x, offset, mask, weight, b), fast_mode=True)


def test_mask_gradient_is_zero_outside_and_offset_gradient_carries_the_mask():
    x = torch.arange(1., 10., dtype=torch.float64).view(1, 1, 3, 3)
    weight = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    offset = torch.zeros(1, 2, 3, 3, dtype=torch.float64)
    offset[0, 0, 0, 0], offset[0, 0, 0, 1] = -1.0, 0.5  # (−1, 0): outside; (0.5, 1): inside
    offset.requires_grad_()
    mask = torch.full((1, 1, 3, 3), 0.5, dtype=torch.float64, requires_grad=True)
    out = mdc.modulated_deform_conv2d(x, offset, mask, weight, None, 1, 0, 1, 1, 1)
    out[0, 0, 0, :2].sum().backward()
    assert mask.grad[0, 0, 0, 0] == 0 and mask.grad[0, 0, 0, 1] == pytest.approx(3.5)  # sample (0.5, 1) = 3.5
    assert offset.grad[0, :, 0, 0].tolist() == [0, 0]
    assert offset.grad[0, :, 0, 1].tolist() == pytest.approx([0.5 * 3, 0.5 * 1])


def test_half_precision_computes_in_float32_and_returns_half():
    case = next(c for c in CASES if c["name"] == "groups2-dg2-stride")
    t = {k: v.half() for k, v in _inputs(case).items()}
    leaves = {k: t[k].clone().requires_grad_() for k in ("input", "offset", "mask", "weight")}
    out = mdc.modulated_deform_conv2d(*leaves.values(), None, *_args(case["kwargs"]))
    assert out.dtype == torch.half
    torch.testing.assert_close(out.float(), case["output"], rtol=2e-2, atol=2e-2)
    out.backward(t["grad_output"])
    assert all(leaf.grad.dtype == torch.half for leaf in leaves.values())
    torch.testing.assert_close(leaves["input"].grad.float(), case["grads"]["input"], rtol=2e-2, atol=2e-2)


def test_inputs_are_cast_to_the_offsets_dtype_like_mmcv():
    x = torch.randn(1, 2, 4, 4)
    out = mdc.modulated_deform_conv2d(x, torch.zeros(1, 18, 4, 4, dtype=torch.float64), torch.ones(1, 9, 4, 4),
                                      torch.randn(2, 2, 3, 3), torch.zeros(2), 1, 1, 1, 1, 1)
    assert out.dtype == torch.float64


def test_autocast_runs_in_full_precision():
    model = mdc.ModulatedDeformConv2dPack(2, 3, 3, padding=1)
    x = torch.randn(2, 2, 6, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out.dtype == torch.bfloat16  # conv_offset's output dtype decides, as in mmcv
    torch.testing.assert_close(out.float(), model(x), rtol=2e-2, atol=2e-2)


def test_empty_batch_one_by_one_kernel_far_offsets_and_one_by_one_output():
    weight = torch.randn(3, 2, 3, 3, requires_grad=True)
    bias = torch.randn(3, requires_grad=True)
    x = torch.randn(0, 2, 5, 5, requires_grad=True)
    out = mdc.modulated_deform_conv2d(x, torch.zeros(0, 18, 5, 5), torch.ones(0, 9, 5, 5), weight, bias, 1, 1)
    assert out.shape == (0, 3, 5, 5)
    out.sum().backward()
    assert not weight.grad.any() and not bias.grad.any()
    # far outside: only the bias; zero gradients for input, offset and mask
    x = torch.randn(2, 2, 4, 4, requires_grad=True)
    offset = torch.full((2, 18, 4, 4), 50.0, requires_grad=True)
    mask = torch.rand(2, 9, 4, 4, requires_grad=True)
    out = mdc.modulated_deform_conv2d(x, offset, mask, weight, bias, 1, 1)
    torch.testing.assert_close(out, bias.detach().view(1, 3, 1, 1).expand(2, 3, 4, 4))
    out.sum().backward()
    assert not x.grad.any() and not offset.grad.any() and not mask.grad.any()
    # 1x1 kernel with zero offsets and unit mask is a 1x1 convolution; a 3x3 input gives a 1x1 output
    w1 = torch.randn(4, 2, 1, 1)
    out = mdc.modulated_deform_conv2d(x, torch.zeros(2, 2, 4, 4), torch.ones(2, 1, 4, 4), w1, None)
    torch.testing.assert_close(out, torch.nn.functional.conv2d(x, w1), rtol=1e-5, atol=1e-5)
    x3 = torch.randn(1, 2, 3, 3)
    out = mdc.modulated_deform_conv2d(x3, torch.zeros(1, 18, 1, 1), torch.ones(1, 9, 1, 1), weight, bias)
    torch.testing.assert_close(out, torch.nn.functional.conv2d(x3, weight, bias), rtol=1e-5, atol=1e-5)


def test_samples_off_the_map_read_nothing_even_next_to_an_infinite_pixel():
    x = torch.ones(1, 1, 3, 3)
    x[0, 0, 0, 0] = float("inf")
    offset = torch.zeros(1, 2, 3, 3)
    offset[0, 0, 2, 2] = 20.0  # the sample of the last position lies far below the map
    out = mdc.modulated_deform_conv2d(x, offset, torch.ones(1, 1, 3, 3), torch.ones(1, 1, 1, 1), None)
    assert out[0, 0, 2, 2] == 0 and torch.isinf(out[0, 0, 0, 0])


BAD = [
    (dict(offset=torch.zeros(1, 17, 4, 4)), "offset"),
    (dict(mask=torch.zeros(1, 8, 4, 4)), "mask"),
    (dict(mask=torch.zeros(1, 9, 3, 4)), "mask"),
    (dict(weight=torch.zeros(2, 3, 3, 3)), "groups"),
    (dict(weight=torch.zeros(3, 1, 3, 3), groups=2), "out_channels"),
    (dict(deform_groups=3, offset=torch.zeros(1, 54, 4, 4), mask=torch.zeros(1, 27, 4, 4)), "deform_groups"),
    (dict(bias=torch.zeros(3)), "bias"),
    (dict(input=torch.zeros(2, 4, 4)), "4D"),
    (dict(stride=0), "stride"),
    (dict(mask=None), "mask"),
]


@pytest.mark.parametrize("change, message", BAD, ids=[m for _, m in BAD])
def test_bad_input_names_op_and_argument(change, message):
    args = dict(input=torch.zeros(1, 2, 4, 4), offset=torch.zeros(1, 18, 4, 4), mask=torch.zeros(1, 9, 4, 4),
                weight=torch.zeros(2, 2, 3, 3), bias=None, stride=1, padding=1, dilation=1, groups=1, deform_groups=1)
    args.update(change)
    with pytest.raises(ValueError, match=message) as info:
        mdc.modulated_deform_conv2d(*args.values())
    assert "modulated_deform_conv2d" in str(info.value)


# --- _ext adapters ---------------------------------------------------------------------------------------


def test_ext_forward_and_backward_write_like_the_kernels():
    case = next(c for c in CASES if c["name"] == "groups3-dg2-lcm")
    t, kw = _inputs(case), case["kwargs"]
    x, offset, mask, weight, bias = (t[k] for k in ("input", "offset", "mask", "weight", "bias"))
    geometry = (3, 2, *kw["stride"], *kw["padding"], *kw["dilation"], kw["groups"], kw["deform_groups"])
    out = torch.full_like(case["output"], 7.0)
    ext.modulated_deform_conv_forward(x, weight, bias, torch.empty(0), offset, mask, out, torch.empty(0), *geometry,
                                      True)
    torch.testing.assert_close(out, case["output"], rtol=1e-4, atol=2e-5)
    grads = {k: torch.ones_like(t[k]) for k in ("input", "weight", "bias", "offset", "mask")}
    ones, columns = torch.empty(0), torch.empty(0)
    ext.modulated_deform_conv_backward(x, weight, bias, ones, offset, mask, columns, grads["input"], grads["weight"],
                                       grads["bias"], grads["offset"], grads["mask"], t["grad_output"], *geometry, True)
    for name, accumulated in (("input", True), ("weight", True), ("bias", True), ("offset", False), ("mask", False)):
        expected = case["grads"][name] + (1 if accumulated else 0)
        torch.testing.assert_close(grads[name], expected, rtol=1e-4, atol=5e-5, msg=name)
    assert ones.numel() == 0 and columns.numel() == 0
    # without bias: bias ignored, grad_bias untouched, output without bias
    grad_bias = torch.full((3,), 5.0)
    ext.modulated_deform_conv_forward(x, weight, torch.empty(0), ones, offset, mask, out, columns, *geometry, False)
    torch.testing.assert_close(out, case["output"] - bias.view(1, 3, 1, 1), rtol=1e-4, atol=2e-5)
    ext.modulated_deform_conv_backward(x, weight, torch.empty(0), ones, offset, mask, columns, torch.zeros_like(x),
                                       torch.zeros_like(weight), grad_bias, torch.zeros_like(offset),
                                       torch.zeros_like(mask), t["grad_output"], *geometry, False)
    assert grad_bias.tolist() == [5.0, 5.0, 5.0]
