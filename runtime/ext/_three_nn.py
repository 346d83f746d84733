"""``_ext`` adapter of mmcv.ops.three_nn (mmcv's pybind signature, in-place outputs)."""

from __future__ import annotations

from torch import Tensor

from mmcv_runtime.ops.three_nn import three_nn_squared

__all__ = ["three_nn_forward"]


def three_nn_forward(unknown_tensor: Tensor, known_tensor: Tensor, dist2_tensor: Tensor, idx_tensor: Tensor,
                     b: int, n: int, m: int) -> None:
    """SQUARED distances (the wrapper takes the sqrt) and int indices of the 3 nearest known points."""
    dist2, idx = three_nn_squared(unknown_tensor, known_tensor)
    dist2_tensor.copy_(dist2)
    idx_tensor.copy_(idx)
