"""``mmcv.ops.knn``: indices of the k nearest ``xyz`` points of every centre (heap kernel of PAConv).

As mmcv's CUDA kernel (csrc/common/cuda/knn_cuda_kernel.cuh) and wrapper:

* squared distances ``(nx-x)*(nx-x) + (ny-y)*(ny-y) + (nz-z)*(nz-z)`` in the input dtype, left to
  right; a max-heap of ``k`` slots starts at distance ``1e10``, index 0, and point ``i`` (in order)
  replaces the root only when STRICTLY below it (so NaN and distances >= 1e10 are never taken and
  their slots stay index 0), then the heap is heap-sorted ascending;
* with distinct distances that is the ascending k smallest; on TIES the heap layout decides which
  tied point survives and in which order (the sift swaps on ``root <= child``). Queries whose
  k+1 smallest distances hold a tie are therefore replayed by an exact, vectorised (over queries)
  simulation of the heap; the others take the fast ``topk`` path;
* returns int32 indices of shape (B, k, npoint) (the wrapper's transpose, made contiguous); not
  differentiable; ``0 < k < 100`` is asserted as in mmcv; ``transposed`` inputs are (B, 3, N).

mmcv's wrapper only runs float32 (its float32 ``dist2`` buffer rejects other dispatch types); the
runtime accepts any floating dtype and computes in it. Work is chunked over centres.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor
from torch.autograd import Function

from .. import registry
from ._checks import check_same_device

__all__ = ["KNN", "knn"]

_BLOCK = 1 << 22
_INIT = 1e10
_SCAN = 256  # points examined per synchronisation in the exact heap replay


def squared_distances(query: Tensor, points: Tensor) -> Tensor:
    """(B, m, 3), (B, n, 3) -> (B, m, n) in the kernel's float order."""
    q = query.unsqueeze(2)
    p = points.unsqueeze(1)
    dx, dy, dz = q[..., 0] - p[..., 0], q[..., 1] - p[..., 1], q[..., 2] - p[..., 2]
    return dx * dx + dy * dy + dz * dz


def _sift_down(dist: Tensor, idx: Tensor, active: Tensor, size: int) -> None:
    """The kernel's ``reheap`` from the root, for the rows in ``active``, heap of ``size`` slots."""
    root = torch.zeros(dist.size(0), 1, dtype=torch.long, device=dist.device)
    while True:
        child = 2 * root + 1
        active = active & (child.squeeze(1) < size)
        if size <= 1 or not bool(active.any()):
            return
        c1 = child.clamp(max=size - 1)
        c2 = (child + 1).clamp(max=size - 1)
        d1, d2 = dist.gather(1, c1), dist.gather(1, c2)
        right = (child + 1 < size) & (d2 > d1)
        ch, dch = torch.where(right, c2, c1), torch.where(right, d2, d1)
        droot = dist.gather(1, root)
        swap = active.unsqueeze(1) & ~(droot > dch)  # the kernel returns only on ``root > child``
        iroot, ich = idx.gather(1, root), idx.gather(1, ch)
        dist.scatter_(1, root, torch.where(swap, dch, droot))
        dist.scatter_(1, ch, torch.where(swap, droot, dch))
        idx.scatter_(1, root, torch.where(swap, ich, iroot))
        idx.scatter_(1, ch, torch.where(swap, iroot, ich))
        active = swap.squeeze(1)
        root = torch.where(swap, ch, root)


def heap_replay(d: Tensor, k: int) -> Tuple[Tensor, Tensor]:
    """Exact heap kernel on (Q, n) distances -> (idx (Q, k) long, dist (Q, k)), ascending."""
    q, n = d.shape
    dist = d.new_full((q, k), _INIT)
    idx = torch.zeros(q, k, dtype=torch.long, device=d.device)
    for start in range(0, n, _SCAN):
        block = d[:, start:start + _SCAN]
        # The root only decreases, so points not below the current root cannot enter: skip them.
        cols = torch.nonzero((block < dist[:, :1]).any(0)).flatten().tolist()
        for col in cols:
            value = block[:, col]
            take = value < dist[:, 0]
            dist[:, 0] = torch.where(take, value, dist[:, 0])
            idx[:, 0] = torch.where(take, torch.full_like(idx[:, 0], start + col), idx[:, 0])
            _sift_down(dist, idx, take, k)
    every = torch.ones(q, dtype=torch.bool, device=d.device)
    for last in range(k - 1, 0, -1):
        dist[:, [0, last]] = dist[:, [last, 0]]
        idx[:, [0, last]] = idx[:, [last, 0]]
        _sift_down(dist, idx, every, last)
    return idx, dist


def knn_indices(xyz: Tensor, center: Tensor, k: int) -> Tuple[Tensor, Tensor]:
    """(B, N, 3) points, (B, npoint, 3) centres -> (idx (B, npoint, k) int32, dist2 (B, npoint, k))."""
    b, n, _ = xyz.shape
    m = center.size(1)
    idx = torch.zeros(b, m, k, dtype=torch.int32, device=xyz.device)
    dist2 = center.new_full((b, m, k), _INIT)
    chunk = max(1, _BLOCK // max(1, b * max(n, k + 1)))
    for start in range(0, m, chunk):
        d = squared_distances(center[:, start:start + chunk], xyz.to(center.dtype))
        d = torch.where(d < _INIT, d, d.new_tensor(float("inf")))  # what the heap can never take
        if n < k + 1:
            d = torch.cat([d, d.new_full((*d.shape[:2], k + 1 - n), float("inf"))], 2)
        val, at = torch.topk(d, k + 1, dim=2, largest=False, sorted=True)
        tied = ((val[..., 1:] == val[..., :-1]) & (val[..., 1:] < float("inf"))).any(2)
        val, at = val[..., :k], at[..., :k]
        found = val < float("inf")
        sel_i = torch.where(found, at, torch.zeros_like(at))
        sel_d = torch.where(found, val, val.new_tensor(_INIT))
        if bool(tied.any()):
            rows = tied.nonzero(as_tuple=True)
            exact_i, exact_d = heap_replay(d[rows][:, :n], k)
            sel_i[rows], sel_d[rows] = exact_i, exact_d
        idx[:, start:start + chunk] = sel_i.int()
        dist2[:, start:start + chunk] = sel_d
    return idx, dist2


def _check(name: str, value: Tensor, transposed: bool) -> None:
    if not isinstance(value, Tensor):
        raise TypeError(f"knn: {name} must be a torch.Tensor, got {type(value).__name__}")
    want = "(B, 3, N)" if transposed else "(B, N, 3)"
    if value.dim() != 3 or value.size(1 if transposed else 2) != 3:
        raise ValueError(f"knn: {name} must have shape {want}, got {tuple(value.shape)}")
    if not value.is_floating_point():
        raise TypeError(f"knn: {name} must be a floating point tensor, got {value.dtype}")


class KNN(Function):
    r"""KNN based on heap data structure (k nearest ``xyz`` points of each centre)."""

    @staticmethod
    def forward(ctx, k: int, xyz: Tensor, center_xyz: Optional[Tensor] = None,
                transposed: bool = False) -> Tensor:
        assert (k > 0) & (k < 100), 'k should be in range(0, 100)'
        if center_xyz is None:
            center_xyz = xyz
        _check("xyz", xyz, transposed)
        _check("center_xyz", center_xyz, transposed)
        check_same_device("knn", xyz=xyz, center_xyz=center_xyz)
        if xyz.size(0) != center_xyz.size(0):
            raise ValueError(f"knn: xyz and center_xyz must share the batch size, got "
                             f"{xyz.size(0)} and {center_xyz.size(0)}")
        if transposed:
            xyz, center_xyz = xyz.transpose(2, 1), center_xyz.transpose(2, 1)
        idx, _ = knn_indices(xyz.detach(), center_xyz.detach(), int(k))
        idx = idx.transpose(2, 1).contiguous()
        ctx.mark_non_differentiable(idx)
        return idx

    @staticmethod
    def backward(ctx, a=None) -> Tuple[None, None, None]:
        return None, None, None


knn = KNN.apply

registry.register(registry.OpEntry(
    op="knn",
    names=("KNN", "knn"),
    ext_functions=("knn_forward",),
    backward="n/a",
    devices=("any",),
))
