"""``mmcv.ops.ball_query``: indices of the points inside a (hollow) ball around every centre (PointNet++).

As mmcv's CUDA kernels (csrc/common/cuda/ball_query_cuda_kernel.cuh and stack_ball_query_cuda_kernel.cuh):

* ``d2 = (cx-x)*(cx-x) + (cy-y)*(cy-y) + (cz-z)*(cz-z)`` in the input dtype, left to right; the radii
  are squared in float32 (the kernel's ``float max_radius2 = max_radius * max_radius``) and compared
  in the wider of the two dtypes;
* batched form: point ``k`` is taken when ``d2 == 0 or (min_radius2 <= d2 < max_radius2)`` -- a point
  exactly on the centre is taken even when ``min_radius > 0`` (mmcv's quirk); NaN distances are
  never taken; the first ``sample_num`` taken points in index order fill the slots, the remaining
  slots repeat the FIRST taken index, and a centre with no point keeps zeros (the kernel writes
  nothing; the wrapper's buffer is zeroed);
* stacked form (``xyz_batch_cnt``/``center_xyz_batch_cnt`` given): ``min_radius`` is ignored, the test
  is ``d2 < max_radius2`` among the points of the centre's own batch, indices are local to that batch,
  and a centre with no point gets ``-1`` in slot 0 and zeros elsewhere.

Vectorised: a (centres x points) mask per chunk of centres, its running count along the points, and
``searchsorted`` of the slot numbers 1..sample_num into that count (the index of the s-th taken
point). Returns int32; not differentiable.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor
from torch.autograd import Function

from .. import registry
from ._checks import check_int, check_same_device

__all__ = ["BallQuery", "ball_query"]

_BLOCK = 1 << 23  # (centres x points) mask elements per chunk


def _squared_radius(radius: float, like: Tensor) -> Tensor:
    """The kernel's float32 ``radius * radius``, in the dtype the comparison runs in."""
    r = torch.tensor(float(radius), dtype=torch.float32, device=like.device)
    return (r * r).to(torch.promote_types(like.dtype, torch.float32))


def _distances(center: Tensor, xyz: Tensor) -> Tensor:
    """(..., m, 3), (..., n, 3) -> (..., m, n) in the kernel's float order and dtype."""
    c = center.unsqueeze(-2)
    p = xyz.unsqueeze(-3)
    dx, dy, dz = c[..., 0] - p[..., 0], c[..., 1] - p[..., 1], c[..., 2] - p[..., 2]
    return dx * dx + dy * dy + dz * dz


def _first_slots(mask: Tensor, nsample: int) -> Tuple[Tensor, Tensor]:
    """(..., n) bool -> (index of the s-th True for s < nsample (n when absent), count capped at nsample)."""
    n = mask.size(-1)
    if n == 0:
        zeros = torch.zeros(*mask.shape[:-1], nsample, dtype=torch.long, device=mask.device)
        return zeros, zeros[..., :1].int()
    rank = mask.to(torch.int32).cumsum(-1, dtype=torch.int32)
    flat = rank.reshape(-1, n)
    wanted = torch.arange(1, nsample + 1, dtype=torch.int32, device=mask.device)
    at = torch.searchsorted(flat, wanted.expand(flat.size(0), nsample).contiguous())
    at = at.reshape(*mask.shape[:-1], nsample)
    count = rank[..., -1:].clamp(max=nsample)
    return at, count


def _fill(at: Tensor, count: Tensor) -> Tensor:
    """Slots past the count repeat the first found index; rows with nothing found are 0."""
    slot = torch.arange(at.size(-1), device=at.device)
    first = torch.where(count > 0, at[..., :1], torch.zeros_like(at[..., :1]))
    return torch.where(slot < count, at, first)


def ball_query_indices(center_xyz: Tensor, xyz: Tensor, min_radius: float, max_radius: float,
                       nsample: int) -> Tuple[Tensor, Tensor]:
    """(B, m, 3) centres, (B, n, 3) points -> (idx (B, m, nsample) int32, found (B, m) count)."""
    b, m, _ = center_xyz.shape
    n = xyz.size(1)
    idx = torch.zeros(b, m, nsample, dtype=torch.int32, device=xyz.device)
    count = torch.zeros(b, m, dtype=torch.int32, device=xyz.device)
    if m == 0 or nsample == 0:
        return idx, count
    xyz = xyz.to(center_xyz.dtype)
    lo, hi = _squared_radius(min_radius, center_xyz), _squared_radius(max_radius, center_xyz)
    chunk = max(1, _BLOCK // max(1, b * n))
    for start in range(0, m, chunk):
        d2 = _distances(center_xyz[:, start:start + chunk], xyz)
        d2w = d2.to(hi.dtype)
        mask = (d2 == 0) | ((d2w >= lo) & (d2w < hi))
        at, cnt = _first_slots(mask, nsample)
        idx[:, start:start + chunk] = _fill(at, cnt).int()
        count[:, start:start + chunk] = cnt.squeeze(-1)
    return idx, count


def _batch_of(counts: Tensor, total: int) -> Tuple[Tensor, Tensor]:
    """Batch index of each of ``total`` stacked rows (B for rows past the counts) and the batch starts (B + 1)."""
    ends = counts.long().cumsum(0)
    rows = torch.arange(total, device=counts.device)
    starts = torch.cat([ends.new_zeros(1), ends])
    return torch.searchsorted(ends, rows, right=True), starts


def stack_ball_query_indices(center_xyz: Tensor, center_batch_cnt: Tensor, xyz: Tensor, xyz_batch_cnt: Tensor,
                             max_radius: float, nsample: int) -> Tuple[Tensor, Tensor]:
    """(M, 3) stacked centres, (N, 3) stacked points -> (idx (M, nsample) int32 local, found (M,) count).

    Rows with nothing found hold ``-1`` in slot 0 and zeros after it (the stacked kernel's quirk).
    """
    m, n = center_xyz.size(0), xyz.size(0)
    center_batch, _ = _batch_of(center_batch_cnt.to(xyz.device), m)
    point_batch, starts = _batch_of(xyz_batch_cnt.to(xyz.device), n)
    idx = torch.zeros(m, nsample, dtype=torch.int32, device=xyz.device)
    count = torch.zeros(m, dtype=torch.int32, device=xyz.device)
    if m == 0 or nsample == 0:
        return idx, count
    xyz = xyz.to(center_xyz.dtype)
    hi = _squared_radius(max_radius, center_xyz)
    chunk = max(1, _BLOCK // max(1, n))
    for s in range(0, m, chunk):
        d2 = _distances(center_xyz[s:s + chunk], xyz)
        cb = center_batch[s:s + chunk]
        mask = (d2.to(hi.dtype) < hi) & (cb.unsqueeze(1) == point_batch.unsqueeze(0))
        at, cnt = _first_slots(mask, nsample)
        local = _fill(at, cnt) - torch.where(cnt > 0, starts[cb].unsqueeze(1), torch.zeros_like(cnt).long())
        local[:, :1] = torch.where(cnt > 0, local[:, :1], torch.full_like(local[:, :1], -1))
        idx[s:s + chunk] = local.int()
        count[s:s + chunk] = cnt.squeeze(-1)
    return idx, count


def _check_xyz(name: str, value: Tensor, dim: int) -> None:
    if not isinstance(value, Tensor):
        raise TypeError(f"ball_query: {name} must be a torch.Tensor, got {type(value).__name__}")
    want = "(B, N, 3)" if dim == 3 else "(N, 3)"
    if value.dim() != dim or value.size(-1) != 3:
        raise ValueError(f"ball_query: {name} must have shape {want}, got {tuple(value.shape)}")
    if not value.is_floating_point():
        raise TypeError(f"ball_query: {name} must be a floating point tensor, got {value.dtype}")


def _check_counts(name: str, value: Tensor) -> None:
    if not isinstance(value, Tensor) or value.dim() != 1:
        raise ValueError(f"ball_query: {name} must be a 1-D tensor of per-batch counts")
    if value.dtype != torch.int32:  # mmcv asserts ``dtype == torch.int``
        raise TypeError(f"ball_query: {name} must be int32, got {value.dtype}")


class BallQuery(Function):
    """Find nearby points in spherical space."""

    @staticmethod
    def forward(ctx, min_radius: float, max_radius: float, sample_num: int, xyz: Tensor, center_xyz: Tensor,
                xyz_batch_cnt: Optional[Tensor] = None, center_xyz_batch_cnt: Optional[Tensor] = None) -> Tensor:
        """(B, N, 3) points, (B, npoint, 3) centres -> (B, npoint, sample_num) int32 indices;
        stacked: (N1+N2..., 3), (M1+M2..., 3) with per-batch counts -> (M1+M2..., sample_num)."""
        sample_num = check_int("ball_query", "sample_num", sample_num, 0)
        stacked = xyz_batch_cnt is not None and center_xyz_batch_cnt is not None
        _check_xyz("xyz", xyz, 2 if stacked else 3)
        _check_xyz("center_xyz", center_xyz, 2 if stacked else 3)
        check_same_device("ball_query", xyz=xyz, center_xyz=center_xyz)
        assert center_xyz.is_contiguous()
        assert xyz.is_contiguous()
        assert min_radius < max_radius
        if stacked:
            _check_counts("xyz_batch_cnt", xyz_batch_cnt)
            _check_counts("center_xyz_batch_cnt", center_xyz_batch_cnt)
            idx, _ = stack_ball_query_indices(center_xyz.detach(), center_xyz_batch_cnt, xyz.detach(),
                                              xyz_batch_cnt, max_radius, sample_num)
        else:
            if xyz.size(0) != center_xyz.size(0):
                raise ValueError(f"ball_query: xyz and center_xyz must share the batch size, got "
                                 f"{xyz.size(0)} and {center_xyz.size(0)}")
            idx, _ = ball_query_indices(center_xyz.detach(), xyz.detach(), min_radius, max_radius, sample_num)
        ctx.mark_non_differentiable(idx)
        return idx

    @staticmethod
    def backward(ctx, a=None) -> Tuple[None, ...]:
        return None, None, None, None, None, None, None


ball_query = BallQuery.apply

registry.register(registry.OpEntry(
    op="ball_query",
    names=("BallQuery", "ball_query"),
    ext_functions=("ball_query_forward", "stack_ball_query_forward"),
    backward="n/a",
    devices=("any",),
))
