"""``mmcv.ops.scatter_points``: reduce point features into dynamic voxels (``DynamicScatter``).

Semantics follow mmcv's CUDA kernels (``scatter_points_cuda.cu``; mmcv has no CPU kernel):

* a point whose coordinate row holds any negative value is dropped (its whole row counts as -1);
* voxels are the distinct remaining rows in ``torch.unique(coors, dim=0, sorted=True)`` order,
  i.e. lexicographic order of the coordinate rows;
* ``'sum'`` adds, ``'mean'`` adds then divides by the point count, ``'max'`` takes the per-channel
  maximum starting from ``-inf`` with ``fmax`` semantics (NaN features are ignored; a voxel whose
  features are all NaN stays ``-inf``);
* backward: ``'sum'`` copies the voxel gradient to each of its points, ``'mean'`` divides it by the
  count, ``'max'`` sends it, per channel, only to the LOWEST-indexed point whose feature equals the
  voxel's maximum (the kernel's ``atomicMin`` on the point index); dropped points get zero.
* empty input returns clones of ``feats`` and ``coors`` (shapes ``(0, C)`` and ``(0, ndim)``).

Speed: the coordinate rows are packed into one int64 key (when their extents allow, else
``torch.unique(dim=0)``), so finding voxels is one 1-D sort; reductions are ``index_add_`` and
``scatter_reduce_`` into a table with one spare row that collects the dropped points.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.autograd import Function
from torch.autograd.function import once_differentiable

from .. import registry
from ._checks import check_choice, check_same_device, is_integer_dtype

_OP = "dynamic_scatter"
REDUCE_TYPES = ("max", "sum", "mean")
_KEY_LIMIT = 1 << 62  # packed keys stay below this, so int64 never overflows


# --- checks -------------------------------------------------------------------------------------


def check_inputs(op: str, feats: Any, coors: Any, reduce_type: Any) -> None:
    """``feats`` floating (N, C), ``coors`` integer (N, ndim) on one device, a known reduce type."""
    for name, value in (("feats", feats), ("coors", coors)):
        if not isinstance(value, Tensor):
            raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(value).__name__}")
    if feats.dim() != 2:
        raise ValueError(f"{op}: feats must have shape (N, C), got {tuple(feats.shape)}")
    if coors.dim() != 2 or coors.size(1) < 1:
        raise ValueError(f"{op}: coors must have shape (N, ndim), got {tuple(coors.shape)}")
    if coors.size(0) != feats.size(0):
        raise ValueError(f"{op}: coors must have one row per point of feats ({feats.size(0)}), "
                         f"got {coors.size(0)}")
    if not feats.is_floating_point():
        raise TypeError(f"{op}: feats must be a floating point tensor, got {feats.dtype}")
    if not is_integer_dtype(coors.dtype):
        raise TypeError(f"{op}: coors must be an integer tensor, got {coors.dtype}")
    check_same_device(op, feats=feats, coors=coors)
    if not isinstance(reduce_type, str):
        raise TypeError(f"{op}: reduce_type must be a str, got {type(reduce_type).__name__}")
    check_choice(op, "reduce_type", reduce_type, REDUCE_TYPES)


# --- voxel assignment ---------------------------------------------------------------------------


def _packed_unique(rows: Tensor, invalid: Tensor) -> Optional[Tuple[Tensor, Tensor, Tensor]]:
    """(keys, inverse, counts) of the rows packed into int64 keys, invalid rows as key -1 (sorting
    first, like the kernel's all -1 row); None when the extents do not fit in one int64."""
    clean = rows.masked_fill(invalid[:, None], 0).long()
    extents = (clean.amax(0) + 1).tolist()
    strides, total = [], 1
    for extent in reversed(extents):
        strides.append(total)
        total *= extent
    if total >= _KEY_LIMIT:
        return None
    strides.reverse()
    key = (clean * torch.tensor(strides, dtype=torch.long, device=rows.device)).sum(1)
    key = key.masked_fill_(invalid, -1)
    keys, inverse, counts = torch.unique(key, sorted=True, return_inverse=True, return_counts=True)
    unpacked = torch.stack([(keys // s) % e for s, e in zip(strides, extents)], 1)
    return unpacked, inverse, counts


def point_to_voxel_map(coors: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Voxels of (N, ndim) integer ``coors``: ``(voxel_coors (M, ndim) in coors' dtype, coors_map (N,)
    int32 with -1 for dropped points, reduce_count (M,) int32)``, voxels in sorted-row order."""
    invalid = (coors < 0).any(1)
    has_invalid = bool(invalid.any())
    packed = _packed_unique(coors, invalid) if coors.size(0) else None
    if packed is None:
        clean = coors.masked_fill(invalid[:, None], -1)
        packed = torch.unique(clean, dim=0, sorted=True, return_inverse=True, return_counts=True)
    voxel_coors, inverse, counts = packed
    if has_invalid:  # the first voxel is the dropped (-1, ..., -1) row
        voxel_coors, counts, inverse = voxel_coors[1:], counts[1:], inverse - 1
    return voxel_coors.to(coors.dtype), inverse.to(torch.int32), counts.to(torch.int32)


def _spare_row_index(coors_map: Tensor, num_voxels: int) -> Tensor:
    """(N,) int64 voxel index with dropped points sent to the spare row ``num_voxels``."""
    index = coors_map.long()
    return index.masked_fill_(index < 0, num_voxels)


# --- forward and backward cores -----------------------------------------------------------------


def reduce_points(feats: Tensor, coors_map: Tensor, reduce_count: Tensor, reduce_type: str) -> Tensor:
    """(M, C) voxel features of (N, C) ``feats`` reduced by ``coors_map`` (M = len(reduce_count))."""
    num_voxels, channels = reduce_count.size(0), feats.size(1)
    index = _spare_row_index(coors_map, num_voxels)
    if reduce_type == "max":
        out = feats.new_full((num_voxels + 1, channels), float("-inf"))
        # fmax ignores NaN: a NaN feature never becomes the maximum
        src = feats.masked_fill(feats.isnan(), float("-inf")) if feats.numel() else feats
        out.scatter_reduce_(0, index[:, None].expand(-1, channels), src, "amax", include_self=True)
        return out[:num_voxels]
    out = feats.new_zeros((num_voxels + 1, channels)).index_add_(0, index, feats)[:num_voxels]
    if reduce_type == "mean":
        out = out / reduce_count[:, None].to(out.dtype)
    return out


def max_sources(feats: Tensor, voxel_feats: Tensor, coors_map: Tensor) -> Tensor:
    """(M, C) int64: per voxel and channel, the lowest index of a point whose feature equals the
    voxel maximum (the kernel's atomicMin); N where none does (all-NaN voxels)."""
    num_points, channels = feats.shape
    num_voxels = voxel_feats.size(0)
    index = _spare_row_index(coors_map, num_voxels)
    # the spare row is NaN, so dropped points never match
    table = torch.cat([voxel_feats, voxel_feats.new_full((1, channels), float("nan"))])
    hit = feats == table.index_select(0, index)
    rank = torch.arange(num_points, dtype=torch.int32, device=feats.device)[:, None]
    candidate = torch.where(hit, rank, num_points)
    sources = torch.full((num_voxels + 1, channels), num_points, dtype=torch.int32, device=feats.device)
    sources.scatter_reduce_(0, index[:, None].expand(-1, channels), candidate, "amin", include_self=True)
    return sources[:num_voxels].long()


def scatter_grad(grad_voxel_feats: Tensor, feats: Tensor, voxel_feats: Tensor, coors_map: Tensor,
                 reduce_count: Tensor, reduce_type: str) -> Tensor:
    """(N, C) gradient of the points from the (M, C) voxel gradient, as mmcv's backward kernels."""
    num_points, channels = feats.shape
    num_voxels = voxel_feats.size(0)
    grad_voxel_feats = grad_voxel_feats.to(feats.dtype)
    if num_points == 0 or num_voxels == 0:
        return torch.zeros_like(feats)
    if reduce_type == "max":
        sources = max_sources(feats, voxel_feats, coors_map)
        grad = feats.new_zeros((num_points + 1, channels))  # row N absorbs unmatched channels
        return grad.scatter_(0, sources, grad_voxel_feats)[:num_points]
    if reduce_type == "mean":
        grad_voxel_feats = grad_voxel_feats / reduce_count[:, None].to(feats.dtype)
    table = torch.cat([grad_voxel_feats, grad_voxel_feats.new_zeros((1, channels))])
    return table.index_select(0, _spare_row_index(coors_map, num_voxels))


def dynamic_point_to_voxel(feats: Tensor, coors: Tensor, reduce_type: str) -> List[Tensor]:
    """``[voxel_feats (M, C), voxel_coors (M, ndim), coors_map (N,) int32, reduce_count (M,) int32]``."""
    if feats.size(0) == 0:
        return [feats.detach().clone(), coors.detach().clone(),
                coors.new_empty(0, dtype=torch.int32), coors.new_empty(0, dtype=torch.int32)]
    voxel_coors, coors_map, reduce_count = point_to_voxel_map(coors)
    voxel_feats = reduce_points(feats, coors_map, reduce_count, reduce_type)
    return [voxel_feats, voxel_coors, coors_map, reduce_count]


# --- public API ---------------------------------------------------------------------------------


class _DynamicScatter(Function):
    """Autograd Function of :func:`dynamic_scatter` (mmcv's class name)."""

    @staticmethod
    def forward(ctx: Any, feats: Tensor, coors: Tensor, reduce_type: str = "max") -> Tuple[Tensor, Tensor]:
        check_inputs(_OP, feats, coors, reduce_type)
        voxel_feats, voxel_coors, coors_map, reduce_count = dynamic_point_to_voxel(feats, coors, reduce_type)
        ctx.reduce_type = reduce_type
        ctx.save_for_backward(feats, voxel_feats, coors_map, reduce_count)
        ctx.mark_non_differentiable(voxel_coors)
        return voxel_feats, voxel_coors

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_voxel_feats: Tensor, grad_voxel_coors: Optional[Tensor] = None) -> tuple:
        feats, voxel_feats, coors_map, reduce_count = ctx.saved_tensors
        if grad_voxel_feats is None:
            return None, None, None
        grad = scatter_grad(grad_voxel_feats, feats, voxel_feats, coors_map, reduce_count, ctx.reduce_type)
        return grad, None, None


def dynamic_scatter(feats: Tensor, coors: Tensor, reduce_type: str = "max") -> Tuple[Tensor, Tensor]:
    """Reduce (N, C) ``feats`` into voxels by (N, ndim) integer ``coors`` (rows with a negative entry
    are dropped). Returns ``(voxel_feats (M, C), voxel_coors (M, ndim))``, voxels in sorted-row order."""
    return _DynamicScatter.apply(feats, coors, reduce_type)


class DynamicScatter(nn.Module):
    """Scatters points into voxels, used in the voxel encoder with dynamic voxelization.

    Args:
        voxel_size: [x, y, z] size of a voxel (kept for the repr; unused by the computation).
        point_cloud_range: [x_min, y_min, z_min, x_max, y_max, z_max] (likewise).
        average_points: ``'mean'`` reduction when True, ``'max'`` otherwise.
    """

    def __init__(self, voxel_size: Sequence, point_cloud_range: Sequence, average_points: bool):
        super().__init__()
        self.voxel_size = voxel_size
        self.point_cloud_range = point_cloud_range
        self.average_points = average_points

    def forward_single(self, points: Tensor, coors: Tensor) -> Tuple[Tensor, Tensor]:
        """(N, C) points, (N, ndim) coors -> ``(voxel_feats (M, C), voxel_coors (M, ndim))``."""
        reduce = "mean" if self.average_points else "max"
        return dynamic_scatter(points.contiguous(), coors.contiguous(), reduce)

    def forward(self, points: Tensor, coors: Tensor) -> Tuple[Tensor, Tensor]:
        """(N, C) points with (N, 3) coors, or (N, 1 + ndim) coors led by the batch index.

        The batched form equals mmcv's loop over ``range(coors[-1, 0] + 1)`` of per-sample scatters
        concatenated with the batch index prepended: one scatter over the batch-led rows gives the
        same voxels in the same order, after dropping rows whose batch index exceeds the last row's.
        """
        if not isinstance(coors, Tensor):
            raise TypeError(f"DynamicScatter: coors must be a torch.Tensor, got {type(coors).__name__}")
        if coors.size(-1) == 3:
            return self.forward_single(points, coors)
        if coors.dim() != 2:
            raise ValueError(f"DynamicScatter: coors must have shape (N, ndim), got {tuple(coors.shape)}")
        if coors.size(0):
            beyond = coors[:, 0] > coors[-1, 0]  # mmcv's loop never visits these batch indices
            coors = coors.masked_fill(beyond[:, None], -1)
        # (empty input: mmcv would fail on coors[-1]; this returns the empty result instead)
        return self.forward_single(points, coors)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(voxel_size={self.voxel_size}, "
                f"point_cloud_range={self.point_cloud_range}, average_points={self.average_points})")


registry.register(registry.OpEntry(
    op="scatter_points",
    names=("DynamicScatter", "dynamic_scatter"),  # _DynamicScatter is private (not catalogued)
    ext_functions=("dynamic_point_to_voxel_forward", "dynamic_point_to_voxel_backward"),
    backward="yes",
    devices=("any",),
))
