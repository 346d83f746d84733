"""``mmcv.ops.voxelize``: hard and dynamic voxelization of point clouds (no gradients).

Semantics follow mmcv's CPU kernel (csrc/pytorch/cpu/voxelization.cpp):

* grid size per axis: ``round((range_max - range_min) / voxel_size)`` in float32 with C's
  ``round`` (halves away from zero), as the kernel computes it;
* a point's voxel coordinate on axis j: ``floor((p_j - range_min_j) / voxel_size_j)`` in the
  kernel's arithmetic (float32 for float16/float32 points, float64 for float64 points, with the
  range and voxel size rounded to float32 first); a point is outside when any coordinate is
  ``< 0`` or ``>= grid size`` (NaN and infinite coordinates are outside too, as the kernel's
  float-to-int conversion makes them). Dynamic voxelization returns ``(N, 3)`` int32 rows in
  ``(z, y, x)`` order, all ``-1`` for outside points (mmcv's CUDA kernel leaves some columns 0
  there; the CPU kernel writes ``-1`` everywhere, which this follows);
* hard voxelization: voxels are numbered in the order of their first point, at most
  ``max_voxels`` of them (points of later voxels are dropped), each holding its first
  ``max_points`` points in point order, zero padded; outputs are cut to the voxel count.

mmcv's ``deterministic=False`` picks its CUDA-only non-deterministic kernel (on CPU mmcv raises);
here it returns the deterministic answer, which is one of the answers that kernel may give.
``_Voxelization`` has no backward, as in mmcv: backpropagating through ``voxels`` raises.

Vectorised: voxel coordinates for all points at once, a linear voxel id, and one stable sort of
it, which gives each voxel's first point (numbering the voxels) and each point's slot in its voxel.
"""

from __future__ import annotations

from typing import Any, List, NamedTuple, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
from torch.autograd import Function
from torch.nn.modules.utils import _pair

from .. import registry

_OP = "voxelization"
_POINT_DTYPES = (torch.float16, torch.float32, torch.float64)  # AT_DISPATCH_FLOATING_TYPES_AND_HALF


# --- parameters ------------------------------------------------------------------------------


def _float32_values(name: str, value: Any, count: int) -> Tensor:
    """The first ``count`` values of ``value`` as a float32 CPU tensor (mmcv: ``torch.tensor(v, dtype=float)``)."""
    try:
        if isinstance(value, Tensor):
            flat = value.detach().to("cpu", torch.float32).reshape(-1)
        else:
            flat = torch.tensor(value, dtype=torch.float32).reshape(-1)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{_OP}: {name} must be a sequence of numbers, got {type(value).__name__}") from err
    if flat.numel() < count:
        raise ValueError(f"{_OP}: {name} must have at least {count} values, got {flat.numel()}")
    return flat[:count]


def grid_size(voxel_size: Tensor, coors_range: Tensor, ndim: int = 3) -> List[int]:
    """Per-axis grid size as the kernels compute it: C ``round`` (halves away from zero) in float32.

    ``voxel_size``: (>= ndim,) float32; ``coors_range``: (>= 2 * ndim,) float32 (mins, then maxes).
    """
    extent = (coors_range[ndim:2 * ndim] - coors_range[:ndim]) / voxel_size[:ndim]
    if not torch.isfinite(extent).all():
        raise ValueError(f"{_OP}: the grid size (range extent / voxel_size) must be finite, got {extent.tolist()}")
    whole = extent.trunc()
    # extent - whole is exact in float32, so this is C's round without a float32 "+ 0.5" rounding error
    rounded = whole + torch.where((extent - whole).abs() >= 0.5, extent.sign(), torch.zeros_like(extent))
    return [int(v) for v in rounded.tolist()]


def _check_points(points: Any, ndim: int) -> None:
    if not isinstance(points, Tensor):
        raise TypeError(f"{_OP}: points must be a torch.Tensor, got {type(points).__name__}")
    if points.dim() != 2 or points.size(1) < ndim:
        raise ValueError(f"{_OP}: points must have shape (N, C) with C >= {ndim}, got {tuple(points.shape)}")
    if points.dtype not in _POINT_DTYPES:
        raise TypeError(f"{_OP}: points must be float16, float32 or float64 (as mmcv's kernels), got {points.dtype}")


# --- the core --------------------------------------------------------------------------------


def _point_cells(points: Tensor, voxel_size: Tensor, coors_range: Tensor, grid: Sequence[int],
                 ndim: int) -> Tuple[Tensor, Tensor]:
    """``(cells, inside)``: (N, ndim) floored voxel coordinates (x, y, z order, float) and an (N,) mask."""
    compute = torch.float64 if points.dtype == torch.float64 else torch.float32
    low = coors_range[:ndim].to(points.device, compute)
    size = voxel_size[:ndim].to(points.device, compute)
    cells = torch.floor_((points[:, :ndim].to(compute) - low).div_(size))
    limit = torch.tensor(grid, dtype=compute, device=points.device)
    # comparing in float equals the kernel's int test, and makes NaN / inf / huge values outside
    inside = ((cells >= 0) & (cells < limit)).all(1)
    return cells, inside


def dynamic_voxel_coors(points: Tensor, voxel_size: Any, coors_range: Any, ndim: int = 3) -> Tensor:
    """(N, ndim) int32 voxel coordinates of (N, C) points, reversed axis order ((z, y, x) for 3-d), -1 outside."""
    _check_points(points, ndim)
    voxel_size = _float32_values("voxel_size", voxel_size, ndim)
    coors_range = _float32_values("coors_range", coors_range, 2 * ndim)
    cells, inside = _point_cells(points, voxel_size, coors_range, grid_size(voxel_size, coors_range, ndim), ndim)
    return cells.masked_fill_(~inside[:, None], -1).flip(1).int()


class HardAssignment(NamedTuple):
    """Where hard voxelization puts the points: point ``point_index[k]`` -> ``voxels[voxel[k], slot[k]]``."""

    point_index: Tensor  # (K,) int64 rows of ``points`` that are stored
    voxel: Tensor  # (K,) int64 voxel number of each stored point
    slot: Tensor  # (K,) int64 its position in the voxel
    coors: Tensor  # (M, 3) int32 voxel coordinates, (z, y, x)
    num_points: Tensor  # (M,) int32 points stored per voxel
    voxel_num: int  # M


def hard_assignment(points: Tensor, voxel_size: Any, coors_range: Any, max_points: int, max_voxels: int,
                    ndim: int = 3) -> HardAssignment:
    """The hard voxelization of (N, C) points as an assignment (``-1`` caps mean unlimited, like the kernel)."""
    _check_points(points, ndim)
    if ndim != 3:
        raise ValueError(f"{_OP}: hard voxelization supports NDim=3 only (as mmcv's kernel), got {ndim}")
    for name, value in (("max_points", max_points), ("max_voxels", max_voxels)):
        if value < -1:
            raise ValueError(f"{_OP}: {name} must be >= 0, or -1 for no limit, got {value}")
    voxel_size = _float32_values("voxel_size", voxel_size, ndim)
    coors_range = _float32_values("coors_range", coors_range, 2 * ndim)
    grid = grid_size(voxel_size, coors_range, ndim)
    if min(grid) < 0:  # mmcv fails allocating its (gz, gy, gx) lookup table
        raise ValueError(f"{_OP}: the grid size must not be negative, got {grid} (check coors_range)")
    cells, inside = _point_cells(points, voxel_size, coors_range, grid, ndim)
    device = points.device
    index = inside.nonzero().squeeze(1)  # the points inside, in point order
    coords = cells.index_select(0, index).long()
    linear = (coords[:, 2] * grid[1] + coords[:, 1]) * grid[0] + coords[:, 0]
    # one stable sort groups the points by voxel and keeps point order inside each group, so a
    # group's first entry is its voxel's first point and an entry's offset in the group its slot
    linear, order = torch.sort(linear, stable=True)
    new_group = torch.ones_like(linear, dtype=torch.bool)
    new_group[1:] = linear[1:] != linear[:-1]
    group = new_group.cumsum(0) - 1  # (K,) group of each sorted entry
    group_start = new_group.nonzero().squeeze(1)  # (U,) sorted position where each group starts
    first = order.index_select(0, group_start)  # (U,) first point (position among the inside points)
    slot = torch.arange(linear.numel(), device=device) - group_start.index_select(0, group)
    counts = torch.diff(group_start, append=group_start.new_full((1,), linear.numel()))
    # voxels are numbered in the order of their first points: rank the first points by position
    is_first = torch.zeros(index.numel(), dtype=torch.long, device=device)
    is_first[first] = 1
    number = (is_first.cumsum(0) - 1).index_select(0, first)  # (U,) voxel number of each group
    by_number = torch.empty_like(number)
    by_number[number] = torch.arange(number.numel(), device=device)  # group of each voxel number
    voxel = number.index_select(0, group)
    voxel_num = number.numel() if max_voxels == -1 else min(number.numel(), max_voxels)
    keep = voxel < voxel_num
    if max_points != -1:
        keep &= slot < max_points
        counts = counts.clamp(max=max_points)
    kept = keep.nonzero().squeeze(1)
    voxel_groups = by_number[:voxel_num]
    voxel_coors = coords.index_select(0, first.index_select(0, voxel_groups)).flip(1).int()
    return HardAssignment(index.index_select(0, order.index_select(0, kept)), voxel.index_select(0, kept),
                          slot.index_select(0, kept), voxel_coors, counts.index_select(0, voxel_groups).int(),
                          voxel_num)


def hard_voxelize(points: Tensor, voxel_size: Any, coors_range: Any, max_points: int = 35,
                  max_voxels: int = 20000, ndim: int = 3) -> Tuple[Tensor, Tensor, Tensor]:
    """``(voxels (M, max_points, C), coors (M, 3) int32 z/y/x, num_points_per_voxel (M,) int32)``."""
    if max_points < 0 or max_voxels < 0:
        raise ValueError(f"{_OP}: hard voxelization needs max_points >= 0 and max_voxels >= 0, "
                         f"got {max_points} and {max_voxels}")
    found = hard_assignment(points, voxel_size, coors_range, max_points, max_voxels, ndim)
    voxels = points.new_zeros((found.voxel_num, max_points, points.size(1)))
    scatter_rows(voxels, found, points)
    return voxels, found.coors, found.num_points


def scatter_rows(voxels: Tensor, found: HardAssignment, points: Tensor) -> None:
    """Writes the stored points into their (voxel, slot) rows of (V, P, C) ``voxels``, in place."""
    if voxels.numel() == 0:
        return
    rows = found.voxel * voxels.size(1) + found.slot
    voxels.view(-1, voxels.size(2)).index_copy_(0, rows, points.index_select(0, found.point_index).to(voxels.dtype))


# --- mmcv's API ------------------------------------------------------------------------------


class _Voxelization(Function):
    """mmcv's autograd Function: forward only (backpropagating raises, as in mmcv)."""

    @staticmethod
    def forward(ctx: Any, points: Tensor, voxel_size: Union[tuple, float], coors_range: Union[tuple, float],
                max_points: int = 35, max_voxels: int = 20000,
                deterministic: bool = True) -> Union[Tensor, Tuple[Tensor, Tensor, Tensor]]:
        """(N, C) points -> dynamic ``coors`` (N, 3) if a cap is -1, else ``(voxels, coors, num_points_per_voxel)``."""
        if max_points == -1 or max_voxels == -1:
            return dynamic_voxel_coors(points, voxel_size, coors_range)
        return hard_voxelize(points, voxel_size, coors_range, int(max_points), int(max_voxels))


voxelization = _Voxelization.apply


class Voxelization(nn.Module):
    """Convert kitti points (N, >=3) to voxels, as ``mmcv.ops.Voxelization``.

    Args:
        voxel_size: [x, y, z] voxel size.
        point_cloud_range: [x_min, y_min, z_min, x_max, y_max, z_max].
        max_num_points: max points per voxel; -1 means dynamic voxelization.
        max_voxels: max voxels, an int or a (training, testing) tuple.
        deterministic: mmcv's switch to its CUDA non-deterministic kernel (see the module docstring).
    """

    def __init__(self, voxel_size: List, point_cloud_range: List, max_num_points: int,
                 max_voxels: Union[tuple, int] = 20000, deterministic: bool = True):
        super().__init__()
        self.voxel_size = voxel_size
        self.point_cloud_range = point_cloud_range
        self.max_num_points = max_num_points
        self.max_voxels = max_voxels if isinstance(max_voxels, tuple) else _pair(max_voxels)
        self.deterministic = deterministic
        cloud_range = torch.tensor(point_cloud_range, dtype=torch.float32)
        size = torch.tensor(voxel_size, dtype=torch.float32)
        # mmcv's module uses torch.round (halves to even) here, unlike the kernels' C round
        self.grid_size = torch.round((cloud_range[3:] - cloud_range[:3]) / size).long()
        self.pcd_shape = [*self.grid_size[:2], 1][::-1]  # [w, h, d] -> [d, h, w]

    def forward(self, input: Tensor) -> Union[Tensor, Tuple[Tensor, Tensor, Tensor]]:
        max_voxels = self.max_voxels[0] if self.training else self.max_voxels[1]
        return voxelization(input, self.voxel_size, self.point_cloud_range, self.max_num_points, max_voxels,
                            self.deterministic)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(voxel_size={self.voxel_size}, "
                f"point_cloud_range={self.point_cloud_range}, max_num_points={self.max_num_points}, "
                f"max_voxels={self.max_voxels}, deterministic={self.deterministic})")


registry.register(registry.OpEntry(
    op="voxelize",
    names=("Voxelization", "voxelization"),
    ext_functions=("dynamic_voxelize_forward", "hard_voxelize_forward"),
    backward="n/a",
    devices=("any",),
))
