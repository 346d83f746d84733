"""mmcv.ops furthest_point_sample / gather_points / three_nn / three_interpolate / knn in the runtime.

mmcv has CUDA kernels only for these, so the checks are: mmcv's own test values (literals), scalar
transcriptions of the CUDA kernels (float32 FPS with its thread/tree reduction, the three_nn scan,
the knn heap) on small cases full of ties, gradcheck of the two differentiable ops, errors, and the
``_ext`` adapters against the functional API.
"""

from __future__ import annotations

import importlib
import io
import math
import random
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

fps_mod = importlib.import_module("mmcv_runtime.ops.furthest_point_sample")
gp_mod = importlib.import_module("mmcv_runtime.ops.gather_points")
nn_mod = importlib.import_module("mmcv_runtime.ops.three_nn")
ti_mod = importlib.import_module("mmcv_runtime.ops.three_interpolate")
knn_mod = importlib.import_module("mmcv_runtime.ops.knn")
ext_fps = importlib.import_module("mmcv_runtime.ext._furthest_point_sample")
ext_gp = importlib.import_module("mmcv_runtime.ext._gather_points")
ext_nn = importlib.import_module("mmcv_runtime.ext._three_nn")
ext_ti = importlib.import_module("mmcv_runtime.ext._three_interpolate")
ext_knn = importlib.import_module("mmcv_runtime.ext._knn")
registry = importlib.import_module("mmcv_runtime.registry")

MIRROR = Path("/work/.mirror/open-mmlab+mmcv/repo")

# --- mmcv's test inputs -------------------------------------------------------------------------

FPS_XYZ = [[[-0.2748, 1.0020, -1.1674], [0.1015, 1.3952, -1.2681], [-0.8070, 2.4137, -0.5845],
            [-1.0001, 2.1982, -0.5859], [0.3841, 1.8983, -0.7431]],
           [[-1.0696, 3.0758, -0.1899], [-0.2559, 3.5521, -0.1402], [0.8164, 4.0081, -0.1839],
            [-1.1000, 3.0213, -0.8205], [-0.0518, 3.7251, -0.3950]]]
FPS_IDX_NPY = [[0, 1, 2, 40, 4, 5, 25, 6, 8, 10, 7, 28, 13, 11, 50, 12],
               [0, 62, 2, 3, 54, 5, 8, 51, 37, 13, 39, 10, 24, 12, 32, 15]]

KNOWN = [[[-1.8373, 3.5605, -0.7867], [0.7615, 2.9420, 0.2314], [-0.6503, 3.6637, -1.0622],
          [-1.8373, 3.5605, -0.7867], [-1.8373, 3.5605, -0.7867]],
         [[-1.3399, 1.9991, -0.3698], [-0.0799, 0.9698, -0.8457], [0.0858, 2.4721, -0.1928],
          [-1.3399, 1.9991, -0.3698], [-1.3399, 1.9991, -0.3698]]]
UNKNOWN = [[[-1.8373, 3.5605, -0.7867], [0.7615, 2.9420, 0.2314], [-0.6503, 3.6637, -1.0622],
            [-1.5237, 2.3976, -0.8097], [-0.0722, 3.4017, -0.2880], [0.5198, 3.0661, -0.4605],
            [-2.0185, 3.5019, -0.3236], [0.5098, 3.1020, 0.5799], [-1.6137, 3.8443, -0.5269],
            [0.7341, 2.9626, -0.3189]],
           [[-1.3399, 1.9991, -0.3698], [-0.0799, 0.9698, -0.8457], [0.0858, 2.4721, -0.1928],
            [-0.9022, 1.6560, -1.3090], [0.1156, 1.6901, -0.4366], [-0.6477, 2.3576, -0.1563],
            [-0.8482, 1.1466, -1.2704], [-0.8753, 2.0845, -0.3460], [-0.5621, 1.4233, -1.2858],
            [-0.5883, 1.3114, -1.2899]]]
NN_DIST = [[[0.0000, 0.0000, 0.0000], [0.0000, 2.0463, 2.8588], [0.0000, 1.2229, 1.2229],
            [1.2047, 1.2047, 1.2047], [1.0011, 1.0845, 1.8411], [0.7433, 1.4451, 2.4304],
            [0.5007, 0.5007, 0.5007], [0.4587, 2.0875, 2.7544], [0.4450, 0.4450, 0.4450],
            [0.5514, 1.7206, 2.6811]],
           [[0.0000, 0.0000, 0.0000], [0.0000, 1.6464, 1.6952], [0.0000, 1.5125, 1.5125],
            [1.0915, 1.0915, 1.0915], [0.8197, 0.8511, 1.4894], [0.7433, 0.8082, 0.8082],
            [0.8955, 1.3340, 1.3340], [0.4730, 0.4730, 0.4730], [0.7949, 1.3325, 1.3325],
            [0.7566, 1.3727, 1.3727]]]
NN_IDX = [[[0, 3, 4], [1, 2, 0], [2, 0, 3], [0, 3, 4], [2, 1, 0], [1, 2, 0], [0, 3, 4], [1, 2, 0],
           [0, 3, 4], [1, 2, 0]],
          [[0, 3, 4], [1, 2, 0], [2, 0, 3], [0, 3, 4], [2, 1, 0], [2, 0, 3], [1, 0, 3], [0, 3, 4],
           [1, 0, 3], [1, 0, 3]]]

GP_FEATURES = [[[-1.6095, -0.1029, -0.8876, -1.2447, -2.4031, 0.3708, -1.1586, -1.4967, -0.4800, 0.2252],
                [1.9138, 3.4979, 1.6854, 1.5631, 3.6776, 3.1154, 2.1705, 2.5221, 2.0411, 3.1446],
                [-1.4173, 0.3073, -1.4339, -1.4340, -1.2770, -0.2867, -1.4162, -1.4044, -1.4245, -1.4074]],
               [[0.2160, 0.0842, 0.3661, -0.2749, -0.4909, -0.6066, -0.8773, -0.0745, -0.9496, 0.1434],
                [1.3644, 1.8087, 1.6855, 1.9563, 1.2746, 1.9662, 0.9566, 1.8778, 1.1437, 1.3639],
                [-0.7172, 0.1692, 0.2241, 0.0721, -0.7540, 0.0462, -0.6227, 0.3223, -0.6944, -0.5294]]]
GP_IDX = [[0, 1, 4, 0, 0, 0], [0, 5, 6, 0, 0, 0]]
GP_OUT = [[[-1.6095, -0.1029, -2.4031, -1.6095, -1.6095, -1.6095],
           [1.9138, 3.4979, 3.6776, 1.9138, 1.9138, 1.9138],
           [-1.4173, 0.3073, -1.2770, -1.4173, -1.4173, -1.4173]],
          [[0.2160, -0.6066, -0.8773, 0.2160, 0.2160, 0.2160],
           [1.3644, 1.9662, 0.9566, 1.3644, 1.3644, 1.3644],
           [-0.7172, 0.0462, -0.6227, -0.7172, -0.7172, -0.7172]]]

TI_FEATURES = [[[2.4350, 4.7516, 4.4995, 2.4350, 2.4350, 2.4350],
                [3.1236, 2.6278, 3.0447, 3.1236, 3.1236, 3.1236],
                [2.6732, 2.8677, 2.6436, 2.6732, 2.6732, 2.6732],
                [0.0124, 7.0150, 7.0199, 0.0124, 0.0124, 0.0124],
                [0.3207, 0.0000, 0.3411, 0.3207, 0.3207, 0.3207]],
               [[0.0000, 0.9544, 2.4532, 0.0000, 0.0000, 0.0000],
                [0.5346, 1.9176, 1.4715, 0.5346, 0.5346, 0.5346],
                [0.0000, 0.2744, 2.0842, 0.0000, 0.0000, 0.0000],
                [0.3414, 1.5063, 1.6209, 0.3414, 0.3414, 0.3414],
                [0.5814, 0.0103, 0.0000, 0.5814, 0.5814, 0.5814]]]
TI_IDX = [[[0, 1, 2], [2, 3, 4], [2, 3, 4], [0, 1, 2], [0, 1, 2], [0, 1, 3]],
          [[0, 2, 3], [1, 3, 4], [2, 1, 4], [0, 2, 4], [0, 2, 4], [0, 1, 2]]]
TI_WEIGHT = [[[3.3333e-01, 3.3333e-01, 3.3333e-01], [1.0000e+00, 5.8155e-08, 2.2373e-08],
              [1.0000e+00, 1.7737e-08, 1.7356e-08], [3.3333e-01, 3.3333e-01, 3.3333e-01],
              [3.3333e-01, 3.3333e-01, 3.3333e-01], [3.3333e-01, 3.3333e-01, 3.3333e-01]],
             [[3.3333e-01, 3.3333e-01, 3.3333e-01], [1.0000e+00, 1.3651e-08, 7.7312e-09],
              [1.0000e+00, 1.7148e-08, 1.4070e-08], [3.3333e-01, 3.3333e-01, 3.3333e-01],
              [3.3333e-01, 3.3333e-01, 3.3333e-01], [3.3333e-01, 3.3333e-01, 3.3333e-01]]]
TI_OUT = [[[3.8953e+00, 4.4995e+00, 4.4995e+00, 3.8953e+00, 3.8953e+00, 3.2072e+00],
           [2.9320e+00, 3.0447e+00, 3.0447e+00, 2.9320e+00, 2.9320e+00, 2.9583e+00],
           [2.7281e+00, 2.6436e+00, 2.6436e+00, 2.7281e+00, 2.7281e+00, 2.7380e+00],
           [4.6824e+00, 7.0199e+00, 7.0199e+00, 4.6824e+00, 4.6824e+00, 2.3466e+00],
           [2.2060e-01, 3.4110e-01, 3.4110e-01, 2.2060e-01, 2.2060e-01, 2.1380e-01]],
          [[8.1773e-01, 9.5440e-01, 2.4532e+00, 8.1773e-01, 8.1773e-01, 1.1359e+00],
           [8.4689e-01, 1.9176e+00, 1.4715e+00, 8.4689e-01, 8.4689e-01, 1.3079e+00],
           [6.9473e-01, 2.7440e-01, 2.0842e+00, 6.9473e-01, 6.9473e-01, 7.8619e-01],
           [7.6789e-01, 1.5063e+00, 1.6209e+00, 7.6789e-01, 7.6789e-01, 1.1562e+00],
           [3.8760e-01, 1.0300e-02, 8.3569e-09, 3.8760e-01, 3.8760e-01, 1.9723e-01]]]

KNN_NEW = [[[-0.0740, 1.3147, -1.3625], [-2.2769, 2.7817, -0.2334], [-0.4003, 2.4666, -0.5116],
            [-0.0740, 1.3147, -1.3625], [-0.0740, 1.3147, -1.3625]],
           [[-2.0289, 2.4952, -0.1708], [-2.0668, 6.0278, -0.4875], [0.4066, 1.4211, -0.2947],
            [-2.0289, 2.4952, -0.1708], [-2.0289, 2.4952, -0.1708]]]
KNN_XYZ = [[[-0.0740, 1.3147, -1.3625], [0.5555, 1.0399, -1.3634], [-0.4003, 2.4666, -0.5116],
            [-0.5251, 2.4379, -0.8466], [-0.9691, 1.1418, -1.3733], [-0.2232, 0.9561, -1.3626],
            [-2.2769, 2.7817, -0.2334], [-0.2822, 1.3192, -1.3645], [0.1533, 1.5024, -1.0432],
            [0.4917, 1.1529, -1.3496]],
           [[-2.0289, 2.4952, -0.1708], [-0.7188, 0.9956, -0.5096], [-2.0668, 6.0278, -0.4875],
            [-1.9304, 3.3092, 0.6610], [0.0949, 1.4332, 0.3140], [-1.2879, 2.0008, -0.7791],
            [-0.7252, 0.9611, -0.6371], [0.4066, 1.4211, -0.2947], [0.3220, 1.4447, 0.3548],
            [-0.9744, 2.3856, -1.2000]]]


# --- scalar transcriptions of the CUDA kernels ------------------------------------------------------

def f32(x: float) -> float:
    return struct.unpack("f", struct.pack("f", x))[0]


def fps_reference(rows, m, with_dist=False):
    """furthest_point_sampling(_with_dist)_forward_cuda_kernel for one batch: (indices, temp)."""
    n = len(rows)
    bs = max(min(1 << int(math.log(n) / math.log(2.0)), 1024), 1)
    temp, out, old = [f32(1e10)] * n, [0], 0
    for _ in range(1, m):
        dists, di = [], []
        for tid in range(bs):
            best, besti = -1.0, 0
            for k in range(tid, n, bs):
                if with_dist:
                    d = f32(rows[old][k])
                else:
                    a, p = rows[old], rows[k]
                    dx, dy, dz = (f32(f32(p[i]) - f32(a[i])) for i in range(3))
                    d = f32(f32(f32(dx * dx) + f32(dy * dy)) + f32(dz * dz))
                d2 = temp[k] if d != d else min(d, temp[k])  # fminf
                temp[k] = d2
                if d2 > best:
                    besti, best = k, d2
            dists.append(best)
            di.append(besti)
        t = bs
        while t >= 2:
            for tid in range(t // 2):
                v1, v2 = dists[tid], dists[tid + t // 2]
                dists[tid] = max(v1, v2)
                di[tid] = di[tid + t // 2] if v2 > v1 else di[tid]
            t //= 2
        old = di[0]
        out.append(old)
    return out, temp


def three_nn_reference(u, known):
    best, besti = [1e40] * 3, [0] * 3
    for k, p in enumerate(known):
        d = (u[0] - p[0]) * (u[0] - p[0]) + (u[1] - p[1]) * (u[1] - p[1]) + (u[2] - p[2]) * (u[2] - p[2])
        if d < best[0]:
            best, besti = [d, best[0], best[1]], [k, besti[0], besti[1]]
        elif d < best[1]:
            best, besti = [best[0], d, best[1]], [besti[0], k, besti[1]]
        elif d < best[2]:
            best[2], besti[2] = d, k
    return best, besti


def knn_reference(d, k):
    """The heap kernel on one query's distance list: (indices, distances) after heap_sort."""
    bd, bi = [1e10] * k, [0] * k

    def reheap(size):
        root, child = 0, 1
        while child < size:
            if child + 1 < size and bd[child + 1] > bd[child]:
                child += 1
            if bd[root] > bd[child]:
                return
            bd[root], bd[child] = bd[child], bd[root]
            bi[root], bi[child] = bi[child], bi[root]
            root, child = child, 2 * child + 1

    for i, x in enumerate(d):
        if x < bd[0]:
            bd[0], bi[0] = x, i
            reheap(k)
    for i in range(k - 1, 0, -1):
        bd[0], bd[i] = bd[i], bd[0]
        bi[0], bi[i] = bi[i], bi[0]
        reheap(i)
    return bi, bd


# --- furthest_point_sample --------------------------------------------------------------------------

def test_fps_mmcv_values():
    xyz = torch.tensor(FPS_XYZ)
    expected = torch.tensor([[0, 2, 4], [0, 2, 1]], dtype=torch.int32)
    idx = fps_mod.furthest_point_sample(xyz, 3)
    assert idx.dtype == torch.int32 and torch.equal(idx, expected)
    dist = ((xyz.unsqueeze(dim=1) - xyz.unsqueeze(dim=2)) ** 2).sum(-1)
    assert torch.equal(fps_mod.furthest_point_sample_with_dist(dist, 3), expected)


def _mirror_npy(name: str):
    if not MIRROR.exists():
        pytest.skip("mmcv git mirror not available")
    blob = subprocess.run(["git", "-C", str(MIRROR), "show", f"HEAD:tests/data/for_3d_ops/{name}"],
                          capture_output=True, check=False)
    if blob.returncode:
        pytest.skip(f"{name} not in the mirror")
    return np.load(io.BytesIO(blob.stdout))


def test_fps_with_dist_mmcv_npy():
    features = torch.from_numpy(_mirror_npy("features_for_fps_distance.npy"))
    assert torch.equal(fps_mod.furthest_point_sample_with_dist(features, 16),
                       torch.tensor(FPS_IDX_NPY, dtype=torch.int32))


@pytest.mark.parametrize("seed", range(12))
def test_fps_matches_kernel_transcription(seed):
    g = torch.Generator().manual_seed(seed)
    n = [1, 2, 3, 5, 8, 13, 31, 32, 33, 47, 64, 70][seed]
    m = min(n + 1, 1 + seed * 2)
    # Lattice points: many exactly tied distances, so the reduction's tie rule is exercised.
    xyz = torch.randint(0, 3, (2, n, 3), generator=g).float() * 0.5 if seed % 2 else torch.randn(2, n, 3, generator=g)
    dist = ((xyz.unsqueeze(1) - xyz.unsqueeze(2)) ** 2).sum(-1) - (0.3 if seed % 3 == 0 else 0.0)
    temp = torch.empty(2, n)
    idx = torch.empty(2, m, dtype=torch.int32)
    ext_fps.furthest_point_sampling_forward(xyz, temp, idx, b=2, n=n, m=m)
    assert torch.equal(idx, fps_mod.furthest_point_sample(xyz, m))
    idx_dist = fps_mod.furthest_point_sample_with_dist(dist, m)
    for b in range(2):
        ref, ref_temp = fps_reference(xyz[b].tolist(), m)
        assert idx[b].tolist() == ref and temp[b].tolist() == ref_temp
        assert idx_dist[b].tolist() == fps_reference(dist[b].tolist(), m, with_dist=True)[0]


def test_fps_tie_prefers_bit_reversed_thread():
    # 4 points -> 4 threads; points 1 and 2 tie: the tree keeps slot 0 (threads {0, 2}) over slot 1.
    xyz = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 0]]])
    assert fps_mod.furthest_point_sample(xyz, 2).tolist() == [[0, 2]]
    assert fps_mod.priority_order(8, torch.device("cpu")).tolist() == [0, 4, 2, 6, 1, 5, 3, 7]
    assert [fps_mod.block_size(n) for n in (1, 2, 3, 1023, 1024, 5000)] == [1, 2, 2, 512, 1024, 1024]


def test_fps_large_n_ties_match_transcription():
    # n > 1024: several points per thread, block of 1024 threads, all tied at the first step.
    n = 1100
    xyz = torch.zeros(1, n, 3)
    xyz[0, 1:, 0] = 1.0
    xyz[0, 1:, 1] = torch.arange(n - 1).float() % 2  # two distance levels
    m = 4
    ref, _ = fps_reference(xyz[0].tolist(), m)
    assert fps_mod.furthest_point_sample(xyz, m)[0].tolist() == ref


def test_fps_with_dist_floor_and_nan():
    # No distance above -1: every thread reports besti = 0.
    dist = torch.full((1, 5, 5), -2.0)
    assert fps_mod.furthest_point_sample_with_dist(dist, 3).tolist() == [[0, 0, 0]]
    # NaN distances never replace temp (fminf).
    dist = torch.rand(1, 6, 6, generator=torch.Generator().manual_seed(0))
    dist[0, 0, 3] = float("nan")
    assert fps_mod.furthest_point_sample_with_dist(dist, 4)[0].tolist() == \
        fps_reference(dist[0].tolist(), 4, with_dist=True)[0]


def test_fps_edge_sizes_and_errors():
    xyz = torch.randn(2, 7, 3)
    assert fps_mod.furthest_point_sample(xyz, 1).tolist() == [[0], [0]]
    assert fps_mod.furthest_point_sample(xyz, 0).shape == (2, 0)
    assert fps_mod.furthest_point_sample(xyz.double(), 4).tolist() == fps_mod.furthest_point_sample(xyz, 4).tolist()
    with pytest.raises(ValueError, match="furthest_point_sample.*points_xyz"):
        fps_mod.furthest_point_sample(torch.randn(7, 3), 2)
    with pytest.raises(TypeError, match="points_xyz"):
        fps_mod.furthest_point_sample(torch.ones(1, 7, 3, dtype=torch.int32), 2)
    with pytest.raises(ValueError, match="points_dist"):
        fps_mod.furthest_point_sample_with_dist(torch.randn(1, 7, 6), 2)
    dist = torch.rand(2, 9, 9)
    temp = torch.empty(2, 9)
    idx = torch.empty(2, 5, dtype=torch.int32)
    ext_fps.furthest_point_sampling_with_dist_forward(dist, temp, idx, b=2, n=9, m=5)
    assert torch.equal(idx, fps_mod.furthest_point_sample_with_dist(dist, 5))
    assert torch.equal(temp, torch.stack([dist[b, idx[b, :4].long()].min(0).values for b in range(2)]).clamp(max=1e10))


# --- gather_points ------------------------------------------------------------------------------------

def test_gather_points_mmcv_values():
    features = torch.tensor(GP_FEATURES)
    idx = torch.tensor(GP_IDX, dtype=torch.int32)
    assert torch.allclose(gp_mod.gather_points(features, idx), torch.tensor(GP_OUT))
    half = gp_mod.gather_points(features.half(), idx)
    assert half.dtype == torch.half and torch.allclose(half, torch.tensor(GP_OUT).half())


def test_gather_points_backward_accumulates_and_gradcheck():
    features = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    idx = torch.tensor([[0, 0, 4, 1], [3, 3, 3, 2]], dtype=torch.int32)
    torch.autograd.gradcheck(lambda f: gp_mod.gather_points(f, idx), (features,))
    gp_mod.gather_points(features, idx).sum().backward()
    assert features.grad[0, :, 0].tolist() == [2.0] * 3 and features.grad[1, :, 3].tolist() == [3.0] * 3
    grad_out = torch.randn(2, 3, 4, dtype=torch.float64)
    grad = torch.ones(2, 3, 5, dtype=torch.float64)
    ext_gp.gather_points_backward(grad_out, idx, grad, b=2, c=3, n=5, npoints=4)
    expected = 1 + torch.zeros(2, 3, 5, dtype=torch.float64).scatter_add_(
        2, idx.long().unsqueeze(1).expand(-1, 3, -1), grad_out)
    torch.testing.assert_close(grad, expected)
    out = torch.zeros(2, 3, 4, dtype=torch.float64)
    ext_gp.gather_points_forward(features.detach(), idx, out, b=2, c=3, n=5, npoints=4)
    assert torch.equal(out, gp_mod.gather_points(features.detach(), idx))


def test_gather_points_errors():
    with pytest.raises(ValueError, match="gather_points: features"):
        gp_mod.gather_points(torch.randn(3, 5), torch.zeros(1, 2, dtype=torch.int32))
    with pytest.raises(ValueError, match="gather_points: indices"):
        gp_mod.gather_points(torch.randn(2, 3, 5), torch.zeros(3, 2, dtype=torch.int32))
    with pytest.raises(TypeError, match="gather_points: indices"):
        gp_mod.gather_points(torch.randn(2, 3, 5), torch.zeros(2, 2))
    assert gp_mod.gather_points(torch.randn(2, 3, 5), torch.zeros(2, 0, dtype=torch.int32)).shape == (2, 3, 0)


# --- three_nn -----------------------------------------------------------------------------------------

def test_three_nn_mmcv_values():
    dist, idx = nn_mod.three_nn(torch.tensor(UNKNOWN), torch.tensor(KNOWN))
    assert torch.allclose(dist, torch.tensor(NN_DIST), atol=1e-4)
    assert idx.dtype == torch.int32 and idx.tolist() == NN_IDX


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_three_nn_matches_kernel_transcription(dtype):
    g = torch.Generator().manual_seed(3)
    known = (torch.randint(0, 3, (2, 9, 3), generator=g) * 0.5).to(dtype)
    unknown = (torch.randint(0, 3, (2, 11, 3), generator=g) * 0.5).to(dtype)
    dist2 = torch.empty(2, 11, 3, dtype=dtype)
    idx = torch.empty(2, 11, 3, dtype=torch.int32)
    ext_nn.three_nn_forward(unknown, known, dist2, idx, b=2, n=11, m=9)
    dist, idx_api = nn_mod.three_nn(unknown, known)
    assert torch.equal(idx, idx_api) and torch.equal(dist, dist2.sqrt())
    for b in range(2):
        for n in range(11):
            ref_d, ref_i = three_nn_reference(unknown[b, n].tolist(), known[b].tolist())
            assert idx[b, n].tolist() == ref_i and dist2[b, n].tolist() == ref_d


def test_three_nn_few_sources_and_nan():
    unknown = torch.zeros(1, 2, 3)
    known = torch.tensor([[[1.0, 0, 0], [float("nan"), 0, 0]]])
    dist, idx = nn_mod.three_nn(unknown, known)
    assert idx.tolist() == [[[0, 0, 0], [0, 0, 0]]]
    assert dist[0, 0, 0].item() == 1.0 and torch.isinf(dist[..., 1:]).all()  # 1e40 is inf in float32
    dist64, _ = nn_mod.three_nn(unknown.double(), known.double())
    assert dist64[0, 0, 1].item() == math.sqrt(1e40)
    with pytest.raises(ValueError, match="three_nn: source"):
        nn_mod.three_nn(unknown, torch.zeros(2, 4, 3))
    with pytest.raises(ValueError, match="three_nn: target"):
        nn_mod.three_nn(torch.zeros(1, 2, 2), known)


# --- three_interpolate --------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_three_interpolate_mmcv_values(dtype):
    out = ti_mod.three_interpolate(torch.tensor(TI_FEATURES, dtype=dtype), torch.tensor(TI_IDX).int(),
                                   torch.tensor(TI_WEIGHT, dtype=dtype))
    assert torch.allclose(out, torch.tensor(TI_OUT, dtype=dtype), 1e-3, 1e-4)


def test_three_interpolate_gradcheck_and_weight_grad_none():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(2, 3, 5, dtype=torch.float64, generator=g, requires_grad=True)
    idx = torch.randint(0, 5, (2, 4, 3), generator=g).int()
    weight = torch.rand(2, 4, 3, dtype=torch.float64, generator=g, requires_grad=True)
    torch.autograd.gradcheck(lambda f: ti_mod.three_interpolate(f, idx, weight.detach()), (features,))
    ti_mod.three_interpolate(features, idx, weight).sum().backward()
    assert weight.grad is None and features.grad is not None  # mmcv returns no weight gradient
    out = torch.empty(2, 3, 4, dtype=torch.float64)
    ext_ti.three_interpolate_forward(features.detach(), idx, weight.detach(), out, b=2, c=3, m=5, n=4)
    assert torch.equal(out, ti_mod.three_interpolate(features.detach(), idx, weight.detach()))
    grad_out = torch.randn(2, 3, 4, dtype=torch.float64, generator=g)
    grad = torch.full((2, 3, 5), 2.0, dtype=torch.float64)
    ext_ti.three_interpolate_backward(grad_out, idx, weight.detach(), grad, b=2, c=3, n=4, m=5)
    f = features.detach().clone().requires_grad_()
    ti_mod.three_interpolate(f, idx, weight.detach()).backward(grad_out)
    torch.testing.assert_close(grad, f.grad + 2)


def test_three_interpolate_errors():
    with pytest.raises(ValueError, match="three_interpolate: indices"):
        ti_mod.three_interpolate(torch.randn(1, 2, 5), torch.zeros(1, 4, 2).int(), torch.zeros(1, 4, 2))
    with pytest.raises(ValueError, match="three_interpolate: weight"):
        ti_mod.three_interpolate(torch.randn(1, 2, 5), torch.zeros(1, 4, 3).int(), torch.zeros(1, 3, 3))
    with pytest.raises(TypeError, match="three_interpolate: indices"):
        ti_mod.three_interpolate(torch.randn(1, 2, 5), torch.zeros(1, 4, 3), torch.zeros(1, 4, 3))


# --- knn --------------------------------------------------------------------------------------------

def _topk_expected(new_xyz, xyz):
    new_ = new_xyz.unsqueeze(2).repeat(1, 1, xyz.shape[1], 1)
    xyz_ = xyz.unsqueeze(1).repeat(1, new_xyz.shape[1], 1, 1)
    dist = ((new_ - xyz_) * (new_ - xyz_)).sum(-1)
    return dist.topk(k=5, dim=2, largest=False)[1].transpose(2, 1)


def test_knn_mmcv_values():
    new_xyz, xyz = torch.tensor(KNN_NEW), torch.tensor(KNN_XYZ)
    expected = _topk_expected(new_xyz, xyz)
    idx = knn_mod.knn(5, xyz, new_xyz)
    assert idx.dtype == torch.int32 and idx.shape == (2, 5, 5) and torch.equal(idx.long(), expected)
    idx = knn_mod.knn(5, xyz.transpose(1, 2).contiguous(), new_xyz.transpose(1, 2).contiguous(), True)
    assert torch.equal(idx.long(), expected)
    assert torch.equal(knn_mod.knn(5, xyz, xyz).long(), _topk_expected(xyz, xyz))
    assert torch.equal(knn_mod.knn(5, xyz), knn_mod.knn(5, xyz, xyz))


@pytest.mark.parametrize("seed", range(6))
def test_knn_ties_match_heap_transcription(seed):
    rng = random.Random(seed)
    g = torch.Generator().manual_seed(seed)
    n, k, m = rng.randint(1, 40), rng.randint(1, 12), rng.randint(1, 6)
    xyz = torch.randint(0, 3, (2, n, 3), generator=g).float()  # lattice: many equal distances
    centres = torch.randint(0, 3, (2, m, 3), generator=g).float()
    idx = torch.empty(2, m, k, dtype=torch.int32)
    dist2 = torch.empty(2, m, k)
    ext_knn.knn_forward(xyz, centres, idx, dist2, b=2, n=n, m=m, nsample=k)
    assert torch.equal(idx.transpose(2, 1), knn_mod.knn(k, xyz, centres))
    d = knn_mod.squared_distances(centres, xyz)
    for b in range(2):
        for q in range(m):
            ref_i, ref_d = knn_reference(d[b, q].tolist(), k)
            assert idx[b, q].tolist() == ref_i and dist2[b, q].tolist() == ref_d


def test_knn_distinct_fast_path_and_overload():
    g = torch.Generator().manual_seed(0)
    xyz, centres = torch.randn(2, 300, 3, generator=g), torch.randn(2, 7, 3, generator=g)
    idx = knn_mod.knn(16, xyz, centres)
    d = knn_mod.squared_distances(centres, xyz)
    for b in range(2):
        for q in range(7):
            assert idx[b, :, q].tolist() == knn_reference(d[b, q].tolist(), 16)[0]
    idx2, dist2 = torch.empty(2, 7, 16, dtype=torch.int32), torch.empty(2, 7, 16)
    ext_knn.knn_forward(2, 300, 7, 16, xyz, centres, idx2, dist2)  # the catalogue's other overload
    assert torch.equal(idx2.transpose(2, 1), idx)


def test_knn_padding_and_errors():
    xyz = torch.tensor([[[0.0, 0, 0], [1, 0, 0]]])
    assert knn_mod.knn(4, xyz, xyz[:, :1]).tolist() == [[[0], [1], [0], [0]]]
    with pytest.raises(AssertionError):
        knn_mod.knn(100, xyz)
    with pytest.raises(AssertionError):
        knn_mod.knn(0, xyz)
    with pytest.raises(ValueError, match="knn: xyz"):
        knn_mod.knn(2, torch.zeros(1, 4, 2))
    with pytest.raises(ValueError, match="knn: xyz and center_xyz"):
        knn_mod.knn(2, torch.zeros(1, 4, 3), torch.zeros(2, 4, 3))


# --- registry ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("op,names,ext,backward", [
    ("furthest_point_sample", {"furthest_point_sample", "furthest_point_sample_with_dist"},
     {"furthest_point_sampling_forward", "furthest_point_sampling_with_dist_forward"}, "n/a"),
    ("gather_points", {"gather_points", "GatherPoints"}, {"gather_points_forward", "gather_points_backward"}, "yes"),
    ("three_nn", {"three_nn", "ThreeNN"}, {"three_nn_forward"}, "n/a"),
    ("three_interpolate", {"three_interpolate", "ThreeInterpolate"},
     {"three_interpolate_forward", "three_interpolate_backward"}, "yes"),
    ("knn", {"knn", "KNN"}, {"knn_forward"}, "n/a"),
])
def test_registry_entries(op, names, ext, backward):
    entry = registry.entries()[op]
    assert names <= set(entry.names) and set(entry.ext_functions) == ext
    assert entry.backward == backward and entry.devices == ("any",)
    module = importlib.import_module(f"mmcv_runtime.ext._{op}")
    assert set(module.__all__) == ext
