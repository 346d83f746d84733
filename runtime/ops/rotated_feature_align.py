"""``mmcv.ops.rotated_feature_align``: pixel-wise feature refinement at refined rotated anchors (R3Det, S2ANet).

Semantics follow mmcv's kernels (CPU and CUDA agree). ``features`` is (N, C, H, W) and
``best_rbboxes`` (N, H, W, 5), one rotated box per pixel. For each pixel the kernel reads

- ``roi_y = box[0] * s`` and ``roi_x = box[1] * s`` (``s = spatial_scale``, a C++ float cast to the
  features' dtype). Quirk reproduced: the first box field is used as the **y** centre and the second
  as **x**, although mmrotate stores ``(cx, cy, w, h, a)``;
- with ``points == 5`` also the four corners: ``roi_w = box[2] * s``, ``roi_h = box[3] * s``,
  ``a = box[4]``; ``cos``/``sin`` are ``cosf``/``sinf`` (float precision, also for float64 input);
  ``wx, wy = cos * w/2, sin * w/2``, ``hx, hy = -sin * h/2, cos * h/2``; corners, in this order,
  ``(x + wx + hx, y + wy + hy)``, ``(x - wx + hx, y - wy + hy)``, ``(x - wx - hx, y - wy - hy)``,
  ``(x + wx - hx, y + wy - hy)`` (sums left to right, as the kernel).

``output[n, c, h, w] = features[n, c, h, w] + sum over the points of bilinear(features[n, c], y, x)``
with mmcv's RoI-align border rule (:func:`._bilinear.bilinear_taps`: nothing outside
[-1, H] x [-1, W], clamped to the last row/column). The backward gives ``features`` the output
gradient plus the transposed bilinear taps (the kernels' atomicAdds); ``best_rbboxes`` gets no
gradient, as in mmcv. float16/bfloat16 compute in float32 (mmcv dispatches float32/float64 only)
and return their dtype.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .. import registry
from ._bilinear import (bag_of_each_tap, bilinear_taps, channels_last_rows, redirect_outside_taps,
                        rows_with_zero_row, transposed_row_sum, weighted_row_sum)
from ._checks import check_choice, check_same_device, compute_dtype, no_autocast

__all__ = ["RotatedFeatureAlignFunction", "rotated_feature_align"]

_OP = "rotated_feature_align"


def _check(features: Any, best_rbboxes: Any, points: Any, name: str = "features") -> None:
    for arg, value in ((name, features), ("best_rbboxes", best_rbboxes)):
        if not isinstance(value, Tensor):
            raise TypeError(f"{_OP}: {arg} must be a torch.Tensor, got {type(value).__name__}")
    if features.dim() != 4:
        raise ValueError(f"{_OP}: {name} must have shape (N, C, H, W), got {tuple(features.shape)}")
    if not features.is_floating_point():
        raise TypeError(f"{_OP}: {name} must be a floating point tensor, got {features.dtype}")
    n, _, h, w = features.shape
    if tuple(best_rbboxes.shape) != (n, h, w, 5):
        raise ValueError(f"{_OP}: best_rbboxes must have shape (N, H, W, 5) = {(n, h, w, 5)} to match "
                         f"{name}, got {tuple(best_rbboxes.shape)}")
    if not best_rbboxes.is_floating_point():
        raise TypeError(f"{_OP}: best_rbboxes must be a floating point tensor, got {best_rbboxes.dtype}")
    check_same_device(_OP, **{name: features, "best_rbboxes": best_rbboxes})
    if isinstance(points, bool) or not isinstance(points, int):
        raise TypeError(f"{_OP}: points must be an int (1 or 5), got {type(points).__name__}")
    check_choice(_OP, "points", points, (1, 5))


def _sample_points(best_rbboxes: Tensor, spatial_scale: float, points: int,
                   dtype: torch.dtype) -> Tuple[Tensor, Tensor]:
    """(y, x), each (N, H, W, points): the kernel's sample points, in its arithmetic."""
    boxes = best_rbboxes.detach().to(dtype)
    # the launcher takes spatial_scale as a C++ float, then casts it to scalar_t
    scale = torch.tensor(float(spatial_scale), dtype=torch.float32).to(device=boxes.device, dtype=dtype)
    roi_y, roi_x = boxes[..., 0] * scale, boxes[..., 1] * scale
    if points == 1:
        return roi_y.unsqueeze(-1), roi_x.unsqueeze(-1)
    w_2, h_2 = boxes[..., 2] * scale / 2, boxes[..., 3] * scale / 2
    angle = boxes[..., 4].float()  # cosf / sinf
    cosa, sina = torch.cos(angle).to(dtype), torch.sin(angle).to(dtype)
    wx, wy = cosa * w_2, sina * w_2
    hx, hy = -sina * h_2, cosa * h_2
    xs = [roi_x, roi_x + wx + hx, roi_x - wx + hx, roi_x - wx - hx, roi_x + wx - hx]
    ys = [roi_y, roi_y + wy + hy, roi_y - wy + hy, roi_y - wy - hy, roi_y + wy - hy]
    return torch.stack(ys, -1), torch.stack(xs, -1)


def _taps(shape, best_rbboxes: Tensor, spatial_scale: float, points: int, dtype: torch.dtype,
          zero_row: Optional[int]) -> Tuple[Tensor, Tensor]:
    """(N * H * W, points * 4) row indices into :func:`channels_last_rows` and their weights."""
    n, _, h, w = shape
    y, x = _sample_points(best_rbboxes, spatial_scale, points, dtype)
    index, weight = bilinear_taps(y, x, h, w)  # (N, H, W, points, 4), indices within one image
    base = (torch.arange(n, device=index.device) * (h * w)).view(n, 1, 1, 1, 1)
    index = index + base
    if zero_row is not None:
        index = redirect_outside_taps(index, weight, zero_row)
    return index.reshape(n * h * w, points * 4), weight.reshape(n * h * w, points * 4)


def rotated_feature_align_forward(features: Tensor, best_rbboxes: Tensor, spatial_scale: float,
                                  points: int) -> Tensor:
    """(N, C, H, W) refined features; no autograd graph."""
    _check(features, best_rbboxes, points)
    n, c, h, w = features.shape
    if features.numel() == 0:
        return features.detach().clone()
    dtype = compute_dtype(features.dtype)
    with torch.no_grad(), no_autocast(features.device):
        feats = features.detach().to(dtype)
        rows, zero_row = rows_with_zero_row(feats)
        index, weight = _taps(feats.shape, best_rbboxes, spatial_scale, points, dtype, zero_row)
        sampled = weighted_row_sum(rows, index, weight)  # (N * H * W, C)
        out = feats + sampled.view(n, h, w, c).permute(0, 3, 1, 2)
    return out.to(features.dtype)


def rotated_feature_align_backward(grad_output: Tensor, best_rbboxes: Tensor, spatial_scale: float,
                                   points: int) -> Tensor:
    """The features gradient (N, C, H, W) of mmcv's backward kernel for grad_output (N, C, H, W)."""
    _check(grad_output, best_rbboxes, points, "grad_output")
    n, c, h, w = grad_output.shape
    if grad_output.numel() == 0:
        return grad_output.detach().clone()
    dtype = compute_dtype(grad_output.dtype)
    with torch.no_grad(), no_autocast(grad_output.device):
        grad = grad_output.detach().to(dtype)
        index, weight = _taps(grad.shape, best_rbboxes, spatial_scale, points, dtype, None)
        offsets = torch.arange(0, index.numel(), index.size(1), device=index.device)
        bag = bag_of_each_tap(offsets, index.numel())
        # taps outside the map have weight 0 and index 0: they add exact zeros, as the kernel skips them
        spread = transposed_row_sum(channels_last_rows(grad).contiguous(), index.reshape(-1), weight.reshape(-1),
                                    bag, n * h * w)
        out = grad + spread.view(n, h, w, c).permute(0, 3, 1, 2)
    return out.to(grad_output.dtype)


class RotatedFeatureAlignFunction(torch.autograd.Function):
    """mmcv's ``RotatedFeatureAlignFunction`` (R3Det's feature refinement module)."""

    @staticmethod
    def symbolic(g, features, best_rbboxes, spatial_scale, points):
        check_choice(_OP, "points", points, (1, 5))
        return g.op("mmcv::MMCVRotatedFeatureAlign", features, best_rbboxes, spatial_scale_f=spatial_scale,
                    points_i=points)

    @staticmethod
    def forward(ctx: Any, features: Tensor, best_rbboxes: Tensor, spatial_scale: float, points: int) -> Tensor:
        """features (N, C, H, W), best_rbboxes (N, H, W, 5) -> (N, C, H, W)."""
        output = rotated_feature_align_forward(features, best_rbboxes, spatial_scale, points)
        ctx.spatial_scale = spatial_scale
        ctx.points = points
        ctx.save_for_backward(best_rbboxes)
        return output

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_output: Tensor) -> Tuple[Optional[Tensor], None, None, None]:
        (best_rbboxes,) = ctx.saved_tensors
        grad_input = None
        if ctx.needs_input_grad[0]:
            grad_input = rotated_feature_align_backward(grad_output.contiguous(), best_rbboxes, ctx.spatial_scale,
                                                        ctx.points)
        return grad_input, None, None, None


def rotated_feature_align(features: Tensor, best_rbboxes: Tensor, spatial_scale: float = 1 / 8,
                          points: int = 1) -> Tensor:
    """Refine features (N, C, H, W) at the rotated boxes best_rbboxes (N, H, W, 5); points is 1 or 5."""
    return RotatedFeatureAlignFunction.apply(features, best_rbboxes, spatial_scale, points)


registry.register(registry.OpEntry(
    op="rotated_feature_align",
    names=("RotatedFeatureAlignFunction", "rotated_feature_align"),
    ext_functions=("rotated_feature_align_backward", "rotated_feature_align_forward"),
    backward="yes",
    devices=("any",),
))
