"""``_ext`` adapters of mmcv.ops.furthest_point_sample (mmcv's pybind signatures, in-place outputs)."""

from __future__ import annotations

from torch import Tensor

from mmcv_runtime.ops.furthest_point_sample import fps_indices, fps_with_dist_indices

__all__ = ["furthest_point_sampling_forward", "furthest_point_sampling_with_dist_forward"]


def furthest_point_sampling_forward(points_tensor: Tensor, temp_tensor: Tensor, idx_tensor: Tensor,
                                    b: int, n: int, m: int) -> None:
    """FPS of (b, n, 3) points into ``idx_tensor`` (b, m); ``temp_tensor`` (b, n) gets the min distances."""
    if m <= 0 or b <= 0:
        return
    idx_tensor.copy_(fps_indices(points_tensor[:b, :n], m, temp_tensor[:b, :n]).to(idx_tensor.dtype))


def furthest_point_sampling_with_dist_forward(points_tensor: Tensor, temp_tensor: Tensor, idx_tensor: Tensor,
                                              b: int, n: int, m: int) -> None:
    """FPS from a (b, n, n) distance matrix into ``idx_tensor`` (b, m); ``temp_tensor`` as above."""
    if m <= 0 or b <= 0:
        return
    result = fps_with_dist_indices(points_tensor[:b, :n, :n], m, temp_tensor[:b, :n])
    idx_tensor.copy_(result.to(idx_tensor.dtype))
