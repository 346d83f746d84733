"""``mmcv.ops.roi_pool``: max pooling of quantised RoI bins (Fast R-CNN's RoIPool), as mmcv's kernel.

The RoI ``(batch, x1, y1, x2, y2)`` spans ``[x1 * s, (x2 + 1) * s)`` (``s = spatial_scale``); bin
``(ph, pw)`` covers the pixels ``floor(ph * bin_h + y1) <= h < ceil((ph + 1) * bin_h + y1)`` (and
likewise in x), clipped to the map. A bin outputs its first largest pixel in row-major order and
records that pixel (``h * W + w``) in ``argmax``; an empty bin outputs 0 with argmax -1, and a bin
whose pixels are all at or below -FLT_MAX outputs -FLT_MAX with argmax -1. The backward pass adds
each output gradient to its argmax pixel.

mmcv quirk, kept: a RoI of non-positive size (``x2 + 1 <= x1``) is skipped by the kernel, so its
output and argmax keep the zeros mmcv allocates, and the backward pass then sends its gradient to
pixel (0, 0) of each channel.

The windows are gathered as ragged bags of pixel rows and reduced with ``embedding_bag``'s max, which
keeps the first maximum of each bag, as the kernel does.
"""

from __future__ import annotations

from typing import Any, Tuple, Union

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.nn.modules.utils import _pair

from .. import registry
from ._bilinear import channels_last_rows
from ._checks import check_feature_map, check_rois

__all__ = ["RoIPool", "RoIPoolFunction", "roi_pool"]

_OP = "roi_pool"
_FLT_MAX = 3.4028234663852886e38
#: window pixels gathered at once (an index of 8 bytes each)
_PIXELS_PER_CHUNK = 1 << 22


def _bin_edges(start: Tensor, bin_size: Tensor, pooled: int, limit: int) -> Tuple[Tensor, Tensor]:
    """(K, pooled) first and one-past-last pixel of each bin along one axis, clipped to [0, limit]."""
    p = torch.arange(pooled, device=start.device).to(start.dtype)
    first = torch.floor(p * bin_size[:, None] + start[:, None]).clamp(0, limit).long()
    last = torch.ceil((p + 1) * bin_size[:, None] + start[:, None]).clamp(0, limit).long()
    return first, last


def roi_pool_forward(input: Tensor, rois: Tensor, pooled: Tuple[int, int],
                     spatial_scale: float) -> Tuple[Tensor, Tensor]:
    """``(output (K, C, ph, pw), argmax (K, C, ph, pw) int32)`` as mmcv's kernel writes them."""
    n, c, height, width = input.shape
    batch = check_rois(_OP, rois, n, 5)
    k, (ph, pw) = batch.numel(), pooled
    scale = torch.tensor(spatial_scale, dtype=input.dtype, device=input.device)
    boxes = rois.to(input.dtype)
    x1, y1 = boxes[:, 1] * scale, boxes[:, 2] * scale
    roi_w, roi_h = (boxes[:, 3] + 1) * scale - x1, (boxes[:, 4] + 1) * scale - y1
    skipped = ~((roi_w > 0) & (roi_h > 0))  # the kernel's ``continue``
    col_first, col_last = _bin_edges(x1, roi_w / pw, pw, width)
    row_first, row_last = _bin_edges(y1, roi_h / ph, ph, height)
    cols = (col_last - col_first).clamp(min=0)
    rows = (row_last - row_first).clamp(min=0)
    area = (rows[:, :, None] * cols[:, None, :]) * (~skipped).view(-1, 1, 1)  # (K, ph, pw)
    output = input.new_zeros((k, ph * pw, c))
    argmax = torch.zeros((k, ph * pw, c), dtype=torch.int32, device=input.device)
    table = channels_last_rows(input)
    per_roi = area.flatten(1).sum(1)
    for lo, hi in _roi_chunks(per_roi):
        sizes = area[lo:hi].reshape(-1)
        bag = torch.repeat_interleave(torch.arange(sizes.numel(), device=sizes.device), sizes)
        offsets = torch.cumsum(sizes, 0) - sizes
        local = torch.arange(bag.numel(), device=sizes.device) - offsets[bag]
        roi = bag // (ph * pw) + lo
        bin_row, bin_col = (bag // pw) % ph, bag % pw
        span = cols[roi, bin_col]
        h = row_first[roi, bin_row] + local // span.clamp(min=1)
        w = col_first[roi, bin_col] + local % span.clamp(min=1)
        pixel = batch[roi] * (height * width) + h * width + w
        if c == 0 or pixel.numel() == 0:
            continue
        best, _, _, which = torch.embedding_bag(table, pixel, offsets, False, 2, False, None, False, None)
        found = (sizes > 0).unsqueeze(1) & (best > -_FLT_MAX)
        empty_or_floor = (sizes > 0).unsqueeze(1) & ~found
        best = torch.where(empty_or_floor, best.new_tensor(-_FLT_MAX), best)
        where = (which - (batch[lo:hi].repeat_interleave(ph * pw) * (height * width)).unsqueeze(1)).int()
        output[lo:hi] = best.reshape(hi - lo, ph * pw, c)
        argmax[lo:hi] = torch.where(found, where, -1).reshape(hi - lo, ph * pw, c)
    argmax[skipped] = 0  # what mmcv allocates, never written for a skipped RoI

    def layout(t: Tensor) -> Tensor:
        return t.reshape(k, ph, pw, c).permute(0, 3, 1, 2).contiguous()

    return layout(output), layout(argmax)


def _roi_chunks(per_roi: Tensor):
    k = per_roi.numel()
    if k == 0:
        return []
    total = torch.cumsum(per_roi, 0)
    if int(total[-1]) <= _PIXELS_PER_CHUNK:
        return [(0, k)]
    cuts = torch.searchsorted(total, torch.arange(_PIXELS_PER_CHUNK, int(total[-1]), _PIXELS_PER_CHUNK,
                                                  device=total.device)).tolist()
    bounds = sorted({0, k, *[min(cut + 1, k) for cut in cuts]})
    return list(zip(bounds[:-1], bounds[1:]))


def roi_pool_backward(grad_output: Tensor, rois: Tensor, argmax: Tensor, input_shape) -> Tensor:
    """(N, C, H, W): each output gradient added to its argmax pixel (none where argmax is -1)."""
    n, c, height, width = input_shape
    grad_input = grad_output.new_zeros(n * c * height * width)
    if grad_output.numel() == 0:
        return grad_input.reshape(input_shape)
    batch = rois[:, 0].long()
    plane = batch.view(-1, 1, 1, 1) * c + torch.arange(c, device=batch.device).view(1, -1, 1, 1)
    hit = argmax != -1
    index = plane * (height * width) + argmax.long()
    grad_input.index_add_(0, index[hit], grad_output[hit].to(grad_input.dtype))
    return grad_input.reshape(input_shape)


class RoIPoolFunction(torch.autograd.Function):
    """mmcv's ``RoIPoolFunction``; ``roi_pool = RoIPoolFunction.apply``."""

    @staticmethod
    def forward(ctx: Any, input: Tensor, rois: Tensor, output_size: Union[int, tuple],
                spatial_scale: float = 1.0) -> Tensor:
        check_feature_map(_OP, input, rois)
        ctx.output_size = _pair(output_size)
        ctx.spatial_scale = float(spatial_scale)
        ctx.input_shape = input.size()
        output, argmax = roi_pool_forward(input, rois, ctx.output_size, ctx.spatial_scale)
        ctx.save_for_backward(rois, argmax)
        return output

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_output: Tensor) -> Tuple[Tensor, None, None, None]:
        rois, argmax = ctx.saved_tensors
        return roi_pool_backward(grad_output, rois, argmax, ctx.input_shape), None, None, None


roi_pool = RoIPoolFunction.apply


class RoIPool(nn.Module):
    """RoI max pooling layer, as mmcv's.

    Shapes: input (N, C, H, W), rois (K, 5) as ``(batch index, x1, y1, x2, y2)``; output
    (K, C, output_size[0], output_size[1]).
    """

    def __init__(self, output_size: Union[int, tuple], spatial_scale: float = 1.0):
        super().__init__()
        self.output_size = _pair(output_size)
        self.spatial_scale = float(spatial_scale)

    def forward(self, input: Tensor, rois: Tensor) -> Tensor:
        return roi_pool(input, rois, self.output_size, self.spatial_scale)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(output_size={self.output_size}, spatial_scale={self.spatial_scale})"


registry.register(registry.OpEntry(
    op="roi_pool",
    names=("RoIPool", "RoIPoolFunction", "roi_pool"),
    ext_functions=("roi_pool_backward", "roi_pool_forward"),
    backward="yes",
    devices=("any",),
))
