"""``_ext`` adapters of mmcv.ops.rotated_feature_align: ``rotated_feature_align_forward`` / ``_backward``.

mmcv's pybind signatures: the forward writes ``output`` in place; the backward adds into
``bottom_grad`` (mmcv passes zeros), as the kernels' atomicAdds / ``+=`` do.
"""

from __future__ import annotations

from torch import Tensor

from mmcv_runtime.ops.rotated_feature_align import rotated_feature_align_backward as _backward
from mmcv_runtime.ops.rotated_feature_align import rotated_feature_align_forward as _forward

__all__ = ["rotated_feature_align_backward", "rotated_feature_align_forward"]


def rotated_feature_align_forward(features: Tensor, best_bboxes: Tensor, output: Tensor, spatial_scale: float,
                                  points: int) -> None:
    """Writes the refined features (N, C, H, W) into ``output``."""
    output.copy_(_forward(features, best_bboxes, float(spatial_scale), int(points)))


def rotated_feature_align_backward(top_grad: Tensor, best_bboxes: Tensor, bottom_grad: Tensor, spatial_scale: float,
                                   points: int) -> None:
    """Adds the features gradient of ``top_grad`` (N, C, H, W) into ``bottom_grad``."""
    bottom_grad.add_(_backward(top_grad, best_bboxes, float(spatial_scale), int(points)))
