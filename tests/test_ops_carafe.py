"""mmcv.ops.carafe in the runtime: scalar transcription of mmcv's CUDA kernels, gradcheck, mmcv's own
test data, CARAFEPack, errors, the ``_ext`` adapters."""

from __future__ import annotations

import importlib
import itertools
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck

carafe_mod = importlib.import_module("mmcv_runtime.ops.carafe")
ext = importlib.import_module("mmcv_runtime.ext._carafe")
from mmcv_runtime import registry  # noqa: E402

carafe, carafe_naive = carafe_mod.carafe, carafe_mod.carafe_naive
CARAFE, CARAFENaive, CARAFEPack = carafe_mod.CARAFE, carafe_mod.CARAFENaive, carafe_mod.CARAFEPack


# --- scalar transcriptions of the CUDA kernels (float64, loops) ------------------------------------


def ref_forward(feat, mask, k, g, s):
    """CARAFEForward / carafe_naive_forward_cuda_kernel, element by element."""
    n_, c_, h_, w_ = feat.shape
    out = np.zeros((n_, c_, h_ * s, w_ * s))
    cpg = c_ // g
    r = (k - 1) // 2
    for n, c, ph, pw in itertools.product(range(n_), range(c_), range(h_ * s), range(w_ * s)):
        dph, dpw = ph // s, pw // s
        val = 0.0
        for iy in range(dph - r, dph + r + 1):
            for ix in range(dpw - r, dpw + r + 1):
                if iy < 0 or iy > h_ - 1 or ix < 0 or ix > w_ - 1:
                    continue
                mc = ((c // cpg) * k + iy - dph + r) * k + ix - dpw + r
                val += feat[n, c, iy, ix] * mask[n, mc, ph, pw]
        out[n, c, ph, pw] = val
    return out


def ref_backward(top, feat, mask, k, g, s):
    """CARAFEBackward_Feature (flipped masks at high resolution) + FeatureSum, and CARAFEBackward_Mask."""
    n_, c_, h_, w_ = feat.shape
    hh, ww = h_ * s, w_ * s
    cpg = c_ // g
    r = (k - 1) // 2
    half = (k - 1) * s // 2
    hs = np.zeros((n_, c_, hh, ww))
    for n, ph, pw in itertools.product(range(n_), range(hh), range(ww)):
        sh, sw = ph - half, pw - half
        shared = np.zeros(mask.shape[1])
        for mc in range(mask.shape[1]):
            my, mx = sh + (mc // k % k) * s, sw + (mc % k) * s
            if my < 0 or my > hh - 1 or mx < 0 or mx > ww - 1:
                continue
            grp = mc // (k * k)
            shared[mc] = mask[n, (2 * grp + 1) * k * k - mc - 1, my, mx]
        for c in range(c_):
            val = 0.0
            for iy in range(sh, ph + half + 1, s):
                for ix in range(sw, pw + half + 1, s):
                    if iy < 0 or iy > hh - 1 or ix < 0 or ix > ww - 1:
                        continue
                    mc = ((c // cpg) * k + (iy - ph + half) // s) * k + (ix - pw + half) // s
                    val += shared[mc] * top[n, c, iy, ix]
            hs[n, c, ph, pw] = val
    gfeat = np.zeros_like(feat)
    for n, c, y, x in itertools.product(range(n_), range(c_), range(h_), range(w_)):
        gfeat[n, c, y, x] = hs[n, c, y * s:(y + 1) * s, x * s:(x + 1) * s].sum()
    gmask = np.zeros_like(mask)
    for n, mc, ph, pw in itertools.product(range(n_), range(mask.shape[1]), range(hh), range(ww)):
        grp, loc = mc // (k * k), mc % (k * k)
        dy, dx = ph // s + loc // k % k - r, pw // s + loc % k - r
        if 0 <= dy <= h_ - 1 and 0 <= dx <= w_ - 1:
            gmask[n, mc, ph, pw] = sum(top[n, c, ph, pw] * feat[n, c, dy, dx]
                                       for c in range(grp * cpg, (grp + 1) * cpg))
    return gfeat, gmask


def ref_naive_backward(top, feat, mask, k, g, s):
    """carafe_naive_backward_cuda_kernel: scatter (atomicAdd) per output element."""
    n_, c_, h_, w_ = feat.shape
    gfeat, gmask = np.zeros_like(feat), np.zeros_like(mask)
    cpg, r = c_ // g, (k - 1) // 2
    for n, c, ph, pw in itertools.product(range(n_), range(c_), range(h_ * s), range(w_ * s)):
        dph, dpw = ph // s, pw // s
        for iy in range(dph - r, dph + r + 1):
            for ix in range(dpw - r, dpw + r + 1):
                if iy < 0 or iy > h_ - 1 or ix < 0 or ix > w_ - 1:
                    continue
                mc = ((c // cpg) * k + iy - dph + r) * k + ix - dpw + r
                gfeat[n, c, iy, ix] += mask[n, mc, ph, pw] * top[n, c, ph, pw]
                gmask[n, mc, ph, pw] += feat[n, c, iy, ix] * top[n, c, ph, pw]
    return gfeat, gmask


def _inputs(n, c, h, w, k, g, s, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    feat = torch.randn(n, c, h, w, generator=gen, dtype=dtype)
    mask = torch.randn(n, g * k * k, h * s, w * s, generator=gen, dtype=dtype)
    top = torch.randn(n, c, h * s, w * s, generator=gen, dtype=dtype)
    return feat, mask, top


CASES = [  # (n, c, h, w, k, g, s)
    (1, 2, 3, 4, 1, 1, 1),
    (1, 4, 3, 2, 3, 2, 2),
    (2, 2, 2, 3, 3, 1, 3),
    (1, 4, 4, 3, 5, 2, 2),
    (1, 2, 3, 5, 5, 1, 1),
    (1, 3, 2, 2, 5, 3, 3),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "n{}c{}h{}w{}k{}g{}s{}".format(*c))
@pytest.mark.parametrize("fn", ["carafe", "carafe_naive"])
def test_matches_kernel_transcription(case, fn):
    n, c, h, w, k, g, s = case
    feat, mask, top = _inputs(*case)
    feat.requires_grad_(True)
    mask.requires_grad_(True)
    out = getattr(carafe_mod, fn)(feat, mask, k, g, s)
    assert out.shape == (n, c, h * s, w * s) and out.dtype == torch.float64
    f_np, m_np, t_np = feat.detach().numpy(), mask.detach().numpy(), top.numpy()
    np.testing.assert_allclose(out.detach().numpy(), ref_forward(f_np, m_np, k, g, s), rtol=0, atol=1e-12)
    out.backward(top)
    ref = ref_backward if fn == "carafe" else ref_naive_backward
    gfeat, gmask = ref(t_np, f_np, m_np, k, g, s)
    np.testing.assert_allclose(feat.grad.numpy(), gfeat, rtol=0, atol=1e-12)
    np.testing.assert_allclose(mask.grad.numpy(), gmask, rtol=0, atol=1e-12)


def test_fast_and_naive_backward_transcriptions_agree():
    case = (1, 4, 3, 4, 3, 2, 2)
    feat, mask, top = (t.numpy() for t in _inputs(*case))
    a, b = ref_backward(top, feat, mask, *case[4:]), ref_naive_backward(top, feat, mask, *case[4:])
    np.testing.assert_allclose(a[0], b[0], atol=1e-12)
    np.testing.assert_allclose(a[1], b[1], atol=1e-12)


@pytest.mark.parametrize("fn", ["carafe", "carafe_naive"])
@pytest.mark.parametrize("k,g,s", [(3, 2, 2), (5, 1, 3), (1, 1, 1)])
def test_gradcheck(fn, k, g, s):
    feat, mask, _ = _inputs(1, 4, 3, 4, k, g, s, seed=1) if s < 3 else _inputs(1, 2, 2, 3, k, g, s, seed=1)
    feat.requires_grad_(True)
    mask.requires_grad_(True)
    assert gradcheck(lambda f, m: getattr(carafe_mod, fn)(f, m, k, g, s), (feat, mask))


def test_mmcv_gradcheck_sizes():
    """mmcv's test_carafe(_naive)_gradcheck: CARAFE(5, 4, 2) on (2, 64, 3, 3) / (2, 100, 6, 6), CPU."""
    torch.manual_seed(0)
    feat = torch.randn(2, 64, 3, 3).double().requires_grad_(True)
    mask = torch.randn(2, 100, 6, 6).sigmoid().double().requires_grad_(True)
    assert gradcheck(CARAFE(5, 4, 2), (feat, mask), atol=1e-4, eps=1e-4, fast_mode=True)
    assert gradcheck(CARAFENaive(5, 4, 2), (feat, mask), atol=1e-4, eps=1e-4, fast_mode=True)


# --- mmcv's test_carafe_allclose data (CUDA results), read from the mmcv git mirror when present ---

_MIRROR = Path("/work/.mirror/open-mmlab+mmcv/repo")
_BLOBS = {
    "feat": "9402a7cdacd110d94343dfc8ca3acc935ea4af1b",
    "feat_grad": "d195bd18031de420179f4e6573efe92a12250bba",
    "mask": "18dc01b0a4a24dd56628eecf8103b76e40d19b9b",
    "mask_grad": "f6f93dc68d7a102c524f2b38db957b1b0329614c",
    "output": "540052702068fe07315ea81735062ad1b9091e45",
}


def _blob(name, shape):
    raw = subprocess.run(["git", "-C", str(_MIRROR), "cat-file", "blob", _BLOBS[name]], check=True,
                         capture_output=True).stdout
    return torch.from_numpy(np.frombuffer(raw, dtype=np.float32).copy().reshape(shape))


@pytest.mark.skipif(not _MIRROR.exists(), reason="mmcv git mirror (tests/data/for_carafe) not available")
@pytest.mark.parametrize("module", [CARAFE, CARAFENaive])
def test_mmcv_allclose_data(module):
    feat = _blob("feat", (2, 64, 3, 3)).requires_grad_(True)
    mask = _blob("mask", (2, 100, 6, 6)).requires_grad_(True)
    out = module(5, 4, 2)(feat, mask)
    out.backward(torch.ones_like(out))
    np.testing.assert_allclose(out.detach().numpy(), _blob("output", (2, 64, 6, 6)).numpy(), atol=1e-3)
    np.testing.assert_allclose(feat.grad.numpy(), _blob("feat_grad", (2, 64, 3, 3)).numpy(), atol=1e-3)
    np.testing.assert_allclose(mask.grad.numpy(), _blob("mask_grad", (2, 100, 6, 6)).numpy(), atol=1e-3)


# --- dtypes, chunking, empty inputs --------------------------------------------------------------


def test_float32_and_half():
    feat, mask, _ = _inputs(2, 8, 5, 6, 3, 2, 2, dtype=torch.float32)
    ref = carafe(feat.double(), mask.double(), 3, 2, 2)
    torch.testing.assert_close(carafe(feat, mask, 3, 2, 2), ref.float(), rtol=1e-5, atol=1e-5)
    half = carafe(feat.half(), mask.half(), 3, 2, 2)
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), ref.float(), rtol=2e-2, atol=2e-2)


def test_channel_chunking_matches(monkeypatch):
    feat, mask, top = _inputs(2, 6, 4, 5, 3, 2, 2, seed=3)
    full = carafe(feat, mask, 3, 2, 2)
    gfull = carafe_mod.carafe_backward_core(top, feat, mask, 3, 2, 2)
    monkeypatch.setattr(carafe_mod, "_CHUNK_ELEMENTS", 1)  # one channel per chunk
    torch.testing.assert_close(carafe(feat, mask, 3, 2, 2), full, rtol=0, atol=1e-13)
    for a, b in zip(carafe_mod.carafe_backward_core(top, feat, mask, 3, 2, 2), gfull):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-13)


def test_empty_batch():
    feat = torch.zeros(0, 4, 3, 3, requires_grad=True)
    mask = torch.zeros(0, 9, 6, 6, requires_grad=True)
    out = carafe(feat, mask, 3, 1, 2)
    assert out.shape == (0, 4, 6, 6)
    out.sum().backward()
    assert feat.grad.shape == feat.shape and mask.grad.shape == mask.shape


def test_map_smaller_than_kernel():
    case = (1, 2, 1, 2, 5, 1, 2)
    feat, mask, _ = _inputs(*case)
    np.testing.assert_allclose(carafe(feat, mask, 5, 1, 2).numpy(),
                               ref_forward(feat.numpy(), mask.numpy(), 5, 1, 2), atol=1e-12)


# --- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", ["carafe", "carafe_naive"])
def test_bad_inputs(fn):
    op = getattr(carafe_mod, fn)
    feat, mask, _ = _inputs(1, 4, 3, 3, 3, 2, 2, dtype=torch.float32)
    with pytest.raises(ValueError, match=f"{fn}: kernel_size"):
        op(feat, torch.zeros(1, 2 * 16, 6, 6), 4, 2, 2)
    with pytest.raises(ValueError, match=f"{fn}: group_size"):
        op(torch.zeros(1, 3, 3, 3), mask, 3, 2, 2)
    with pytest.raises(ValueError, match=f"{fn}: masks must have shape"):
        op(feat, mask[:, :9], 3, 2, 2)
    with pytest.raises(ValueError, match=f"{fn}: masks must have shape"):
        op(feat, mask[..., :5], 3, 2, 2)
    with pytest.raises(ValueError, match=f"{fn}: scale_factor"):
        op(feat, mask, 3, 2, 0)
    with pytest.raises(TypeError, match=f"{fn}: scale_factor"):
        op(feat, mask, 3, 2, 1.5)
    with pytest.raises(ValueError, match=f"{fn}: features must be 4-D"):
        op(feat[0], mask, 3, 2, 2)
    with pytest.raises(TypeError, match=f"{fn}: masks dtype"):
        op(feat, mask.double(), 3, 2, 2)
    with pytest.raises(TypeError, match=f"{fn}: features must be a floating"):
        op(feat.long(), mask, 3, 2, 2)


def test_module_arg_types():
    with pytest.raises(TypeError, match="CARAFE: scale_factor"):
        CARAFE(5, 1, 2.0)
    with pytest.raises(TypeError, match="CARAFENaive: kernel_size"):
        CARAFENaive("5", 1, 2)


# --- modules ------------------------------------------------------------------------------------


def test_modules_repr_and_attrs():
    m = CARAFE(5, 4, 2)
    assert (m.kernel_size, m.group_size, m.scale_factor) == (5, 4, 2)
    assert repr(m) == "CARAFE()" and repr(CARAFENaive(3, 1, 2)) == "CARAFENaive()"
    assert list(m.state_dict()) == []


def test_carafe_pack():
    torch.manual_seed(0)
    pack = CARAFEPack(16, 2, up_kernel=3, up_group=2, compressed_channels=8)
    assert list(pack.state_dict()) == ["channel_compressor.weight", "channel_compressor.bias",
                                       "content_encoder.weight", "content_encoder.bias"]
    assert pack.content_encoder.weight.shape == (3 * 3 * 2 * 2 * 2, 8, 3, 3)
    assert pack.content_encoder.padding == (1, 1)
    assert float(pack.content_encoder.weight.detach().std()) < 0.002
    assert float(pack.content_encoder.bias.detach().abs().max()) == 0.0
    assert float(pack.channel_compressor.bias.detach().abs().max()) == 0.0
    bound = math.sqrt(6 / (16 + 8))  # xavier uniform, gain 1
    assert float(pack.channel_compressor.weight.detach().abs().max()) <= bound
    assert "(channel_compressor): Conv2d(16, 8, kernel_size=(1, 1), stride=(1, 1))" in repr(pack)
    x = torch.randn(2, 16, 5, 7, requires_grad=True)
    y = pack(x)
    assert y.shape == (2, 16, 10, 14)
    y.sum().backward()
    assert x.grad.shape == x.shape and pack.content_encoder.weight.grad is not None
    # kernel_normalizer: softmax over each group's k*k taps
    mask = pack.kernel_normalizer(pack.content_encoder(pack.channel_compressor(x)))
    assert mask.shape == (2, 18, 10, 14)
    torch.testing.assert_close(mask.view(2, 2, 9, 10, 14).sum(2), torch.ones(2, 2, 10, 14))
    # default config as mmdet: CARAFEPack(channels, 2) with up_kernel 5, encoder dilation
    d = CARAFEPack(4, 2, encoder_kernel=3, encoder_dilation=2, compressed_channels=4)
    assert d.content_encoder.out_channels == 100 and d.content_encoder.padding == (2, 2)
    assert d(torch.randn(1, 4, 3, 3)).shape == (1, 4, 6, 6)


# --- _ext adapters --------------------------------------------------------------------------------


def test_ext_naive_adapters():
    k, g, s = 3, 2, 2
    feat, mask, top = _inputs(2, 4, 3, 4, k, g, s, seed=5)
    output = torch.full((2, 4, 6, 8), 7.0, dtype=torch.float64)
    ext.carafe_naive_forward(feat, mask, output, kernel_size=k, group_size=g, scale_factor=s)
    torch.testing.assert_close(output, carafe_naive(feat, mask, k, g, s), rtol=0, atol=0)
    gf, gm = carafe_mod.carafe_backward_core(top, feat, mask, k, g, s)
    bottom_grad, mask_grad = torch.ones_like(feat), torch.ones_like(mask)
    ext.carafe_naive_backward(top, feat, mask, bottom_grad, mask_grad, kernel_size=k, group_size=g,
                              scale_factor=s)
    torch.testing.assert_close(bottom_grad, gf + 1, rtol=0, atol=1e-14)  # atomicAdd: accumulates
    torch.testing.assert_close(mask_grad, gm + 1, rtol=0, atol=1e-14)


def test_ext_fast_adapters_as_mmcv_wrapper_calls_them():
    k, g, s = 5, 4, 2
    feat, mask, top = _inputs(2, 8, 3, 4, k, g, s, seed=6)
    n, c, h, w = feat.shape
    output = feat.new_zeros((n, c, h * s, w * s))
    routput, rfeatures, rmasks = torch.zeros_like(output), torch.zeros_like(feat), torch.zeros_like(mask)
    ext.carafe_forward(feat, mask, rfeatures, routput, rmasks, output, kernel_size=k, group_size=g,
                       scale_factor=s)
    torch.testing.assert_close(output, carafe(feat, mask, k, g, s), rtol=0, atol=0)
    assert rfeatures.shape == (n, h, w, c) and torch.equal(rfeatures, feat.permute(0, 2, 3, 1))
    assert torch.equal(rmasks, mask.permute(0, 2, 3, 1)) and torch.equal(routput, output.permute(0, 2, 3, 1))
    scratch = [torch.zeros_like(top), torch.zeros_like(top), torch.zeros_like(feat), torch.zeros_like(mask)]
    grad_input, grad_masks = torch.full_like(feat, 3.0), torch.full_like(mask, 3.0)
    ext.carafe_backward(top, rfeatures, mask, *scratch, grad_input, grad_masks, kernel_size=k,
                        group_size=g, scale_factor=s)
    gf, gm = carafe_mod.carafe_backward_core(top, feat, mask, k, g, s)
    torch.testing.assert_close(grad_input, gf, rtol=0, atol=0)  # overwritten, not accumulated
    torch.testing.assert_close(grad_masks, gm, rtol=0, atol=0)
    rtop_grad, rbottom_grad_hs, rbottom_grad, rmask_grad = scratch
    assert torch.equal(rtop_grad, top.permute(0, 2, 3, 1)) and rbottom_grad_hs.shape == (n, h * s, w * s, c)
    assert torch.equal(rbottom_grad, gf.permute(0, 2, 3, 1)) and torch.equal(rmask_grad, gm.permute(0, 2, 3, 1))


def test_ext_exports_and_bad_input():
    assert set(ext.__all__) == {"carafe_forward", "carafe_backward", "carafe_naive_forward",
                                "carafe_naive_backward"}
    feat, mask, _ = _inputs(1, 4, 3, 3, 3, 2, 2)
    with pytest.raises(ValueError, match="carafe_naive_forward: group_size"):
        ext.carafe_naive_forward(feat, mask, torch.zeros(1, 4, 6, 6), 3, 3, 2)


def test_registry_entry():
    entry = registry.entries()["carafe"]
    assert set(entry.names) >= {"carafe", "CARAFE", "CARAFEPack", "carafe_naive", "CARAFENaive",
                                "CARAFEFunction", "CARAFENaiveFunction"}
    assert entry.backward == "yes" and entry.devices == ("any",)
    assert set(entry.ext_functions) == set(ext.__all__)
    assert set(ext.__all__) <= registry.implemented_ext_functions()
