"""``_ext`` adapters of mmcv.ops.voxelize: ``dynamic_voxelize_forward``, ``hard_voxelize_forward``.

mmcv's pybind signatures; results are written into the tensors the wrapper passes. As in the
kernel, only the stored point slots of ``voxels`` and the first ``voxel_num`` rows of ``coors`` and
``num_points_per_voxel`` are written (the wrapper passes zeros; the kernel counts points on top of
``num_points_per_voxel``'s content, here those rows are set, which is the same from zeros).
"""

from __future__ import annotations

from torch import Tensor

from mmcv_runtime.ops.voxelize import dynamic_voxel_coors, hard_assignment, scatter_rows

__all__ = ["dynamic_voxelize_forward", "hard_voxelize_forward"]


def dynamic_voxelize_forward(points: Tensor, voxel_size: Tensor, coors_range: Tensor, coors: Tensor,
                             NDim: int = 3) -> None:
    """Writes (N, NDim) voxel coordinates (reversed axis order, -1 outside) into ``coors``."""
    coors.copy_(dynamic_voxel_coors(points, voxel_size, coors_range, int(NDim)))


def hard_voxelize_forward(points: Tensor, voxel_size: Tensor, coors_range: Tensor, voxels: Tensor, coors: Tensor,
                          num_points_per_voxel: Tensor, voxel_num: Tensor, max_points: int, max_voxels: int,
                          NDim: int = 3, deterministic: bool = True) -> None:
    """Fills ``voxels`` (V, P, C), ``coors`` (V, 3), ``num_points_per_voxel`` (V,) and sets ``voxel_num``."""
    max_points, max_voxels = int(max_points), int(max_voxels)
    # the kernel writes past the buffers for caps larger than them (or -1): refuse instead
    if not 0 <= max_points <= voxels.size(1) or not 0 <= max_voxels <= voxels.size(0):
        raise ValueError(f"hard_voxelize_forward: max_points={max_points} and max_voxels={max_voxels} must fit "
                         f"the voxels buffer of shape {tuple(voxels.shape)}")
    found = hard_assignment(points, voxel_size, coors_range, max_points, max_voxels, int(NDim))
    m = found.voxel_num
    if voxels.is_contiguous():
        scatter_rows(voxels, found, points)
    else:
        voxels[found.voxel, found.slot] = points[found.point_index].to(voxels.dtype)
    coors[:m] = found.coors.to(coors.dtype)
    num_points_per_voxel[:m] = found.num_points.to(num_points_per_voxel.dtype)
    voxel_num.fill_(m)
