"""``mmcv.ops.group_points``: gather point features into (centre, sample) groups (PointNet++).

As mmcv's CUDA kernels (csrc/common/cuda/group_points_cuda_kernel.cuh, stack_group_points_cuda_kernel.cuh)
and Python wrapper:

* batched ``grouping_operation(features (B, C, N), idx (B, npoint, nsample))`` ->
  ``out[b, c, m, s] = features[b, c, idx[b, m, s]]``; the backward scatter-ADDS ``grad_out`` into a
  zero (B, C, N) gradient (repeated indices accumulate like the kernel's ``atomicAdd``). An index out
  of [0, N) raises (the kernel would read stray memory);
* stacked ``grouping_operation(features (N1+N2..., C), idx (M1+M2..., nsample), features_batch_cnt,
  indices_batch_cnt)`` -> (M1+M2..., C, nsample): row ``m`` belongs to the first batch whose running
  index count exceeds ``m`` (the last batch for rows past the counts), its index is local to that
  batch's features, and it is read only when ``idx < start + count`` -- the kernel compares the LOCAL
  index with the batch's ABSOLUTE end, so for later batches indices past the batch read the next
  batch's points, and ``-1`` (a stacked ball query that found nothing) reads the previous batch's
  last point. Other rows stay 0. The backward adds at ``start + idx`` whatever the forward read
  (no bound test in that kernel); rows outside the stacked features, which the kernels would read
  from or write to stray memory, read 0 and receive nothing;
* ``QueryAndGroup`` / ``GroupAll`` as mmcv's modules, including ``uniform_sample`` (sorted unique
  indices of each group, then uniform draws among them; vectorised, so the random stream differs
  from mmcv's per-group ``torch.randint`` loop) and its ``unique_cnt`` (float32, on the CPU as mmcv).
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
from torch import Tensor
from torch import nn as nn
from torch.autograd import Function

from .. import registry
from ._checks import check_same_device, is_integer_dtype
from .ball_query import _batch_of, ball_query
from .knn import knn

__all__ = ["QueryAndGroup", "GroupAll", "GroupingOperation", "grouping_operation"]


# ----------------------------------------------------------------------------- batched form


def group_forward(features: Tensor, idx: Tensor) -> Tensor:
    """(B, C, N), (B, npoint, nsample) -> (B, C, npoint, nsample)."""
    b, m, s = idx.shape
    c = features.size(1)
    flat = idx.reshape(b, 1, m * s).long().expand(b, c, m * s)
    return torch.gather(features, 2, flat).view(b, c, m, s)


def group_backward(grad_out: Tensor, idx: Tensor, grad_points: Tensor) -> Tensor:
    """Accumulate (B, C, npoint, nsample) ``grad_out`` into (B, C, N) ``grad_points`` in place; returns it."""
    b, c, m, s = grad_out.shape
    flat = idx.reshape(b, 1, m * s).long().expand(b, c, m * s)
    return grad_points.scatter_add_(2, flat, grad_out.reshape(b, c, m * s).to(grad_points.dtype))


# ----------------------------------------------------------------------------- stacked form


def _stack_rows(features_batch_cnt: Tensor, idx: Tensor, indices_batch_cnt: Tensor) -> Tuple[Tensor, Tensor]:
    """(M, nsample) local indices -> (global feature row start + idx (M, nsample), batch end start + count (M, 1))."""
    b = indices_batch_cnt.numel()
    batch, _ = _batch_of(indices_batch_cnt.to(idx.device), idx.size(0))
    batch = batch.clamp(max=max(b - 1, 0))  # the kernel's loop stops at the last batch
    _, starts = _batch_of(features_batch_cnt.to(idx.device), 0)  # (B + 1,) running starts
    start, end = starts[batch].unsqueeze(1), starts[batch + 1].unsqueeze(1)
    return start + idx.long(), end


def stack_group_forward(features: Tensor, features_batch_cnt: Tensor, idx: Tensor,
                        indices_batch_cnt: Tensor) -> Tensor:
    """(N, C) stacked features, (M, nsample) local indices -> (M, C, nsample)."""
    n, c = features.shape
    rows, end = _stack_rows(features_batch_cnt, idx, indices_batch_cnt)
    # The kernel's test compares the LOCAL index with the batch's ABSOLUTE end.
    valid = (idx.long() < end) & (rows >= 0) & (rows < n)
    padded = torch.cat([features, features.new_zeros(1, c)], 0)  # row n reads nothing
    out = padded[torch.where(valid, rows, torch.full_like(rows, n))]  # (M, nsample, C)
    return out.transpose(1, 2).contiguous()


def stack_group_backward(grad_out: Tensor, idx: Tensor, indices_batch_cnt: Tensor, features_batch_cnt: Tensor,
                         grad_features: Tensor) -> Tensor:
    """Accumulate (M, C, nsample) ``grad_out`` into (N, C) ``grad_features`` in place; returns it."""
    n, c = grad_features.shape
    rows, _ = _stack_rows(features_batch_cnt, idx, indices_batch_cnt)
    valid = (rows >= 0) & (rows < n)
    padded = torch.cat([grad_features, grad_features.new_zeros(1, c)], 0)
    target = torch.where(valid, rows, torch.full_like(rows, n)).reshape(-1)
    padded.index_add_(0, target, grad_out.transpose(1, 2).reshape(-1, c).to(padded.dtype))
    grad_features.copy_(padded[:n])
    return grad_features


# ----------------------------------------------------------------------------- autograd Function


def _check_group(features: Tensor, indices: Tensor, stacked: bool) -> None:
    op = "grouping_operation"
    if not isinstance(features, Tensor) or not isinstance(indices, Tensor):
        raise TypeError(f"{op}: features and indices must be torch.Tensor")
    if not features.is_floating_point():
        raise TypeError(f"{op}: features must be a floating point tensor, got {features.dtype}")
    if not is_integer_dtype(indices.dtype):
        raise TypeError(f"{op}: indices must be an integer tensor, got {indices.dtype}")
    if stacked:
        if features.dim() != 2 or indices.dim() != 2:
            raise ValueError(f"{op}: stacked features must be (N, C) and indices (M, nsample), got "
                             f"{tuple(features.shape)} and {tuple(indices.shape)}")
    else:
        if features.dim() != 3:
            raise ValueError(f"{op}: features must have shape (B, C, N), got {tuple(features.shape)}")
        if indices.dim() != 3 or indices.size(0) != features.size(0):
            raise ValueError(f"{op}: indices must have shape (B, npoint, nsample) with B={features.size(0)}, "
                             f"got {tuple(indices.shape)}")
    check_same_device(op, features=features, indices=indices)


class GroupingOperation(Function):
    """Group feature with given index."""

    @staticmethod
    def forward(ctx, features: Tensor, indices: Tensor, features_batch_cnt: Optional[Tensor] = None,
                indices_batch_cnt: Optional[Tensor] = None) -> Tensor:
        """(B, C, N), (B, npoint, nsample) -> (B, C, npoint, nsample);
        stacked: (N, C), (M, nsample) -> (M, C, nsample)."""
        stacked = features_batch_cnt is not None and indices_batch_cnt is not None
        _check_group(features, indices, stacked)
        if stacked:
            assert features_batch_cnt.dtype == torch.int
            assert indices_batch_cnt.dtype == torch.int
            output = stack_group_forward(features, features_batch_cnt, indices, indices_batch_cnt)
            ctx.for_backwards = (indices_batch_cnt.numel(), features.size(0), indices, features_batch_cnt,
                                 indices_batch_cnt)
        else:
            output = group_forward(features, indices)
            ctx.for_backwards = (indices, features.size(2))
        return output

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> Tuple:
        if len(ctx.for_backwards) != 5:
            idx, n = ctx.for_backwards
            b, c = grad_out.shape[:2]
            grad_features = grad_out.new_zeros(b, c, n)
            return group_backward(grad_out.contiguous(), idx, grad_features), None
        _, n, idx, features_batch_cnt, idx_batch_cnt = ctx.for_backwards
        grad_features = grad_out.new_zeros(n, grad_out.size(1))
        stack_group_backward(grad_out, idx, idx_batch_cnt, features_batch_cnt, grad_features)
        return grad_features, None, None, None


grouping_operation = GroupingOperation.apply


# ----------------------------------------------------------------------------- modules


def uniform_resample(idx: Tensor) -> Tuple[Tensor, Tensor]:
    """mmcv's ``uniform_sample`` on (B, npoint, nsample) indices, in place.

    Each group becomes its sorted unique indices followed by ``nsample - unique`` uniform draws
    among them. Returns (idx, unique count (B, npoint) float32 on the CPU, as mmcv's).
    """
    nsample = idx.size(-1)
    ordered, _ = idx.sort(-1)
    first = torch.ones_like(ordered, dtype=torch.bool)
    first[..., 1:] = ordered[..., 1:] != ordered[..., :-1]
    num = first.sum(-1, keepdim=True)
    # Compact the unique values to the front: slot (running count - 1) for firsts, a dump slot for repeats.
    slot = torch.where(first, first.long().cumsum(-1) - 1, torch.full_like(ordered, nsample, dtype=torch.long))
    compact = ordered.new_zeros(*ordered.shape[:-1], nsample + 1).scatter_(-1, slot, ordered)[..., :nsample]
    draw = (torch.rand(idx.shape, device=idx.device) * num).long().clamp(max=num.clamp(min=1) - 1)
    position = torch.arange(nsample, device=idx.device)
    picked = torch.where(position < num, compact, compact.gather(-1, draw))
    idx.copy_(picked)
    return idx, num.squeeze(-1).to("cpu", torch.float32)


class QueryAndGroup(nn.Module):
    """Groups points with a ball query of radius (kNN when ``max_radius`` is None)."""

    def __init__(self, max_radius: Optional[float], sample_num: int, min_radius: float = 0.,
                 use_xyz: bool = True, return_grouped_xyz: bool = False, normalize_xyz: bool = False,
                 uniform_sample: bool = False, return_unique_cnt: bool = False,
                 return_grouped_idx: bool = False):
        super().__init__()
        self.max_radius = max_radius
        self.min_radius = min_radius
        self.sample_num = sample_num
        self.use_xyz = use_xyz
        self.return_grouped_xyz = return_grouped_xyz
        self.normalize_xyz = normalize_xyz
        self.uniform_sample = uniform_sample
        self.return_unique_cnt = return_unique_cnt
        self.return_grouped_idx = return_grouped_idx
        if self.return_unique_cnt:
            assert self.uniform_sample, \
                'uniform_sample should be True when returning the count of unique samples'
        if self.max_radius is None:
            assert not self.normalize_xyz, \
                'can not normalize grouped xyz when max_radius is None'

    def forward(self, points_xyz: Tensor, center_xyz: Tensor,
                features: Optional[Tensor] = None) -> Union[Tensor, Tuple]:
        """(B, N, 3), (B, npoint, 3), (B, C, N) -> (B, 3 + C, npoint, sample_num) (+ the requested extras)."""
        if self.max_radius is None:
            idx = knn(self.sample_num, points_xyz, center_xyz, False).transpose(1, 2).contiguous()
        else:
            idx = ball_query(self.min_radius, self.max_radius, self.sample_num, points_xyz, center_xyz)
        if self.uniform_sample:
            idx, unique_cnt = uniform_resample(idx)
        grouped_xyz = grouping_operation(points_xyz.transpose(1, 2).contiguous(), idx)  # (B, 3, npoint, S)
        grouped_xyz_diff = grouped_xyz - center_xyz.transpose(1, 2).unsqueeze(-1)  # relative offsets
        if self.normalize_xyz:
            grouped_xyz_diff /= self.max_radius
        if features is not None:
            grouped_features = grouping_operation(features, idx)
            new_features = (torch.cat([grouped_xyz_diff, grouped_features], dim=1)
                            if self.use_xyz else grouped_features)
        else:
            assert self.use_xyz, 'Cannot have not features and not use xyz as a feature!'
            new_features = grouped_xyz_diff
        ret = [new_features]
        if self.return_grouped_xyz:
            ret.append(grouped_xyz)
        if self.return_unique_cnt:
            ret.append(unique_cnt)
        if self.return_grouped_idx:
            ret.append(idx)
        return ret[0] if len(ret) == 1 else tuple(ret)


class GroupAll(nn.Module):
    """Group xyz with feature (one group holding every point)."""

    def __init__(self, use_xyz: bool = True):
        super().__init__()
        self.use_xyz = use_xyz

    def forward(self, xyz: Tensor, new_xyz: Tensor, features: Optional[Tensor] = None) -> Tensor:
        """(B, N, 3), unused, (B, C, N) -> (B, 3 + C, 1, N)."""
        grouped_xyz = xyz.transpose(1, 2).unsqueeze(2)
        if features is None:
            return grouped_xyz
        grouped_features = features.unsqueeze(2)
        return torch.cat([grouped_xyz, grouped_features], dim=1) if self.use_xyz else grouped_features


registry.register(registry.OpEntry(
    op="group_points",
    names=("QueryAndGroup", "GroupAll", "GroupingOperation", "grouping_operation"),
    ext_functions=("group_points_forward", "group_points_backward", "stack_group_points_forward",
                   "stack_group_points_backward"),
    backward="yes",
    devices=("any",),
))
