"""``_ext`` adapters of mmcv.ops.carafe: ``carafe_forward``, ``carafe_backward``, ``carafe_naive_forward``,
``carafe_naive_backward`` (mmcv's pybind signatures, outputs written in place).

What the kernels write, reproduced here:

- ``carafe_naive_forward`` / ``carafe_forward`` overwrite ``output``.
- ``carafe_naive_backward`` ACCUMULATES into ``bottom_grad`` / ``mask_grad`` (atomicAdd).
- ``carafe_backward`` OVERWRITES ``bottom_grad`` / ``mask_grad`` (they are transposed copies of its
  NHWC scratch results).
- The fast kernels' NHWC scratch tensors are resized to NHWC as the launchers do and filled with the
  permuted copies the launchers leave there (``rfeatures``, ``rmasks``, ``routput``; ``rtop_grad``,
  ``rbottom_grad``, ``rmask_grad``), because mmcv's wrapper feeds ``rfeatures`` back into
  ``carafe_backward``. ``rbottom_grad_hs`` (the kernel's high-resolution partial feature gradient,
  an internal intermediate) is resized but left as passed (mmcv's wrapper passes zeros).
"""

from __future__ import annotations

from torch import Tensor

from mmcv_runtime.ops.carafe import carafe_backward_core, carafe_forward_core, check_carafe_inputs

__all__ = ["carafe_forward", "carafe_backward", "carafe_naive_forward", "carafe_naive_backward"]


def _nhwc_into(scratch: Tensor, value: Tensor) -> None:
    """Resize ``scratch`` to NHWC and copy the (N, C, H, W) ``value`` into it, as the launchers do."""
    n, c, h, w = value.shape
    scratch.resize_((n, h, w, c))
    scratch.copy_(value.permute(0, 2, 3, 1))


def carafe_naive_forward(features: Tensor, masks: Tensor, output: Tensor, kernel_size: int, group_size: int,
                         scale_factor: int) -> None:
    """Writes the (N, C, H*s, W*s) reassembled features into ``output``."""
    k, g, s = check_carafe_inputs("carafe_naive_forward", features, masks, kernel_size, group_size, scale_factor)
    output.copy_(carafe_forward_core(features, masks, k, g, s))


def carafe_naive_backward(top_grad: Tensor, features: Tensor, masks: Tensor, bottom_grad: Tensor,
                          mask_grad: Tensor, kernel_size: int, group_size: int, scale_factor: int) -> None:
    """Adds the features / masks gradients into ``bottom_grad`` / ``mask_grad``."""
    k, g, s = check_carafe_inputs("carafe_naive_backward", features, masks, kernel_size, group_size,
                                  scale_factor)
    grad_features, grad_masks = carafe_backward_core(top_grad, features, masks, k, g, s)
    bottom_grad.add_(grad_features)
    mask_grad.add_(grad_masks)


def carafe_forward(features: Tensor, masks: Tensor, rfeatures: Tensor, routput: Tensor, rmasks: Tensor,
                   output: Tensor, kernel_size: int, group_size: int, scale_factor: int) -> None:
    """Writes ``output``; leaves NHWC copies of features / output / masks in the scratch tensors."""
    k, g, s = check_carafe_inputs("carafe_forward", features, masks, kernel_size, group_size, scale_factor)
    result = carafe_forward_core(features, masks, k, g, s)
    output.copy_(result)
    _nhwc_into(rfeatures, features)
    _nhwc_into(rmasks, masks)
    _nhwc_into(routput, result)


def carafe_backward(top_grad: Tensor, rfeatures: Tensor, masks: Tensor, rtop_grad: Tensor,
                    rbottom_grad_hs: Tensor, rbottom_grad: Tensor, rmask_grad: Tensor, bottom_grad: Tensor,
                    mask_grad: Tensor, kernel_size: int, group_size: int, scale_factor: int) -> None:
    """Overwrites ``bottom_grad`` / ``mask_grad``; ``rfeatures`` holds the NHWC features from the forward."""
    n, c = top_grad.shape[:2]
    h, w = bottom_grad.shape[2:]
    # The kernel reads rfeatures' memory as (N, H, W, C) whatever its nominal shape.
    features = rfeatures.reshape(n, h, w, c).permute(0, 3, 1, 2)
    k, g, s = check_carafe_inputs("carafe_backward", features, masks, kernel_size, group_size, scale_factor)
    grad_features, grad_masks = carafe_backward_core(top_grad, features, masks, k, g, s)
    bottom_grad.copy_(grad_features)
    mask_grad.copy_(grad_masks)
    _nhwc_into(rtop_grad, top_grad)
    _nhwc_into(rbottom_grad, grad_features)
    _nhwc_into(rmask_grad, grad_masks)
    rbottom_grad_hs.resize_((n, top_grad.size(2), top_grad.size(3), c))
