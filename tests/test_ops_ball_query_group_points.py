"""mmcv.ops.ball_query / mmcv.ops.group_points in the runtime: mmcv's test values, a scalar transcription
of the CUDA kernels, gradients, modules, _ext adapters, errors."""

from __future__ import annotations

import importlib

import pytest
import torch

bq = importlib.import_module("mmcv_runtime.ops.ball_query")
gp = importlib.import_module("mmcv_runtime.ops.group_points")
ext_bq = importlib.import_module("mmcv_runtime.ext._ball_query")
ext_gp = importlib.import_module("mmcv_runtime.ext._group_points")
registry = importlib.import_module("mmcv_runtime.registry")

NEW_XYZ = torch.tensor(
    [[[-0.0740, 1.3147, -1.3625], [-2.2769, 2.7817, -0.2334], [-0.4003, 2.4666, -0.5116],
      [-0.0740, 1.3147, -1.3625], [-0.0740, 1.3147, -1.3625]],
     [[-2.0289, 2.4952, -0.1708], [-2.0668, 6.0278, -0.4875], [0.4066, 1.4211, -0.2947],
      [-2.0289, 2.4952, -0.1708], [-2.0289, 2.4952, -0.1708]]])
XYZ = torch.tensor(
    [[[-0.0740, 1.3147, -1.3625], [0.5555, 1.0399, -1.3634], [-0.4003, 2.4666, -0.5116],
      [-0.5251, 2.4379, -0.8466], [-0.9691, 1.1418, -1.3733], [-0.2232, 0.9561, -1.3626],
      [-2.2769, 2.7817, -0.2334], [-0.2822, 1.3192, -1.3645], [0.1533, 1.5024, -1.0432],
      [0.4917, 1.1529, -1.3496]],
     [[-2.0289, 2.4952, -0.1708], [-0.7188, 0.9956, -0.5096], [-2.0668, 6.0278, -0.4875],
      [-1.9304, 3.3092, 0.6610], [0.0949, 1.4332, 0.3140], [-1.2879, 2.0008, -0.7791],
      [-0.7252, 0.9611, -0.6371], [0.4066, 1.4211, -0.2947], [0.3220, 1.4447, 0.3548],
      [-0.9744, 2.3856, -1.2000]]])
EXPECTED_SMALL = [[[0] * 5, [6] * 5, [2] * 5, [0] * 5, [0] * 5], [[0] * 5, [2] * 5, [7] * 5, [0] * 5, [0] * 5]]
EXPECTED_DILATED = [[[0, 5, 7, 0, 0], [6] * 5, [2, 3, 2, 2, 2], [0, 5, 7, 0, 0], [0, 5, 7, 0, 0]],
                    [[0] * 5, [2] * 5, [7] * 5, [0] * 5, [0] * 5]]

FEATURES = torch.tensor(
    [[[0.5798, -0.7981, -0.9280, -1.3311, 1.3687, 0.9277, -0.4164, -1.8274, 0.9268, 0.8414],
      [5.4247, 1.5113, 2.3944, 1.4740, 5.0300, 5.1030, 1.9360, 2.1939, 2.1581, 3.4666],
      [-1.6266, -1.0281, -1.0393, -1.6931, -1.3982, -0.5732, -1.0830, -1.7561, -1.6786, -1.6967]],
     [[-0.0380, -0.1880, -1.5724, 0.6905, -0.3190, 0.7798, -0.3693, -0.9457, -0.2942, -1.8527],
      [1.1773, 1.5009, 2.6399, 5.9242, 1.0962, 2.7346, 6.0865, 1.5555, 4.3303, 2.8229],
      [-0.6646, -0.6870, -0.1125, -0.2224, -0.3445, -1.4049, 0.4990, -0.7037, -0.9924, 0.0386]]])
GROUP_IDX = torch.tensor([[[0] * 3, [3] * 3, [8] * 3, [0] * 3, [0] * 3, [0] * 3],
                          [[0] * 3, [6] * 3, [9] * 3, [0] * 3, [0] * 3, [0] * 3]]).int()
EXPECTED_GRAD = torch.tensor(
    [[[6.9576, 0, 0, -3.9933, 0, 0, 0, 0, 2.7804, 0], [65.0964, 0, 0, 4.4220, 0, 0, 0, 0, 6.4743, 0],
      [-19.5192, 0, 0, -5.0793, 0, 0, 0, 0, -5.0358, 0]],
     [[-0.4560, 0, 0, 0, 0, 0, -1.1079, 0, 0, -5.5581], [14.1276, 0, 0, 0, 0, 0, 18.2595, 0, 0, 8.4687],
      [-7.9752, 0, 0, 0, 0, 0, 1.4970, 0, 0, 0.1158]]])


# ----------------------------------------------------------------------------- scalar kernel transcriptions


def kernel_ball_query(min_r, max_r, nsample, xyz, center):
    """Line-by-line transcription of ball_query_forward_cuda_kernel (float32 radii)."""
    f32 = lambda v: torch.tensor(v, dtype=torch.float32)  # noqa: E731
    lo2, hi2 = f32(min_r) * f32(min_r), f32(max_r) * f32(max_r)
    b, m = center.shape[:2]
    idx = torch.zeros(b, m, nsample, dtype=torch.int32)
    for bi in range(b):
        for j in range(m):
            cx, cy, cz = center[bi, j]
            cnt = 0
            for k in range(xyz.size(1)):
                x, y, z = xyz[bi, k]
                d2 = (cx - x) * (cx - x) + (cy - y) * (cy - y) + (cz - z) * (cz - z)
                dw = d2.to(torch.promote_types(d2.dtype, torch.float32))
                if d2 == 0 or (dw >= lo2 and dw < hi2):
                    if cnt == 0:
                        idx[bi, j, :] = k
                    idx[bi, j, cnt] = k
                    cnt += 1
                    if cnt >= nsample:
                        break
    return idx


def kernel_stack_ball_query(max_r, nsample, xyz, xyz_cnt, center, center_cnt):
    hi2 = torch.tensor(max_r, dtype=torch.float32) ** 2
    idx = torch.zeros(center.size(0), nsample, dtype=torch.int32)
    for p in range(center.size(0)):
        bs, tot = 0, 0
        while bs < len(center_cnt):
            tot += int(center_cnt[bs])
            if p < tot:
                break
            bs += 1
        start = int(xyz_cnt[:bs].sum())
        cnt = 0
        for k in range(int(xyz_cnt[bs])):
            d = center[p] - xyz[start + k]
            d2 = d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
            if d2.float() < hi2:
                if cnt == 0:
                    idx[p, :] = k
                idx[p, cnt] = k
                cnt += 1
                if cnt >= nsample:
                    break
        if cnt == 0:
            idx[p, 0] = -1
    return idx


# ----------------------------------------------------------------------------- ball_query


def test_ball_query_mmcv_values():
    assert torch.equal(bq.ball_query(0, 0.2, 5, XYZ, NEW_XYZ), torch.tensor(EXPECTED_SMALL, dtype=torch.int32))
    assert torch.equal(bq.ball_query(0.2, 0.4, 5, XYZ, NEW_XYZ), torch.tensor(EXPECTED_DILATED, dtype=torch.int32))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_stack_ball_query_mmcv_values(dtype):
    idx = bq.ball_query(0, 0.2, 5, XYZ.reshape(-1, 3).to(dtype), NEW_XYZ.reshape(-1, 3).to(dtype),
                        torch.tensor([10, 10], dtype=torch.int32), torch.tensor([5, 5], dtype=torch.int32))
    assert idx.dtype == torch.int32
    assert torch.equal(idx, torch.tensor(EXPECTED_SMALL, dtype=torch.int32).reshape(10, 5))


@pytest.mark.parametrize("radii", [(0.0, 0.5), (0.3, 0.8), (0.0, 1.0), (0.5, 0.50001)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_ball_query_matches_kernel_transcription(radii, dtype):
    g = torch.Generator().manual_seed(0)
    # A lattice makes exact boundary distances (0.25, 1.0, ...) and exact zeros common.
    xyz = (torch.randint(0, 5, (2, 40, 3), generator=g).float() * 0.5).to(dtype)
    center = torch.cat([xyz[:, :4], (torch.rand(2, 4, 3, generator=g) * 2).to(dtype)], 1)
    for nsample in (1, 3, 8):
        got = bq.ball_query(radii[0], radii[1], nsample, xyz, center)
        assert torch.equal(got, kernel_ball_query(radii[0], radii[1], nsample, xyz, center))


def test_ball_query_boundaries_and_quirks():
    xyz = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0.5, 0, 0], [2, 0, 0], [0, 0.5, 0]]])
    center = torch.tensor([[[0.0, 0, 0], [10, 10, 10]]])
    # d2 == max_radius^2 excluded, d2 == min_radius^2 included, d2 == 0 always included.
    idx = bq.ball_query(0.5, 1.0, 4, xyz, center)
    assert idx.tolist() == [[[0, 2, 4, 0], [0, 0, 0, 0]]]
    # Fewer than sample_num: repeat the first; none: zeros.
    assert bq.ball_query(0.0, 0.6, 6, xyz, center).tolist() == [[[0, 2, 4, 0, 0, 0], [0] * 6]]
    # Truncation to the first sample_num in index order.
    assert bq.ball_query(0.0, 3.0, 2, xyz, center)[0, 0].tolist() == [0, 1]
    # NaN points are never taken.
    nan = xyz.clone()
    nan[0, 0] = float("nan")
    assert bq.ball_query(0.0, 0.6, 3, nan, center)[0, 0].tolist() == [2, 4, 2]


def test_stack_ball_query_matches_kernel_transcription():
    g = torch.Generator().manual_seed(1)
    xyz_cnt, center_cnt = torch.tensor([7, 0, 12], dtype=torch.int32), torch.tensor([3, 2, 4], dtype=torch.int32)
    xyz = torch.randint(0, 4, (19, 3), generator=g).float() * 0.5
    center = torch.randint(0, 4, (9, 3), generator=g).float() * 0.5
    for r, ns in ((0.5, 3), (0.8, 5), (1.2, 2)):
        got = bq.ball_query(0, r, ns, xyz, center, xyz_cnt, center_cnt)
        assert torch.equal(got, kernel_stack_ball_query(r, ns, xyz, xyz_cnt, center, center_cnt))
    assert (bq.ball_query(0, 0.5, 3, xyz, center, xyz_cnt, center_cnt)[3:5] == torch.tensor([-1, 0, 0])).all()


def test_ball_query_chunking(monkeypatch):
    g = torch.Generator().manual_seed(2)
    xyz, center = torch.rand(2, 50, 3, generator=g), torch.rand(2, 13, 3, generator=g)
    full = bq.ball_query(0.1, 0.4, 6, xyz, center)
    monkeypatch.setattr(bq, "_BLOCK", 200)
    assert torch.equal(bq.ball_query(0.1, 0.4, 6, xyz, center), full)
    assert torch.equal(full, kernel_ball_query(0.1, 0.4, 6, xyz, center))


def test_ball_query_empty_and_errors():
    assert bq.ball_query(0, 1, 4, torch.zeros(2, 0, 3), torch.zeros(2, 3, 3)).tolist() == [[[0] * 4] * 3] * 2
    assert bq.ball_query(0, 1, 4, torch.zeros(2, 5, 3), torch.zeros(2, 0, 3)).shape == (2, 0, 4)
    with pytest.raises(AssertionError):
        bq.ball_query(1.0, 0.5, 4, XYZ, NEW_XYZ)
    with pytest.raises(ValueError, match="ball_query: xyz"):
        bq.ball_query(0, 1, 4, XYZ[..., :2].contiguous(), NEW_XYZ)
    with pytest.raises(ValueError, match="batch size"):
        bq.ball_query(0, 1, 4, XYZ[:1], NEW_XYZ)
    with pytest.raises(TypeError, match="floating"):
        bq.ball_query(0, 1, 4, XYZ.int(), NEW_XYZ)
    with pytest.raises(ValueError, match="sample_num"):
        bq.ball_query(0, 1, -1, XYZ, NEW_XYZ)
    with pytest.raises(TypeError, match="int32"):
        bq.ball_query(0, 1, 4, XYZ.reshape(-1, 3), NEW_XYZ.reshape(-1, 3), torch.tensor([10, 10]),
                      torch.tensor([5, 5]))


def test_ball_query_not_differentiable():
    x = XYZ.clone().requires_grad_()
    assert not bq.ball_query(0, 0.2, 5, x, NEW_XYZ).requires_grad


def test_ball_query_ext_adapters():
    idx = torch.full((2, 5, 5), 7, dtype=torch.int32)
    ext_bq.ball_query_forward(NEW_XYZ, XYZ, idx, b=2, n=10, m=5, min_radius=0.0, max_radius=0.2, nsample=5)
    assert torch.equal(idx, bq.ball_query(0, 0.2, 5, XYZ, NEW_XYZ))
    far = torch.full((2, 5, 5), 7, dtype=torch.int32)  # nothing found: the kernel leaves the row untouched
    ext_bq.ball_query_forward(NEW_XYZ + 100, XYZ, far, 2, 10, 5, 0.0, 0.2, 5)
    assert (far == 7).all()
    sidx = torch.full((10, 5), 7, dtype=torch.int32)
    cnt = torch.tensor([10, 10], dtype=torch.int32)
    ext_bq.stack_ball_query_forward(NEW_XYZ.reshape(-1, 3) + 100, torch.tensor([5, 5], dtype=torch.int32),
                                    XYZ.reshape(-1, 3), cnt, sidx, max_radius=0.2, nsample=5)
    assert (sidx[:, 0] == -1).all() and (sidx[:, 1:] == 7).all()
    ext_bq.stack_ball_query_forward(NEW_XYZ.reshape(-1, 3), torch.tensor([5, 5], dtype=torch.int32),
                                    XYZ.reshape(-1, 3), cnt, sidx, 0.2, 5)
    assert torch.equal(sidx, torch.tensor(EXPECTED_SMALL, dtype=torch.int32).reshape(10, 5))


# ----------------------------------------------------------------------------- grouping_operation


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_grouping_mmcv_values(dtype):
    features = FEATURES.to(dtype).detach().requires_grad_()
    out = gp.grouping_operation(features, GROUP_IDX)
    out.backward(out)
    expected = FEATURES[:, :, GROUP_IDX[0, :, 0].long()].unsqueeze(-1).expand(-1, -1, -1, 3).clone()
    expected[1] = FEATURES[1][:, GROUP_IDX[1, :, 0].long()].unsqueeze(-1).expand(-1, -1, 3)
    assert out.shape == (2, 3, 6, 3) and out.dtype == dtype
    assert torch.allclose(out, expected.to(dtype))
    assert out[0, 0, 1, 0].item() == pytest.approx(-1.3311, abs=1e-3)
    tol = 1e-3 if dtype == torch.float16 else 1e-4
    assert torch.allclose(features.grad, EXPECTED_GRAD.to(dtype), rtol=tol, atol=tol)


def test_stack_grouping_mmcv_values():
    idx = torch.tensor([[0] * 3, [3] * 3, [8] * 3, [1] * 3, [0] * 3, [2] * 3, [0] * 3, [6] * 3, [9] * 3,
                        [0] * 3, [1] * 3, [0] * 3]).int()
    feats = torch.cat([FEATURES[0], FEATURES[1]], 0)  # (6, 10): mmcv's test stacks the same numbers
    out = gp.grouping_operation(feats, idx, torch.tensor([3, 3]).int(), torch.tensor([6, 6]).int())
    rows = [0, None, None, 1, 0, 2, 3, None, None, 3, 4, 3]
    expected = torch.stack([feats[r] if r is not None else torch.zeros(10) for r in rows])
    assert torch.equal(out, expected.unsqueeze(-1).expand(-1, -1, 3))


def test_stack_grouping_quirks_and_backward():
    feats = torch.arange(12.0).reshape(6, 2).requires_grad_()  # batches of 2 and 4 points
    fcnt, icnt = torch.tensor([2, 4]).int(), torch.tensor([1, 2]).int()
    idx = torch.tensor([[0, 1, 2], [-1, 3, 4], [5, 6, 0]]).int()
    out = gp.grouping_operation(feats, idx, fcnt, icnt)
    # batch 0 (start 0, end 2): 0, 1 read, 2 not. batch 1 (start 2, end 6): -1 reads row 1 (previous
    # batch), 3 -> row 5, 4 -> row 6 is past the features (0), 5 -> row 7 (0), 6 >= end (0), 0 -> row 2.
    assert out[:, 0].tolist() == [[0, 2, 0], [2, 10, 0], [0, 0, 4]]
    out.backward(torch.ones_like(out))
    # The backward adds wherever start + idx is inside the features, read or not.
    assert feats.grad[:, 0].tolist() == [1, 2, 2, 0, 0, 1]


@pytest.mark.parametrize("stacked", [False, True])
def test_grouping_gradcheck(stacked):
    g = torch.Generator().manual_seed(3)
    if stacked:
        feats = torch.randn(7, 3, generator=g, dtype=torch.float64, requires_grad=True)
        idx = torch.randint(0, 3, (5, 4), generator=g).int()
        args = (torch.tensor([3, 4]).int(), torch.tensor([2, 3]).int())
    else:
        feats = torch.randn(2, 3, 6, generator=g, dtype=torch.float64, requires_grad=True)
        idx = torch.randint(0, 6, (2, 4, 5), generator=g).int()
        args = ()
    assert torch.autograd.gradcheck(lambda f: gp.grouping_operation(f, idx, *args), (feats,))


def test_grouping_errors():
    with pytest.raises(ValueError, match="grouping_operation: features"):
        gp.grouping_operation(FEATURES[0], GROUP_IDX)
    with pytest.raises(ValueError, match="indices"):
        gp.grouping_operation(FEATURES, GROUP_IDX[0])
    with pytest.raises(TypeError, match="integer"):
        gp.grouping_operation(FEATURES, GROUP_IDX.float())
    with pytest.raises(TypeError, match="floating"):
        gp.grouping_operation(FEATURES.int(), GROUP_IDX)
    with pytest.raises(AssertionError):
        gp.grouping_operation(FEATURES[0].T.contiguous(), GROUP_IDX[0], torch.tensor([5, 5]), torch.tensor([3, 3]))


def test_grouping_ext_adapters():
    out = torch.zeros(2, 3, 6, 3)
    ext_gp.group_points_forward(FEATURES, GROUP_IDX, out, b=2, c=3, n=10, npoints=6, nsample=3)
    assert torch.equal(out, gp.grouping_operation(FEATURES, GROUP_IDX))
    grad = torch.ones(2, 3, 10)
    ext_gp.group_points_backward(out, GROUP_IDX, grad, 2, 3, 10, 6, 3)
    assert torch.allclose(grad - 1, EXPECTED_GRAD, atol=1e-4)  # accumulated
    feats = torch.arange(12.0).reshape(6, 2)
    fcnt, icnt = torch.tensor([2, 4]).int(), torch.tensor([1, 2]).int()
    idx = torch.tensor([[0, 1, 2], [-1, 3, 4], [5, 6, 0]]).int()
    sout = torch.full((3, 2, 3), -9.0)
    ext_gp.stack_group_points_forward(feats, fcnt, idx, icnt, sout, b=2, c=2, m=3, nsample=3)
    ref = gp.grouping_operation(feats, idx, fcnt, icnt)
    unread = torch.tensor([[0, 0, 1], [0, 0, 1], [1, 1, 0]]).bool().unsqueeze(1).expand(-1, 2, -1)
    assert (sout[unread] == -9).all() and torch.equal(sout[~unread], ref[~unread])
    sgrad = torch.ones(6, 2)
    ext_gp.stack_group_points_backward(torch.ones(3, 2, 3), idx, icnt, fcnt, sgrad, 2, 2, 3, 6, 3)
    assert sgrad[:, 0].tolist() == [2, 3, 3, 1, 1, 2]


# ----------------------------------------------------------------------------- modules


def test_query_and_group_matches_manual():
    g = torch.Generator().manual_seed(4)
    pts, ctr = torch.rand(2, 30, 3, generator=g), torch.rand(2, 6, 3, generator=g)
    feats = torch.randn(2, 4, 30, generator=g)
    module = gp.QueryAndGroup(0.4, 5, min_radius=0.05, return_grouped_xyz=True, normalize_xyz=True,
                              return_grouped_idx=True)
    new, gxyz, idx = module(pts, ctr, feats)
    ref_idx = bq.ball_query(0.05, 0.4, 5, pts, ctr)
    assert torch.equal(idx, ref_idx)
    ref_xyz = gp.grouping_operation(pts.transpose(1, 2).contiguous(), ref_idx)
    assert torch.equal(gxyz, ref_xyz)
    diff = (ref_xyz - ctr.transpose(1, 2).unsqueeze(-1)) / 0.4
    assert torch.allclose(new, torch.cat([diff, gp.grouping_operation(feats, ref_idx)], 1))
    assert repr(module) == "QueryAndGroup()" and module.state_dict() == {}
    assert gp.QueryAndGroup(0.4, 5, use_xyz=False)(pts, ctr, feats).shape == (2, 4, 6, 5)
    assert gp.QueryAndGroup(0.4, 5)(pts, ctr).shape == (2, 3, 6, 5)
    with pytest.raises(AssertionError):
        gp.QueryAndGroup(0.4, 5, use_xyz=False)(pts, ctr)


def test_query_and_group_knn_and_asserts():
    g = torch.Generator().manual_seed(5)
    pts, ctr = torch.rand(1, 20, 3, generator=g), torch.rand(1, 4, 3, generator=g)
    _, idx = gp.QueryAndGroup(None, 3, return_grouped_idx=True)(pts, ctr)
    d = ((ctr[0, :, None] - pts[0, None]) ** 2).sum(-1)
    assert torch.equal(idx[0].long(), d.topk(3, largest=False).indices)
    with pytest.raises(AssertionError):
        gp.QueryAndGroup(None, 3, normalize_xyz=True)
    with pytest.raises(AssertionError):
        gp.QueryAndGroup(0.3, 3, return_unique_cnt=True)


def test_query_and_group_uniform_sample():
    g = torch.Generator().manual_seed(6)
    pts, ctr = torch.rand(2, 40, 3, generator=g), torch.rand(2, 8, 3, generator=g)
    module = gp.QueryAndGroup(0.3, 6, uniform_sample=True, return_unique_cnt=True, return_grouped_idx=True)
    torch.manual_seed(0)
    new, cnt, idx = module(pts, ctr)
    raw = bq.ball_query(0.0, 0.3, 6, pts, ctr)
    assert cnt.dtype == torch.float32 and cnt.device.type == "cpu" and cnt.shape == (2, 8)
    for b in range(2):
        for m in range(8):
            uniq = torch.unique(raw[b, m])
            assert int(cnt[b, m]) == uniq.numel()
            assert torch.equal(idx[b, m, :uniq.numel()], uniq)
            assert torch.isin(idx[b, m], uniq).all()
    assert new.shape == (2, 3, 8, 6)


def test_group_all():
    g = torch.Generator().manual_seed(7)
    xyz, feats = torch.rand(2, 9, 3, generator=g), torch.randn(2, 4, 9, generator=g)
    out = gp.GroupAll()(xyz, None, feats)
    assert torch.equal(out, torch.cat([xyz.transpose(1, 2), feats], 1).unsqueeze(2))
    assert torch.equal(gp.GroupAll(use_xyz=False)(xyz, None, feats), feats.unsqueeze(2))
    assert torch.equal(gp.GroupAll()(xyz, None), xyz.transpose(1, 2).unsqueeze(2))
    assert repr(gp.GroupAll()) == "GroupAll()"


def test_registry_entries():
    entries = registry.entries()
    assert entries["ball_query"].names == ("BallQuery", "ball_query")
    assert set(entries["group_points"].ext_functions) == set(ext_gp.__all__)
    assert set(entries["ball_query"].ext_functions) == set(ext_bq.__all__)
