"""mmcv.ops.focal_loss in the runtime: mmcv's test expectations, the CUDA kernels transcribed, gradients.

mmcv has no CPU kernel, so there is no compiled golden here: the oracle is (1) the literal inputs and
expected values of mmcv's own tests/test_ops/test_focal_loss.py and (2) a float64 scalar transcription
of each CUDA kernel (sigmoid_focal_loss_cuda_kernel.cuh, softmax_focal_loss_cuda_kernel.cuh), line by
line, with C's ``max`` as ``fmax`` and ``gamma``/``alpha`` rounded to float32 as pybind's ``float``
rounds them. Where the kernels read out of bounds (undefined in mmcv) the transcription takes the
runtime's documented choice, named as such (``_weight_at``, ``_softmax_read``).
"""

from __future__ import annotations

import importlib
import math
import struct

import pytest
import torch
from torch.autograd import gradcheck

fl = importlib.import_module("mmcv_runtime.ops.focal_loss")
ext = importlib.import_module("mmcv_runtime.ext._focal_loss")

FLT_MIN = 2.0 ** -126
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# --- mmcv's own test expectations (tests/test_ops/test_focal_loss.py), alpha 0.25, gamma 2, 'mean' ---

MMCV_INPUTS = [
    ([[1., 0], [0, 1.]], [0, 1]),
    ([[1., 0, -1.], [0, 1., 2.]], [2, 1]),
    ([[1e-6, 2e-6, 3e-6], [4e-6, 5e-5, 6e-4], [7e-3, 8e-2, 9e-1]], [1, 2, 0]),
]
MMCV_SOFTMAX = [(0.00566451, [[-0.00657264, 0.00657264], [0.00657264, -0.00657264]]),
                (0.34956908, [[0.10165970, 0.03739851, -0.13905823], [0.01227554, -0.10298023, 0.09070466]]),
                (0.15754992, [[0.02590877, -0.05181759, 0.02590882], [0.02589641, 0.02589760, -0.05179400],
                              [-0.07307514, 0.02234372, 0.05073142]])]
MMCV_SIGMOID = [(0.13562961, [[-0.00657264, 0.11185755], [0.11185755, -0.00657264]]),
                (1.10251057, [[0.28808805, 0.11185755, -0.09602935], [0.11185755, -0.00657264, 0.40376765]]),
                (0.42287254, [[0.07457182, -0.02485716, 0.07457201], [0.07457211, 0.07457669, -0.02483728],
                              [-0.02462499, 0.08277918, 0.18050370]])]


def _mmcv_cases(expected):
    return [(x, y, loss, grad) for (x, y), (loss, grad) in zip(MMCV_INPUTS, expected)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("fn, expected", [("sigmoid_focal_loss", MMCV_SIGMOID), ("softmax_focal_loss", MMCV_SOFTMAX)])
def test_mmcv_expectations_float(fn, expected, device):
    for x, y, loss, grad in _mmcv_cases(expected):
        x = torch.tensor(x, device=device, requires_grad=True)
        out = getattr(fl, fn)(x, torch.tensor(y, device=device), 2.0, 0.25, None, "mean")
        out.backward()
        # mmcv asserts rtol 1e-2; the expected values are printed to 8 digits
        torch.testing.assert_close(out.cpu(), torch.tensor(loss), rtol=1e-6, atol=5e-8)
        torch.testing.assert_close(x.grad.cpu(), torch.tensor(grad), rtol=1e-6, atol=5e-8)


@pytest.mark.parametrize("fn, expected", [("sigmoid_focal_loss", MMCV_SIGMOID), ("softmax_focal_loss", MMCV_SOFTMAX)])
def test_mmcv_expectations_half(fn, expected):
    for x, y, loss, grad in _mmcv_cases(expected):
        x = torch.tensor(x, dtype=torch.half, requires_grad=True)
        out = getattr(fl, fn)(x, torch.tensor(y), 2.0, 0.25, None, "mean")
        out.backward()
        assert out.dtype == torch.half and x.grad.dtype == torch.half
        # mmcv's own half test: np.allclose(..., 1e-2)
        torch.testing.assert_close(out.float(), torch.tensor(loss), rtol=1e-2, atol=1e-5)
        torch.testing.assert_close(x.grad.float(), torch.tensor(grad), rtol=1e-2, atol=1e-5)


@pytest.mark.parametrize("cls", ["SigmoidFocalLoss", "SoftmaxFocalLoss"])
def test_mmcv_gradcheck_modules(cls):
    # mmcv's _test_grad_*: gradcheck(floss, (x, y), eps=1e-2, atol=1e-2) in float32; here float64, tight
    for x, y in MMCV_INPUTS:
        x = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        assert gradcheck(getattr(fl, cls)(2.0, 0.25), (x, torch.tensor(y)))


# --- float64 scalar transcriptions of the CUDA kernels ------------------------------------------------


def _f32(v: float) -> float:
    return struct.unpack("f", struct.pack("f", v))[0]


def _max(a: float, b: float) -> float:  # CUDA's max(float, float) is fmax: NaN gives the other operand
    if math.isnan(a):
        return b
    return a if a > b else b


def _pow(x: float, y: float) -> float:  # C's pow: 0 ** negative is inf
    try:
        return math.pow(x, y)
    except (ValueError, ZeroDivisionError):
        return math.inf


def _weight_at(weight, t: int, num_classes: int) -> float:
    """``weight[t]``; out of range mmcv reads out of bounds (undefined): the runtime's choice is 1."""
    return weight[t] if 0 <= t < num_classes else 1.0


def _sigmoid_fwd_kernel(x, target, weight, gamma, alpha):
    """sigmoid_focal_loss_forward_cuda_kernel, T = double (exp in double: see test_float64_exp_quirk)."""
    gamma, alpha = _f32(gamma), _f32(alpha)
    n_rows, num_classes = len(x), len(x[0])
    out = [[0.0] * num_classes for _ in range(n_rows)]
    for index in range(n_rows * num_classes):
        n, c = divmod(index, num_classes)
        t = target[n]
        flag_p, flag_n = float(t == c), float(t != c)
        p = 1.0 / (1.0 + math.exp(-x[n][c]))
        term_p = _pow(1.0 - p, gamma) * math.log(_max(p, FLT_MIN))
        term_n = _pow(p, gamma) * math.log(_max(1.0 - p, FLT_MIN))
        value = 0.0
        value += -flag_p * alpha * term_p
        value += -flag_n * (1.0 - alpha) * term_n
        if weight is not None:
            value *= _weight_at(weight, t, num_classes)
        out[n][c] = value
    return out


def _sigmoid_bwd_kernel(x, target, weight, gamma, alpha):
    """sigmoid_focal_loss_backward_cuda_kernel, T = double."""
    gamma, alpha = _f32(gamma), _f32(alpha)
    n_rows, num_classes = len(x), len(x[0])
    out = [[0.0] * num_classes for _ in range(n_rows)]
    for index in range(n_rows * num_classes):
        n, c = divmod(index, num_classes)
        t = target[n]
        flag_p, flag_n = float(t == c), float(t != c)
        p = 1.0 / (1.0 + math.exp(-x[n][c]))
        term_p = _pow(1.0 - p, gamma) * (1.0 - p - (gamma * p * math.log(_max(p, FLT_MIN))))
        term_n = _pow(p, gamma) * (gamma * (1.0 - p) * math.log(_max(1.0 - p, FLT_MIN)) - p)
        value = 0.0
        value += -flag_p * alpha * term_p
        value += -flag_n * (1.0 - alpha) * term_n
        if weight is not None:
            value *= _weight_at(weight, t, num_classes)
        out[n][c] = value
    return out


def _softmax_probs(x):
    """mmcv's wrapper: exp(x - rowmax) / rowsum."""
    rows = []
    for row in x:
        top = max(row)
        e = [math.exp(v - top) for v in row]
        total = sum(e)
        rows.append([v / total for v in e])
    return rows


def _softmax_read(softmax, n: int, label: int):
    """``softmax[n * C + label]`` flat and unchecked, as the kernels read it; None past the end (undefined
    in mmcv), where the runtime's choice is to ignore the row."""
    num_classes = len(softmax[0])
    flat = n * num_classes + label
    if flat >= len(softmax) * num_classes:
        return None
    return softmax[flat // num_classes][flat % num_classes]


def _softmax_fwd_kernel(softmax, target, weight, gamma, alpha):
    """softmax_focal_loss_forward_cuda_kernel, T = double."""
    gamma, alpha = _f32(gamma), _f32(alpha)
    num_classes = len(softmax[0])
    out = []
    for index, label in enumerate(target):
        pred = _softmax_read(softmax, index, label)
        if label >= 0 and pred is not None:
            value = -alpha * _pow(1.0 - pred, gamma) * math.log(_max(pred, FLT_MIN))
        else:
            value = 0.0
        if weight is not None:
            value *= _weight_at(weight, label, num_classes)
        out.append(value)
    return out


def _softmax_bwd_kernels(softmax, target, weight, gamma, alpha):
    """softmax_focal_loss_backward_cuda1_kernel (buff) then ..._cuda2_kernel (grad_input), T = double."""
    gamma, alpha = _f32(gamma), _f32(alpha)
    num_classes = len(softmax[0])
    buff = []
    for index, label in enumerate(target):
        pred = _softmax_read(softmax, index, label)
        if label >= 0 and pred is not None:
            value = alpha * (-_pow(1.0 - pred, gamma)
                             + gamma * _pow(1.0 - pred, gamma - 1) * pred * math.log(_max(pred, FLT_MIN)))
        else:
            value = 0.0
        if weight is not None:
            value *= _weight_at(weight, label, num_classes)
        buff.append(value)
    grad = [[0.0] * num_classes for _ in target]
    for index in range(len(target) * num_classes):
        n, c = divmod(index, num_classes)
        label = target[n]
        if label >= 0 and _softmax_read(softmax, n, label) is not None:
            flag = 1.0 if label == c else 0.0
            grad[n][c] = buff[n] * (flag - softmax[n][c])
        else:
            grad[n][c] = 0.0
    return buff, grad


def _case(n=7, c=5, seed=0, scale=3.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, c, generator=g, dtype=torch.float64) * scale).to(dtype)
    # every kind of label: classes, background (C) and negatives
    target = torch.randint(-1, c + 1, (n,), generator=g)
    target[:3] = torch.tensor([c, -2, 0])
    weight = (torch.rand(c, generator=g, dtype=torch.float64) + 0.5).to(dtype)
    return x, target, weight


GAMMAS_ALPHAS = [(2.0, 0.25), (0.5, 0.3), (1.5, 0.7), (0.0, 0.25), (3.0, 0.1)]


@pytest.mark.parametrize("gamma, alpha", GAMMAS_ALPHAS)
@pytest.mark.parametrize("weighted", [False, True])
def test_sigmoid_matches_kernel_transcription(gamma, alpha, weighted):
    x, target, weight = _case(seed=int(gamma * 10))
    weight = weight if weighted else None
    wl = weight.tolist() if weighted else None
    loss, grad = fl.sigmoid_focal_loss_core(x, target, weight, gamma, alpha, want_grad=True)
    expect_loss = torch.tensor(_sigmoid_fwd_kernel(x.tolist(), target.tolist(), wl, gamma, alpha), dtype=torch.float64)
    expect_grad = torch.tensor(_sigmoid_bwd_kernel(x.tolist(), target.tolist(), wl, gamma, alpha), dtype=torch.float64)
    torch.testing.assert_close(loss, expect_loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, expect_grad, rtol=1e-12, atol=1e-12)
    # the Function: reductions over the kernel output, grads scaled as mmcv's backward
    for reduction, reduce in (("none", lambda t: t), ("sum", torch.sum), ("mean", lambda t: t.sum() / t.size(0))):
        leaf = x.clone().requires_grad_()
        out = fl.sigmoid_focal_loss(leaf, target, gamma, alpha, weight, reduction)
        torch.testing.assert_close(out, reduce(expect_loss), rtol=1e-12, atol=1e-12)
        upstream = torch.rand_like(out) + 0.5
        out.backward(upstream)
        scale = upstream / x.size(0) if reduction == "mean" else upstream
        torch.testing.assert_close(leaf.grad, expect_grad * scale, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("gamma, alpha", GAMMAS_ALPHAS)
@pytest.mark.parametrize("weighted", [False, True])
def test_softmax_matches_kernel_transcription(gamma, alpha, weighted):
    x, target, weight = _case(seed=int(gamma * 10) + 1)
    weight = weight if weighted else None
    wl = weight.tolist() if weighted else None
    probs = fl.softmax_probs(x)
    expect_probs = _softmax_probs(x.tolist())
    torch.testing.assert_close(probs, torch.tensor(expect_probs, dtype=torch.float64), rtol=1e-14, atol=1e-15)
    loss, buff, grad = fl.softmax_focal_loss_core(probs, target, weight, gamma, alpha, want_grad=True)
    expect_loss = torch.tensor(_softmax_fwd_kernel(expect_probs, target.tolist(), wl, gamma, alpha),
                               dtype=torch.float64)
    expect_buff, expect_grad = _softmax_bwd_kernels(expect_probs, target.tolist(), wl, gamma, alpha)
    torch.testing.assert_close(loss, expect_loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(buff, torch.tensor(expect_buff, dtype=torch.float64), rtol=1e-12, atol=1e-12)
    expect_grad = torch.tensor(expect_grad, dtype=torch.float64)
    torch.testing.assert_close(grad, expect_grad, rtol=1e-12, atol=1e-12)
    for reduction, reduce in (("none", lambda t: t), ("sum", torch.sum), ("mean", lambda t: t.sum() / t.size(0))):
        leaf = x.clone().requires_grad_()
        out = fl.softmax_focal_loss(leaf, target, gamma, alpha, weight, reduction)
        torch.testing.assert_close(out, reduce(expect_loss), rtol=1e-12, atol=1e-12)
        upstream = torch.rand_like(out) + 0.5
        out.backward(upstream)
        # 'none': each row by its own grad_output (mmcv broadcasts it over classes: see the module docstring)
        scale = upstream[:, None] if reduction == "none" else upstream / x.size(0) if reduction == "mean" else upstream
        torch.testing.assert_close(leaf.grad, expect_grad * scale, rtol=1e-12, atol=1e-12)


def test_clamp_region_matches_transcription_not_autograd():
    # logits far enough that p or 1 - p underflows below FLT_MIN: the clamps decide, and the kernel's
    # gradient is not the derivative of the clamped loss (which is 0 there)
    x = torch.tensor([[100.0, -100.0, 200.0, -200.0, 40.0, -40.0, 0.0]], dtype=torch.float64).repeat(3, 1)
    target = torch.tensor([0, 1, 7])
    for gamma, alpha in ((2.0, 0.25), (0.5, 0.4)):
        loss, grad = fl.sigmoid_focal_loss_core(x, target, None, gamma, alpha, want_grad=True)
        expect_loss = _sigmoid_fwd_kernel(x.tolist(), target.tolist(), None, gamma, alpha)
        expect_grad = _sigmoid_bwd_kernel(x.tolist(), target.tolist(), None, gamma, alpha)
        torch.testing.assert_close(loss, torch.tensor(expect_loss, dtype=torch.float64), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grad, torch.tensor(expect_grad, dtype=torch.float64), rtol=1e-12, atol=1e-12)
    # background row: x = 100 is a negative with p == 1: loss -(1-a) log(FLT_MIN), gradient (1 - a), not 0
    loss, grad = fl.sigmoid_focal_loss_core(x, target, None, 2.0, 0.25, want_grad=True)
    assert loss[2, 0].item() == pytest.approx(-0.75 * math.log(FLT_MIN), rel=1e-15)
    assert grad[2, 0].item() == pytest.approx(0.75, rel=1e-15)
    leaf = x.clone().requires_grad_()
    _python_sigmoid_loss(leaf, target, 2.0, 0.25).sum().backward()
    assert leaf.grad[2, 0].item() == 0  # autograd through the clamped formula: flat there
    sigmoid_grad = torch.autograd.grad(fl.sigmoid_focal_loss(leaf, target, 2.0, 0.25, None, "sum"), leaf)[0]
    assert sigmoid_grad[2, 0].item() == pytest.approx(0.75, rel=1e-15)  # the Function follows the kernel
    # a positive with p below FLT_MIN (x = -100): loss -a log(FLT_MIN), gradient -a (1 - 0) = -a
    assert loss[1, 1].item() == pytest.approx(-0.25 * math.log(FLT_MIN), rel=1e-15)
    assert grad[1, 1].item() == pytest.approx(-0.25, rel=1e-15)
    # float32: 1 - p is 0 already at x = 20, as in the float kernel
    loss32, grad32 = fl.sigmoid_focal_loss_core(torch.tensor([[20.0]]), torch.tensor([1]), None, 2.0, 0.25,
                                                want_grad=True)
    assert loss32.item() == pytest.approx(-0.75 * math.log(FLT_MIN), rel=1e-6) and grad32.item() == 0.75
    # softmax: a target probability below FLT_MIN
    xs = torch.tensor([[0.0, -200.0, 3.0]], dtype=torch.float64)
    probs = fl.softmax_probs(xs)
    loss, buff, grad = fl.softmax_focal_loss_core(probs, torch.tensor([1]), None, 2.0, 0.25, want_grad=True)
    expect_buff, expect_grad = _softmax_bwd_kernels(probs.tolist(), [1], None, 2.0, 0.25)
    assert loss.item() == pytest.approx(-0.25 * math.log(FLT_MIN), rel=1e-12)
    torch.testing.assert_close(grad, torch.tensor(expect_grad, dtype=torch.float64), rtol=1e-12, atol=1e-12)


def test_float64_exp_quirk_is_precision_only():
    # mmcv's float64 sigmoid forward calls expf (float32 exp); the runtime keeps float64. The two
    # differ by float32 rounding of exp only.
    x, target, _ = _case(n=6, c=4, seed=3)

    def expf_forward(xv, t):
        alpha, gamma = _f32(0.25), _f32(2.0)
        out = []
        for n, row in enumerate(xv):
            for c, v in enumerate(row):
                p = 1.0 / (1.0 + _f32(math.exp(_f32(-v))))
                if t[n] == c:
                    out.append(-alpha * _pow(1 - p, gamma) * math.log(_max(p, FLT_MIN)))
                else:
                    out.append(-(1 - alpha) * _pow(p, gamma) * math.log(_max(1 - p, FLT_MIN)))
        return torch.tensor(out, dtype=torch.float64).view(len(xv), -1)

    loss, _ = fl.sigmoid_focal_loss_core(x, target, None, 2.0, 0.25)
    torch.testing.assert_close(loss, expf_forward(x.tolist(), target.tolist()), rtol=1e-6, atol=1e-9)


def test_gamma_alpha_are_float32_for_float64_input():
    x, target, _ = _case(seed=5)
    loss, _ = fl.sigmoid_focal_loss_core(x, target, None, 2.1, 0.3)
    exact = torch.tensor(_sigmoid_fwd_kernel(x.tolist(), target.tolist(), None, 2.1, 0.3), dtype=torch.float64)
    torch.testing.assert_close(loss, exact, rtol=1e-13, atol=1e-13)
    assert not torch.allclose(loss, _python_sigmoid_loss(x, target, 2.1, 0.3), rtol=1e-10, atol=0)


def _python_sigmoid_loss(x, target, gamma, alpha):
    """The same formula with unrounded float64 gamma/alpha (what mmcv does NOT do)."""
    p = torch.sigmoid(x)
    onehot = torch.nn.functional.one_hot(target.clamp(0), x.size(1) + 1)[:, :x.size(1)].bool()
    onehot &= (target >= 0)[:, None]
    pos = -alpha * (1 - p) ** gamma * torch.log(p.clamp_min(FLT_MIN))
    neg = -(1 - alpha) * p ** gamma * torch.log((1 - p).clamp_min(FLT_MIN))
    return torch.where(onehot, pos, neg)


def test_nan_logit_with_gamma_zero_follows_fmax():
    x = torch.tensor([[float("nan"), 0.0]], dtype=torch.float64)
    loss, _ = fl.sigmoid_focal_loss_core(x, torch.tensor([1]), None, 0.0, 0.25)
    expect = torch.tensor(_sigmoid_fwd_kernel(x.tolist(), [1], None, 0.0, 0.25), dtype=torch.float64)
    assert math.isfinite(loss[0, 0].item())
    torch.testing.assert_close(loss, expect, rtol=1e-12, atol=1e-12)


# --- gradients --------------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("gamma", [2.0, 1.5])
def test_gradcheck_sigmoid(reduction, gamma):
    x, target, weight = _case(n=5, c=4, seed=7, scale=2.0)
    x.requires_grad_()
    assert gradcheck(lambda i: fl.sigmoid_focal_loss(i, target, gamma, 0.3, weight, reduction), (x,))
    assert gradcheck(lambda i: fl.sigmoid_focal_loss(i, target, gamma, 0.3, None, reduction), (x,))


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("gamma", [2.0, 1.5])
def test_gradcheck_softmax(reduction, gamma):
    x, target, weight = _case(n=5, c=4, seed=8, scale=2.0)
    # label C reads the next row's probability (not differentiated by mmcv's backward): tested above
    target = torch.where(target == x.size(1), torch.zeros_like(target), target)
    x.requires_grad_()
    assert gradcheck(lambda i: fl.softmax_focal_loss(i, target, gamma, 0.3, weight, reduction), (x,))
    assert gradcheck(lambda i: fl.softmax_focal_loss(i, target, gamma, 0.3, None, reduction), (x,))


def test_retain_graph_backward_twice():
    x, target, _ = _case()
    x = x.requires_grad_()
    for fn in (fl.sigmoid_focal_loss, fl.softmax_focal_loss):
        x.grad = None
        out = fn(x, target, 2.0, 0.25, None, "mean")
        out.backward(retain_graph=True)
        first = x.grad.clone()
        out.backward()
        torch.testing.assert_close(x.grad, 2 * first)


def test_no_grad_input_gives_same_loss():
    x, target, weight = _case()
    for fn in (fl.sigmoid_focal_loss, fl.softmax_focal_loss):
        plain = fn(x, target, 2.0, 0.25, weight, "none")
        tracked = fn(x.clone().requires_grad_(), target, 2.0, 0.25, weight, "none")
        assert torch.equal(plain, tracked.detach())


# --- labels, weight, reductions, shapes ---------------------------------------------------------------


def test_sigmoid_background_and_negative_labels_are_all_negative():
    x = torch.randn(4, 3, dtype=torch.float64)
    background = fl.sigmoid_focal_loss(x, torch.tensor([3, 3, 3, 3]), 2.0, 0.25, None, "none")
    negative = fl.sigmoid_focal_loss(x, torch.tensor([-1, -5, -1, -2]), 2.0, 0.25, None, "none")
    p = torch.sigmoid(x)
    torch.testing.assert_close(background, -0.75 * p ** 2 * torch.log(1 - p))
    torch.testing.assert_close(negative, background)


def test_softmax_labels():
    x = torch.randn(3, 4, dtype=torch.float64)
    probs = fl.softmax_probs(x)
    out = fl.softmax_focal_loss(x, torch.tensor([-1, 4, 4]), 2.0, 0.25, None, "none")
    assert out[0] == 0  # negative label: ignored
    # label == C reads the next row's class-0 probability (mmcv's unchecked flat read)
    pred = probs[2, 0]
    assert out[1].item() == pytest.approx((-0.25 * (1 - pred) ** 2 * torch.log(pred)).item(), rel=1e-12)
    assert out[2] == 0  # ... past the last row: undefined in mmcv, ignored here
    leaf = x.clone().requires_grad_()
    fl.softmax_focal_loss(leaf, torch.tensor([-1, 4, 4]), 2.0, 0.25, None, "sum").backward()
    assert leaf.grad[0].abs().sum() == 0 and leaf.grad[2].abs().sum() == 0
    # mmcv's backward for that row: buff * (0 - softmax[n]) on the row itself
    buff = 0.25 * (-(1 - pred) ** 2 + 2.0 * (1 - pred) * pred * torch.log(pred))
    torch.testing.assert_close(leaf.grad[1], -buff * probs[1])


def test_weight_is_indexed_by_the_rows_label():
    x = torch.randn(4, 3, dtype=torch.float64)
    target = torch.tensor([0, 2, 3, -1])
    weight = torch.tensor([2.0, 3.0, 5.0], dtype=torch.float64)
    plain = fl.sigmoid_focal_loss(x, target, 2.0, 0.25, None, "none")
    weighted = fl.sigmoid_focal_loss(x, target, 2.0, 0.25, weight, "none")
    # every column of a row gets weight[target[row]]; background/negative rows stay unweighted
    torch.testing.assert_close(weighted, plain * torch.tensor([2.0, 5.0, 1.0, 1.0], dtype=torch.float64)[:, None])
    plain_s = fl.softmax_focal_loss(x, target.clamp(max=2), 2.0, 0.25, None, "none")
    weighted_s = fl.softmax_focal_loss(x, target.clamp(max=2), 2.0, 0.25, weight, "none")
    torch.testing.assert_close(weighted_s, plain_s * torch.tensor([2.0, 5.0, 5.0, 1.0], dtype=torch.float64))


def test_reductions_and_shapes():
    x, target, _ = _case(n=6, c=4)
    none = fl.sigmoid_focal_loss(x, target, 2.0, 0.25, None, "none")
    assert none.shape == (6, 4)
    torch.testing.assert_close(fl.sigmoid_focal_loss(x, target, 2.0, 0.25, None, "sum"), none.sum())
    # 'mean' divides by N (rows), not by N * C
    torch.testing.assert_close(fl.sigmoid_focal_loss(x, target, 2.0, 0.25, None, "mean"), none.sum() / 6)
    none_s = fl.softmax_focal_loss(x, target, 2.0, 0.25, None, "none")
    assert none_s.shape == (6,)
    torch.testing.assert_close(fl.softmax_focal_loss(x, target, 2.0, 0.25, None, "mean"), none_s.sum() / 6)
    # the Function's defaults: gamma 2, alpha 0.25, no weight, 'mean'
    torch.testing.assert_close(fl.sigmoid_focal_loss(x, target), none.sum() / 6)
    # a non-contiguous input (e.g. a permuted score map) gives the same
    strided = x.t().contiguous().t()
    assert not strided.is_contiguous()
    torch.testing.assert_close(fl.sigmoid_focal_loss(strided, target, 2.0, 0.25, None, "none"), none)
    torch.testing.assert_close(fl.softmax_focal_loss(strided, target, 2.0, 0.25, None, "none"), none_s)
    assert fl.sigmoid_focal_loss == fl.SigmoidFocalLossFunction.apply
    assert fl.softmax_focal_loss == fl.SoftmaxFocalLossFunction.apply


@pytest.mark.parametrize("fn, width", [("sigmoid_focal_loss", (0, 5)), ("softmax_focal_loss", (0,))])
def test_empty_batch(fn, width):
    x = torch.zeros(0, 5, requires_grad=True)
    target = torch.zeros(0, dtype=torch.long)
    assert getattr(fl, fn)(x, target, 2.0, 0.25, None, "none").shape == width
    assert getattr(fl, fn)(x, target, 2.0, 0.25, None, "sum").item() == 0
    mean = getattr(fl, fn)(x, target, 2.0, 0.25, None, "mean")
    assert math.isnan(mean.item())  # mmcv's sum / N with N = 0
    getattr(fl, fn)(x, target, 2.0, 0.25, None, "sum").backward()
    assert x.grad.shape == (0, 5)


def test_large_sigmoid_is_chunked_consistently(monkeypatch):
    x, target, weight = _case(n=37, c=6, seed=11, dtype=torch.float32)
    whole = fl.sigmoid_focal_loss_core(x, target, weight, 2.0, 0.25, want_grad=True)
    monkeypatch.setattr(fl, "_CPU_CHUNK", 12)  # two rows per chunk
    chunked = fl.sigmoid_focal_loss_core(x, target, weight, 2.0, 0.25, want_grad=True)
    # equal up to the last bit of a vectorised vs scalar exp/log (chunk tails take the scalar path)
    torch.testing.assert_close(whole[0], chunked[0], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(whole[1], chunked[1], rtol=1e-6, atol=1e-7)


# --- dtypes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_compute_in_float32(dtype):
    x, target, weight = _case(n=8, c=5, seed=2, dtype=dtype)
    for fn in (fl.sigmoid_focal_loss, fl.softmax_focal_loss):
        leaf = x.clone().requires_grad_()
        out = fn(leaf, target, 2.0, 0.25, weight, "none")
        out.sum().backward()
        ref_leaf = x.float().requires_grad_()
        ref = fn(ref_leaf, target, 2.0, 0.25, weight.float(), "none")
        ref.sum().backward()
        assert out.dtype == dtype and leaf.grad.dtype == dtype
        assert torch.equal(out, ref.to(dtype)) and torch.equal(leaf.grad, ref_leaf.grad.to(dtype))
    # a positive far below zero: float32 stays finite (mmcv's half kernel clamps at (half)FLT_MIN == 0: inf)
    far = fl.sigmoid_focal_loss(torch.tensor([[-30.0]], dtype=dtype), torch.tensor([0]), 2.0, 0.25, None, "sum")
    assert far.item() == pytest.approx(0.25 * 30, rel=1e-2)


def test_autocast_accepts_a_float32_weight_with_half_input():
    x, target, weight = _case(n=4, c=3, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fl.sigmoid_focal_loss(x, target, 2.0, 0.25, weight.float(), "mean")
    assert out.dtype == torch.bfloat16
    with pytest.raises(TypeError, match="sigmoid_focal_loss: weight must have the dtype of input"):
        fl.sigmoid_focal_loss(x, target, 2.0, 0.25, weight.float(), "mean")


# --- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", ["sigmoid_focal_loss", "softmax_focal_loss"])
def test_bad_inputs(fn):
    f = getattr(fl, fn)
    x, target = torch.randn(3, 4), torch.tensor([0, 1, 2])
    cases = [
        (TypeError, "target must be an int64", (x, target.int())),
        (ValueError, "input must have shape", (x[0], target)),
        (ValueError, "input must have shape", (x[None], target)),
        (TypeError, "input must be a floating point", (x.long(), target)),
        (ValueError, "target must have shape", (x, target[:, None])),
        (ValueError, "input has 3 rows but target has 2", (x, target[:2])),
        (ValueError, r"weight must have shape \(4,\)", (x, target, 2.0, 0.25, torch.ones(3))),
        (ValueError, r"weight must have shape \(4,\)", (x, target, 2.0, 0.25, torch.ones(1, 4))),
        (TypeError, "weight must have the dtype", (x, target, 2.0, 0.25, torch.ones(4, dtype=torch.float64))),
        (ValueError, "reduction must be one of", (x, target, 2.0, 0.25, None, "avg")),
        (ValueError, "target labels must be <= num_classes", (x, torch.tensor([0, 5, 1]))),
        (TypeError, "input must be a torch.Tensor", (x.numpy(), target)),
    ]
    for error, message, args in cases:
        with pytest.raises(error, match=f"{fn}: {message}"):
            f(*args)
    if fn == "softmax_focal_loss":
        with pytest.raises(ValueError, match="at least one class"):
            f(torch.zeros(2, 0), torch.tensor([0, 0]))


# --- the _ext adapters ---------------------------------------------------------------------------------


def _mmcv_style_sigmoid(input, target, gamma, alpha, weight, reduction):
    """mmcv's SigmoidFocalLossFunction body over the adapters (forward value and input gradient)."""
    weight = input.new_empty(0) if weight is None else weight
    output = input.new_zeros(input.size())
    ext.sigmoid_focal_loss_forward(input, target, weight, output, gamma=gamma, alpha=alpha)
    grad_input = input.new_full(input.size(), 123.0)  # the kernel assigns: prior contents do not matter
    ext.sigmoid_focal_loss_backward(input, target, weight, grad_input, gamma=gamma, alpha=alpha)
    if reduction == "mean":
        return output.sum() / input.size(0), grad_input / input.size(0)
    return (output.sum(), grad_input) if reduction == "sum" else (output, grad_input)


def _mmcv_style_softmax(input, target, gamma, alpha, weight, reduction):
    weight = input.new_empty(0) if weight is None else weight
    stats, _ = torch.max(input, dim=1)
    probs = (input - stats.unsqueeze(1).expand_as(input)).exp_()
    probs /= probs.sum(dim=1).unsqueeze(1).expand_as(input)
    output = input.new_zeros(input.size(0))
    ext.softmax_focal_loss_forward(probs, target, weight, output, gamma=gamma, alpha=alpha)
    buff = input.new_full((input.size(0),), 7.0)
    grad_input = input.new_full(input.size(), 7.0)
    ext.softmax_focal_loss_backward(probs, target, weight, buff, grad_input, gamma=gamma, alpha=alpha)
    if reduction == "mean":
        return output.sum() / input.size(0), grad_input / input.size(0), buff
    return (output.sum(), grad_input, buff) if reduction == "sum" else (output, grad_input, buff)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_adapters_under_mmcv_wrapper_match_functional(weighted, reduction):
    x, target, weight = _case(n=6, c=4, seed=4)
    weight = weight if weighted else None
    value, grad = _mmcv_style_sigmoid(x, target, 2.0, 0.25, weight, reduction)
    leaf = x.clone().requires_grad_()
    out = fl.sigmoid_focal_loss(leaf, target, 2.0, 0.25, weight, reduction)
    out.backward()
    torch.testing.assert_close(value, out, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(grad, leaf.grad, rtol=1e-13, atol=1e-13)
    value, grad, buff = _mmcv_style_softmax(x, target, 2.0, 0.25, weight, reduction)
    leaf = x.clone().requires_grad_()
    out = fl.softmax_focal_loss(leaf, target, 2.0, 0.25, weight, reduction)
    out.backward()
    torch.testing.assert_close(value, out, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(grad, leaf.grad, rtol=1e-13, atol=1e-13)
    expect_buff, _ = _softmax_bwd_kernels(_softmax_probs(x.tolist()), target.tolist(),
                                          weight.tolist() if weighted else None, 2.0, 0.25)
    torch.testing.assert_close(buff, torch.tensor(expect_buff, dtype=torch.float64), rtol=1e-12, atol=1e-12)


def test_adapters_signatures_and_errors():
    import inspect

    assert sorted(ext.__all__) == sorted(fl_entry().ext_functions)
    params = {name: list(inspect.signature(getattr(ext, name)).parameters) for name in ext.__all__}
    assert params["sigmoid_focal_loss_forward"] == ["input", "target", "weight", "output", "gamma", "alpha"]
    assert params["sigmoid_focal_loss_backward"] == ["input", "target", "weight", "grad_input", "gamma", "alpha"]
    assert params["softmax_focal_loss_forward"] == ["input", "target", "weight", "output", "gamma", "alpha"]
    assert params["softmax_focal_loss_backward"] == ["input", "target", "weight", "buff", "grad_input", "gamma",
                                                     "alpha"]
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="target labels must be <= num_classes"):
        ext.sigmoid_focal_loss_forward(x, torch.tensor([0, 4]), x.new_empty(0), torch.zeros(2, 3), 2.0, 0.25)
    with pytest.raises(ValueError, match="target labels must be <= num_classes"):
        ext.softmax_focal_loss_forward(x.softmax(1), torch.tensor([0, 4]), x.new_empty(0), torch.zeros(2), 2.0, 0.25)
    # half buffers, as mmcv's wrapper makes them for half input
    out = torch.zeros(2, 3, dtype=torch.half)
    ext.sigmoid_focal_loss_forward(x.half(), torch.tensor([0, 3]), x.new_empty(0).half(), out, 2.0, 0.25)
    torch.testing.assert_close(out, fl.sigmoid_focal_loss(x.half(), torch.tensor([0, 3]), 2.0, 0.25, None, "none"))


# --- modules and registry ------------------------------------------------------------------------------


def fl_entry():
    from mmcv_runtime import registry

    return registry._ENTRIES["focal_loss"]


@pytest.mark.parametrize("cls, fn", [("SigmoidFocalLoss", "sigmoid_focal_loss"),
                                     ("SoftmaxFocalLoss", "softmax_focal_loss")])
def test_modules(cls, fn):
    module = getattr(fl, cls)(gamma=2.0, alpha=0.25)
    assert repr(module) == f"{cls}(gamma=2.0, alpha=0.25, reduction=mean)"
    assert list(module.state_dict()) == [] and module.weight is None
    x, target, weight = _case(n=5, c=4)
    torch.testing.assert_close(module(x, target), getattr(fl, fn)(x, target, 2.0, 0.25, None, "mean"))
    weighted = getattr(fl, cls)(1.5, 0.4, weight.float(), "sum")
    assert repr(weighted) == f"{cls}(gamma=1.5, alpha=0.4, reduction=sum)"
    assert list(weighted.state_dict()) == ["weight"]
    weighted.double()  # the weight is a buffer: it follows the module's dtype
    torch.testing.assert_close(weighted(x, target), getattr(fl, fn)(x, target, 1.5, 0.4, weight, "sum"))
    fresh = getattr(fl, cls)(1.5, 0.4, torch.zeros(4, dtype=torch.float64), "sum")
    fresh.load_state_dict(weighted.state_dict(), strict=True)
    assert torch.equal(fresh.weight, weighted.weight)
    with pytest.raises(TypeError):
        getattr(fl, cls)()  # gamma and alpha have no defaults in mmcv's modules


def test_registry_entry():
    entry = fl_entry()
    assert set(entry.names) == {"SigmoidFocalLoss", "SigmoidFocalLossFunction", "SoftmaxFocalLoss",
                                "SoftmaxFocalLossFunction", "sigmoid_focal_loss", "softmax_focal_loss"}
    assert all(hasattr(fl, name) for name in entry.names)
    assert entry.backward == "yes" and entry.devices == ("any",)
