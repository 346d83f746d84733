"""``mmcv.ops.furthest_point_sample``: iterative furthest point sampling (PointNet++).

Semantics of mmcv's CUDA kernel (csrc/common/cuda/furthest_point_sample_cuda_kernel.cuh), which
mmcv has for CUDA only:

* the first sample is always index 0; ``temp`` (the running min squared distance of every point
  to the chosen set) starts at ``1e10`` and is updated with ``fminf`` in float32, so a NaN
  distance never replaces it;
* the xyz variant's distance is ``dx*dx + dy*dy + dz*dz`` in float32, left to right; the
  ``with_dist`` variant reads row ``old`` of the (B, N, N) matrix;
* the arg-max is a block reduction with ``block_size = clamp(2**floor(log2 N), 1, 1024)``
  threads: thread ``t`` scans ``k = t, t + block_size, ...`` keeping the FIRST strict maximum
  (starting from ``best = -1, besti = 0``), then a tree reduction keeps the lower slot on ties.
  The tree halves the slots from the top, so on a tie the thread whose id has the smaller
  BIT-REVERSED value wins (e.g. thread 2 beats thread 1), not the smallest index. The runtime
  reorders the points once by that priority so a first-occurrence ``max`` reproduces it;
* a maximum that is not above ``-1`` (only possible with a ``with_dist`` matrix holding values
  <= -1) yields index 0, as every thread then reports ``besti = 0``.

Inputs of any floating dtype are computed in float32 (the kernel reads ``float``). Outputs are
int32 (B, num_points). Nothing is differentiable. The loop over samples is sequential by nature;
each step is a handful of (B, N) vector ops.
"""

from __future__ import annotations

import math
from typing import Tuple

import torch
from torch import Tensor
from torch.autograd import Function

from .. import registry
from ._checks import to_tensor

__all__ = ["FurthestPointSampling", "FurthestPointSamplingWithDist", "furthest_point_sample",
           "furthest_point_sample_with_dist"]

_INIT = 1e10


def block_size(n: int) -> int:
    """Threads per block of mmcv's launcher (``opt_n_threads``)."""
    if n <= 0:
        return 1
    return max(min(1 << int(math.log(float(n)) / math.log(2.0)), 1024), 1)


def priority_order(n: int, device: torch.device) -> Tensor:
    """(N,) point indices sorted by the kernel's tie priority (first = wins ties)."""
    bs = block_size(n)
    bits = bs.bit_length() - 1
    k = torch.arange(n, device=device)
    tid = k % bs
    rev = torch.zeros_like(tid)
    for bit in range(bits):
        rev |= ((tid >> bit) & 1) << (bits - 1 - bit)
    # Within a thread the earlier point (smaller k // bs) wins: strict ``>`` in the scan.
    return torch.argsort(rev * (n // bs + 1) + k // bs)


def _check(op: str, name: str, value, last: int = 3) -> Tensor:
    tensor, _ = to_tensor(op, name, value)
    if tensor.dim() != 3 or (last == 3 and tensor.size(2) != 3):
        want = "(B, N, 3)" if last == 3 else "(B, N, N)"
        raise ValueError(f"{op}: {name} must have shape {want}, got {tuple(tensor.shape)}")
    if last != 3 and tensor.size(1) != tensor.size(2):
        raise ValueError(f"{op}: {name} must have shape (B, N, N), got {tuple(tensor.shape)}")
    if not tensor.is_floating_point():
        raise TypeError(f"{op}: {name} must be a floating point tensor, got {tensor.dtype}")
    return tensor


def _sample(num_points: int, n: int, b: int, device: torch.device, distance_row, temp: Tensor) -> Tensor:
    """Shared FPS loop. ``distance_row(old_perm) -> (B, N)`` float32 in priority order.

    ``temp`` is (B, N) float32 in priority order, updated in place. Returns (B, num_points) int32.
    """
    out = torch.zeros(b, max(num_points, 0), dtype=torch.int32, device=device)
    if num_points <= 0 or b == 0 or n == 0:
        return out
    perm = priority_order(n, device)
    # Priority position of index 0: the first sample, and the kernel's answer when no slot beats -1.
    zero_pos = torch.argsort(perm)[0].expand(b)
    old_perm = zero_pos
    chosen = [old_perm]
    for _ in range(1, num_points):
        torch.fmin(temp, distance_row(old_perm), out=temp)
        best, pos = temp.max(dim=1)  # first occurrence in priority order = the kernel's tie winner
        old_perm = torch.where(best > -1.0, pos, zero_pos)
        chosen.append(old_perm)
    out.copy_(perm[torch.stack(chosen, dim=1)])
    return out


def fps_indices(points_xyz: Tensor, num_points: int, temp: Tensor = None) -> Tensor:
    """(B, num_points) int32 FPS indices of (B, N, 3) points; fills ``temp`` (B, N) if given."""
    b, n = points_xyz.shape[:2]
    perm = priority_order(n, points_xyz.device)
    pts = points_xyz.to(torch.float32)[:, perm]
    x, y, z = pts.permute(2, 0, 1).contiguous().unbind(0)  # contiguous (B, N) planes: 10x faster ops
    rows = torch.arange(b, device=points_xyz.device)

    def distance_row(old_perm: Tensor) -> Tensor:
        q = pts[rows, old_perm]  # (B, 3)
        dx, dy, dz = x - q[:, 0:1], y - q[:, 1:2], z - q[:, 2:3]
        return dx * dx + dy * dy + dz * dz

    work = torch.full((b, n), _INIT, dtype=torch.float32, device=points_xyz.device)
    out = _sample(int(num_points), n, b, points_xyz.device, distance_row, work)
    if temp is not None:
        temp.copy_(work[:, torch.argsort(perm)].to(temp.dtype))
    return out


def fps_with_dist_indices(points_dist: Tensor, num_points: int, temp: Tensor = None) -> Tensor:
    """(B, num_points) int32 FPS indices from a (B, N, N) distance matrix; fills ``temp`` if given."""
    b, n = points_dist.shape[:2]
    perm = priority_order(n, points_dist.device)
    inverse = torch.argsort(perm)
    rows = torch.arange(b, device=points_dist.device)

    def distance_row(old_perm: Tensor) -> Tensor:
        return points_dist[rows, perm[old_perm]][:, perm].to(torch.float32)

    work = torch.full((b, n), _INIT, dtype=torch.float32, device=points_dist.device)
    out = _sample(int(num_points), n, b, points_dist.device, distance_row, work)
    if temp is not None:
        temp.copy_(work[:, inverse].to(temp.dtype))
    return out


class FurthestPointSampling(Function):
    """Iterative furthest point sampling of (B, N, 3) points -> (B, num_points) int32 indices."""

    @staticmethod
    def forward(ctx, points_xyz: Tensor, num_points: int) -> Tensor:
        points_xyz = _check("furthest_point_sample", "points_xyz", points_xyz)
        output = fps_indices(points_xyz.detach(), num_points)
        ctx.mark_non_differentiable(output)
        return output

    @staticmethod
    def backward(xyz, a=None) -> Tuple[None, None]:
        return None, None


class FurthestPointSamplingWithDist(Function):
    """Furthest point sampling from a (B, N, N) distance matrix -> (B, num_points) int32 indices."""

    @staticmethod
    def forward(ctx, points_dist: Tensor, num_points: int) -> Tensor:
        points_dist = _check("furthest_point_sample_with_dist", "points_dist", points_dist, last=-1)
        output = fps_with_dist_indices(points_dist.detach(), num_points)
        ctx.mark_non_differentiable(output)
        return output

    @staticmethod
    def backward(xyz, a=None) -> Tuple[None, None]:
        return None, None


furthest_point_sample = FurthestPointSampling.apply
furthest_point_sample_with_dist = FurthestPointSamplingWithDist.apply

registry.register(registry.OpEntry(
    op="furthest_point_sample",
    names=("FurthestPointSampling", "FurthestPointSamplingWithDist", "furthest_point_sample",
           "furthest_point_sample_with_dist"),
    ext_functions=("furthest_point_sampling_forward", "furthest_point_sampling_with_dist_forward"),
    backward="n/a",
    devices=("any",),
))
