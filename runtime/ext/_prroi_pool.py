"""``_ext`` adapters of mmcv.ops.prroi_pool: ``prroi_pool_forward``, ``prroi_pool_backward``,
``prroi_pool_coor_backward``.

mmcv's pybind signatures: ``output`` is written in place; the backward functions add into
``grad_input`` / ``grad_rois`` (mmcv passes zeros) as the kernels' atomicAdd does. Like the kernel,
``prroi_pool_coor_backward`` sets a RoI's batch-index gradient to 0 when any of its bins is non-empty
and has a non-zero output gradient; like it, the coordinate gradient reads the forward ``output``.
"""

from __future__ import annotations

from torch import Tensor

from mmcv_runtime.ops.prroi_pool import _geometry
from mmcv_runtime.ops.prroi_pool import prroi_pool_forward as _forward
from mmcv_runtime.ops.prroi_pool import prroi_pool_input_grad, prroi_pool_rois_grad

__all__ = ["prroi_pool_backward", "prroi_pool_coor_backward", "prroi_pool_forward"]


def prroi_pool_forward(input: Tensor, rois: Tensor, output: Tensor, pooled_height: int, pooled_width: int,
                       spatial_scale: float) -> None:
    output.copy_(_forward(input, rois, (int(pooled_height), int(pooled_width)), float(spatial_scale)))


def prroi_pool_backward(grad_output: Tensor, rois: Tensor, grad_input: Tensor, pooled_height: int,
                        pooled_width: int, spatial_scale: float) -> None:
    pooled = (int(pooled_height), int(pooled_width))
    grad_input.add_(prroi_pool_input_grad(grad_output, rois, grad_input.shape, pooled, float(spatial_scale)))


def prroi_pool_coor_backward(output: Tensor, grad_output: Tensor, input: Tensor, rois: Tensor, grad_rois: Tensor,
                             pooled_height: int, pooled_width: int, spatial_scale: float) -> None:
    pooled = (int(pooled_height), int(pooled_width))
    grad = prroi_pool_rois_grad(grad_output, input, rois, output, pooled, float(spatial_scale))
    grad_rois[:, 1:] += grad[:, 1:].to(grad_rois.dtype)
    # the kernel writes 0 into the batch column from every thread that reaches its atomicAdds
    active = ~_geometry(rois.detach(), pooled, float(spatial_scale)).empty & (grad_output != 0).flatten(1).any(1)
    grad_rois[:, 0].masked_fill_(active, 0)
