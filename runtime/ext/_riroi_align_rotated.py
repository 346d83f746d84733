"""``_ext`` adapters of mmcv.ops.riroi_align_rotated: ``riroi_align_rotated_forward`` / ``_backward``.

mmcv's pybind signatures: the forward writes ``output`` in place; the backward adds into
``bottom_grad`` (mmcv passes zeros), as the kernel's atomicAdds do. The feature map's shape for the
backward is ``bottom_grad``'s, as in mmcv's launcher.
"""

from __future__ import annotations

from torch import Tensor

from mmcv_runtime.ops.riroi_align_rotated import riroi_align_rotated_backward as _backward
from mmcv_runtime.ops.riroi_align_rotated import riroi_align_rotated_forward as _forward

__all__ = ["riroi_align_rotated_backward", "riroi_align_rotated_forward"]


def riroi_align_rotated_forward(features: Tensor, rois: Tensor, output: Tensor, pooled_height: int,
                                pooled_width: int, spatial_scale: float, num_samples: int, num_orientations: int,
                                clockwise: bool) -> None:
    """Writes the (K, C, pooled_height, pooled_width) pooled features into ``output``."""
    output.copy_(_forward(features, rois, (int(pooled_height), int(pooled_width)), float(spatial_scale),
                          int(num_samples), int(num_orientations), bool(clockwise)))


def riroi_align_rotated_backward(top_grad: Tensor, rois: Tensor, bottom_grad: Tensor, pooled_height: int,
                                 pooled_width: int, spatial_scale: float, num_samples: int, num_orientations: int,
                                 clockwise: bool) -> None:
    """Adds the features gradient of ``top_grad`` (K, C, pooled_height, pooled_width) into ``bottom_grad``."""
    bottom_grad.add_(_backward(top_grad, rois, bottom_grad.shape, (int(pooled_height), int(pooled_width)),
                               float(spatial_scale), int(num_samples), int(num_orientations), bool(clockwise)))
