"""``_ext`` adapter of mmcv.ops.knn (mmcv's pybind signature, in-place outputs)."""

from __future__ import annotations

from torch import Tensor

from mmcv_runtime.ops.knn import knn_indices

__all__ = ["knn_forward"]


def knn_forward(xyz_tensor, new_xyz_tensor, idx_tensor, dist2_tensor, b=None, n=None, m=None,
                nsample=None) -> None:
    """(B, N, 3) points, (B, m, 3) centres -> ``idx_tensor``/``dist2_tensor`` (B, m, nsample), ascending.

    Also takes the catalogue's other overload ``(b, n, m, nsample, xyz, new_xyz, idx, dist2)``.
    """
    if not isinstance(xyz_tensor, Tensor):
        b, n, m, nsample, xyz_tensor, new_xyz_tensor, idx_tensor, dist2_tensor = (
            xyz_tensor, new_xyz_tensor, idx_tensor, dist2_tensor, b, n, m, nsample)
    idx, dist2 = knn_indices(xyz_tensor, new_xyz_tensor, int(nsample))
    idx_tensor.copy_(idx)
    dist2_tensor.copy_(dist2)
