"""mmcv.ops.deform_conv in the runtime: golden parity with compiled mmcv (output and gradients), mmcv's own
test expectations, checkpoints saved by mmcv, gradcheck, edge cases, errors, modules and _ext adapters.

Goldens: fixtures/golden/deform_conv_family.pt, made by fixtures/golden/make_deform_conv_golden.py with
mmcv 2.2.0's compiled CPU ops (see that script; inputs stored quantised, so exact in any dtype).
"""

from __future__ import annotations

import importlib
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

dc = importlib.import_module("mmcv_runtime.ops.deform_conv")
core = importlib.import_module("mmcv_runtime.ops._deform_columns")
ext = importlib.import_module("mmcv_runtime.ext._deform_conv")
from mmcv_runtime import registry  # noqa: E402

GOLDEN = Path(__file__).resolve().parent.parent / "fixtures" / "golden" / "deform_conv_family.pt"
DATA = torch.load(GOLDEN, weights_only=True)
CASES = [c for c in DATA["cases"] if c["op"] == "deform_conv2d"]


def _value(q, dtype):
    return q["q"].to(dtype) * q["scale"]


def _inputs(case):
    return {k: _value(v, case["dtype"]) for k, v in case["inputs"].items()}


def _tolerance(dtype):
    return dict(rtol=1e-4, atol=2e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)


def _args(kwargs):
    return (kwargs["stride"], kwargs["padding"], kwargs["dilation"], kwargs["groups"], kwargs["deform_groups"])


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['name']}-{c['dtype']}")
def test_matches_mmcv_output_and_gradients(case):
    t = _inputs(case)
    x, offset, weight = (t[k].clone().requires_grad_() for k in ("input", "offset", "weight"))
    out = dc.deform_conv2d(x, offset, weight, *_args(case["kwargs"]), False, case["kwargs"]["im2col_step"])
    tol = _tolerance(case["dtype"])
    torch.testing.assert_close(out, case["output"], **tol)
    out.backward(t["grad_output"])
    for name, leaf in (("input", x), ("offset", offset), ("weight", weight)):
        torch.testing.assert_close(leaf.grad, case["grads"][name], **tol, msg=lambda m: f"grad {name}: {m}")


def test_golden_samples_land_on_the_map_borders():
    """The goldens cover points exactly on -1 and on H (whose coordinate gradients are edge cases)."""
    case = next(c for c in CASES if c["name"] == "basic")
    g = core.check_arguments("t", *(_inputs(case)[k] for k in ("input", "offset")), None, _inputs(case)["weight"],
                             None, *_args(case["kwargs"]))
    y, x = core._sample_points(_inputs(case)["offset"], g)
    assert bool((y == -1).any()) and bool((y == g.height).any()) and bool((x == -1).any())
    assert bool((y == y.floor()).logical_and((y > -1) & (y < g.height)).any())  # integral, inside


@pytest.mark.parametrize("name", ["groups2-dg1-dilated", "groups3-dg2-lcm"])
def test_chunking_does_not_change_results(monkeypatch, name):
    """Chunks within one image, several images per table, and taps computed a few samples at a time
    give the unchunked answer."""
    case = next(c for c in CASES if c["name"] == name)
    t = _inputs(case)
    g = core.check_arguments("t", t["input"], t["offset"], None, t["weight"], None, *_args(case["kwargs"]))
    for elements, samples in ((1, 1), (7 * g.taps * g.channels, 37), (10 ** 9, 10 ** 9)):
        monkeypatch.setattr(core, "_COLUMN_ELEMENTS", elements)
        monkeypatch.setattr(core, "_TAP_SAMPLES", samples)
        out = core.deform_conv_forward(t["input"], t["offset"], None, t["weight"], None, g)
        grads = core.deform_conv_backward(t["grad_output"], t["input"], t["offset"], None, t["weight"], g)
        torch.testing.assert_close(out, case["output"], rtol=1e-4, atol=2e-5)
        for name in ("input", "offset", "weight"):
            torch.testing.assert_close(getattr(grads, name), case["grads"][name], rtol=1e-4, atol=2e-5)


# --- mmcv's own tests (tests/test_ops/test_deform_conv.py), literal values ---------------------------------

MMCV_INPUT = [[[[1., 2., 3.], [0., 1., 2.], [3., 5., 2.]]]]
MMCV_OFFSET_WEIGHT = [[[0.1, 0.4, 0.6, 0.1]], [[0.3, 0.2, 0.1, 0.3]], [[0.5, 0.5, 0.2, 0.8]], [[0.8, 0.3, 0.9, 0.1]],
                      [[0.3, 0.1, 0.2, 0.5]], [[0.3, 0.7, 0.5, 0.3]], [[0.6, 0.2, 0.5, 0.3]], [[0.4, 0.1, 0.8, 0.4]]]
MMCV_OFFSET_BIAS = [0.7, 0.1, 0.8, 0.5, 0.6, 0.5, 0.4, 0.7]
MMCV_DEFORM_WEIGHT = [[[0.4, 0.2, 0.1, 0.9]]]
MMCV_OUT = [[[[1.650, 0.], [0.000, 0.]]]]
MMCV_X_GRAD = [[[[-0.666, 0.204, 0.000], [0.030, -0.416, 0.012], [0.000, 0.252, 0.129]]]]
MMCV_OFFSET_WEIGHT_GRAD = [[[[1.44, 2.88], [0.00, 1.44]]], [[[-0.72, -1.44], [0.00, -0.72]]],
                           [[[0.00, 0.00], [0.00, 0.00]]], [[[0.00, 0.00], [0.00, 0.00]]],
                           [[[-0.10, -0.20], [0.00, -0.10]]], [[[-0.08, -0.16], [0.00, -0.08]]],
                           [[[-0.54, -1.08], [0.00, -0.54]]], [[[-0.54, -1.08], [0.00, -0.54]]]]
MMCV_OFFSET_BIAS_GRAD = [1.44, -0.72, 0., 0., -0.10, -0.08, -0.54, -0.54]
MMCV_DEFORM_WEIGHT_GRAD = [[[[3.62, 0.], [0.40, 0.18]]]]


def _mmcv_test(cls, dtype, batch_size=10, im2col_step=2, threshold=1e-3):
    x = torch.tensor(np.repeat(MMCV_INPUT, batch_size, axis=0), dtype=dtype, requires_grad=True)
    model = cls(in_channels=1, out_channels=1, kernel_size=2, stride=1, padding=0, im2col_step=im2col_step)
    model.conv_offset.weight.data = torch.Tensor(MMCV_OFFSET_WEIGHT).reshape(8, 1, 2, 2)
    model.conv_offset.bias.data = torch.Tensor(MMCV_OFFSET_BIAS).reshape(8)
    model.weight.data = torch.Tensor(MMCV_DEFORM_WEIGHT).reshape(1, 1, 2, 2)
    model.type(dtype)
    out = model(x)
    out.backward(torch.ones_like(out))
    assert np.allclose(out.detach().numpy(), np.repeat(MMCV_OUT, batch_size, axis=0), threshold)
    assert np.allclose(x.grad.numpy(), np.repeat(MMCV_X_GRAD, batch_size, axis=0), threshold)
    assert np.allclose(model.conv_offset.weight.grad.numpy() / batch_size, MMCV_OFFSET_WEIGHT_GRAD, threshold)
    assert np.allclose(model.conv_offset.bias.grad.numpy() / batch_size, MMCV_OFFSET_BIAS_GRAD, threshold)
    assert np.allclose(model.weight.grad.numpy() / batch_size, MMCV_DEFORM_WEIGHT_GRAD, threshold)


@pytest.mark.parametrize("cls", [dc.DeformConv2dPack, dc.DeformConv2dPack_MLU])
@pytest.mark.parametrize("dtype", [torch.float, torch.double])
def test_mmcv_expectations(cls, dtype):
    _mmcv_test(cls, dtype)
    _mmcv_test(cls, dtype, batch_size=1, im2col_step=2)
    with pytest.raises(AssertionError, match="batch size must be divisible by im2col_step"):
        _mmcv_test(cls, dtype, batch_size=10, im2col_step=3)


def test_mmcv_module_assertions():
    model = dc.DeformConv2d(1, 1, 2, stride=1, padding=0)
    assert not hasattr(model, "bias")
    for args, kwargs in (((1, 1, 2), dict(bias=True)), ((3, 2, 3), dict(groups=2)), ((3, 4, 3), dict(groups=3))):
        with pytest.raises(AssertionError):
            dc.DeformConv2d(*args, **kwargs)
        with pytest.raises(ValueError, match="DeformConv2d"):
            dc.DeformConv2d(*args, **kwargs)


# --- checkpoints and initialisation -----------------------------------------------------------------------


def _golden_module(name):
    return next(m for m in DATA["modules"] if m["class"] == name)


def test_mmcv_checkpoint_loads_strictly_and_gives_mmcv_output():
    saved = _golden_module("DeformConv2dPack")
    model = dc.DeformConv2dPack(**saved["kwargs"])
    assert list(model.state_dict()) == list(saved["state_dict"]) == ["weight", "conv_offset.weight",
                                                                     "conv_offset.bias"]
    model.load_state_dict(saved["state_dict"], strict=True)
    torch.testing.assert_close(model(saved["input"]), saved["output"], rtol=1e-4, atol=1e-5)


def mmengine_style_load(module: nn.Module, state_dict: dict) -> tuple:
    """``(missing, unexpected)`` keys after loading like mmengine's (and mmcv 1.x's) ``load_state_dict``:
    every module sees the whole state_dict (torch's own loader shows a child only its own keys, so the
    sibling ``<name>_offset.*`` keys of old checkpoints never reach it, with mmcv as here)."""
    metadata = getattr(state_dict, "_metadata", None)
    state_dict = OrderedDict(state_dict)
    missing, unexpected, errors = [], [], []

    def load(m, prefix=""):
        local = {} if metadata is None else metadata.get(prefix[:-1], {})
        m._load_from_state_dict(state_dict, prefix, local, True, missing, unexpected, errors)
        for name, child in m._modules.items():
            load(child, prefix + name + ".")

    load(module)
    assert not errors, errors
    return missing, [k for k in state_dict if k not in module.state_dict()]


def test_version_1_checkpoint_keys_are_upgraded():
    saved = _golden_module("DeformConv2dPack")
    parent = nn.Module()
    parent.dcn = dc.DeformConv2dPack(**saved["kwargs"])
    old = OrderedDict((("dcn.weight", saved["state_dict"]["weight"]),
                       ("dcn_offset.weight", saved["state_dict"]["conv_offset.weight"]),
                       ("dcn_offset.bias", saved["state_dict"]["conv_offset.bias"])))
    old._metadata = OrderedDict({"dcn": {"version": 1}})
    assert mmengine_style_load(parent, old) == ([], [])
    torch.testing.assert_close(parent.dcn(saved["input"]), saved["output"], rtol=1e-4, atol=1e-5)
    assert parent.state_dict()._metadata["dcn"]["version"] == 2
    # a version-2 checkpoint keeps its keys: nothing is renamed
    old._metadata = OrderedDict({"dcn": {"version": 2}})
    missing, unexpected = mmengine_style_load(parent, old)
    assert missing == ["dcn.conv_offset.weight", "dcn.conv_offset.bias"]
    assert unexpected == ["dcn_offset.weight", "dcn_offset.bias"]


def test_seeded_initialisation_matches_mmcv():
    saved = _golden_module("DeformConv2dPack")
    torch.manual_seed(saved["seed"])
    model = dc.DeformConv2dPack(**saved["kwargs"])
    for key, value in saved["initial"].items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0)
    assert not model.conv_offset.weight.any() and not model.conv_offset.bias.any()


def test_module_attributes_and_repr():
    model = dc.DeformConv2dPack(4, 6, (3, 2), stride=2, padding=1, dilation=(1, 2), groups=2, deform_groups=2)
    assert (model.kernel_size, model.stride, model.padding, model.dilation) == ((3, 2), (2, 2), (1, 1), (1, 2))
    assert model.transposed is False and model.output_padding == (0,) and model._version == 2
    assert model.conv_offset.out_channels == 2 * 2 * 3 * 2
    assert repr(model) == ("DeformConv2dPack(in_channels=4,\nout_channels=6,\nkernel_size=(3, 2),\nstride=(2, 2),\n"
                           "padding=(1, 1),\ndilation=(1, 2),\ngroups=2,\ndeform_groups=2,\nbias=False)")
    with pytest.warns(DeprecationWarning, match="deformable_groups"):
        assert dc.DeformConv2d(4, 4, 3, deformable_groups=2).deform_groups == 2


def test_registry_entry():
    entry = registry._ENTRIES["deform_conv"]
    assert set(entry.names) == {"DeformConv2d", "DeformConv2dFunction", "DeformConv2dPack", "DeformConv2dPack_MLU",
                                "deform_conv2d"}
    assert all(hasattr(dc, name) for name in entry.names)
    assert set(entry.ext_functions) == set(ext.__all__)
    assert dc.deform_conv2d == dc.DeformConv2dFunction.apply


# --- gradients -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("groups, deform_groups, stride, padding, dilation", [
    (1, 1, 1, 1, 1), (2, 1, (1, 2), (0, 1), 1), (1, 2, 1, 1, (2, 1)), (2, 4, 2, 2, 2)])
def test_gradcheck(groups, deform_groups, stride, padding, dilation):
    g = torch.Generator().manual_seed(groups * 10 + deform_groups)
    x = torch.randn(2, 4, 5, 5, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 4 // groups, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    s, p, d = (torch.nn.modules.utils._pair(v) for v in (stride, padding, dilation))
    out_size = [core.output_extent(5, p[i], d[i], 3, s[i]) for i in range(2)]
    # fractional sample points (autograd's finite differences must not straddle a cell border)
    offset = (torch.rand(2, deform_groups * 18, *out_size, generator=g, dtype=torch.float64) * 0.8 + 0.1)
    offset = (offset + torch.randint(-2, 2, offset.shape, generator=g)).requires_grad_()

    def fn(x, offset, weight):
        return dc.deform_conv2d(x, offset, weight, stride, padding, dilation, groups, deform_groups, False, 1)

    assert torch.autograd.gradcheck(fn, (x, offset, weight), fast_mode=True)


@pytest.mark.parametrize("point, slopes", [
    ((0., 0.), (3., 1.)),  # pixel (0, 0): slopes towards (1, 0) and (0, 1)
    ((-1., 0.), (0., 0.)),  # y on -1: nothing (mmcv's get_coordinate_weight)
    ((1., 0.), (3., 1.)),  # integral: right-sided slopes
    ((2., 0.), (-7., 1.)),  # last row: the row below reads 0
    ((-0.5, 0.), (1., 0.5)),  # between -1 and 0: 0.5 * pixel (0, 0)
    ((3., 0.), (0., 0.)),  # y on H: nothing
    ((1.5, -1.), (0., 0.)),  # x on -1: nothing
])
def test_coordinate_gradient_at_integral_points_and_borders(point, slopes):
    image = torch.arange(1., 10., dtype=torch.float64).view(1, 1, 3, 3)
    weight = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    offset = torch.zeros(1, 2, 3, 3, dtype=torch.float64)
    offset[0, :, 0, 0] = torch.tensor(point)
    offset.requires_grad_()
    dc.deform_conv2d(image, offset, weight, 1, 0, 1, 1, 1, False, 1)[0, 0, 0, 0].backward()
    assert offset.grad[0, :, 0, 0].tolist() == pytest.approx(list(slopes))
    assert not offset.grad[0, :, 1:].any() and not offset.grad[0, :, 0, 1:].any()


# --- edge cases and errors ----------------------------------------------------------------------------------


def test_empty_batch_far_offsets_one_by_one_kernel_and_output():
    weight = torch.randn(3, 2, 3, 3, requires_grad=True)
    x = torch.randn(0, 2, 5, 5, requires_grad=True)
    out = dc.deform_conv2d(x, torch.zeros(0, 18, 5, 5), weight, 1, 1)
    assert out.shape == (0, 3, 5, 5)
    out.sum().backward()
    assert x.grad.shape == x.shape and not weight.grad.any()
    assert dc.DeformConv2dPack(2, 3, 3, padding=1)(torch.randn(0, 2, 5, 5)).shape == (0, 3, 5, 5)
    # every sample far outside: zero output and zero input/offset gradients
    x = torch.randn(2, 2, 4, 4, requires_grad=True)
    offset = torch.full((2, 18, 4, 4), -40.0, requires_grad=True)
    out = dc.deform_conv2d(x, offset, weight, 1, 1)
    assert not out.any()
    out.sum().backward()
    assert not x.grad.any() and not offset.grad.any() and not weight.grad.any()
    # a 1x1 kernel with zero offsets is a 1x1 convolution (groups included); a 3x3 input gives 1x1
    w1 = torch.randn(4, 1, 1, 1)
    torch.testing.assert_close(dc.deform_conv2d(x, torch.zeros(2, 2, 4, 4), w1, 1, 0, 1, 2),
                               torch.nn.functional.conv2d(x, w1, groups=2), rtol=1e-5, atol=1e-5)
    x3 = torch.randn(2, 2, 3, 3)
    torch.testing.assert_close(dc.deform_conv2d(x3, torch.zeros(2, 18, 1, 1), weight),
                               torch.nn.functional.conv2d(x3, weight), rtol=1e-5, atol=1e-5)


def test_input_smaller_than_kernel():
    """mmcv's kernel refuses it; DeformConv2d pads the input (bottom/right) and crops the output."""
    x, weight = torch.randn(1, 2, 2, 5), torch.randn(3, 2, 3, 3)
    with pytest.raises(ValueError, match="smaller than kernel"):
        dc.deform_conv2d(x, torch.zeros(1, 18, 2, 5), weight, 1, 1)
    model = dc.DeformConv2d(2, 3, 3, padding=1)
    with torch.no_grad():
        model.weight.copy_(weight)
    out = model(x, torch.zeros(1, 18, 2, 5))
    assert out.shape == (1, 3, 2, 5)
    torch.testing.assert_close(out, torch.nn.functional.conv2d(x, weight, padding=1), rtol=1e-5, atol=1e-5)


def test_im2col_step_rule():
    x, offset, weight = torch.randn(6, 2, 4, 4), torch.zeros(6, 18, 4, 4), torch.randn(3, 2, 3, 3)
    reference = dc.deform_conv2d(x, offset, weight, 1, 1, 1, 1, 1, False, 1)
    for step in (2, 3, 6, 64):  # min(step, batch) divides the batch
        torch.testing.assert_close(dc.deform_conv2d(x, offset, weight, 1, 1, 1, 1, 1, False, step), reference)
    for step in (4, 5):
        with pytest.raises(ValueError, match="batch size must be divisible by im2col_step"):
            dc.deform_conv2d(x, offset, weight, 1, 1, 1, 1, 1, False, step)
    with pytest.raises(ValueError, match="im2col_step"):
        dc.deform_conv2d(x, offset, weight, 1, 1, 1, 1, 1, False, 0)


def test_bias_must_be_false_and_input_is_cast_to_the_offsets_dtype():
    x, offset, weight = torch.randn(1, 2, 4, 4), torch.zeros(1, 18, 4, 4), torch.randn(3, 2, 3, 3)
    with pytest.raises(AssertionError, match="Only support bias is False"):
        dc.deform_conv2d(x, offset, weight, 1, 1, 1, 1, 1, True)
    assert dc.deform_conv2d(x, offset.double(), weight, 1, 1).dtype == torch.float64


def test_half_and_bfloat16():
    case = next(c for c in CASES if c["name"] == "groups2-dg2-stride")
    t = _inputs(case)
    for dtype in (torch.float16, torch.bfloat16):
        leaves = [t[k].to(dtype).requires_grad_() for k in ("input", "offset", "weight")]
        out = dc.deform_conv2d(*leaves, *_args(case["kwargs"]))
        assert out.dtype == dtype
        torch.testing.assert_close(out.float(), case["output"], rtol=5e-2, atol=5e-2)
        out.backward(t["grad_output"].to(dtype))
        assert all(leaf.grad.dtype == dtype for leaf in leaves)


BAD = [
    (dict(offset=torch.zeros(1, 17, 4, 4)), "offset"),
    (dict(offset=torch.zeros(1, 18, 4, 3)), "offset"),
    (dict(offset=torch.zeros(2, 18, 4, 4)), "offset"),
    (dict(weight=torch.zeros(2, 3, 3, 3)), "groups"),
    (dict(weight=torch.zeros(3, 1, 3, 3), groups=2), "out_channels"),
    (dict(deform_groups=4, offset=torch.zeros(1, 72, 4, 4)), "deform_groups"),
    (dict(input=torch.zeros(1, 2, 4)), "4D"),
    (dict(dilation=(1, 0)), "dilation"),
    (dict(padding=-3), "too small"),
    (dict(weight=torch.zeros(2, 2, 3)), "weight"),
    (dict(offset=torch.zeros(1, 18, 4, 4, dtype=torch.int64)), "offset"),
]


@pytest.mark.parametrize("change, message", BAD, ids=[f"{m}-{i}" for i, (_, m) in enumerate(BAD)])
def test_bad_input_names_op_and_argument(change, message):
    args = dict(input=torch.zeros(1, 2, 4, 4), offset=torch.zeros(1, 18, 4, 4), weight=torch.zeros(2, 2, 3, 3),
                stride=1, padding=1, dilation=1, groups=1, deform_groups=1)
    args.update(change)
    with pytest.raises((ValueError, TypeError), match=message) as info:
        dc.deform_conv2d(*args.values())
    assert "deform_conv2d" in str(info.value)


def test_device_mismatch_is_reported():
    with pytest.raises(ValueError, match="one device"):
        ext.deform_conv_forward(torch.zeros(1, 2, 4, 4), torch.zeros(2, 2, 3, 3, device="meta"),
                                torch.zeros(1, 18, 4, 4), torch.zeros(1, 2, 4, 4), torch.empty(0), torch.empty(0),
                                3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1)


# --- _ext adapters ---------------------------------------------------------------------------------------


def test_ext_deform_conv_adapters_write_like_the_kernels():
    case = next(c for c in CASES if c["name"] == "basic")
    t, kw = _inputs(case), case["kwargs"]
    x, offset, weight = t["input"], t["offset"], t["weight"]
    geometry = (3, 3, *kw["stride"][::-1], *kw["padding"][::-1], *kw["dilation"][::-1], kw["groups"],
                kw["deform_groups"])  # kW, kH, dW, dH, padW, padH, dilationW, dilationH, group, deformable_group
    out = torch.full_like(case["output"], 3.0)
    columns, ones = torch.empty(0, dtype=x.dtype), torch.empty(0, dtype=x.dtype)
    ext.deform_conv_forward(x, weight, offset, out, columns, ones, *geometry, 1)
    torch.testing.assert_close(out, case["output"], rtol=1e-10, atol=1e-10)
    grad_input, grad_offset = torch.ones_like(x), torch.full_like(offset, 9.0)
    ext.deform_conv_backward_input(x, offset, t["grad_output"], grad_input, grad_offset, weight, columns,
                                      *geometry, 2)
    torch.testing.assert_close(grad_input, case["grads"]["input"] + 1, rtol=1e-10, atol=1e-10)  # accumulated
    torch.testing.assert_close(grad_offset, case["grads"]["offset"], rtol=1e-10, atol=1e-10)  # overwritten
    grad_weight = torch.ones_like(weight)
    ext.deform_conv_backward_parameters(x, offset, t["grad_output"], grad_weight, columns, ones, *geometry, 0.5, 1)
    torch.testing.assert_close(grad_weight, 1 + 0.5 * case["grads"]["weight"], rtol=1e-10, atol=1e-10)
    # one image as a 3-D tensor, as the kernels allow
    single = torch.empty_like(case["output"][0])
    ext.deform_conv_forward(x[0], weight, offset[0], single, columns, ones, *geometry, 1)
    torch.testing.assert_close(single, case["output"][0], rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="im2col_step"):
        ext.deform_conv_forward(x, weight, offset, out, columns, ones, *geometry, 3)
    with pytest.raises(ValueError, match="kernel size"):
        ext.deform_conv_forward(x, weight, offset, out, columns, ones, 2, *geometry[1:], 1)
