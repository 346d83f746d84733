"""``mmcv.ops.three_nn``: the 3 nearest ``source`` points of every ``target`` point (PointNet++).

As mmcv's CUDA kernel (csrc/common/cuda/three_nn_cuda_kernel.cuh) and wrapper:

* the squared distance ``(ux-x)*(ux-x) + (uy-y)*(uy-y) + (uz-z)*(uz-z)`` is computed in the input
  dtype, left to right (not ``cdist``, whose matmul form rounds differently);
* candidates are scanned in source order with STRICT ``<`` against three running bests that start
  at ``1e40``: ties keep the earlier source index first (a stable ascending order), NaN distances
  and distances not below ``1e40`` (inf in float32, huge in float64) are never chosen;
* a slot left unfilled (fewer than 3 usable sources) keeps index 0 and distance ``1e40`` rounded to
  the dtype (``inf`` for float32/half, ``1e40`` for float64);
* the wrapper returns ``sqrt(dist2)`` (the L2 distance, not squared) and int32 indices, neither
  differentiable.

Work is chunked over targets so that a (B, chunk, M) block stays near ``_BLOCK`` elements.
"""

from __future__ import annotations

from typing import Any, Tuple

import torch
from torch import Tensor
from torch.autograd import Function

from .. import registry
from ._checks import check_same_device

__all__ = ["ThreeNN", "three_nn"]

_BLOCK = 1 << 22
_NONE = 1e40


def check_points(op: str, name: str, points: Tensor, batch: int = -1) -> None:
    if not isinstance(points, Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(points).__name__}")
    if points.dim() != 3 or points.size(2) != 3 or (batch >= 0 and points.size(0) != batch):
        want = "(B, N, 3)" if batch < 0 else f"({batch}, M, 3)"
        raise ValueError(f"{op}: {name} must have shape {want}, got {tuple(points.shape)}")
    if not points.is_floating_point():
        raise TypeError(f"{op}: {name} must be a floating point tensor, got {points.dtype}")


def squared_distances(query: Tensor, points: Tensor) -> Tensor:
    """(B, n, 3), (B, m, 3) -> (B, n, m) in the kernels' float order."""
    q = query.unsqueeze(2)
    p = points.unsqueeze(1)
    dx, dy, dz = q[..., 0] - p[..., 0], q[..., 1] - p[..., 1], q[..., 2] - p[..., 2]
    return dx * dx + dy * dy + dz * dz


def three_nn_squared(target: Tensor, source: Tensor) -> Tuple[Tensor, Tensor]:
    """(B, N, 3) targets, (B, M, 3) sources -> (dist2 (B, N, 3) in the dtype, idx (B, N, 3) int32)."""
    b, n, _ = target.shape
    m = source.size(1)
    dist2 = target.new_empty(b, n, 3)
    idx = torch.zeros(b, n, 3, dtype=torch.int32, device=target.device)
    source = source.to(target.dtype)
    chunk = max(1, _BLOCK // max(1, b * m))
    for start in range(0, n, chunk):
        d = squared_distances(target[:, start:start + chunk], source)
        if m == 0:
            d = d.new_empty(*d.shape[:2], 1).fill_(float("inf"))
        # Usable candidates are those the kernel's ``d < 1e40`` accepts (also drops NaN).
        if d.dtype == torch.float64:
            d = torch.where(d < _NONE, d, d.new_tensor(float("inf")))
        else:  # 1e40 is beyond the dtype's range: only NaN (and inf itself) fail ``d < 1e40``
            d = d.nan_to_num_(nan=float("inf"), posinf=float("inf"))
        for slot in range(3):
            best, at = d.min(dim=2)  # first occurrence: earlier source wins a tie, like strict ``<``
            found = best < float("inf")
            dist2[:, start:start + chunk, slot] = torch.where(found, best, best.new_tensor(_NONE))
            idx[:, start:start + chunk, slot] = torch.where(found, at, torch.zeros_like(at)).int()
            d.scatter_(2, at.unsqueeze(2), float("inf"))
    return dist2, idx


class ThreeNN(Function):
    """Find the top-3 nearest neighbors of the target set from the source set."""

    @staticmethod
    def forward(ctx: Any, target: Tensor, source: Tensor) -> Tuple[Tensor, Tensor]:
        check_points("three_nn", "target", target)
        check_points("three_nn", "source", source, target.size(0))
        check_same_device("three_nn", target=target, source=source)
        dist2, idx = three_nn_squared(target.detach().contiguous(), source.detach().contiguous())
        ctx.mark_non_differentiable(idx)
        return torch.sqrt(dist2), idx

    @staticmethod
    def backward(ctx, a=None, b=None) -> Tuple[None, None]:
        return None, None


three_nn = ThreeNN.apply

registry.register(registry.OpEntry(
    op="three_nn",
    names=("ThreeNN", "three_nn"),
    ext_functions=("three_nn_forward",),
    backward="n/a",
    devices=("any",),
))
