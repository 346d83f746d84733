"""mmcv.ops.psa_mask in the runtime: golden parity with compiled mmcv, mmcv's own test, gradcheck, errors.

Goldens: fixtures/golden/psamask.pt, made by fixtures/golden/make_psamask_golden.py with mmcv 2.2.0's
compiled CPU kernel (collect and distribute; odd, even, non-square, over-complete and 1x1 masks).
psa_mask only copies values, so outputs and gradients are compared exactly.
"""

from __future__ import annotations

import importlib
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

psamask_mod = importlib.import_module("mmcv_runtime.ops.psa_mask")
ext = importlib.import_module("mmcv_runtime.ext._psa_mask")
PSAMask, PSAMaskFunction, psa_mask = psamask_mod.PSAMask, psamask_mod.PSAMaskFunction, psamask_mod.psa_mask

GOLDEN = Path(__file__).resolve().parent.parent / "fixtures" / "golden" / "psamask.pt"
CASES = torch.load(GOLDEN, weights_only=False)["cases"] if GOLDEN.exists() else []
MIRROR = Path("/work/.mirror/open-mmlab+mmcv/repo")


def _ids(case):
    return f"{'collect' if case['psa_type'] == 0 else 'distribute'}-{tuple(case['input'].shape)}-{case['mask_size']}"


def _reference(x, psa_type, h_mask, w_mask):
    """Loop transcription of the kernel (tiny sizes only)."""
    n_, _, h_, w_ = x.shape
    hh, hw = (h_mask - 1) // 2, (w_mask - 1) // 2
    out = torch.zeros(n_, h_ * w_, h_, w_, dtype=x.dtype)
    for n in range(n_):
        for h in range(h_):
            for w in range(w_):
                for i in range(max(0, hh - h), min(h_mask, h_ + hh - h)):
                    for j in range(max(0, hw - w), min(w_mask, w_ + hw - w)):
                        p, q = i + h - hh, j + w - hw
                        if psa_type == 0:
                            out[n, p * w_ + q, h, w] = x[n, i * w_mask + j, h, w]
                        else:
                            out[n, h * w_ + w, p, q] = x[n, i * w_mask + j, h, w]
    return out


@pytest.mark.skipif(not CASES, reason="golden file missing")
@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_matches_mmcv(case):
    x = case["input"].clone().requires_grad_()
    out = psa_mask(x, case["psa_type"], case["mask_size"])
    assert torch.equal(out, case["output"])
    out.backward(case["grad_output"])
    assert torch.equal(x.grad, case["grad_input"])


@pytest.mark.skipif(not CASES, reason="golden file missing")
@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_ext_adapters_match_mmcv(case):
    x, (hm, wm) = case["input"], case["mask_size"]
    n, _, h, w = x.shape
    args = dict(psa_type=case["psa_type"], num_=n, h_feature=h, w_feature=w, h_mask=hm, w_mask=wm,
                half_h_mask=(hm - 1) // 2, half_w_mask=(wm - 1) // 2)
    out = x.new_zeros(n, h * w, h, w)
    assert ext.psamask_forward(x, out, **args) is None
    assert torch.equal(out, case["output"])
    grad = x.new_zeros(x.shape)
    ext.psamask_backward(case["grad_output"], grad, **args)
    assert torch.equal(grad, case["grad_input"])


@pytest.mark.parametrize("psa_type", [0, 1])
@pytest.mark.parametrize("shape", [(2, 3, 4, 3, 5), (1, 4, 3, 7, 5), (1, 2, 2, 2, 2), (1, 3, 1, 4, 1)])
def test_matches_loop_reference(psa_type, shape):
    n, h, w, hm, wm = shape
    x = torch.randn(n, hm * wm, h, w, dtype=torch.float64)
    assert torch.equal(psa_mask(x, psa_type, (hm, wm)), _reference(x, psa_type, hm, wm))


def _mirror_bin(name):
    data = subprocess.run(["git", "-C", str(MIRROR), "show", f"HEAD:tests/data/for_psa_mask/{name}"],
                          capture_output=True, check=True).stdout
    return np.frombuffer(data, dtype=np.float32).copy()


@pytest.mark.skipif(not MIRROR.exists(), reason="mmcv git mirror absent")
@pytest.mark.parametrize("psa_type", ["collect", "distribute"])
def test_mmcv_own_test(psa_type):
    x = torch.from_numpy(_mirror_bin("psa_input.bin").reshape(4, 16, 8, 8)).requires_grad_()
    expected = _mirror_bin(f"psa_output_{psa_type}.bin").reshape(4, 64, 8, 8)
    module = PSAMask(psa_type, (4, 4))
    out = module(x)
    torch.mean(out.view(-1) - torch.ones(4, 64, 8, 8).view(-1)).backward()
    assert out.shape == expected.shape
    assert np.allclose(out.detach().numpy(), expected)
    assert x.grad is not None and x.grad.shape == x.shape


@pytest.mark.parametrize("psa_type", [0, 1])
@pytest.mark.parametrize("size", [(3, 3), (2, 4), (5, 7)])
def test_gradcheck(psa_type, size):
    x = torch.randn(1, size[0] * size[1], 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: psa_mask(t, psa_type, size), (x,))
    if size == (2, 4):  # the backward is built from differentiable ops
        assert torch.autograd.gradgradcheck(lambda t: psa_mask(t, psa_type, size), (x,))


def test_off_window_entries_are_zero_even_for_nonfinite_input():
    x = torch.full((1, 9, 3, 3), float("nan"))
    out = psa_mask(x, 0, 3)
    # collect with a 3x3 window: output (p, q) of pixel (h, w) is filled iff |p-h| <= 1 and |q-w| <= 1
    filled = _reference(torch.ones(1, 9, 3, 3), 0, 3, 3) != 0
    assert torch.isnan(out[filled]).all() and (out[~filled] == 0).all()


def test_string_and_nonzero_psa_type():
    x = torch.randn(1, 9, 4, 4)
    assert torch.equal(psa_mask(x, "collect", 3), psa_mask(x, 0, (3, 3)))
    assert torch.equal(psa_mask(x, "distribute", 3), psa_mask(x, 1, 3))
    assert torch.equal(psa_mask(x, 2, 3), psa_mask(x, 1, 3))  # the kernels treat any non-zero as distribute
    # distribute is collect with the two (H*W) axes swapped
    col, dis = psa_mask(x, 0, 3).view(16, 16), psa_mask(x, 1, 3).view(16, 16)
    assert torch.equal(col.t(), dis)


def test_adapters_assign_only_the_window_and_keep_the_rest():
    x = torch.randn(1, 9, 4, 5)
    args = dict(num_=1, h_feature=4, w_feature=5, h_mask=3, w_mask=3, half_h_mask=1, half_w_mask=1)
    for psa_type in (0, 1):
        out = torch.full((1, 20, 4, 5), 7.0)
        ext.psamask_forward(x, out, psa_type=psa_type, **args)
        hit = _reference(torch.ones(1, 9, 4, 5), psa_type, 3, 3) != 0
        ref = psa_mask(x, psa_type, 3)
        assert torch.equal(out[hit], ref[hit]) and (out[~hit] == 7).all()
        grad_out = torch.randn(1, 20, 4, 5)
        grad = torch.full((1, 9, 4, 5), 7.0)
        ext.psamask_backward(grad_out, grad, psa_type=psa_type, **args)
        xr = x.clone().requires_grad_()
        psa_mask(xr, psa_type, 3).backward(grad_out)
        on_map = (_tap_hits(4, 5, 3, 3))
        assert torch.equal(grad[on_map], xr.grad[on_map]) and (grad[~on_map] == 7).all()


def _tap_hits(h, w, hm, wm):
    """(1, hm*wm, h, w): whether tap (i, j) of pixel (h, w) lands on the map."""
    i = torch.arange(hm).view(hm, 1, 1, 1) + torch.arange(h).view(1, 1, h, 1) - (hm - 1) // 2
    j = torch.arange(wm).view(1, wm, 1, 1) + torch.arange(w).view(1, 1, 1, w) - (wm - 1) // 2
    return ((i >= 0) & (i < h) & (j >= 0) & (j < w)).reshape(1, hm * wm, h, w)


def test_module_repr_state_and_function_class():
    m = PSAMask("collect", (3, 3))
    assert repr(m) == "PSAMask(psa_type=collect, mask_size=(3, 3))"
    assert m.psa_type_enum == 0 and PSAMask("distribute", 5).psa_type_enum == 1
    assert m.state_dict() == {} and list(m.parameters()) == []
    assert psa_mask is not None and PSAMaskFunction.__name__ == "PSAMaskFunction"
    x = torch.randn(2, 9, 3, 3, requires_grad=True)
    out = PSAMaskFunction.apply(x, 1, 3)
    assert out.shape == (2, 9, 3, 3) and out.grad_fn is not None


def test_empty_batch():
    out = psa_mask(torch.zeros(0, 9, 3, 4), 0, 3)
    assert out.shape == (0, 12, 3, 4)


def test_registry_entry():
    from mmcv_runtime import registry

    entry = registry.entries()["psa_mask"]
    assert entry.backward == "yes" and entry.devices == ("any",)
    if True:
        assert set(entry.names) == {"PSAMask", "PSAMaskFunction", "psa_mask"}
        assert set(entry.ext_functions) == {"psamask_forward", "psamask_backward"}
    assert set(ext.__all__) == {"psamask_forward", "psamask_backward"}


@pytest.mark.parametrize("call, exc, text", [
    (lambda: PSAMask("gather", 3), ValueError, "psa_type"),
    (lambda: PSAMask("collect")(torch.randn(1, 9, 3, 3)), ValueError, "mask_size"),
    (lambda: psa_mask(torch.randn(1, 8, 3, 3), 0, 3), ValueError, "channels"),
    (lambda: psa_mask(torch.randn(9, 3, 3), 0, 3), ValueError, "shape"),
    (lambda: psa_mask(torch.ones(1, 9, 3, 3, dtype=torch.long), 0, 3), TypeError, "floating"),
    (lambda: psa_mask(torch.randn(1, 9, 3, 3), "both", 3), ValueError, "psa_type"),
    (lambda: psa_mask(torch.randn(1, 9, 3, 3), 0.0, 3), TypeError, "psa_type"),
    (lambda: psa_mask(torch.randn(1, 9, 3, 3), 0, (3, 0)), ValueError, "mask_size"),
    (lambda: psa_mask([[1.0]], 0, 3), TypeError, "input"),
])
def test_bad_input(call, exc, text):
    with pytest.raises(exc, match=text) as info:
        call()
    assert "psa" in str(info.value).lower()


@pytest.mark.parametrize("psa_type", [0, 1])
@pytest.mark.parametrize("size", [(3, 3), (2, 4), (7, 5)])
def test_scatter_and_gather_paths_agree(psa_type, size, monkeypatch):
    x = torch.randn(2, size[0] * size[1], 4, 3, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 12, 4, 3, dtype=torch.float64)
    results = []
    for sparse in (True, False):
        monkeypatch.setattr(psamask_mod, "_sparse_window", lambda *_a, s=sparse: s)
        x.grad = None
        out = psa_mask(x, psa_type, size)
        out.backward(g)
        results.append((out.detach(), x.grad.clone()))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
    assert torch.equal(results[0][0], _reference(x.detach(), psa_type, *size))
