"""mmcv.ops.voxelize in the runtime: golden parity with compiled mmcv, mmcv's own test, edge cases, errors.

Goldens: fixtures/golden/voxelize.pt, made by fixtures/golden/make_voxelize_golden.py with mmcv 2.2.0's
compiled CPU kernel (voxels stored as point-index slots, see that script). Everything is exact.
"""

from __future__ import annotations

import importlib
import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

vox = importlib.import_module("mmcv_runtime.ops.voxelize")
ext = importlib.import_module("mmcv_runtime.ext._voxelize")
registry = importlib.import_module("mmcv_runtime.registry")
voxelization, Voxelization = vox.voxelization, vox.Voxelization

GOLDEN = Path(__file__).resolve().parent.parent / "fixtures" / "golden" / "voxelize.pt"
DATA = torch.load(GOLDEN, weights_only=False) if GOLDEN.exists() else None
CASES = DATA["cases"] if DATA else []
MIRROR = Path("/work/.mirror/open-mmlab+mmcv/repo")
RANGE = [0, -40, -3, 70.4, 40, 1]


def _points(case):
    xyz = DATA["clouds"][case["cloud"]]
    points = torch.cat([xyz, torch.arange(1, xyz.size(0) + 1, dtype=torch.float32)[:, None]], 1)
    return points if case["dtype"] == torch.float32 else points[:300].to(case["dtype"])


def _expected_voxels(points, slots):
    slots = slots.long()
    return torch.where((slots >= 0)[..., None], points[slots.clamp(min=0)],
                       points.new_zeros(()).expand(*slots.shape, points.size(1)))


def _ids(case):
    return f"{case['cloud']}-{case['voxel_size']}-{case['max_points']}-{case['max_voxels']}-{case['dtype']}"


def _loop_reference(points, voxel_size, coors_range, max_points, max_voxels):
    """The CPU kernel, point by point, for small random clouds (float32 points)."""
    vs = torch.tensor(voxel_size, dtype=torch.float32)
    lo = torch.tensor(coors_range[:3], dtype=torch.float32)
    grid = [int(g) for g in vox.grid_size(vs, torch.tensor(coors_range, dtype=torch.float32))]
    table, voxels, coors, nums = {}, [], [], []
    for p in points:
        c = torch.floor((p[:3] - lo) / vs)
        if any(not (0 <= float(c[j]) < grid[j]) for j in range(3)):
            continue
        key = (int(c[2]), int(c[1]), int(c[0]))
        if key not in table:
            if len(table) >= max_voxels:
                continue
            table[key] = len(table)
            voxels.append(points.new_zeros(max_points, points.size(1)))
            coors.append(key)
            nums.append(0)
        v = table[key]
        if nums[v] < max_points:
            voxels[v][nums[v]] = p
            nums[v] += 1
    m = len(voxels)
    return (torch.stack(voxels) if m else points.new_zeros(0, max_points, points.size(1)),
            torch.tensor(coors, dtype=torch.int32).reshape(m, 3), torch.tensor(nums, dtype=torch.int32))


# --- golden parity ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_hard_matches_mmcv(case):
    points = _points(case)
    voxels, coors, num = voxelization(points, case["voxel_size"], DATA["range"], case["max_points"],
                                      case["max_voxels"])
    assert voxels.dtype == points.dtype and coors.dtype == num.dtype == torch.int32
    assert torch.equal(voxels, _expected_voxels(points, case["slots"]))
    assert torch.equal(coors, case["coors"].int())
    assert torch.equal(num, case["num_points"].int())


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_dynamic_matches_mmcv(case):
    points = _points(case)
    expected = DATA["dynamic"][f"{case['cloud']}-{case['voxel_size']}-{case['dtype']}"].int()
    coors = voxelization(points, case["voxel_size"], DATA["range"], -1, case["max_voxels"])
    assert coors.dtype == torch.int32 and torch.equal(coors, expected)
    # max_voxels == -1 also selects the dynamic path
    assert torch.equal(voxelization(points, case["voxel_size"], DATA["range"], case["max_points"], -1), expected)


@pytest.mark.parametrize("case", CASES[:3], ids=_ids)
def test_ext_adapters_match_functional(case):
    points = _points(case)
    mp, mv = case["max_points"], min(case["max_voxels"], 1000)
    voxels = points.new_zeros(mv, mp, points.size(1))
    coors = torch.zeros(mv, 3, dtype=torch.int)
    num = torch.zeros(mv, dtype=torch.int)
    voxel_num = torch.zeros((), dtype=torch.long)
    vs, cr = torch.tensor(case["voxel_size"], dtype=torch.float), torch.tensor(DATA["range"], dtype=torch.float)
    assert ext.hard_voxelize_forward(points, vs, cr, voxels, coors, num, voxel_num, max_points=mp,
                                     max_voxels=mv, NDim=3, deterministic=True) is None
    m = int(voxel_num)
    ref = voxelization(points, case["voxel_size"], DATA["range"], mp, mv)
    assert m == ref[0].size(0)
    assert torch.equal(voxels[:m], ref[0]) and torch.equal(coors[:m], ref[1]) and torch.equal(num[:m], ref[2])
    assert not voxels[m:].any() and not coors[m:].any() and not num[m:].any()
    dyn = torch.zeros(points.size(0), 3, dtype=torch.int)
    ext.dynamic_voxelize_forward(points, vs, cr, dyn, NDim=3)
    assert torch.equal(dyn, voxelization(points, case["voxel_size"], DATA["range"], -1, mv))


def test_ext_module_lists_functions():
    assert sorted(ext.__all__) == ["dynamic_voxelize_forward", "hard_voxelize_forward"]


# --- mmcv's own test -------------------------------------------------------------------------


def _mmcv_test_data():
    if shutil.which("git") is None or not MIRROR.exists():
        return None
    blob = subprocess.run(["git", "-C", str(MIRROR), "show", "HEAD:tests/data/for_3d_ops/test_voxel.npy"],
                          capture_output=True)
    if blob.returncode:
        return None
    return np.load(io.BytesIO(blob.stdout), allow_pickle=True).item()


def test_mmcv_voxelization():
    voxel_dict = _mmcv_test_data()
    if voxel_dict is None:
        pytest.skip("mmcv git mirror with tests/data/for_3d_ops/test_voxel.npy not available")
    voxel_size, point_cloud_range = [0.5, 0.5, 0.5], [0, -40, -3, 70.4, 40, 1]
    points = torch.tensor(voxel_dict["points"])
    hard = Voxelization(voxel_size, point_cloud_range, 1000)
    dynamic = Voxelization(voxel_size, point_cloud_range, -1)
    # mmcv's test names the outputs in the wrong order; its "coors" are the voxels
    voxels, coors, num = (t.numpy() for t in hard(points))
    assert np.all(voxels == voxel_dict["coors"])
    assert np.all(coors == voxel_dict["voxels"])
    assert np.all(num == voxel_dict["num_points_per_voxel"])
    point_coors = dynamic(points).numpy()
    pts = points.numpy()
    for i in range(0, coors.shape[0], 7):  # every 7th voxel keeps the file fast
        inside = np.all(point_coors == coors[i], axis=1)
        assert inside.sum() == num[i] > 0
        assert np.all(pts[inside] == voxels[i][:num[i]])


# --- semantics and edge cases ----------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_random_clouds_match_kernel_loop(seed):
    g = torch.Generator().manual_seed(seed)
    points = torch.rand(300, 5, generator=g) * 12 - 1
    points[:40, :3] = torch.randint(-1, 12, (40, 3), generator=g).float()  # on voxel boundaries
    args = ([1.0, 1.5, 2.0], [0, 0, 0, 10, 10.5, 9], [1, 3, 50][seed % 3], [20, 500, 7, 0][seed])
    ref = _loop_reference(points, *args)
    out = voxelization(points, *args)
    for a, b in zip(out, ref):
        assert torch.equal(a, b)


def test_grid_size_rounds_halves_away_from_zero():
    # extents 2.5, 1.5, 0.5 voxels: the kernel's C round gives 3, 2, 1 ...
    assert vox.grid_size(torch.ones(3), torch.tensor([0, 0, 0, 2.5, 1.5, 0.5])) == [3, 2, 1]
    points = torch.tensor([[2.7, 1.2, 0.3], [2.7, 1.7, 0.3], [0.2, 0.2, 0.7]])
    assert torch.equal(voxelization(points, [1, 1, 1], [0, 0, 0, 2.5, 1.5, 0.5], -1, 10),
                       torch.tensor([[0, 1, 2], [0, 1, 2], [0, 0, 0]], dtype=torch.int))
    # (2.7 -> x cell 2 and 0.3 -> z cell 0 are inside only with grid (3, 2, 1), as mmcv's kernel gives)
    # ... while mmcv's module computes its grid_size attribute with torch.round (halves to even)
    assert Voxelization([1, 1, 1], [0, 0, 0, 2.5, 1.5, 0.5], 5).grid_size.tolist() == [2, 2, 0]


def test_range_end_and_non_finite_points_are_outside():
    points = torch.tensor([[0.0, -40, -3], [70.4, 0, 0], [1, 40, 0], [1, 0, 1], [float("nan"), 0, 0],
                           [float("inf"), 0, 0], [-float("inf"), 0, 0], [1e30, 0, 0], [70.39, 39.99, 0.99]])
    coors = voxelization(points, [0.2, 0.2, 4], RANGE, -1, 10)
    assert coors[0].tolist() == [0, 0, 0] and coors[8].tolist() == [0, 399, 351]
    assert (coors[1:8] == -1).all()


def test_float64_uses_double_arithmetic():
    # 0.3 as float32 vs float64: (0.3 - 0) / 0.1f floors differently in the two precisions
    p32 = torch.tensor([[0.3, 0.0, 0.0]])
    p64 = p32.double()
    c32 = voxelization(p32, [0.1, 1, 1], [0, 0, 0, 1, 1, 1], -1, 1)
    c64 = voxelization(p64, [0.1, 1, 1], [0, 0, 0, 1, 1, 1], -1, 1)
    lo, size = torch.tensor(0.0), torch.tensor(0.1)
    assert c32[0, 2] == torch.floor((p32[0, 0] - lo) / size).int()
    assert c64[0, 2] == torch.floor((p64[0, 0] - lo.double()) / size.double()).int()


def test_empty_all_outside_single():
    empty = torch.zeros(0, 4)
    voxels, coors, num = voxelization(empty, [1, 1, 1], [0, 0, 0, 4, 4, 4], 5, 10)
    assert voxels.shape == (0, 5, 4) and coors.shape == (0, 3) and num.shape == (0,)
    assert voxelization(empty, [1, 1, 1], [0, 0, 0, 4, 4, 4], -1, 10).shape == (0, 3)
    outside = torch.full((6, 4), -5.0)
    assert voxelization(outside, [1, 1, 1], [0, 0, 0, 4, 4, 4], 5, 10)[0].shape == (0, 5, 4)
    assert (voxelization(outside, [1, 1, 1], [0, 0, 0, 4, 4, 4], -1, 10) == -1).all()
    single = torch.tensor([[1.5, 2.5, 3.5, 7.0]])
    voxels, coors, num = voxelization(single, [1, 1, 1], [0, 0, 0, 4, 4, 4], 3, 10)
    assert torch.equal(voxels, torch.tensor([[[1.5, 2.5, 3.5, 7.0], [0, 0, 0, 0], [0, 0, 0, 0]]]))
    assert coors.tolist() == [[3, 2, 1]] and num.tolist() == [1]


def test_zero_caps():
    points = torch.tensor([[0.5, 0.5, 0.5], [1.5, 0.5, 0.5], [0.6, 0.5, 0.5]])
    voxels, coors, num = voxelization(points, [1, 1, 1], [0, 0, 0, 4, 4, 4], 0, 10)
    assert voxels.shape == (2, 0, 3) and coors.tolist() == [[0, 0, 0], [0, 0, 1]] and num.tolist() == [0, 0]
    assert voxelization(points, [1, 1, 1], [0, 0, 0, 4, 4, 4], 3, 0)[0].shape == (0, 3, 3)
    voxels, coors, num = voxelization(points, [1, 1, 1], [0, 0, 0, 4, 4, 4], 3, 1)
    assert num.tolist() == [2] and torch.equal(voxels[0, :2], points[[0, 2]])


def test_half_points_and_deterministic_flag():
    points = torch.rand(200, 4, generator=torch.Generator().manual_seed(3)) * 8
    ref = voxelization(points, [1, 1, 1], [0, 0, 0, 6, 6, 6], 4, 50)
    for a, b in zip(voxelization(points, [1, 1, 1], [0, 0, 0, 6, 6, 6], 4, 50, False), ref):
        assert torch.equal(a, b)
    half = voxelization(points.half(), [1, 1, 1], [0, 0, 0, 6, 6, 6], 4, 50)
    assert half[0].dtype == torch.float16 and half[1].dtype == torch.int32


def test_no_gradient_like_mmcv():
    points = torch.rand(50, 4, requires_grad=True) * 4
    voxels, coors, num = voxelization(points, [1, 1, 1], [0, 0, 0, 4, 4, 4], 3, 100)
    assert voxels.requires_grad and not coors.requires_grad and not num.requires_grad
    with pytest.raises(NotImplementedError):
        voxels.sum().backward()


# --- errors ----------------------------------------------------------------------------------


def test_bad_inputs():
    with pytest.raises(ValueError, match="voxelization: points"):
        voxelization(torch.zeros(4), [1, 1, 1], [0, 0, 0, 4, 4, 4], 3, 10)
    with pytest.raises(ValueError, match="voxelization: points"):
        voxelization(torch.zeros(4, 2), [1, 1, 1], [0, 0, 0, 4, 4, 4], -1, 10)
    with pytest.raises(TypeError, match="voxelization: points"):
        voxelization(torch.zeros(4, 3, dtype=torch.int32), [1, 1, 1], [0, 0, 0, 4, 4, 4], 3, 10)
    with pytest.raises(TypeError, match="voxelization: points"):
        voxelization(torch.zeros(4, 3, dtype=torch.bfloat16), [1, 1, 1], [0, 0, 0, 4, 4, 4], 3, 10)
    with pytest.raises(TypeError, match="voxelization: points"):
        voxelization(np.zeros((4, 3), np.float32), [1, 1, 1], [0, 0, 0, 4, 4, 4], 3, 10)
    with pytest.raises(ValueError, match="voxelization: voxel_size"):
        voxelization(torch.zeros(4, 3), [1, 1], [0, 0, 0, 4, 4, 4], 3, 10)
    with pytest.raises(ValueError, match="voxelization: coors_range"):
        voxelization(torch.zeros(4, 3), [1, 1, 1], [0, 0, 0, 4], 3, 10)
    with pytest.raises(ValueError, match="voxelization: the grid size must not be negative"):
        voxelization(torch.zeros(4, 3), [1, 1, 1], [0, 0, 0, -2, 4, 4], 3, 10)
    with pytest.raises(ValueError, match="voxelization: the grid size"):
        voxelization(torch.zeros(4, 3), [0, 1, 1], [0, 0, 0, 2, 4, 4], 3, 10)
    with pytest.raises(ValueError, match="voxelization: hard voxelization"):
        voxelization(torch.zeros(4, 3), [1, 1, 1], [0, 0, 0, 4, 4, 4], -3, 10)
    # a negative grid makes every point outside in dynamic mode, as in the kernel
    assert (voxelization(torch.zeros(4, 3), [1, 1, 1], [0, 0, 0, -2, 4, 4], -1, 10) == -1).all()


def test_ext_hard_rejects_caps_larger_than_buffers():
    points = torch.rand(10, 4)
    args = (torch.ones(3), torch.tensor([0.0, 0, 0, 1, 1, 1]), torch.zeros(4, 2, 4), torch.zeros(4, 3, dtype=torch.int),
            torch.zeros(4, dtype=torch.int), torch.zeros((), dtype=torch.long))
    with pytest.raises(ValueError, match="hard_voxelize_forward"):
        ext.hard_voxelize_forward(points, *args, 3, 4)
    with pytest.raises(ValueError, match="hard_voxelize_forward"):
        ext.hard_voxelize_forward(points, *args, 2, -1)
    with pytest.raises(ValueError, match="NDim=3"):
        ext.hard_voxelize_forward(points, *args, 2, 4, NDim=2)


def test_ext_dynamic_other_ndim():
    points = torch.tensor([[0.5, 1.5, 9.0], [2.5, 0.5, 9.0], [-1.0, 0.5, 9.0]])
    coors = torch.zeros(3, 2, dtype=torch.int)
    ext.dynamic_voxelize_forward(points, torch.ones(2), torch.tensor([0.0, 0, 2, 2]), coors, 2)
    assert coors.tolist() == [[1, 0], [-1, -1], [-1, -1]]


# --- module ----------------------------------------------------------------------------------


def test_module_repr_and_max_voxels():
    module = Voxelization([0.2, 0.2, 4], RANGE, 5, (30, 2))
    assert repr(module) == ("Voxelization(voxel_size=[0.2, 0.2, 4], point_cloud_range=[0, -40, -3, 70.4, 40, 1], "
                            "max_num_points=5, max_voxels=(30, 2), deterministic=True)")
    assert module.grid_size.tolist() == [352, 400, 1] and module.grid_size.dtype == torch.long
    assert [int(v) for v in module.pcd_shape] == [1, 400, 352]
    assert Voxelization([1, 1, 1], [0, 0, 0, 1, 1, 1], 5, 7).max_voxels == (7, 7)
    assert module.state_dict() == {}
    points = torch.rand(500, 4, generator=torch.Generator().manual_seed(0)) * torch.tensor([70, 80, 4, 1]) \
        - torch.tensor([0, 40, 3, 0])
    assert module.train()(points)[0].size(0) == 30
    assert module.eval()(points)[0].size(0) == 2
    dynamic = Voxelization([0.2, 0.2, 4], RANGE, -1, (30, 2))
    assert dynamic(points).shape == (500, 3)


def test_registry_entry():
    entry = registry.entries()["voxelize"]
    assert set(entry.names) == {"Voxelization", "voxelization"}
    assert set(entry.ext_functions) == {"dynamic_voxelize_forward", "hard_voxelize_forward"}
    assert entry.backward == "n/a" and entry.devices == ("any",)


def test_ext_hard_non_contiguous_buffer():
    points = torch.rand(60, 4, generator=torch.Generator().manual_seed(5)) * 4
    vs, cr = torch.ones(3), torch.tensor([0.0, 0, 0, 4, 4, 4])
    voxels = torch.zeros(4, 3, 64).permute(2, 1, 0)  # (64, 3, 4) voxels, not contiguous
    coors, num, voxel_num = torch.zeros(64, 3, dtype=torch.int), torch.zeros(64, dtype=torch.int), torch.zeros(
        (), dtype=torch.long)
    ext.hard_voxelize_forward(points, vs, cr, voxels, coors, num, voxel_num, 3, 64)
    ref = voxelization(points, [1, 1, 1], [0, 0, 0, 4, 4, 4], 3, 64)
    m = int(voxel_num)
    assert torch.equal(voxels[:m], ref[0]) and torch.equal(coors[:m], ref[1]) and torch.equal(num[:m], ref[2])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    points = torch.rand(5000, 4, generator=torch.Generator().manual_seed(6)) * 30 - 5
    for args in (([0.2, 0.3, 0.5], [0, 0, 0, 20, 20, 20], 4, 3000), ([0.2, 0.3, 0.5], [0, 0, 0, 20, 20, 20], -1, 1)):
        cpu = voxelization(points, *args)
        gpu = voxelization(points.cuda(), *args)
        for a, b in zip(cpu if isinstance(cpu, tuple) else (cpu,), gpu if isinstance(gpu, tuple) else (gpu,)):
            assert b.is_cuda and torch.equal(a, b.cpu())
