"""mmcv.ops.border_align in the runtime: mmcv's test expectations, a scalar reference of the CUDA
kernel, mmcv's quirks (forward walks by repeated addition, backward by multiplication; strict-max
ties), gradcheck, edge cases, errors, the _ext adapters, the module.

mmcv has no CPU kernel for border_align, so there is no compiled golden here; mmcv's own test
(tests/test_ops/test_border_align.py, CUDA) provides the literal expectations below.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from kernel_reference import mmcv_bilinear
import torch

ba = importlib.import_module("mmcv_runtime.ops.border_align")
ext = importlib.import_module("mmcv_runtime.ext._border_align")
border_align, BorderAlign, BorderAlignFunction = ba.border_align, ba.BorderAlign, ba.BorderAlignFunction

# --- mmcv's test: inputs and hand-checked outputs / gradients --------------------------------

INPUT = [[[[1., 2., 3., 4.], [5., 6., 7., 8.], [9., 10., 11., 12.]],
          [[6, 7, 5, 8], [2, 1, 3, 4], [12, 9, 11, 10]],
          [[-2, -3, 2, 0], [-4, -5, 1, -1], [-1, -1, -1, -1]],
          [[0, -1, 2, 1], [-4, -3, -2, -1], [-1, -2, -3, -4]]]]
BOXES = [[[0, 0, 2, 1], [1, 0, 3, 1], [1, 0, 2, 1], [0, 0, 3, 1],
          [0, 0, 1, 2], [0, 0, 2, 2], [1, 0, 2, 1], [1, 0, 3, 1],
          [0, 1, 1, 2], [0, 0, 3, 2], [1, 0, 3, 2], [2, 0, 3, 2]]]
OUTPUT = {
    1: [[[[3., 6., 1., 2.], [4., 7., -1., 1.], [3., 7., 1., 2.],
          [4., 6., -1., 1.], [2., 12., -1., -1.], [3., 12., -1., 2.],
          [3., 7., 1., 2.], [4., 7., -1., 1.], [6., 12., -1., -2.],
          [4., 12., -1., 1.], [4., 9., -1., 1.], [4., 11., -1., 1.]]]],
    2: [[[[3., 6., 1., 2.], [4., 7., 1., 1.], [3., 7., 1., 2.],
          [4., 6., -1., 1.], [2., 12., -1., -1.], [3., 12., -1., 2.],
          [3., 7., 1., 2.], [4., 7., 1., 1.], [6., 12., -1., -2.],
          [4., 12., -1., 1.], [4., 9., -1., 1.], [4., 11., -1., 1.]]]],
}
INPUT_GRAD = {
    1: [[[[0., 1., 4., 6.], [0., 1., 0., 0.], [0., 0., 0., 0.]],
         [[2., 4., 0., 0.], [0., 0., 0., 0.], [4., 1., 1., 0.]],
         [[0., 0., 0., 0.], [0., 0., 3., 3.], [0., 2., 1., 3.]],
         [[0., 1., 4., 6.], [0., 0., 0., 0.], [0., 1., 0., 0.]]]],
    2: [[[[0., 1., 4., 6.], [0., 1., 0., 0.], [0., 0., 0., 0.]],
         [[2., 4., 0., 0.], [0., 0., 0., 0.], [4., 1., 1., 0.]],
         [[0., 0., 0., 0.], [0., 0., 5., 1.], [0., 2., 1., 3.]],
         [[0., 1., 4., 6.], [0., 0., 0., 0.], [0., 1., 0., 0.]]]],
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("pool_size", [1, 2])
def test_mmcv_expectations(dtype, pool_size):
    for use_module in (False, True):
        input = torch.tensor(INPUT, dtype=dtype, requires_grad=True)
        boxes = torch.tensor(BOXES, dtype=dtype)
        output = BorderAlign(pool_size)(input, boxes) if use_module else border_align(input, boxes, pool_size)
        output.backward(torch.ones_like(output))
        assert output.dtype == dtype and output.shape == (1, 1, 12, 4)
        assert np.allclose(output.detach().double().numpy(), OUTPUT[pool_size], atol=1e-5)
        assert np.allclose(input.grad.double().numpy(), INPUT_GRAD[pool_size], atol=1e-5)


# --- a scalar reference: mmcv's CUDA kernel, one element at a time, in the input's precision --


def _bilinear(plane, y, x, f):
    h, w = plane.shape
    point = mmcv_bilinear(h, w, y, x, f)
    if point is None:
        return f(0), []
    value = f(0)
    for r, c, wt in point.taps:
        value = f(value + f(wt * plane[r, c]))
    return value, point.taps


def _walk(box, border, pool_size, f):
    x1, y1, x2, y2 = (f(v) for v in box)
    x, y = (x1, y1) if border < 2 else (x2, y2)
    width, height = f(x2 - x1), f(y2 - y1)
    # pool_size 0: one point, no step (mmcv divides by zero; the runtime walks nowhere)
    stride = f((width if border % 2 == 0 else height) / f(pool_size)) if pool_size else f(0)
    dx, dy = [(stride, f(0)), (f(0), stride), (-stride, f(0)), (f(0), -stride)][border]
    return x, y, dx, dy


def _reference(input, boxes, pool_size, grad_output):
    f = np.float32 if input.dtype == torch.float32 else np.float64
    inp, bxs, gout = (t.detach().numpy().astype(f) for t in (input, boxes, grad_output))
    n, c4, h, w = inp.shape
    c, k = c4 // 4, bxs.shape[1]
    out = np.zeros((n, c, k, 4), f)
    arg = np.zeros((n, c, k, 4), np.int32)
    grad = np.zeros_like(inp)
    for b in range(n):
        for ch in range(c):
            for j in range(k):
                for border in range(4):
                    plane = inp[b, border * c + ch]
                    x, y, dx, dy = _walk(bxs[b, j], border, pool_size, f)
                    best, best_i = _bilinear(plane, y, x, f)[0], 0
                    for i in range(1, pool_size + 1):
                        x, y = f(x + dx), f(y + dy)  # forward: repeated addition
                        value = _bilinear(plane, y, x, f)[0]
                        if value > best:
                            best, best_i = value, i
                    out[b, ch, j, border], arg[b, ch, j, border] = best, best_i
                    x, y, dx, dy = _walk(bxs[b, j], border, pool_size, f)
                    x, y = f(x + f(dx * f(best_i))), f(y + f(dy * f(best_i)))  # backward: multiplication
                    for r, col, wt in _bilinear(plane, y, x, f)[1]:
                        grad[b, border * c + ch, r, col] += wt * gout[b, ch, j, border]
    return torch.from_numpy(out), torch.from_numpy(arg), torch.from_numpy(grad)


def _random_case(seed, n=2, c=2, h=5, w=6, k=7, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    input = torch.randn(n, 4 * c, h, w, generator=g, dtype=dtype)
    # boxes reaching out of the map on every side, some inverted, some degenerate
    xy1 = torch.rand(n, k, 2, generator=g, dtype=dtype) * torch.tensor([w + 2.0, h + 2.0], dtype=dtype) - 2
    wh = torch.rand(n, k, 2, generator=g, dtype=dtype) * torch.tensor([w, h], dtype=dtype) - 0.5
    wh[:, 0] = 0
    boxes = torch.cat([xy1, xy1 + wh], -1)
    return input, boxes


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("pool_size", [0, 1, 3, 10])
def test_matches_scalar_kernel_reference(dtype, pool_size):
    input, boxes = _random_case(pool_size, dtype=dtype)
    grad_output = torch.randn(2, 2, 7, 4, generator=torch.Generator().manual_seed(1), dtype=dtype)
    out_ref, arg_ref, grad_ref = _reference(input, boxes, pool_size, grad_output)
    output = input.new_zeros(out_ref.shape)
    argmax = torch.zeros(out_ref.shape, dtype=torch.int32)
    ext.border_align_forward(input, boxes, output, argmax, pool_size=pool_size)
    assert torch.equal(argmax, arg_ref)
    torch.testing.assert_close(output, out_ref, rtol=1e-6, atol=1e-6)
    grad_input = torch.zeros_like(input)
    ext.border_align_backward(grad_output, boxes, argmax, grad_input, pool_size=pool_size)
    torch.testing.assert_close(grad_input, grad_ref, rtol=1e-5, atol=1e-6)


def test_points_off_the_map_read_nothing_next_to_a_non_finite_pixel():
    """An inf at pixel (0, 0) of some plane: off-map points still read 0 (the kernel reads nothing),
    not 0 * inf = NaN; points on the map that reach that pixel do see it, as in the kernel."""
    input, boxes = _random_case(5)
    input[0, 1, 0, 0] = float("inf")
    input[1, 6, 0, 0] = float("-inf")
    grad_output = torch.randn(2, 2, 7, 4, generator=torch.Generator().manual_seed(1))
    out_ref, arg_ref, _ = _reference(input, boxes, 3, grad_output)
    output = input.new_zeros(out_ref.shape)
    argmax = torch.zeros(out_ref.shape, dtype=torch.int32)
    ext.border_align_forward(input, boxes, output, argmax, pool_size=3)
    assert not out_ref.isnan().any()
    assert torch.equal(argmax, arg_ref)
    torch.testing.assert_close(output, out_ref, rtol=1e-6, atol=1e-6)


def test_integer_ties_keep_the_first_point():
    # integer map and integer boxes: every sampled value is exact, ties are real ties
    g = torch.Generator().manual_seed(3)
    input = torch.randint(-2, 3, (1, 8, 4, 5), generator=g).float()
    boxes = torch.randint(-1, 6, (1, 20, 4), generator=g).float()
    grad_output = torch.ones(1, 2, 20, 4)
    out_ref, arg_ref, grad_ref = _reference(input, boxes, 4, grad_output)
    output, argmax = ba.border_align_forward_core(input, boxes, 4)
    assert torch.equal(argmax, arg_ref) and torch.equal(output, out_ref)
    constant = torch.full((1, 4, 3, 3), 5.0)
    _, argmax = ba.border_align_forward_core(constant, torch.tensor([[[0.0, 0.0, 2.0, 2.0]]]), 4)
    assert argmax.eq(0).all()


def test_forward_walks_by_addition_and_backward_by_multiplication():
    # 0.4f added 10 times is 4.0000005 > W = 4: mmcv's forward reads 0 (outside) at the last point,
    # which beats the -1 everywhere else; its backward recomputes that point as 0.4f * 10 = 4.0,
    # inside, and sends the gradient to the last column, which the forward never read.
    input = torch.full((1, 4, 1, 4), -1.0, requires_grad=True)
    boxes = torch.tensor([[[0.0, 0.0, 4.0, 0.0]]])
    output = border_align(input, boxes, 10)
    assert output[0, 0, 0, 0].item() == 0.0  # top border
    output[..., 0].sum().backward()
    assert input.grad[0, 0].tolist() == [[0.0, 0.0, 0.0, 1.0]]
    assert input.grad[0, 1:].abs().sum().item() == 0.0


def test_gradcheck_float64():
    input, boxes = _random_case(11, n=1, c=2, h=4, w=5, k=5, dtype=torch.float64)
    input.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: border_align(t, boxes, 3), (input,), eps=1e-6, atol=1e-5)


# --- edge cases ------------------------------------------------------------------------------


def test_empty_inputs():
    input = torch.randn(2, 8, 3, 3, requires_grad=True)
    output = border_align(input, torch.zeros(2, 0, 4), 2)
    assert output.shape == (2, 2, 0, 4)
    output.sum().backward()
    assert input.grad.abs().sum() == 0
    assert border_align(torch.zeros(0, 8, 3, 3), torch.zeros(0, 5, 4), 2).shape == (0, 2, 5, 4)
    assert border_align(torch.zeros(1, 0, 3, 3), torch.zeros(1, 5, 4), 2).shape == (1, 0, 5, 4)
    assert border_align(torch.ones(1, 4, 0, 3), torch.zeros(1, 2, 4), 2).eq(0).all()


def test_single_degenerate_and_outside_boxes():
    input = torch.arange(1.0, 1 + 4 * 3 * 3).view(1, 4, 3, 3)
    # a point box reads one bilinear sample on every border
    point = border_align(input, torch.tensor([[[1.0, 1.0, 1.0, 1.0]]]), 5)
    assert point.flatten().tolist() == [input[0, b, 1, 1].item() for b in range(4)]
    # a box entirely outside [-1, H] x [-1, W] reads 0 and sends no gradient
    input.requires_grad_(True)
    far = border_align(input, torch.tensor([[[10.0, 10.0, 20.0, 20.0]]]), 3)
    assert far.eq(0).all()
    far.sum().backward()
    assert input.grad.abs().sum() == 0


def test_non_contiguous_input_and_grad_output():
    input, boxes = _random_case(5, n=1, c=3, h=4, w=4, k=6)
    wide = torch.cat([input, input], -1)[..., ::2].clone().transpose(2, 3).contiguous().transpose(2, 3)
    assert not wide.is_contiguous()
    torch.testing.assert_close(border_align(wide, boxes, 4), border_align(wide.contiguous(), boxes, 4))
    x = wide.clone().requires_grad_(True)
    out = border_align(x, boxes, 4)
    grad = torch.randn(1, 3, 4, 6).transpose(2, 3)  # (1, 3, 6, 4), non-contiguous
    out.backward(grad)
    y = wide.contiguous().requires_grad_(True)
    border_align(y, boxes, 4).backward(grad.contiguous())
    torch.testing.assert_close(x.grad, y.grad)


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("input, boxes, pool_size, error, match", [
    (torch.zeros(8, 3, 3), torch.zeros(1, 9, 4), 2, ValueError, "input must have shape"),
    (torch.zeros(1, 6, 3, 3), torch.zeros(1, 9, 4), 2, ValueError, "divisible by 4"),
    (torch.zeros(1, 8, 3, 3), torch.zeros(9, 4), 2, ValueError, "boxes must have shape"),
    (torch.zeros(1, 8, 3, 3), torch.zeros(1, 9, 5), 2, ValueError, "boxes must have shape"),
    (torch.zeros(1, 8, 3, 3), torch.zeros(2, 9, 4), 2, ValueError, "one batch per input"),
    (torch.zeros(1, 8, 3, 3), torch.zeros(1, 9, 4, dtype=torch.float64), 2, TypeError, "dtype of input"),
    (torch.zeros(1, 8, 3, 3, dtype=torch.long), torch.zeros(1, 9, 4), 2, TypeError, "floating point"),
    (torch.zeros(1, 8, 3, 3), torch.zeros(1, 9, 4), 2.5, TypeError, "pool_size must be an int"),
    (torch.zeros(1, 8, 3, 3), torch.zeros(1, 9, 4), -1, ValueError, "pool_size must be >= 0"),
    (np.zeros((1, 8, 3, 3), np.float32), torch.zeros(1, 9, 4), 2, TypeError, "input must be a torch.Tensor"),
])
def test_bad_input(input, boxes, pool_size, error, match):
    with pytest.raises(error, match=f"border_align: .*{match}"):
        border_align(input, boxes, pool_size)


def test_device_mismatch():
    input, boxes = torch.zeros(1, 8, 3, 3), torch.zeros(1, 9, 4, device="meta")
    with pytest.raises(ValueError, match="border_align: input and boxes must be on one device"):
        border_align(input, boxes, 2)


def test_autocast_runs_in_the_wider_dtype():
    input, boxes = _random_case(9, n=1, c=2, h=4, w=5, k=5)
    x = input.bfloat16().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = border_align(x, boxes, 3)
    assert output.dtype == torch.float32
    torch.testing.assert_close(output, border_align(x.detach().float(), boxes, 3))
    output.sum().backward()
    assert x.grad.dtype == torch.bfloat16
    with pytest.raises(TypeError, match="border_align: boxes must have the dtype of input"):
        border_align(x, boxes, 3)  # outside autocast a mismatch is an error, as in mmcv


# --- _ext adapters, module, registry -----------------------------------------------------------


def test_ext_adapters_match_the_functional_api():
    input, boxes = _random_case(7, n=2, c=3, h=5, w=4, k=6)
    x = input.clone().requires_grad_(True)
    expected = border_align(x, boxes, 5)
    grad_output = torch.randn_like(expected)
    expected.backward(grad_output)
    output = torch.full_like(expected, 7.0)  # overwritten, not accumulated
    argmax = torch.full(expected.shape, 9, dtype=torch.int32)
    assert ext.border_align_forward(input=input, boxes=boxes, output=output, argmax_idx=argmax, pool_size=5) is None
    assert torch.equal(output, expected) and argmax.dtype == torch.int32 and argmax.max() <= 5
    grad_input = torch.ones_like(input)  # gradients accumulate, like the kernel's atomicAdd
    assert ext.border_align_backward(grad_output=grad_output, boxes=boxes, argmax_idx=argmax,
                                     grad_input=grad_input, pool_size=5) is None
    torch.testing.assert_close(grad_input, x.grad + 1)
    assert sorted(ext.__all__) == ["border_align_backward", "border_align_forward"]


def test_module_repr_state_dict_and_registry():
    module = BorderAlign(pool_size=10)
    assert repr(module) == "BorderAlign(pool_size=10)"
    assert module.pool_size == 10 and dict(module.state_dict()) == {}
    assert border_align == BorderAlignFunction.apply
    assert BorderAlignFunction.__name__ == "BorderAlignFunction"
    from mmcv_runtime import registry

    entry = registry._ENTRIES["border_align"]
    assert entry.backward == "yes" and set(entry.ext_functions) == set(ext.__all__)
    assert all(hasattr(ba, name) for name in entry.names)
