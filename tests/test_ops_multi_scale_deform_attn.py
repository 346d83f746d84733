"""mmcv.ops.multi_scale_deform_attn in the runtime: mmcv's own test inputs (with the values mmcv 2.2.0
computes for them, as literals), a grid_sample transcription of mmcv's ``multi_scale_deformable_attn_pytorch``
in float64 (forward and backward to 1e-10, edge locations included), the CUDA kernel's boundary rules,
gradcheck, the ``_ext`` adapters called directly (in-place semantics, BEVFormer-style callers), the
module (constructor, init_weights, state_dict, forward variants) and bad input.
"""

from __future__ import annotations

import importlib
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

msda = importlib.import_module("mmcv_runtime.ops.multi_scale_deform_attn")
ext = importlib.import_module("mmcv_runtime.ext._multi_scale_deform_attn")
registry = importlib.import_module("mmcv_runtime.registry")

MultiScaleDeformableAttention = msda.MultiScaleDeformableAttention
MultiScaleDeformableAttnFunction = msda.MultiScaleDeformableAttnFunction
multi_scale_deformable_attn_pytorch = msda.multi_scale_deformable_attn_pytorch


def reference(value, shapes, loc, attn):
    """mmcv's ``multi_scale_deformable_attn_pytorch`` re-stated: per level, the (bs * heads, dim, H, W)
    map is sampled with grid_sample(align_corners=False, zeros) at 2 * loc - 1, and the samples of
    all levels and points are summed with the attention weights."""
    bs, _, heads, dim = value.shape
    _, queries, _, levels, points, _ = loc.shape
    per_level = value.split([int(h) * int(w) for h, w in shapes.tolist()], dim=1)
    samples = []
    for level, (h, w) in enumerate(shapes.tolist()):
        maps = per_level[level].permute(0, 2, 3, 1).reshape(bs * heads, dim, h, w)
        grid = (2 * loc[:, :, :, level] - 1).transpose(1, 2).reshape(bs * heads, queries, points, 2)
        samples.append(F.grid_sample(maps, grid, mode="bilinear", padding_mode="zeros", align_corners=False))
    weights = attn.transpose(1, 2).reshape(bs * heads, 1, queries, levels * points)
    out = (torch.stack(samples, -2).flatten(-2) * weights).sum(-1)  # (bs * heads, dim, queries)
    return out.view(bs, heads * dim, queries).transpose(1, 2).contiguous()


def starts(shapes):
    sizes = shapes.prod(1)
    return torch.cumsum(sizes, 0) - sizes


def problem(bs=2, heads=3, dim=4, queries=5, points=3, shapes=((6, 4), (3, 2), (1, 1)), seed=0,
            dtype=torch.float64, spread=(-0.2, 1.2)):
    g = torch.Generator().manual_seed(seed)
    shapes = torch.tensor(shapes, dtype=torch.long)
    keys = int(shapes.prod(1).sum())
    levels = shapes.size(0)
    value = torch.randn(bs, keys, heads, dim, generator=g, dtype=dtype)
    lo, hi = spread
    loc = torch.rand(bs, queries, heads, levels, points, 2, generator=g, dtype=dtype) * (hi - lo) + lo
    attn = torch.rand(bs, queries, heads, levels, points, generator=g, dtype=dtype)
    return value, shapes, loc, attn


def grads(fn, value, shapes, loc, attn, grad_out=None):
    leaves = [t.detach().clone().requires_grad_() for t in (value, loc, attn)]
    out = fn(leaves[0], shapes, leaves[1], leaves[2])
    if grad_out is None:
        grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(9), dtype=out.dtype)
    out.backward(grad_out)
    return out.detach(), [t.grad for t in leaves]


def assert_matches_reference(value, shapes, loc, attn, atol=1e-10):
    out, got = grads(multi_scale_deformable_attn_pytorch, value, shapes, loc, attn)
    ref, want = grads(reference, value, shapes, loc, attn)
    torch.testing.assert_close(out, ref, atol=atol, rtol=0)
    for name, a, b in zip(("value", "sampling_locations", "attention_weights"), got, want):
        torch.testing.assert_close(a, b, atol=atol, rtol=0, msg=lambda m: f"grad of {name}: {m}")


# --- mmcv's own tests (tests/test_ops/test_ms_deformable_attn.py) ------------------------------------


def mmcv_test_inputs():
    """The inputs of mmcv's forward/backward tests: N, M, D = 1, 2, 2; Lq, L, P = 2, 2, 2; seed 3."""
    shapes = torch.as_tensor([(6, 4), (3, 2)], dtype=torch.long)
    keys = sum((h * w).item() for h, w in shapes)
    torch.manual_seed(3)
    value = torch.rand(1, keys, 2, 2) * 0.01
    loc = torch.rand(1, 2, 2, 2, 2, 2)
    attn = torch.rand(1, 2, 2, 2, 2) + 1e-5
    attn /= attn.sum(-1, keepdim=True).sum(-2, keepdim=True)
    return value, shapes, loc, attn


# What mmcv 2.2.0's multi_scale_deformable_attn_pytorch gives for them in float64 (and the gradients
# with grad_output = ones); mmcv's CUDA test requires its kernel to equal that to 1e-18.
MMCV_OUT = [[0.0018993784157779181, 0.004602827532968805, 0.004671175247309776, 0.004384399819001662],
            [0.0037950971737622935, 0.002512764199421532, 0.0018444261512603004, 0.003634679248037905]]
MMCV_GRAD_ATTN = [0.007911032440564077, 0.007215103675224549, 0.0046538793064844096, 0.00946418040266712,
                  0.01188595308042056, 0.0031488924038750718, 0.012564325830133793, 0.003954012659496727,
                  0.009929504419076215, 0.0019434367057758356, 0.004765452519596057, 0.01032331657810177,
                  0.007329379724856349, 0.007444123300787451, 0.007643012825495919, 0.0010336736747842141]
MMCV_GRAD_LOC = [-0.004629180958789768, 0.019020290465399502, 0.016603870702695825, -0.014472657696850116,
                 0.006732092417733621, -0.0002118415494341238, 3.299285108436576e-05, -0.00022947471728183036,
                 -0.005405523190129835, 0.01422764242827219, -0.004147452702242359, -0.0011502147108358087,
                 -0.006752562320501193, 0.00479575377693958, 0.0014365376415391702, -0.0012282929879446037,
                 0.0013026738886970828, -0.000975946864740243, 0.0033807832421368566, 0.011983176226411612,
                 0.005572105670127148, -0.003086929920408518, 0.005846623339308554, 0.00240710978425238,
                 0.0011770903652565277, 0.0026753600335820025, -8.261114773474001e-05, 0.000986021916783374,
                 0.007593465851589742, -0.02491679746393148, 0.0008494152797424886, -0.0018697084014486082]
MMCV_GRAD_VALUE_SUM = 5.553222173385011


def test_mmcv_expectations_float64():
    value, shapes, loc, attn = (t.double() if t.is_floating_point() else t for t in mmcv_test_inputs())
    out, (g_value, g_loc, g_attn) = grads(multi_scale_deformable_attn_pytorch, value, shapes, loc, attn,
                                          torch.ones(1, 2, 4, dtype=torch.float64))
    torch.testing.assert_close(out, torch.tensor([MMCV_OUT], dtype=torch.float64), atol=1e-18, rtol=1e-15)
    torch.testing.assert_close(g_attn.flatten(), torch.tensor(MMCV_GRAD_ATTN, dtype=torch.float64), atol=1e-15, rtol=0)
    torch.testing.assert_close(g_loc.flatten(), torch.tensor(MMCV_GRAD_LOC, dtype=torch.float64), atol=1e-15, rtol=0)
    assert abs(float(g_value.sum()) - MMCV_GRAD_VALUE_SUM) < 1e-12
    # the Function (mmcv's CUDA path) with im2col_step 2, as mmcv's test_forward_equal_with_pytorch_double
    fn_out = MultiScaleDeformableAttnFunction.apply(value, shapes, starts(shapes), loc, attn, 2)
    assert (fn_out - out).abs().max() < 1e-18


def test_mmcv_expectations_float32():
    value, shapes, loc, attn = mmcv_test_inputs()
    out = MultiScaleDeformableAttnFunction.apply(value, shapes, starts(shapes), loc, attn, 2)
    expected = torch.tensor([MMCV_OUT], dtype=torch.float64)
    assert out.dtype == torch.float32
    assert (out.double() - expected).abs().max() < 1e-9  # mmcv's test_forward_equal_with_pytorch_float
    assert ((out.double() - expected).abs() / expected.abs()).max() < 1e-6


@pytest.mark.parametrize("channels", [4, 30, 32, 64, 71, 1025])
def test_mmcv_gradient_numerical(channels):
    """mmcv's test_gradient_numerical in float64 (shapes (3, 2), (2, 1), im2col_step 2)."""
    g = torch.Generator().manual_seed(channels)
    shapes = torch.as_tensor([(3, 2), (2, 1)], dtype=torch.long)
    value = (torch.rand(1, 8, 2, channels, generator=g, dtype=torch.float64) * 0.01).requires_grad_()
    loc = torch.rand(1, 2, 2, 2, 2, 2, generator=g, dtype=torch.float64).requires_grad_()
    attn = torch.rand(1, 2, 2, 2, 2, generator=g, dtype=torch.float64) + 1e-5
    attn = (attn / attn.sum(-1, keepdim=True).sum(-2, keepdim=True)).requires_grad_()
    args = (value, shapes, starts(shapes), loc, attn, 2)
    # fast mode (random projections of the Jacobian): the full one is large for wide heads
    assert gradcheck(MultiScaleDeformableAttnFunction.apply, args, eps=1e-6, atol=1e-5, fast_mode=True)


def test_mmcv_module_smoke():
    """mmcv's test_multiscale_deformable_attention: embed_dims 3 / 3 heads, then value_proj_ratio 0.5."""
    with pytest.raises(ValueError, match="divisible"):
        MultiScaleDeformableAttention(embed_dims=256, num_heads=7)
    spatial_shapes = torch.tensor([[2, 2], [1, 1]])
    level_start_index = torch.tensor([0, 4])
    reference_points = torch.rand(1, 5, 2, 2)
    for embed_dims, ratio in ((3, 1.0), (6, 0.5)):
        module = MultiScaleDeformableAttention(embed_dims=embed_dims, num_levels=2, num_heads=3,
                                               value_proj_ratio=ratio)
        module.init_weights()
        query = torch.rand(5, 1, embed_dims)
        out = module(query, query, query, reference_points=reference_points, spatial_shapes=spatial_shapes,
                     level_start_index=level_start_index)
        assert out.shape == (5, 1, embed_dims) and torch.isfinite(out).all()


# --- the kernel's semantics against the grid_sample transcription -------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_random_matches_reference(seed):
    assert_matches_reference(*problem(seed=seed))


def test_edge_locations_match_reference():
    """Locations at 0 and 1, on pixel centres (integral h_im / w_im), on pixel corners, just inside
    and far outside every level, mixed per axis."""
    # dyadic sizes: these locations are exact in binary, so grid_sample's unnormalisation puts them
    # on exactly the same pixel coordinates as the kernel's loc * size - 0.5
    value, shapes, loc, attn = problem(bs=1, heads=2, dim=3, queries=1, points=1, shapes=((4, 8), (2, 2), (1, 1)))
    candidates = []
    for h, w in shapes.tolist():
        for size in (h, w):
            candidates += [0.0, 1.0, 0.5 / size, (size - 0.5) / size, 1.0 / size, (size - 1.0) / size,
                           -0.4 / size, (size + 0.4) / size, -3.0, 4.0, 0.25, 0.7]
    coords = torch.tensor(sorted(set(candidates)), dtype=torch.float64)
    xs, ys = torch.meshgrid(coords, coords, indexing="ij")
    grid = torch.stack([xs.flatten(), ys.flatten()], -1)  # every (x, y) pair
    n = grid.size(0)
    loc = grid[None, :, None, None, None, :].expand(1, n, 2, 3, 1, 2).contiguous()
    attn = torch.rand(1, n, 2, 3, 1, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    assert_matches_reference(value, shapes, loc, attn)


def test_exact_lower_boundary_reads_nothing():
    """A point at h_im == -1 or w_im == -1 is skipped by the kernel (``h_im > -1``): output and all of
    its gradients are 0 (grid_sample would still give it a location gradient from pixel 0)."""
    value, shapes, _, _ = problem(bs=1, heads=1, dim=2, queries=2, points=1, shapes=((4, 4),))
    loc = torch.tensor([[-0.125, 0.5], [0.5, -0.125]], dtype=torch.float64).view(1, 2, 1, 1, 1, 2)  # -0.5 / 4
    attn = torch.ones(1, 2, 1, 1, 1, dtype=torch.float64)
    out, (g_value, g_loc, g_attn) = grads(multi_scale_deformable_attn_pytorch, value, shapes, loc, attn)
    assert out.abs().max() == 0 and g_value.abs().max() == 0
    assert g_loc.abs().max() == 0 and g_attn.abs().max() == 0
    # just inside, it reads pixel 0 with weight ~0 and gets the slope from it
    inside = loc + 1e-9
    _, (_, g_loc, _) = grads(multi_scale_deformable_attn_pytorch, value, shapes, inside, attn)
    assert g_loc.abs().max() > 0


def test_upper_boundary_and_pixel_centres():
    """h_im == H reads nothing; a point on a pixel centre reads that pixel exactly."""
    value, shapes, _, _ = problem(bs=1, heads=1, dim=2, queries=3, points=1, shapes=((4, 4),))
    loc = torch.tensor([[1.125, 0.5], [0.375, 0.625], [0.5, 1.125]], dtype=torch.float64).view(1, 3, 1, 1, 1, 2)
    attn = torch.ones(1, 3, 1, 1, 1, dtype=torch.float64)
    out = multi_scale_deformable_attn_pytorch(value, shapes, loc, attn)
    assert out[0, 0].abs().max() == 0 and out[0, 2].abs().max() == 0
    torch.testing.assert_close(out[0, 1], value[0, 2 * 4 + 1, 0])  # x = 1, y = 2 pixel centres


def test_gradcheck_each_input():
    value, shapes, loc, attn = problem(bs=1, heads=2, dim=3, queries=3, points=2, shapes=((3, 4), (2, 2)))
    for which in range(3):
        tensors = [value, loc, attn]

        def fn(t, which=which, tensors=tensors):
            args = list(tensors)
            args[which] = t
            return multi_scale_deformable_attn_pytorch(args[0], shapes, args[1], args[2])

        assert gradcheck(fn, (tensors[which].clone().requires_grad_(),), eps=1e-6, atol=1e-7)


def test_level_start_index_is_honoured():
    """The kernel reads each level at level_start_index, which may leave gaps in value."""
    value, shapes, loc, attn = problem(shapes=((3, 2), (2, 2)))
    padded = torch.cat([value[:, :6], torch.randn(2, 5, 3, 4, dtype=torch.float64), value[:, 6:]], 1)
    start = torch.tensor([0, 11])
    out = MultiScaleDeformableAttnFunction.apply(padded, shapes, start, loc, attn, 64)
    torch.testing.assert_close(out, reference(value, shapes, loc, attn), atol=1e-12, rtol=0)


def test_non_finite_value_and_location():
    """Taps off the map read nothing: NaN at pixel 0 does not leak into points that do not read it;
    a NaN or infinite location or an unused NaN weight reads nothing."""
    value, shapes, loc, attn = problem(bs=1, heads=2, dim=3, queries=4, points=2, shapes=((5, 5),),
                                       spread=(0.5, 0.9))
    value[:, 0] = float("nan")  # pixel (0, 0) of the only level
    loc[0, 0, 0, 0, 0] = float("nan")
    loc[0, 1, 0, 0, 0] = float("inf")
    loc[0, 2, 0, 0, 0] = -5.0
    attn[0, 2, 0, 0, 0] = float("nan")  # the weight of a point that reads nothing
    out, (g_value, g_loc, g_attn) = grads(multi_scale_deformable_attn_pytorch, value, shapes, loc, attn)
    assert torch.isfinite(out).all()
    assert torch.isfinite(g_value[:, 1:]).all() and torch.isfinite(g_loc).all() and torch.isfinite(g_attn).all()
    assert g_loc[0, :3, 0, 0, 0].abs().max() == 0 and g_attn[0, :3, 0, 0, 0].abs().max() == 0


def test_empty_and_degenerate_sizes():
    value, shapes, loc, attn = problem(queries=0)
    out, (g_value, g_loc, g_attn) = grads(multi_scale_deformable_attn_pytorch, value, shapes, loc, attn)
    assert out.shape == (2, 0, 12) and g_value.abs().max() == 0 and g_loc.numel() == 0
    value, shapes, loc, attn = problem(points=0)
    assert multi_scale_deformable_attn_pytorch(value, shapes, loc, attn).abs().max() == 0
    assert_matches_reference(*problem(bs=1, heads=1, dim=1, queries=1, points=1, shapes=((1, 1),)))


def test_float32_half_and_casts():
    value, shapes, loc, attn = problem(dtype=torch.float32, spread=(0.0, 1.0))
    want = reference(value.double(), shapes, loc.double(), attn.double())
    out = multi_scale_deformable_attn_pytorch(value, shapes, loc, attn)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), want, atol=1e-5, rtol=1e-5)
    # locations and weights are cast to the value's dtype (mmcv's Function does so)
    half = MultiScaleDeformableAttnFunction.apply(value.half(), shapes, starts(shapes), loc, attn, 64)
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.double(), want, atol=5e-2, rtol=5e-2)
    leaves = [value.half().requires_grad_(), loc.clone().requires_grad_(), attn.clone().requires_grad_()]
    MultiScaleDeformableAttnFunction.apply(leaves[0], shapes, starts(shapes), leaves[1], leaves[2], 64).sum().backward()
    assert [t.grad.dtype for t in leaves] == [torch.float16, torch.float32, torch.float32]


def test_chunking_gives_the_same_result(monkeypatch):
    value, shapes, loc, attn = problem(bs=2, queries=9)
    out, want = grads(multi_scale_deformable_attn_pytorch, value, shapes, loc, attn)
    for name in ("_FORWARD_TAPS", "_BACKWARD_TAPS", "_SCATTER_TAPS"):
        monkeypatch.setattr(msda, name, 7)
    out_small, got = grads(multi_scale_deformable_attn_pytorch, value, shapes, loc, attn)
    torch.testing.assert_close(out_small, out, atol=1e-12, rtol=0)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


# --- the _ext adapters ---------------------------------------------------------------------------------


def test_ext_forward_matches_functional():
    value, shapes, loc, attn = problem()
    out = ext.ms_deform_attn_forward(value, shapes, starts(shapes), loc, attn, im2col_step=64)
    torch.testing.assert_close(out, multi_scale_deformable_attn_pytorch(value, shapes, loc, attn), atol=0, rtol=0)


@pytest.mark.parametrize("dim, accumulates", [(4, False), (513, True)])
def test_ext_backward_in_place(dim, accumulates):
    """grad_value is added into; the point gradients are overwritten up to head_dim 512 (the kernels'
    block reductions) and added into above it (their atomicAdd kernels)."""
    value, shapes, loc, attn = problem(bs=1, heads=2, dim=dim, queries=2, points=2, shapes=((3, 2), (1, 2)))
    grad_out = torch.randn(1, 2, 2 * dim, dtype=torch.float64)
    _, (g_value, g_loc, g_attn) = grads(reference, value, shapes, loc, attn, grad_out)
    buf_value, buf_loc, buf_attn = torch.ones_like(value), torch.full_like(loc, 7.0), torch.full_like(attn, 7.0)
    ext.ms_deform_attn_backward(value, shapes, starts(shapes), loc, attn, grad_out, buf_value, buf_loc, buf_attn,
                                im2col_step=64)
    offset = 7.0 if accumulates else 0.0
    torch.testing.assert_close(buf_value, g_value + 1, atol=1e-10, rtol=0)
    torch.testing.assert_close(buf_loc, g_loc + offset, atol=1e-10, rtol=0)
    torch.testing.assert_close(buf_attn, g_attn + offset, atol=1e-10, rtol=0)


def test_ext_backward_half_buffers():
    value, shapes, loc, attn = problem(dtype=torch.float32, spread=(0.0, 1.0))
    value, loc, attn = value.half(), loc.half(), attn.half()
    grad_out = torch.randn(2, 5, 12).half()
    bufs = [torch.zeros_like(value), torch.zeros_like(loc), torch.zeros_like(attn)]
    ext.ms_deform_attn_backward(value, shapes, starts(shapes), loc, attn, grad_out, *bufs, im2col_step=64)
    _, want = grads(reference, value.double(), shapes, loc.double(), attn.double(), grad_out.double())
    for got, ref in zip(bufs, want):
        assert got.dtype == torch.float16
        torch.testing.assert_close(got.double(), ref, atol=5e-2, rtol=5e-2)


class _ProjectFunction(torch.autograd.Function):
    """How BEVFormer / MapTR call the _ext directly (their MultiScaleDeformableAttnFunction_fp32)."""

    @staticmethod
    def forward(ctx, value, value_spatial_shapes, value_level_start_index, sampling_locations, attention_weights,
                im2col_step):
        ctx.im2col_step = im2col_step
        output = ext.ms_deform_attn_forward(value, value_spatial_shapes, value_level_start_index,
                                            sampling_locations, attention_weights, im2col_step=ctx.im2col_step)
        ctx.save_for_backward(value, value_spatial_shapes, value_level_start_index, sampling_locations,
                              attention_weights)
        return output

    @staticmethod
    def backward(ctx, grad_output):
        value, value_spatial_shapes, value_level_start_index, sampling_locations, attention_weights = ctx.saved_tensors
        grad_value = torch.zeros_like(value)
        grad_sampling_loc = torch.zeros_like(sampling_locations)
        grad_attn_weight = torch.zeros_like(attention_weights)
        ext.ms_deform_attn_backward(value, value_spatial_shapes, value_level_start_index, sampling_locations,
                                    attention_weights, grad_output.contiguous(), grad_value, grad_sampling_loc,
                                    grad_attn_weight, im2col_step=ctx.im2col_step)
        return grad_value, None, None, grad_sampling_loc, grad_attn_weight, None


def test_ext_as_projects_call_it():
    value, shapes, loc, attn = problem(bs=1, heads=2, dim=3, queries=3, points=2, shapes=((3, 3), (2, 1)))
    start = starts(shapes)
    out, got = grads(lambda v, s, l, a: _ProjectFunction.apply(v, s, start, l, a, 64), value, shapes, loc, attn)
    ref, want = grads(reference, value, shapes, loc, attn)
    for a, b in zip([out, *got], [ref, *want]):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)
    args = (value.clone().requires_grad_(), shapes, start, loc.clone().requires_grad_(),
            attn.clone().requires_grad_(), 64)
    assert gradcheck(_ProjectFunction.apply, args, eps=1e-6, atol=1e-7)


def test_ext_bad_input():
    value, shapes, loc, attn = problem()
    with pytest.raises(ValueError, match="im2col_step"):
        ext.ms_deform_attn_forward(value, shapes, starts(shapes), loc, attn, im2col_step=0)
    with pytest.raises(ValueError, match="grad_sampling_loc"):
        ext.ms_deform_attn_backward(value, shapes, starts(shapes), loc, attn, torch.zeros(2, 5, 12),
                                    torch.zeros_like(value), torch.zeros(3), torch.zeros_like(attn), im2col_step=1)
    with pytest.raises(ValueError, match="grad_output"):
        ext.ms_deform_attn_backward(value, shapes, starts(shapes), loc, attn, torch.zeros(3), torch.zeros_like(value),
                                    torch.zeros_like(loc), torch.zeros_like(attn), im2col_step=1)


def test_registry_entry_and_pybind_signatures():
    import inspect

    from mmcv_migrate.rewrites.catalogue import load_catalogue

    entry = registry.entries()["multi_scale_deform_attn"]
    assert set(entry.ext_functions) == set(ext.__all__)
    assert entry.backward == "yes"
    catalogue = load_catalogue()
    for name in entry.names:
        assert hasattr(msda, name) and name in catalogue.submodules["multi_scale_deform_attn"].names
    for name in ext.__all__:  # py::arg names, so keyword calls like im2col_step=... work
        assert list(inspect.signature(getattr(ext, name)).parameters) == list(catalogue.ext_functions[name].args)


# --- the module ----------------------------------------------------------------------------------------


def module_reference(module, query, value, reference_points, shapes, identity=None, query_pos=None, mask=None):
    """mmcv's MultiScaleDeformableAttention.forward re-stated over the reference sampler (batch first)."""
    identity = query if identity is None else identity
    query = query if query_pos is None else query + query_pos
    bs, nq, _ = query.shape
    v = module.value_proj(value)
    if mask is not None:
        v = v.masked_fill(mask[..., None], 0.0)
    v = v.view(bs, value.size(1), module.num_heads, -1)
    offsets = module.sampling_offsets(query).view(bs, nq, module.num_heads, module.num_levels, module.num_points, 2)
    attn = module.attention_weights(query).view(bs, nq, module.num_heads, -1).softmax(-1)
    attn = attn.view(bs, nq, module.num_heads, module.num_levels, module.num_points)
    if reference_points.size(-1) == 2:
        normalizer = torch.stack([shapes[:, 1], shapes[:, 0]], -1)
        loc = reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
    else:
        loc = (reference_points[:, :, None, :, None, :2]
               + offsets / module.num_points * reference_points[:, :, None, :, None, 2:] * 0.5)
    return module.output_proj(reference(v, shapes, loc, attn)) + identity


def random_module(**kwargs):
    torch.manual_seed(0)
    module = MultiScaleDeformableAttention(**kwargs).double().eval()
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    return module


@pytest.mark.parametrize("last", [2, 4])
@pytest.mark.parametrize("batch_first", [False, True])
def test_module_forward(last, batch_first):
    module = random_module(embed_dims=12, num_heads=3, num_levels=2, num_points=2, batch_first=batch_first)
    shapes = torch.tensor([[4, 3], [2, 2]])
    g = torch.Generator().manual_seed(1)
    query = torch.randn(2, 5, 12, generator=g, dtype=torch.float64)
    value = torch.randn(2, 16, 12, generator=g, dtype=torch.float64)
    query_pos = torch.randn(2, 5, 12, generator=g, dtype=torch.float64)
    identity = torch.randn(2, 5, 12, generator=g, dtype=torch.float64)
    mask = torch.rand(2, 16, generator=g) > 0.6
    ref_points = torch.rand(2, 5, 2, last, generator=g, dtype=torch.float64)
    want = module_reference(module, query, value, ref_points, shapes, identity, query_pos, mask)

    def layout(t):
        return t if batch_first else t.transpose(0, 1)

    out = module(layout(query), None, layout(value), layout(identity), layout(query_pos), mask, ref_points, shapes,
                 starts(shapes))
    torch.testing.assert_close(layout(out), want, atol=1e-10, rtol=0)
    # defaults: value = query, identity = query (before query_pos), level_start_index optional
    shapes = torch.tensor([[4, 1], [1, 1]])  # 5 keys: the 5 queries
    out = module(layout(query), reference_points=ref_points, spatial_shapes=shapes)
    torch.testing.assert_close(layout(out), module_reference(module, query, query, ref_points, shapes),
                               atol=1e-10, rtol=0)


def test_module_mmcv_golden_output():
    """mmcv 2.2.0's module, torch.manual_seed(0) construction, eval, seeded inputs: its output."""
    torch.manual_seed(0)
    module = MultiScaleDeformableAttention(embed_dims=4, num_heads=2, num_levels=2, num_points=2, dropout=0.0).eval()
    # mmcv's grid init of the offsets' bias, bit for bit (float32 cos/sin of 2 pi h / heads)
    assert module.sampling_offsets.bias.tolist() == [
        1.0, 0.0, 2.0, 0.0, 1.0, 0.0, 2.0, 0.0, -1.0, -8.742277657347586e-08, -2.0, -1.7484555314695172e-07,
        -1.0, -8.742277657347586e-08, -2.0, -1.7484555314695172e-07]
    g = torch.Generator().manual_seed(5)
    query, value = torch.rand(3, 1, 4, generator=g), torch.rand(16, 1, 4, generator=g)
    ref_points = torch.rand(1, 3, 2, 2, generator=g)
    out = module(query, value=value, reference_points=ref_points, spatial_shapes=torch.tensor([[3, 4], [2, 2]]),
                 level_start_index=torch.tensor([0, 12]))
    expected = [0.768065869808197, 0.09510486572980881, 0.7481768727302551, 1.105271339416504, 0.9089562296867371,
                0.038012027740478516, -0.15722712874412537, 1.310652494430542, -0.5767920017242432,
                0.8440979719161987, 0.44258373975753784, 0.8532124757766724]
    torch.testing.assert_close(out.flatten(), torch.tensor(expected), atol=1e-6, rtol=1e-6)


def test_module_init_and_state_dict():
    module = MultiScaleDeformableAttention(embed_dims=16, num_heads=8, num_levels=2, num_points=2)
    assert list(module.state_dict()) == [
        "sampling_offsets.weight", "sampling_offsets.bias", "attention_weights.weight", "attention_weights.bias",
        "value_proj.weight", "value_proj.bias", "output_proj.weight", "output_proj.bias"]
    assert module.is_init and module.init_cfg is None and module.im2col_step == 64 and not module.batch_first
    assert module.sampling_offsets.weight.abs().max() == 0 and module.attention_weights.weight.abs().max() == 0
    assert module.attention_weights.bias.abs().max() == 0 and module.value_proj.bias.abs().max() == 0
    assert module.value_proj.weight.abs().max() <= (6 / 32) ** 0.5  # xavier uniform bound
    # head h points along angle 2 pi h / 8, scaled to the square's border, times point + 1
    directions = torch.tensor([[1, 0], [1, 1], [0, 1], [-1, 1], [-1, 0], [-1, -1], [0, -1], [1, -1]],
                              dtype=torch.float32)
    expected = directions[:, None, None, :] * torch.tensor([1.0, 2.0])[None, None, :, None]
    torch.testing.assert_close(module.sampling_offsets.bias.view(8, 2, 2, 2),
                               expected.expand(8, 2, 2, 2), atol=1e-5, rtol=0)
    ratio = MultiScaleDeformableAttention(embed_dims=16, num_heads=4, value_proj_ratio=0.5)
    assert ratio.value_proj.weight.shape == (8, 16) and ratio.output_proj.weight.shape == (16, 8)
    positional = MultiScaleDeformableAttention(32, 4, 2, 3, 16, 0.0, True)  # mmcv 1.x positional order
    assert (positional.num_points, positional.im2col_step, positional.batch_first) == (3, 16, True)
    assert repr(MultiScaleDeformableAttention(8, 2, init_cfg=dict(type="Xavier"))).endswith(
        "\ninit_cfg={'type': 'Xavier'}")


def test_module_warnings_and_errors():
    with pytest.warns(UserWarning, match="power of 2"):
        MultiScaleDeformableAttention(embed_dims=12, num_heads=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MultiScaleDeformableAttention(embed_dims=16, num_heads=4)
    module = MultiScaleDeformableAttention(embed_dims=8, num_heads=2, num_levels=1, num_points=1).eval()
    query = torch.rand(3, 1, 8)
    shapes = torch.tensor([[2, 2]])
    with pytest.raises(ValueError, match="Last dim of reference_points must be 2 or 4, but get 3"):
        module(query, value=torch.rand(4, 1, 8), reference_points=torch.rand(1, 3, 1, 3), spatial_shapes=shapes)
    with pytest.raises(ValueError, match="num_value"):
        module(query, value=torch.rand(5, 1, 8), reference_points=torch.rand(1, 3, 1, 2), spatial_shapes=shapes)
    identity = torch.rand(3, 1, 8)
    with pytest.warns(DeprecationWarning, match="residual"):
        out = module(query, value=torch.rand(4, 1, 8), residual=identity, reference_points=torch.rand(1, 3, 1, 2),
                     spatial_shapes=shapes)
    assert out.shape == (3, 1, 8)


# --- bad input -----------------------------------------------------------------------------------------


def test_bad_input():
    value, shapes, loc, attn = problem()
    fn = multi_scale_deformable_attn_pytorch
    with pytest.raises(ValueError, match="value must have 4 dimensions"):
        fn(value[0], shapes, loc, attn)
    with pytest.raises(TypeError, match="spatial_shapes must be an integer tensor"):
        fn(value, shapes.float(), loc, attn)
    with pytest.raises(ValueError, match="sampling_locations must have shape"):
        fn(value, shapes, loc[..., :1], attn)
    with pytest.raises(ValueError, match="attention_weights must have shape"):
        fn(value, shapes, loc, attn[..., :1])
    with pytest.raises(ValueError, match="sum to num_keys"):
        fn(value[:, :-1], shapes, loc, attn)
    with pytest.raises(TypeError, match="value must be a floating point tensor"):
        fn(value.long(), shapes, loc, attn)
    with pytest.raises(TypeError, match="sampling_locations must be a torch.Tensor"):
        fn(value, shapes, loc.tolist(), attn)
    with pytest.raises(ValueError, match="one device"):
        fn(value, shapes, loc.to("meta"), attn)
    apply = MultiScaleDeformableAttnFunction.apply
    with pytest.raises(ValueError, match="within num_keys"):
        apply(value, shapes, torch.tensor([0, 24, 31]), loc, attn, 64)
    with pytest.raises(ValueError, match="level_start_index must have shape"):
        apply(value, shapes, torch.tensor([0, 24]), loc, attn, 64)
    with pytest.raises(ValueError, match="im2col_step"):
        apply(value, shapes, starts(shapes), loc, attn, 0)
    with pytest.raises(TypeError, match="im2col_step"):
        apply(value, shapes, starts(shapes), loc, attn, 1.5)
    # any batch works, whatever im2col_step (mmcv's CUDA code needs it to divide the batch)
    torch.testing.assert_close(apply(value, shapes, starts(shapes), loc, attn, 3), fn(value, shapes, loc, attn))
