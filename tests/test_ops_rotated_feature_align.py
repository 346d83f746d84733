"""rotated_feature_align: mmcv's own test values, golden parity with mmcv 2.2.0's CPU kernels,
gradcheck, boxes off the map, non-finite maps, bad input, the _ext adapters."""

import importlib
import math
from pathlib import Path

import pytest
import torch

rfa = importlib.import_module("mmcv_runtime.ops.rotated_feature_align")
ext = importlib.import_module("mmcv_runtime.ext._rotated_feature_align")
registry = importlib.import_module("mmcv_runtime.registry")

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "golden" / "rotated_ops.pt"

# tests/test_ops/test_rotated_feature_align.py of mmcv
MMCV_FEATURE = [[[[1.2924, -0.2172, -0.5222, 0.1172], [0.9144, 1.2248, 1.3115, -0.969],
                  [-0.8949, -1.1797, -0.9093, -0.3961], [-0.4586, 0.5062, -0.7947, -0.7397]],
                 [[-1.0943, -0.7495, 1.3461, -1.1652], [0.2034, 0.6763, -1.2357, 0.5231],
                  [-1.0062, 1.2592, 1.4225, -0.3951], [-0.1242, -1.624, 0.1932, 2.7181]],
                 [[-1.6271, -1.0276, 0.0578, -0.2997], [-0.9684, -1.6946, -1.3188, -1.1938],
                  [-1.6744, -0.8917, -0.6556, 1.0073], [-0.1205, 0.3671, -0.3731, -0.5347]]],
                [[[0.7035, 0.2089, -0.1774, 3.467], [-0.8505, -0.9278, 1.4714, 0.1644],
                  [0.0898, 0.3531, -0.4007, 0.1927], [1.2569, -0.2636, -0.5223, 0.0616]],
                 [[0.176, -0.7639, -0.46, -1.326], [-0.9921, -0.297, -0.8955, 1.0508],
                  [1.3515, -0.1641, 1.9679, 1.1986], [-0.3616, 0.6287, 0.4933, 0.336]],
                 [[-0.586, 0.2124, -0.87, 2.42], [-0.0551, -1.5103, -1.6779, 0.8399],
                  [0.8431, 1.2414, -1.1243, -0.3887], [-2.1254, 0.6047, -0.3515, 0.7254]]]]

MMCV_BBOX = [[[[13.08, 12.688, 11.214, 93.944, -0.91905], [38.104, 10.134, 146.59, 90.306, -0.98211],
               [-53.213, 49.508, 51.513, 32.055, -0.31954], [26.974, 25.248, 54.495, 3.1083, -0.62127]],
              [[-15.604, -51.908, 239.98, 15.008, -1.2546], [31.354, -7.3635, 67.879, 35.081, -0.33851],
               [-5.3292, 9.1946, 12.834, 10.485, -1.3039], [-23.925, 36.623, 39.875, 72.009, -0.65934]],
              [[72.114, -23.781, 29.106, 84.501, -1.134], [26.258, -7.7034, 176.29, 106.15, -1.2156],
               [38.057, 46.016, 12.965, 6.9384, -1.0855], [24.428, -16.189, 205.72, 31.622, -0.15719]],
              [[3.8226, 29.608, 14.457, 68.179, -0.91997], [25.003, -42.49, 96.007, 49.086, -1.4786],
               [85.983, 54.98, 78.08, 100.03, -1.0926], [9.9065, 41.457, 5.9799, 17.973, -0.56313]]],
             [[[-18.244, 4.6309, 53.01, 24.31, -0.70345], [19.419, 36.704, 52.39, 54.133, -0.3773],
               [56.387, 23.752, 9.0441, 17.792, -1.5583], [36.303, 16.396, 20.283, 19.148, -0.83419]],
              [[32.169, 30.521, 26.283, 196.8, -0.30454], [25.788, -32.189, 88.882, 102.07, -1.5328],
               [8.4676, -16.668, 24.657, 112.75, -0.40388], [-10.799, 6.0422, 9.5807, 33.677, -0.35438]],
              [[69.363, 10.85, 25.968, 22.311, -0.16408], [2.814, 4.6843, 3.1289, 21.48, -0.67583],
               [26.661, 45.29, 6.1679, 30.005, -0.89806], [5.0871, 13.234, 92.087, 49.622, -0.2802]],
              [[-12.643, 25.176, 50.488, 54.246, -0.4484], [-34.521, 0.98435, 52.413, 9.7996, -0.84218],
               [49.829, -10.808, 29.848, 73.579, -0.62672], [80.446, 28.064, 45.273, 53.809, -1.2359]]]]

MMCV_EXPECTED_OUTPUT = [[[[1.1095, -0.2172, -0.5222, -0.6225], [0.9144, 0.7662, 1.0487, -0.969],
                          [-0.8949, -1.6384, -0.9093, -0.3961], [-0.8604, 0.5062, -0.7947, -0.7397]],
                         [[-0.3961, -0.7495, 1.3461, 1.5528], [0.2034, 0.5522, -1.6722, 0.5231],
                          [-1.0062, 1.135, 1.4225, -0.3951], [-0.4826, -1.624, 0.1932, 2.7181]],
                         [[-2.6436, -1.0276, 0.0578, -0.8344], [-0.9684, -1.8151, -2.1843, -1.1938],
                          [-1.6744, -1.0121, -0.6556, 1.0073], [-0.8474, 0.3671, -0.3731, -0.5347]]],
                        [[[0.7035, 0.2089, -0.1774, 3.467], [-0.8505, -0.9278, 1.4714, 0.1644],
                          [0.0898, 0.3064, -0.4007, 0.5849], [1.2569, -0.2636, -0.5223, 0.0616]],
                         [[0.176, -0.7639, -0.46, -1.326], [-0.9921, -0.297, -0.8955, 1.0508],
                          [1.3515, -0.6125, 1.9679, 0.555], [-0.3616, 0.6287, 0.4933, 0.336]],
                         [[-0.586, 0.2124, -0.87, 2.42], [-0.0551, -1.5103, -1.6779, 0.8399],
                          [0.8431, 0.8455, -1.1243, -1.5994], [-2.1254, 0.6047, -0.3515, 0.7254]]]]

MMCV_EXPECTED_GRAD = [[[[1.0, 1.8507, 1.1493, 1.5222], [1.0, 1.1511, 1.2139, 1.4778], [1.0, 1.2629, 1.3721, 1.0],
                        [3.0, 1.0, 1.0, 2.0]],
                       [[1.0, 1.8507, 1.1493, 1.5222], [1.0, 1.1511, 1.2139, 1.4778], [1.0, 1.2629, 1.3721, 1.0],
                        [3.0, 1.0, 1.0, 2.0]],
                       [[1.0, 1.8507, 1.1493, 1.5222], [1.0, 1.1511, 1.2139, 1.4778], [1.0, 1.2629, 1.3721, 1.0],
                        [3.0, 1.0, 1.0, 2.0]]],
                      [[[1.2687, 1.5055, 1.2382, 1.0], [1.1458, 1.4258, 1.416, 1.0], [1.0, 1.0, 1.0, 1.0],
                        [1.0, 1.0, 1.0, 1.0]],
                       [[1.2687, 1.5055, 1.2382, 1.0], [1.1458, 1.4258, 1.416, 1.0], [1.0, 1.0, 1.0, 1.0],
                        [1.0, 1.0, 1.0, 1.0]],
                       [[1.2687, 1.5055, 1.2382, 1.0], [1.1458, 1.4258, 1.416, 1.0], [1.0, 1.0, 1.0, 1.0],
                        [1.0, 1.0, 1.0, 1.0]]]]


def boxes(n, h, w, dtype=torch.float64, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    ctr = (torch.rand(n, h, w, 2, generator=g) * torch.tensor([h + 4.0, w + 4.0]) - 2) / scale
    size = torch.rand(n, h, w, 2, generator=g) * 6 / scale
    angle = (torch.rand(n, h, w, 1, generator=g) - 0.5) * 2 * math.pi
    return torch.cat([ctr, size, angle], -1).to(dtype)


def test_mmcv_values():
    feature = torch.tensor(MMCV_FEATURE, requires_grad=True)
    bbox = torch.tensor(MMCV_BBOX, requires_grad=True)
    output = rfa.rotated_feature_align(feature, bbox, spatial_scale=1 / 8, points=1)
    output.backward(torch.ones_like(output))
    torch.testing.assert_close(output, torch.tensor(MMCV_EXPECTED_OUTPUT), atol=1e-3, rtol=1e-2)
    torch.testing.assert_close(feature.grad, torch.tensor(MMCV_EXPECTED_GRAD), atol=1e-3, rtol=1e-2)
    assert bbox.grad is None


@pytest.mark.parametrize("case", range(5))
def test_golden(case):
    c = torch.load(GOLDEN, weights_only=True)["rotated_feature_align"][case]
    f = c["features"].clone().requires_grad_()
    out = rfa.rotated_feature_align(f, c["best_rbboxes"], c["spatial_scale"], c["points"])
    out.backward(c["grad_output"])
    assert out.dtype == c["output"].dtype
    # cosf/sinf: torch's float sin/cos may differ from glibc's by one ulp (shown in float64 too)
    tol = dict(atol=2e-6, rtol=1e-6)
    torch.testing.assert_close(out, c["output"], **tol)
    torch.testing.assert_close(f.grad, c["grad_features"], **tol)


@pytest.mark.parametrize("points, scale", [(1, 1.0), (5, 1.0), (5, 0.5)])
def test_gradcheck(points, scale):
    f = torch.randn(2, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    b = boxes(2, 4, 5, scale=scale)
    assert torch.autograd.gradcheck(lambda t: rfa.rotated_feature_align(t, b, scale, points), (f,))


def test_ext_matches_functional():
    f, b = torch.randn(2, 3, 5, 6), boxes(2, 5, 6, torch.float32, 0.5)
    out = torch.empty_like(f)
    ext.rotated_feature_align_forward(f, b, out, 0.5, 5)
    torch.testing.assert_close(out, rfa.rotated_feature_align(f, b, 0.5, 5), atol=0, rtol=0)
    grad = torch.randn_like(f)
    bottom = torch.ones_like(f)  # the backward accumulates
    ext.rotated_feature_align_backward(grad, b, bottom, 0.5, 5)
    torch.testing.assert_close(bottom, 1 + rfa.rotated_feature_align_backward(grad, b, 0.5, 5), atol=1e-6, rtol=0)


def test_first_box_field_is_y():
    """The kernels read field 0 as the y centre and field 1 as x."""
    f = torch.arange(12.0).view(1, 1, 3, 4)
    b = torch.zeros(1, 3, 4, 5)
    b[..., 0], b[..., 1] = 2.0, 1.0  # y = 2, x = 1 -> pixel value 2 * 4 + 1 = 9
    out = rfa.rotated_feature_align(f, b, 1.0, 1)
    torch.testing.assert_close(out, f + 9.0)


def test_off_map_boxes_read_nothing():
    f = torch.randn(1, 2, 3, 4)
    b = torch.full((1, 3, 4, 5), -50.0)
    torch.testing.assert_close(rfa.rotated_feature_align(f, b, 1.0, 5), f)
    f[0, :, 0, 0] = float("inf")  # out-of-map taps must not turn into 0 * inf
    out = rfa.rotated_feature_align(f, b, 1.0, 5)
    assert torch.isfinite(out[0, :, 1:]).all()


def test_half_and_empty():
    f, b = torch.randn(1, 2, 4, 5), boxes(1, 4, 5, torch.float32)
    half = rfa.rotated_feature_align(f.half(), b.half(), 1.0, 5)
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), rfa.rotated_feature_align(f, b, 1.0, 5), atol=5e-2, rtol=1e-2)
    empty = torch.randn(0, 2, 4, 5, requires_grad=True)
    out = rfa.rotated_feature_align(empty, torch.zeros(0, 4, 5, 5), 1.0, 1)
    out.sum().backward()
    assert out.shape == empty.shape and empty.grad.shape == empty.shape


def test_defaults():
    f, b = torch.randn(1, 1, 3, 3), boxes(1, 3, 3, torch.float32, 1 / 8)
    torch.testing.assert_close(rfa.rotated_feature_align(f, b), rfa.rotated_feature_align(f, b, 1 / 8, 1))


@pytest.mark.parametrize("features, rb, points, error, text", [
    (torch.randn(2, 3, 4), torch.zeros(2, 3, 4, 5), 1, ValueError, "features"),
    (torch.ones(1, 1, 2, 2, dtype=torch.int64), torch.zeros(1, 2, 2, 5), 1, TypeError, "features"),
    (torch.randn(1, 1, 2, 2), torch.zeros(1, 2, 2, 4), 1, ValueError, "best_rbboxes"),
    (torch.randn(1, 1, 2, 2), torch.zeros(1, 2, 3, 5), 1, ValueError, "best_rbboxes"),
    (torch.randn(1, 1, 2, 2), torch.zeros(1, 2, 2, 5, dtype=torch.int64), 1, TypeError, "best_rbboxes"),
    (torch.randn(1, 1, 2, 2), torch.zeros(1, 2, 2, 5), 4, ValueError, "points"),
    (torch.randn(1, 1, 2, 2), torch.zeros(1, 2, 2, 5), 1.0, TypeError, "points"),
    (torch.randn(1, 1, 2, 2), None, 1, TypeError, "best_rbboxes"),
])
def test_bad_input(features, rb, points, error, text):
    with pytest.raises(error, match=f"rotated_feature_align: {text}"):
        rfa.rotated_feature_align(features, rb, 1.0, points)


def test_names_and_registry():
    assert rfa.RotatedFeatureAlignFunction.__name__ == "RotatedFeatureAlignFunction"
    assert hasattr(rfa.RotatedFeatureAlignFunction, "symbolic")
    assert set(ext.__all__) == {"rotated_feature_align_forward", "rotated_feature_align_backward"}
    entry = registry.entries()["rotated_feature_align"]
    assert entry.backward == "yes" and entry.devices == ("any",)
    assert set(entry.names) == {"RotatedFeatureAlignFunction", "rotated_feature_align"}
    assert set(entry.ext_functions) == set(ext.__all__)
