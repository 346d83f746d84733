"""The functions of Sparse4D / SparseDrive's compiled ``deformable_aggregation_ext``.

Shapes and semantics: :mod:`mmcv_runtime.ops.deformable_aggregation` (either the v3/SparseDrive or the
Sparse4D v2 layout, picked by the rank of ``mc_ms_feat``, as the two kernels take them).
"""

from __future__ import annotations

from torch import Tensor

from mmcv_runtime.ops.deformable_aggregation import backward_core, forward_core

__all__ = ["deformable_aggregation_forward", "deformable_aggregation_backward"]


def deformable_aggregation_forward(mc_ms_feat: Tensor, spatial_shape: Tensor, scale_start_index: Tensor,
                                   sampling_location: Tensor, weights: Tensor) -> Tensor:
    """The aggregated features, (bs, num_anchors, C) (v2: (bs, num_pts, C)), as a new tensor."""
    return forward_core(mc_ms_feat, spatial_shape, scale_start_index, sampling_location, weights)


def deformable_aggregation_backward(mc_ms_feat: Tensor, spatial_shape: Tensor, scale_start_index: Tensor,
                                    sampling_location: Tensor, weights: Tensor, grad_output: Tensor,
                                    grad_mc_ms_feat: Tensor, grad_sampling_location: Tensor,
                                    grad_weights: Tensor) -> None:
    """Adds the three gradients into ``grad_mc_ms_feat``, ``grad_sampling_location`` and
    ``grad_weights`` (the kernel ``atomicAdd``s into them; the projects pass zeroed tensors)."""
    grads = backward_core(mc_ms_feat, spatial_shape, scale_start_index, sampling_location, weights,
                          grad_output)
    for out, grad in zip((grad_mc_ms_feat, grad_sampling_location, grad_weights), grads):
        out.add_(grad.to(out.dtype))
