"""mmcv.ops.scatter_points in the runtime: mmcv's own test (reference recomputed on CPU), a scalar
transcription of the CUDA kernels (forward and backward, ties, dropped rows), gradcheck, edge cases,
errors, the ``_ext`` adapters and the module."""

from __future__ import annotations

import importlib

import pytest
import torch
from torch.autograd import gradcheck

sp = importlib.import_module("mmcv_runtime.ops.scatter_points")
ext = importlib.import_module("mmcv_runtime.ext._scatter_points")
DynamicScatter, dynamic_scatter = sp.DynamicScatter, sp.dynamic_scatter
VOXEL, RANGE = [0.32, 0.32, 6], [-74.88, -74.88, -2, 74.88, 74.88, 4]


def kernel_reference(feats, coors, reduce_type, grad_out=None):
    """Scalar transcription of scatter_points_cuda: forward (feats, coors) and, with grad_out, the
    backward (sum/mean copy, max to the lowest index attaining the max)."""
    rows = [tuple(r) for r in coors.tolist()]
    keep = sorted({r for r in rows if min(r) >= 0})
    vid = {r: i for i, r in enumerate(keep)}
    n, c = feats.shape
    out = [[0.0 if reduce_type != "max" else float("-inf")] * c for _ in keep]
    count = [0] * len(keep)
    for p, r in enumerate(rows):
        if r not in vid:
            continue
        v = vid[r]
        count[v] += 1
        for j in range(c):
            x = float(feats[p, j])
            out[v][j] = max(out[v][j], x) if reduce_type == "max" else out[v][j] + x
    if reduce_type == "mean":
        out = [[x / count[v] for x in row] for v, row in enumerate(out)]
    out_t = torch.tensor(out, dtype=feats.dtype).reshape(len(keep), c)
    coors_t = torch.tensor(keep, dtype=coors.dtype).reshape(len(keep), coors.size(1))
    if grad_out is None:
        return out_t, coors_t
    grad = torch.zeros_like(feats)
    for j in range(c):
        taken = set()
        for p, r in enumerate(rows):
            if r not in vid:
                continue
            v = vid[r]
            if reduce_type == "sum":
                grad[p, j] = grad_out[v, j]
            elif reduce_type == "mean":
                grad[p, j] = grad_out[v, j] / count[v]
            elif feats[p, j] == out_t[v, j] and v not in taken:
                taken.add(v)
                grad[p, j] = grad_out[v, j]
    return out_t, coors_t, grad


def mmcv_loop_reference(feats, coors):
    """mmcv's test reference: unique sorted rows without negatives, per-voxel mean and max."""
    ref_coors = coors.unique(dim=0, sorted=True)
    ref_coors = ref_coors[ref_coors.min(dim=-1).values >= 0]
    means, maxes = [], []
    for row in ref_coors:
        mask = (coors == row).all(dim=-1)
        means.append(feats[mask].mean(0))
        maxes.append(feats[mask].max(0).values)
    return ref_coors, torch.stack(means), torch.stack(maxes)


# --- mmcv's own test --------------------------------------------------------------------------


def test_mmcv_empty_input():
    dsmean, dsmax = DynamicScatter(VOXEL, RANGE, True), DynamicScatter(VOXEL, RANGE, False)
    feats = torch.empty(0, 3, requires_grad=True)
    coors = torch.empty(0, 3, dtype=torch.int32)
    for ds in (dsmean, dsmax):
        out, out_coors = ds(feats, coors)
        out.sum().backward()
        assert out.shape == feats.shape and out_coors.shape == coors.shape
        assert out_coors.dtype == torch.int32


def test_mmcv_all_points_dropped():
    g = torch.Generator().manual_seed(0)
    feats = (torch.rand(2000, 3, generator=g) * 100 - 50).requires_grad_()
    coors = torch.full((2000, 3), -1, dtype=torch.int32)
    for average in (True, False):
        out, out_coors = DynamicScatter(VOXEL, RANGE, average)(feats, coors)
        assert out.shape == (0, 3) and out_coors.shape == (0, 3)
        out.sum().backward()
        assert (feats.grad == 0).all()


@pytest.mark.parametrize("low", [-1, 0])
def test_mmcv_non_empty(low):
    g = torch.Generator().manual_seed(1 + low)
    feats = torch.rand(20000, 3, generator=g) * 100 - 50
    coors = torch.randint(low, 20, (20000, 3), generator=g, dtype=torch.int32)
    ref_coors, ref_mean, ref_max = mmcv_loop_reference(feats, coors)
    for average, ref in ((True, ref_mean), (False, ref_max)):
        out, out_coors = DynamicScatter(VOXEL, RANGE, average)(feats, coors)
        # mmcv's test re-sorts; the runtime's order is already the sorted one
        assert torch.equal(out_coors, ref_coors)
        torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-5)


def test_mmcv_grad():
    g = torch.Generator().manual_seed(3)
    feats = (torch.rand(100, 4, generator=g, dtype=torch.float64) * 100 - 50).requires_grad_()
    coors = torch.randint(-1, 3, (100, 3), generator=g, dtype=torch.int32)
    assert gradcheck(DynamicScatter(VOXEL, RANGE, True), (feats, coors), eps=1e-6, atol=1e-6)
    assert gradcheck(DynamicScatter(VOXEL, RANGE, False), (feats, coors), eps=1e-6, atol=1e-6)


# --- against the scalar kernel transcription ----------------------------------------------------


@pytest.mark.parametrize("reduce_type", ["sum", "mean", "max"])
def test_kernel_reference_with_ties_and_dropped_rows(reduce_type):
    g = torch.Generator().manual_seed(4)
    feats = torch.randint(-3, 4, (60, 5), generator=g).double()  # many ties within voxels
    coors = torch.randint(-1, 3, (60, 3), generator=g, dtype=torch.int32)
    coors[::7] = -1
    out, out_coors = dynamic_scatter(feats, coors, reduce_type)
    grad_out = torch.randn(out.shape, generator=g, dtype=torch.float64)
    ref_out, ref_coors, ref_grad = kernel_reference(feats, coors, reduce_type, grad_out)
    assert torch.equal(out_coors, ref_coors)
    torch.testing.assert_close(out, ref_out)
    leaf = feats.clone().requires_grad_()
    dynamic_scatter(leaf, coors, reduce_type)[0].backward(grad_out)
    torch.testing.assert_close(leaf.grad, ref_grad)


def test_max_tie_goes_to_lowest_index():
    feats = torch.tensor([[1.0, 5.0], [3.0, 5.0], [3.0, 2.0], [0.0, 0.0]], requires_grad=True)
    coors = torch.tensor([[0, 0, 1], [0, 0, 1], [0, 0, 1], [0, 0, 0]], dtype=torch.int32)
    out, out_coors = dynamic_scatter(feats, coors, "max")
    assert out_coors.tolist() == [[0, 0, 0], [0, 0, 1]]
    assert out.tolist() == [[0.0, 0.0], [3.0, 5.0]]
    out.backward(torch.tensor([[7.0, 8.0], [10.0, 20.0]]))
    assert feats.grad.tolist() == [[0.0, 20.0], [10.0, 0.0], [0.0, 0.0], [7.0, 8.0]]


def test_negative_entry_drops_whole_row_and_order_is_lexicographic():
    feats = torch.arange(12.0).reshape(6, 2)
    coors = torch.tensor([[5, 0, 0], [0, 9, 0], [0, -1, 3], [0, 0, 7], [5, 0, 0], [1, 0, 0]])
    out, out_coors = dynamic_scatter(feats, coors, "sum")
    assert out_coors.dtype == torch.int64
    assert out_coors.tolist() == [[0, 0, 7], [0, 9, 0], [1, 0, 0], [5, 0, 0]]
    assert out.tolist() == [[6.0, 7.0], [2.0, 3.0], [10.0, 11.0], [8.0, 10.0]]


def test_max_ignores_nan_like_fmax():
    feats = torch.tensor([[float("nan"), 1.0], [2.0, float("nan")], [float("nan"), float("nan")]])
    coors = torch.tensor([[0, 0, 0], [0, 0, 0], [1, 1, 1]], dtype=torch.int32)
    out, _ = dynamic_scatter(feats, coors, "max")
    assert out.tolist() == [[2.0, 1.0], [float("-inf"), float("-inf")]]
    leaf = feats.clone().requires_grad_()
    dynamic_scatter(leaf, coors, "max")[0].sum().backward()  # all-NaN voxel: gradient goes nowhere
    assert leaf.grad.tolist() == [[0.0, 1.0], [1.0, 0.0], [0.0, 0.0]]


def test_huge_coordinates_fall_back_to_unique_dim():
    big = 2 ** 30
    feats = torch.arange(8.0).reshape(4, 2)
    coors = torch.tensor([[big, big, 1], [0, big, big], [big, big, 1], [0, 0, 0]], dtype=torch.int64)
    out, out_coors = dynamic_scatter(feats, coors, "mean")
    assert out_coors.tolist() == [[0, 0, 0], [0, big, big], [big, big, 1]]
    assert out.tolist() == [[6.0, 7.0], [2.0, 3.0], [2.0, 3.0]]


@pytest.mark.parametrize("reduce_type", ["sum", "mean"])
def test_gradcheck_sum_mean(reduce_type):
    g = torch.Generator().manual_seed(5)
    feats = torch.randn(30, 3, generator=g, dtype=torch.float64, requires_grad=True)
    coors = torch.randint(-1, 3, (30, 2), generator=g, dtype=torch.int32)
    assert gradcheck(lambda f: dynamic_scatter(f, coors, reduce_type)[0], (feats,))


def test_gradcheck_max_away_from_ties():
    g = torch.Generator().manual_seed(6)
    feats = (torch.randperm(90, generator=g).double().reshape(30, 3) / 10).requires_grad_()
    coors = torch.randint(-1, 3, (30, 3), generator=g, dtype=torch.int32)
    assert gradcheck(lambda f: dynamic_scatter(f, coors, "max")[0], (feats,), eps=1e-3)


def test_empty_input_functional():
    feats = torch.empty(0, 4, requires_grad=True)
    coors = torch.empty(0, 3, dtype=torch.int32)
    out, out_coors = dynamic_scatter(feats, coors, "max")
    assert out.shape == (0, 4) and out_coors.shape == (0, 3)
    out.sum().backward()
    assert feats.grad.shape == (0, 4)


def test_half_precision_runs():
    feats = torch.tensor([[1.0], [3.0], [2.0]], dtype=torch.bfloat16)
    coors = torch.tensor([[0, 0, 0], [0, 0, 0], [1, 0, 0]], dtype=torch.int32)
    for reduce_type, expected in (("max", [3.0, 2.0]), ("mean", [2.0, 2.0]), ("sum", [4.0, 2.0])):
        out, _ = dynamic_scatter(feats, coors, reduce_type)
        assert out.dtype == torch.bfloat16 and out[:, 0].tolist() == expected


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize("feats, coors, reduce_type, error, text", [
    (torch.zeros(4), torch.zeros(4, 3, dtype=torch.int32), "max", ValueError, "feats"),
    (torch.zeros(4, 2), torch.zeros(4, dtype=torch.int32), "max", ValueError, "coors"),
    (torch.zeros(4, 2), torch.zeros(5, 3, dtype=torch.int32), "max", ValueError, "coors"),
    (torch.zeros(4, 2, dtype=torch.int32), torch.zeros(4, 3, dtype=torch.int32), "max", TypeError, "feats"),
    (torch.zeros(4, 2), torch.zeros(4, 3), "max", TypeError, "coors"),
    (torch.zeros(4, 2), torch.zeros(4, 3, dtype=torch.int32), "min", ValueError, "reduce_type"),
    (torch.zeros(4, 2), torch.zeros(4, 3, dtype=torch.int32), 2, TypeError, "reduce_type"),
    ([[0.0]], torch.zeros(1, 3, dtype=torch.int32), "max", TypeError, "feats"),
])
def test_bad_input(feats, coors, reduce_type, error, text):
    with pytest.raises(error, match=f"dynamic_scatter: {text}"):
        dynamic_scatter(feats, coors, reduce_type)


def test_bad_input_adapter_names_itself():
    with pytest.raises(ValueError, match="dynamic_point_to_voxel_forward: reduce_type"):
        ext.dynamic_point_to_voxel_forward(torch.zeros(2, 2), torch.zeros(2, 3, dtype=torch.int32), "avg")


# --- _ext adapters ------------------------------------------------------------------------------


@pytest.mark.parametrize("reduce_type", ["sum", "mean", "max"])
def test_adapters_match_functional(reduce_type):
    assert set(ext.__all__) == {"dynamic_point_to_voxel_forward", "dynamic_point_to_voxel_backward"}
    g = torch.Generator().manual_seed(7)
    feats = torch.randint(-2, 3, (50, 3), generator=g).float()
    coors = torch.randint(-1, 3, (50, 3), generator=g, dtype=torch.int32)
    voxel_feats, voxel_coors, coors_map, count = ext.dynamic_point_to_voxel_forward(feats, coors, reduce_type)
    leaf = feats.clone().requires_grad_()
    out, out_coors = dynamic_scatter(leaf, coors, reduce_type)
    assert torch.equal(voxel_feats, out) and torch.equal(voxel_coors, out_coors)
    assert coors_map.dtype == torch.int32 and count.dtype == torch.int32
    valid = (coors >= 0).all(1)
    assert (coors_map[~valid] == -1).all()
    assert torch.equal(voxel_coors[coors_map[valid].long()], coors[valid])
    assert int(count.sum()) == int(valid.sum())
    grad_out = torch.randn(out.shape, generator=g)
    out.backward(grad_out)
    grad_feats = torch.full_like(feats, 99.0)  # the kernel zero-fills before writing
    assert ext.dynamic_point_to_voxel_backward(grad_feats, grad_out, feats, voxel_feats, coors_map, count,
                                               reduce_type) is None
    assert torch.equal(grad_feats, leaf.grad)


def test_adapter_empty_forward():
    feats, coors = torch.empty(0, 2), torch.empty(0, 3, dtype=torch.int32)
    voxel_feats, voxel_coors, coors_map, count = ext.dynamic_point_to_voxel_forward(feats, coors, "mean")
    assert voxel_feats.shape == (0, 2) and voxel_coors.shape == (0, 3)
    assert coors_map.shape == (0,) and coors_map.dtype == torch.int32 and count.dtype == torch.int32


# --- module -------------------------------------------------------------------------------------


def test_module_repr_and_state():
    ds = DynamicScatter(VOXEL, RANGE, True)
    assert repr(ds) == ("DynamicScatter(voxel_size=[0.32, 0.32, 6], point_cloud_range=[-74.88, -74.88, -2, "
                        "74.88, 74.88, 4], average_points=True)")
    assert ds.state_dict() == {} and ds.voxel_size == VOXEL and ds.average_points is True


def mmcv_batch_loop(ds, points, coors):
    """mmcv's DynamicScatter.forward for batch-led coors: a loop over range(coors[-1, 0] + 1)."""
    voxels, voxel_coors = [], []
    for i in range(int(coors[-1, 0]) + 1):
        inds = torch.where(coors[:, 0] == i)
        voxel, voxel_coor = ds.forward_single(points[inds], coors[inds][:, 1:])
        voxel_coors.append(torch.nn.functional.pad(voxel_coor, (1, 0), mode="constant", value=i))
        voxels.append(voxel)
    return torch.cat(voxels), torch.cat(voxel_coors)


@pytest.mark.parametrize("average", [True, False])
def test_module_batched_matches_mmcv_loop(average):
    g = torch.Generator().manual_seed(8)
    points = torch.randint(-3, 4, (300, 4), generator=g).double()
    coors = torch.cat([torch.randint(-1, 4, (300, 1), generator=g),
                       torch.randint(-1, 4, (300, 3), generator=g)], 1).int()
    coors[-1, 0] = 2  # batch 3 lies beyond the last row's batch index: mmcv's loop skips it
    ds = DynamicScatter(VOXEL, RANGE, average)
    leaf_a, leaf_b = points.clone().requires_grad_(), points.clone().requires_grad_()
    out, out_coors = ds(leaf_a, coors)
    ref, ref_coors = mmcv_batch_loop(ds, leaf_b, coors)
    assert torch.equal(out_coors, ref_coors) and out_coors.dtype == torch.int32
    torch.testing.assert_close(out, ref)
    grad_out = torch.randn(out.shape, generator=g, dtype=torch.float64)
    out.backward(grad_out)
    ref.backward(grad_out)
    torch.testing.assert_close(leaf_a.grad, leaf_b.grad)


def test_module_single_uses_mean_or_max():
    points = torch.tensor([[1.0], [3.0]])
    coors = torch.zeros(2, 3, dtype=torch.int32)
    assert DynamicScatter(VOXEL, RANGE, True)(points, coors)[0].item() == 2.0
    assert DynamicScatter(VOXEL, RANGE, False)(points, coors)[0].item() == 3.0


def test_registry_entry():
    from mmcv_runtime import registry
    entry = registry.entries()["scatter_points"]
    assert set(entry.names) == {"DynamicScatter", "dynamic_scatter"}
    assert set(entry.ext_functions) == set(ext.__all__)
    assert entry.backward == "yes" and entry.devices == ("any",)
