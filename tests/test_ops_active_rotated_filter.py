"""active_rotated_filter: mmcv's own test values, golden parity with mmcv 2.2.0's CPU kernels,
gradcheck, the overwrite (not accumulate) backward, collisions, bad input, the _ext adapters."""

import importlib
from pathlib import Path

import pytest
import torch

arf = importlib.import_module("mmcv_runtime.ops.active_rotated_filter")
ext = importlib.import_module("mmcv_runtime.ext._active_rotated_filter")
registry = importlib.import_module("mmcv_runtime.registry")

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "golden" / "rotated_ops.pt"

# tests/test_ops/test_active_rotated_filter.py of mmcv
MMCV_NP_FEATURE = [[[[[-0.14934, 1.1341, -0.16241], [-1.0986, -1.1463, -1.3176], [1.4808, 0.76572, -1.4548]]]],
                   [[[[1.937, 0.62799, 0.025834], [-1.4242, 0.76566, 1.0015], [0.98669, 0.41356, 0.61068]]]],
                   [[[[1.4565, 1.496, 0.24339], [-0.22484, 0.75942, -0.81184], [-1.7077, 1.0658, 0.38311]]]],
                   [[[[0.84734, 1.0904, 2.4356], [0.95822, 0.2226, -0.2445], [-1.5078, 0.070902, -1.5921]]]],
                   [[[[2.1173, -0.73524, 1.8888], [1.0169, 0.47033, -1.0875], [-1.0736, -0.52245, -0.28733]]]],
                   [[[[-0.56433, 1.5835, -1.5826], [-0.88974, -0.43128, -0.22423], [0.0016552, -1.7292, 0.26639]]]],
                   [[[[-0.12951, 1.3493, -1.9329], [0.56248, -0.51189, 1.3614], [0.3368, -0.87148, 0.50592]]]],
                   [[[[0.016781, -0.83929, 1.206], [-1.0764, 0.47821, 1.5342], [-0.44542, -1.8606, 0.30827]]]]]

MMCV_NP_INDICES = [[[[1, 2, 3, 6, 9, 8, 7, 4], [2, 3, 6, 9, 8, 7, 4, 1], [3, 6, 9, 8, 7, 4, 1, 2]],
                    [[4, 1, 2, 3, 6, 9, 8, 7], [5, 5, 5, 5, 5, 5, 5, 5], [6, 9, 8, 7, 4, 1, 2, 3]],
                    [[7, 4, 1, 2, 3, 6, 9, 8], [8, 7, 4, 1, 2, 3, 6, 9], [9, 8, 7, 4, 1, 2, 3, 6]]]]

MMCV_EXPECTED_OUTPUT = [[[[-0.14934, 1.1341, -0.16241], [-1.0986, -1.1463, -1.3176], [1.4808, 0.76572, -1.4548]]],
                        [[[-1.0986, -0.14934, 1.1341], [1.4808, -1.1463, -0.16241], [0.76572, -1.4548, -1.3176]]],
                        [[[1.4808, -1.0986, -0.14934], [0.76572, -1.1463, 1.1341], [-1.4548, -1.3176, -0.16241]]],
                        [[[0.76572, 1.4808, -1.0986], [-1.4548, -1.1463, -0.14934], [-1.3176, -0.16241, 1.1341]]],
                        [[[-1.4548, 0.76572, 1.4808], [-1.3176, -1.1463, -1.0986], [-0.16241, 1.1341, -0.14934]]],
                        [[[-1.3176, -1.4548, 0.76572], [-0.16241, -1.1463, 1.4808], [1.1341, -0.14934, -1.0986]]],
                        [[[-0.16241, -1.3176, -1.4548], [1.1341, -1.1463, 0.76572], [-0.14934, -1.0986, 1.4808]]],
                        [[[1.1341, -0.16241, -1.3176], [-0.14934, -1.1463, -1.4548], [-1.0986, 1.4808, 0.76572]]],
                        [[[1.937, 0.62799, 0.025834], [-1.4242, 0.76566, 1.0015], [0.98669, 0.41356, 0.61068]]],
                        [[[-1.4242, 1.937, 0.62799], [0.98669, 0.76566, 0.025834], [0.41356, 0.61068, 1.0015]]],
                        [[[0.98669, -1.4242, 1.937], [0.41356, 0.76566, 0.62799], [0.61068, 1.0015, 0.025834]]],
                        [[[0.41356, 0.98669, -1.4242], [0.61068, 0.76566, 1.937], [1.0015, 0.025834, 0.62799]]],
                        [[[0.61068, 0.41356, 0.98669], [1.0015, 0.76566, -1.4242], [0.025834, 0.62799, 1.937]]],
                        [[[1.0015, 0.61068, 0.41356], [0.025834, 0.76566, 0.98669], [0.62799, 1.937, -1.4242]]],
                        [[[0.025834, 1.0015, 0.61068], [0.62799, 0.76566, 0.41356], [1.937, -1.4242, 0.98669]]],
                        [[[0.62799, 0.025834, 1.0015], [1.937, 0.76566, 0.61068], [-1.4242, 0.98669, 0.41356]]],
                        [[[1.4565, 1.496, 0.24339], [-0.22484, 0.75942, -0.81184], [-1.7077, 1.0658, 0.38311]]],
                        [[[-0.22484, 1.4565, 1.496], [-1.7077, 0.75942, 0.24339], [1.0658, 0.38311, -0.81184]]],
                        [[[-1.7077, -0.22484, 1.4565], [1.0658, 0.75942, 1.496], [0.38311, -0.81184, 0.24339]]],
                        [[[1.0658, -1.7077, -0.22484], [0.38311, 0.75942, 1.4565], [-0.81184, 0.24339, 1.496]]],
                        [[[0.38311, 1.0658, -1.7077], [-0.81184, 0.75942, -0.22484], [0.24339, 1.496, 1.4565]]],
                        [[[-0.81184, 0.38311, 1.0658], [0.24339, 0.75942, -1.7077], [1.496, 1.4565, -0.22484]]],
                        [[[0.24339, -0.81184, 0.38311], [1.496, 0.75942, 1.0658], [1.4565, -0.22484, -1.7077]]],
                        [[[1.496, 0.24339, -0.81184], [1.4565, 0.75942, 0.38311], [-0.22484, -1.7077, 1.0658]]],
                        [[[0.84734, 1.0904, 2.4356], [0.95822, 0.2226, -0.2445], [-1.5078, 0.070902, -1.5921]]],
                        [[[0.95822, 0.84734, 1.0904], [-1.5078, 0.2226, 2.4356], [0.070902, -1.5921, -0.2445]]],
                        [[[-1.5078, 0.95822, 0.84734], [0.070902, 0.2226, 1.0904], [-1.5921, -0.2445, 2.4356]]],
                        [[[0.070902, -1.5078, 0.95822], [-1.5921, 0.2226, 0.84734], [-0.2445, 2.4356, 1.0904]]],
                        [[[-1.5921, 0.070902, -1.5078], [-0.2445, 0.2226, 0.95822], [2.4356, 1.0904, 0.84734]]],
                        [[[-0.2445, -1.5921, 0.070902], [2.4356, 0.2226, -1.5078], [1.0904, 0.84734, 0.95822]]],
                        [[[2.4356, -0.2445, -1.5921], [1.0904, 0.2226, 0.070902], [0.84734, 0.95822, -1.5078]]],
                        [[[1.0904, 2.4356, -0.2445], [0.84734, 0.2226, -1.5921], [0.95822, -1.5078, 0.070902]]],
                        [[[2.1173, -0.73524, 1.8888], [1.0169, 0.47033, -1.0875], [-1.0736, -0.52245, -0.28733]]],
                        [[[1.0169, 2.1173, -0.73524], [-1.0736, 0.47033, 1.8888], [-0.52245, -0.28733, -1.0875]]],
                        [[[-1.0736, 1.0169, 2.1173], [-0.52245, 0.47033, -0.73524], [-0.28733, -1.0875, 1.8888]]],
                        [[[-0.52245, -1.0736, 1.0169], [-0.28733, 0.47033, 2.1173], [-1.0875, 1.8888, -0.73524]]],
                        [[[-0.28733, -0.52245, -1.0736], [-1.0875, 0.47033, 1.0169], [1.8888, -0.73524, 2.1173]]],
                        [[[-1.0875, -0.28733, -0.52245], [1.8888, 0.47033, -1.0736], [-0.73524, 2.1173, 1.0169]]],
                        [[[1.8888, -1.0875, -0.28733], [-0.73524, 0.47033, -0.52245], [2.1173, 1.0169, -1.0736]]],
                        [[[-0.73524, 1.8888, -1.0875], [2.1173, 0.47033, -0.28733], [1.0169, -1.0736, -0.52245]]],
                        [[[-0.56433, 1.5835, -1.5826], [-0.88974, -0.43128, -0.22423], [0.0016552, -1.7292, 0.26639]]],
                        [[[-0.88974, -0.56433, 1.5835], [0.0016552, -0.43128, -1.5826], [-1.7292, 0.26639, -0.22423]]],
                        [[[0.0016552, -0.88974, -0.56433], [-1.7292, -0.43128, 1.5835], [0.26639, -0.22423, -1.5826]]],
                        [[[-1.7292, 0.0016552, -0.88974], [0.26639, -0.43128, -0.56433], [-0.22423, -1.5826, 1.5835]]],
                        [[[0.26639, -1.7292, 0.0016552], [-0.22423, -0.43128, -0.88974], [-1.5826, 1.5835, -0.56433]]],
                        [[[-0.22423, 0.26639, -1.7292], [-1.5826, -0.43128, 0.0016552], [1.5835, -0.56433, -0.88974]]],
                        [[[-1.5826, -0.22423, 0.26639], [1.5835, -0.43128, -1.7292], [-0.56433, -0.88974, 0.0016552]]],
                        [[[1.5835, -1.5826, -0.22423], [-0.56433, -0.43128, 0.26639], [-0.88974, 0.0016552, -1.7292]]],
                        [[[-0.12951, 1.3493, -1.9329], [0.56248, -0.51189, 1.3614], [0.3368, -0.87148, 0.50592]]],
                        [[[0.56248, -0.12951, 1.3493], [0.3368, -0.51189, -1.9329], [-0.87148, 0.50592, 1.3614]]],
                        [[[0.3368, 0.56248, -0.12951], [-0.87148, -0.51189, 1.3493], [0.50592, 1.3614, -1.9329]]],
                        [[[-0.87148, 0.3368, 0.56248], [0.50592, -0.51189, -0.12951], [1.3614, -1.9329, 1.3493]]],
                        [[[0.50592, -0.87148, 0.3368], [1.3614, -0.51189, 0.56248], [-1.9329, 1.3493, -0.12951]]],
                        [[[1.3614, 0.50592, -0.87148], [-1.9329, -0.51189, 0.3368], [1.3493, -0.12951, 0.56248]]],
                        [[[-1.9329, 1.3614, 0.50592], [1.3493, -0.51189, -0.87148], [-0.12951, 0.56248, 0.3368]]],
                        [[[1.3493, -1.9329, 1.3614], [-0.12951, -0.51189, 0.50592], [0.56248, 0.3368, -0.87148]]],
                        [[[0.016781, -0.83929, 1.206], [-1.0764, 0.47821, 1.5342], [-0.44542, -1.8606, 0.30827]]],
                        [[[-1.0764, 0.016781, -0.83929], [-0.44542, 0.47821, 1.206], [-1.8606, 0.30827, 1.5342]]],
                        [[[-0.44542, -1.0764, 0.016781], [-1.8606, 0.47821, -0.83929], [0.30827, 1.5342, 1.206]]],
                        [[[-1.8606, -0.44542, -1.0764], [0.30827, 0.47821, 0.016781], [1.5342, 1.206, -0.83929]]],
                        [[[0.30827, -1.8606, -0.44542], [1.5342, 0.47821, -1.0764], [1.206, -0.83929, 0.016781]]],
                        [[[1.5342, 0.30827, -1.8606], [1.206, 0.47821, -0.44542], [-0.83929, 0.016781, -1.0764]]],
                        [[[1.206, 1.5342, 0.30827], [-0.83929, 0.47821, -1.8606], [0.016781, -1.0764, -0.44542]]],
                        [[[-0.83929, 1.206, 1.5342], [0.016781, 0.47821, 0.30827], [-1.0764, -0.44542, -1.8606]]]]

MMCV_EXPECTED_GRAD = [[[[[8.0, 8.0, 8.0], [8.0, 8.0, 8.0], [8.0, 8.0, 8.0]]]],
                      [[[[8.0, 8.0, 8.0], [8.0, 8.0, 8.0], [8.0, 8.0, 8.0]]]],
                      [[[[8.0, 8.0, 8.0], [8.0, 8.0, 8.0], [8.0, 8.0, 8.0]]]],
                      [[[[8.0, 8.0, 8.0], [8.0, 8.0, 8.0], [8.0, 8.0, 8.0]]]],
                      [[[[8.0, 8.0, 8.0], [8.0, 8.0, 8.0], [8.0, 8.0, 8.0]]]],
                      [[[[8.0, 8.0, 8.0], [8.0, 8.0, 8.0], [8.0, 8.0, 8.0]]]],
                      [[[[8.0, 8.0, 8.0], [8.0, 8.0, 8.0], [8.0, 8.0, 8.0]]]],
                      [[[[8.0, 8.0, 8.0], [8.0, 8.0, 8.0], [8.0, 8.0, 8.0]]]]]


def golden():
    return torch.load(GOLDEN, weights_only=True)


def test_mmcv_values():
    feature = torch.tensor(MMCV_NP_FEATURE, dtype=torch.float, requires_grad=True)
    indices = torch.tensor(MMCV_NP_INDICES, dtype=torch.int)
    output = arf.active_rotated_filter(feature, indices)
    output.backward(torch.ones_like(output))
    torch.testing.assert_close(output, torch.tensor(MMCV_EXPECTED_OUTPUT), atol=1e-3, rtol=0)
    torch.testing.assert_close(feature.grad, torch.tensor(MMCV_EXPECTED_GRAD), atol=1e-3, rtol=0)


@pytest.mark.parametrize("case", range(3))
def test_golden(case):
    c = golden()["active_rotated_filter"][case]
    x = c["input"].clone().requires_grad_()
    out = arf.active_rotated_filter(x, c["indices"])
    out.backward(c["grad_output"])
    assert out.dtype == c["output"].dtype
    torch.testing.assert_close(out, c["output"], atol=0, rtol=0)
    torch.testing.assert_close(x.grad, c["grad_input"], atol=1e-5, rtol=1e-6)


def test_golden_collisions_through_ext():
    """Colliding indices: the last entry wins, unnamed positions keep the caller's zeros, and the
    backward overwrites grad_in (the oracle was given 7s)."""
    c = golden()["active_rotated_filter_collision"]
    output = torch.zeros(6, 4, 1, 1)
    ext.active_rotated_filter_forward(c["input"], c["indices"], output)
    torch.testing.assert_close(output, c["output"], atol=0, rtol=0)
    grad_in = torch.full_like(c["input"], 7.0)
    ext.active_rotated_filter_backward(c["grad_output"], c["indices"], grad_in)
    torch.testing.assert_close(grad_in, c["grad_input"], atol=1e-6, rtol=0)


def test_ext_forward_keeps_unnamed_positions():
    weight = torch.randn(1, 1, 2, 1, 1)
    indices = torch.tensor([[[[1]]], [[[1]]]], dtype=torch.int32)  # position 2 is never written
    output = torch.full((1, 2, 1, 1), 5.0)
    ext.active_rotated_filter_forward(weight, indices, output)
    assert output[0, 0, 0, 0] == weight[0, 0, 1, 0, 0] and output[0, 1, 0, 0] == 5.0
    assert arf.active_rotated_filter(weight, indices)[0, 1, 0, 0] == 0.0


def rotation_indices(orientations, k, rotations):
    """A per-rotation permutation: orientation channels cycled, kernel positions unchanged."""
    o = torch.arange(orientations).view(-1, 1, 1, 1)
    pos = torch.arange(k * k).view(1, k, k, 1)
    r = torch.arange(rotations).view(1, 1, 1, -1)
    return (((o + r) % orientations) * k * k + pos + 1).int()


def test_ext_matches_functional():
    weight = torch.randn(3, 2, 4, 3, 3, dtype=torch.float64)
    indices = rotation_indices(4, 3, 4)
    out = torch.zeros(12, 8, 3, 3, dtype=torch.float64)
    ext.active_rotated_filter_forward(weight, indices, out)
    torch.testing.assert_close(out, arf.active_rotated_filter(weight, indices), atol=0, rtol=0)
    grad = torch.randn_like(out)
    grad_in = torch.full_like(weight, 3.0)
    ext.active_rotated_filter_backward(grad, indices, grad_in)
    torch.testing.assert_close(grad_in, arf.active_rotated_filter_backward(grad, indices), atol=0, rtol=0)


@pytest.mark.parametrize("shape", [(2, 3, 4, 3, 3, 4), (1, 2, 8, 1, 1, 8), (2, 1, 2, 3, 3, 1)])
def test_gradcheck(shape):
    op, ip, o, k, _, r = shape
    x = torch.randn(op, ip, o, k, k, dtype=torch.float64, requires_grad=True)
    indices = rotation_indices(o, k, r)
    assert torch.autograd.gradcheck(lambda t: arf.active_rotated_filter(t, indices), (x,))


def test_index_dtypes_and_half():
    weight = torch.randn(2, 2, 4, 3, 3)
    ref = arf.active_rotated_filter(weight, rotation_indices(4, 3, 4))
    for dtype in (torch.int64, torch.uint8, torch.int16):
        torch.testing.assert_close(arf.active_rotated_filter(weight, rotation_indices(4, 3, 4).to(dtype)), ref)
    half = arf.active_rotated_filter(weight.half(), rotation_indices(4, 3, 4))
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), ref, atol=1e-3, rtol=1e-3)


def test_non_finite_weights_do_not_leak():
    weight = torch.randn(1, 1, 2, 1, 1)
    weight[0, 0, 1] = float("inf")
    indices = torch.tensor([[[[1]]], [[[1]]]], dtype=torch.int32)
    out = arf.active_rotated_filter(weight, indices)
    assert out[0, 0].isinf().all() and out[0, 1].eq(0).all()


def test_empty_planes():
    out = arf.active_rotated_filter(torch.randn(0, 2, 4, 3, 3), rotation_indices(4, 3, 4))
    assert out.shape == (0, 8, 3, 3)


@pytest.mark.parametrize("weight, indices, error, text", [
    (torch.randn(2, 4, 3, 3), rotation_indices(4, 3, 4), ValueError, "input"),
    (torch.randint(0, 3, (2, 2, 4, 3, 3)), rotation_indices(4, 3, 4), TypeError, "input"),
    (torch.randn(2, 2, 4, 3, 3), rotation_indices(4, 3, 4).float(), TypeError, "indices"),
    (torch.randn(2, 2, 4, 3, 3), rotation_indices(4, 1, 4), ValueError, "indices"),
    (torch.randn(2, 2, 4, 3, 3), rotation_indices(4, 3, 4) + 36, ValueError, "indices"),
    (torch.randn(2, 2, 4, 3, 3), rotation_indices(4, 3, 4) - 1, ValueError, "indices"),
    (torch.randn(2, 2, 4, 3, 3), [1, 2], TypeError, "indices"),
])
def test_bad_input(weight, indices, error, text):
    with pytest.raises(error, match=f"active_rotated_filter: {text}"):
        arf.active_rotated_filter(weight, indices)


def test_bad_grad_out():
    with pytest.raises(ValueError, match="active_rotated_filter: grad_out"):
        arf.active_rotated_filter_backward(torch.randn(5, 8, 3, 3), rotation_indices(4, 3, 4))


def test_names_and_registry():
    assert arf.ActiveRotatedFilterFunction.__name__ == "ActiveRotatedFilterFunction"
    assert arf.active_rotated_filter == arf.ActiveRotatedFilterFunction.apply
    assert set(ext.__all__) == {"active_rotated_filter_forward", "active_rotated_filter_backward"}
    entry = registry.entries()["active_rotated_filter"]
    assert entry.backward == "yes" and entry.devices == ("any",)
    assert set(entry.names) == {"ActiveRotatedFilterFunction", "active_rotated_filter"}
    assert set(entry.ext_functions) == set(ext.__all__)
