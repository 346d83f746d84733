"""Project-local compiled ops: the tool's table (rewrites/local_ops.py) against the runtime, and a
project wrapper rewritten by ``apply`` giving the runtime's numbers."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import pytest
import torch

from mmcv_migrate.rewrites.local_ops import LOCAL_EXT_PACKAGE, LOCAL_OPS
from mmcv_runtime.local_ext import deformable_aggregation_ext as ext
from mmcv_runtime.ops.deformable_aggregation import DeformableAggregationFunction, deformable_aggregation_function

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("op", LOCAL_OPS, ids=lambda op: op.extension)
def test_table_matches_the_runtime(op):
    adapter = importlib.import_module(op.runtime_extension)
    assert op.runtime_extension == f"{LOCAL_EXT_PACKAGE}.{op.extension}"
    assert sorted(adapter.__all__) == sorted(op.functions)
    assert all(callable(getattr(adapter, fn)) for fn in op.functions)
    module = importlib.import_module(op.runtime_module)
    assert all(hasattr(module, name) for name in op.wrapper_names)


def _inputs(dtype=torch.float64):
    """v3 layout: 2 cameras x 2 levels, C 8 in 2 groups, 3 anchors x 2 points; some points off-image."""
    g = torch.Generator().manual_seed(0)
    shapes = torch.tensor([[[4, 5], [2, 3]], [[4, 5], [2, 3]]], dtype=torch.int32)
    sizes = (shapes[..., 0] * shapes[..., 1]).flatten()
    start = (torch.cumsum(sizes, 0) - sizes).view(2, 2).int()
    feat = torch.randn(1, int(sizes.sum()), 8, generator=g, dtype=dtype)
    loc = torch.rand(1, 3, 2, 2, 2, generator=g, dtype=dtype) * 1.4 - 0.2
    weights = torch.rand(1, 3, 2, 2, 2, 2, generator=g, dtype=dtype)
    return feat, shapes, start, loc, weights


def test_forward_and_accumulating_backward():
    feat, shapes, start, loc, weights = _inputs()
    leaves = [t.clone().requires_grad_() for t in (feat, loc, weights)]
    expected = deformable_aggregation_function(leaves[0], shapes, start, leaves[1], leaves[2])
    torch.testing.assert_close(ext.deformable_aggregation_forward(feat, shapes, start, loc, weights), expected.detach())
    grad_out = torch.randn_like(expected)
    expected.backward(grad_out)
    outs = [torch.ones_like(t) for t in (feat, loc, weights)]  # the kernel adds into what it is given
    ext.deformable_aggregation_backward(feat, shapes, start, loc, weights, grad_out, *outs)
    for out, leaf in zip(outs, leaves):
        torch.testing.assert_close(out, leaf.grad + 1)


def test_rewritten_project_wrapper_gives_the_runtime_numbers():
    """fixtures/rewrites/local_op_wrapper.expected.py is the Sparse4D wrapper after ``apply``: its own
    autograd Function, now on the runtime's adapter, must agree with the runtime's Function."""
    path = ROOT / "fixtures" / "rewrites" / "local_op_wrapper.expected.py"
    spec = importlib.util.spec_from_file_location("migrated_wrapper", path)
    wrapper = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(wrapper)
    feat, shapes, start, loc, weights = _inputs(torch.float32)
    results = []
    for function in (wrapper.DeformableAggregationFunction, DeformableAggregationFunction):
        leaves = [t.clone().requires_grad_() for t in (feat, loc, weights)]
        out = function.apply(leaves[0], shapes, start, leaves[1], leaves[2])
        out.backward(torch.ones_like(out))
        results.append([out.detach()] + [leaf.grad for leaf in leaves])
    for mine, theirs in zip(*results):
        torch.testing.assert_close(mine, theirs)
