"""``mmcv.ops.deform_roi_pool``: deformable RoI pooling (Deformable ConvNets), as mmcv's CUDA kernel.

Like ``roi_align`` with ``aligned=True`` (RoI scaled, shifted by -0.5, no minimum size, average of
bilinear samples over ``max(grid, 1)``), except that each bin's start moves by
``gamma * (roi_w, roi_h) * offset[k, :, ph, pw]`` when an offset is given.

The offset gradient is mmcv's, not autograd's: the kernel differentiates the bilinear blend with
the *unclamped* sample coordinate against the clamped neighbours, so where a sample is clamped
(above/left of the map, or on its last row/column) it differs from the true derivative. It is
computed from the dot products of each tap's feature row with its bin's output gradient.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.nn.modules.utils import _pair

from .. import registry
from ._bilinear import bilinear_corners, channels_last_rows, tap_dots
from ._checks import check_feature_map, check_rois
from ._roi_sampling import (BinSamples, adaptive_grid, average_bins, average_bins_backward, bin_counts,
                            bin_of_each_tap, sample_chunks)

__all__ = ["DeformRoIPool", "DeformRoIPoolFunction", "DeformRoIPoolPack", "ModulatedDeformRoIPoolPack",
           "deform_roi_pool"]

_OP = "deform_roi_pool"


class _DeformGeometry:
    def __init__(self, input_shape, rois: Tensor, offset: Optional[Tensor], pooled: Tuple[int, int],
                 spatial_scale: float, sampling_ratio: int, gamma: float, dtype: torch.dtype):
        self.batch = check_rois(_OP, rois, input_shape[0], 5)
        k = self.batch.numel()
        if offset is not None and offset.numel() and tuple(offset.shape) != (k, 2, *pooled):
            raise ValueError(f"{_OP}: offset must have shape {(k, 2, *pooled)}, got {tuple(offset.shape)}")
        rois = rois.to(dtype)
        scale = torch.tensor(spatial_scale, dtype=dtype, device=rois.device)
        start_w, start_h = rois[:, 1] * scale - 0.5, rois[:, 2] * scale - 0.5
        self.width, self.height = rois[:, 3] * scale - 0.5 - start_w, rois[:, 4] * scale - 0.5 - start_h
        self.bin_h, self.bin_w = self.height / pooled[0], self.width / pooled[1]
        self.grid_h = adaptive_grid(self.height, pooled[0], sampling_ratio)
        self.grid_w = adaptive_grid(self.width, pooled[1], sampling_ratio)
        self.gamma = torch.tensor(gamma, dtype=dtype, device=rois.device)
        # (K, ph, pw) start of every bin's sampling window
        self.start_w = start_w.view(-1, 1, 1).expand(k, *pooled)
        self.start_h = start_h.view(-1, 1, 1).expand(k, *pooled)
        if offset is not None and offset.numel():
            offset = offset.to(dtype)
            self.start_w = self.start_w + self.gamma * self.width.view(-1, 1, 1) * offset[:, 0]
            self.start_h = self.start_h + self.gamma * self.height.view(-1, 1, 1) * offset[:, 1]

    def place(self, s: BinSamples, lo: int) -> Tuple[Tensor, Tensor]:
        k = s.roi + lo
        bin_h, bin_w = self.bin_h[k], self.bin_w[k]
        dtype = bin_h.dtype
        y = (self.start_h[k, s.ph, s.pw] + s.ph.to(dtype) * bin_h) + (s.iy.to(dtype) + 0.5) * bin_h / self.grid_h[k].to(dtype)
        x = (self.start_w[k, s.ph, s.pw] + s.pw.to(dtype) * bin_w) + (s.ix.to(dtype) + 0.5) * bin_w / self.grid_w[k].to(dtype)
        return y, x


def deform_roi_pool_forward(input: Tensor, rois: Tensor, offset: Optional[Tensor], pooled: Tuple[int, int],
                            spatial_scale: float, sampling_ratio: int, gamma: float) -> Tensor:
    """(K, C, pooled_h, pooled_w) averages of the (shifted) bins."""
    g = _DeformGeometry(input.shape, rois, offset, pooled, spatial_scale, sampling_ratio, gamma, input.dtype)
    with torch.no_grad():
        return average_bins(input, g.batch, g.grid_h, g.grid_w, pooled, g.place)


def deform_roi_pool_backward(grad_output: Tensor, input: Tensor, rois: Tensor, offset: Optional[Tensor],
                             pooled: Tuple[int, int], spatial_scale: float, sampling_ratio: int,
                             gamma: float) -> Tuple[Tensor, Optional[Tensor]]:
    """``(grad_input (N, C, H, W), grad_offset (K, 2, ph, pw) or None without an offset)``, as the kernel."""
    g = _DeformGeometry(input.shape, rois, offset, pooled, spatial_scale, sampling_ratio, gamma, input.dtype)
    grad_input = average_bins_backward(grad_output, input.shape, g.batch, g.grid_h, g.grid_w, pooled, g.place)
    if offset is None or offset.numel() == 0:
        return grad_input, None
    return grad_input, _offset_gradient(grad_output, input, g, pooled).to(offset.dtype)


def _offset_gradient(grad_output: Tensor, input: Tensor, g: _DeformGeometry, pooled: Tuple[int, int]) -> Tensor:
    n, c, height, width = input.shape
    k, bins = g.batch.numel(), pooled[0] * pooled[1]
    rows = channels_last_rows(input)
    grad_bins = grad_output.permute(0, 2, 3, 1).reshape(-1, c)
    grad_bins = grad_bins / bin_counts(g.grid_h, g.grid_w, bins, grad_bins.dtype).unsqueeze(1)
    grad_x = grad_output.new_zeros(k * bins)
    grad_y = grad_output.new_zeros(k * bins)
    for chunk in sample_chunks(input.shape, g.batch, g.grid_h, g.grid_w, pooled, g.place):
        # <feature row of each tap, output gradient of its bin>, summed over channels
        bag = bin_of_each_tap(chunk, bins)
        dots = tap_dots(rows, chunk.index, grad_bins, bag).view(-1, 4)
        corners = bilinear_corners(chunk.y, chunk.x, height, width)
        y, x = chunk.y, chunk.x  # unclamped, as the kernel's gradient uses them
        d_dx = torch.stack([y - corners.y_high, corners.y_high - y, corners.y_low - y, y - corners.y_low], 1)
        d_dy = torch.stack([x - corners.x_high, corners.x_low - x, corners.x_high - x, x - corners.x_low], 1)
        bin_of_sample = bag.view(-1, 4)[:, 0]
        # where, not a product: an out-of-map tap reads pixel (0, 0), which may be inf
        zero = dots.new_zeros(())
        grad_x.index_add_(0, bin_of_sample, torch.where(corners.inside, (d_dx * dots).sum(1), zero))
        grad_y.index_add_(0, bin_of_sample, torch.where(corners.inside, (d_dy * dots).sum(1), zero))
    scale_x = (g.gamma * g.width).repeat_interleave(bins)
    scale_y = (g.gamma * g.height).repeat_interleave(bins)
    return torch.stack([grad_x * scale_x, grad_y * scale_y], 1).view(k, *pooled, 2).permute(0, 3, 1, 2).contiguous()


class DeformRoIPoolFunction(torch.autograd.Function):
    """mmcv's ``DeformRoIPoolFunction``; ``deform_roi_pool = DeformRoIPoolFunction.apply``."""

    @staticmethod
    def forward(ctx, input: Tensor, rois: Tensor, offset: Optional[Tensor], output_size: Tuple[int, ...],
                spatial_scale: float = 1.0, sampling_ratio: int = 0, gamma: float = 0.1) -> Tensor:
        check_feature_map(_OP, input, rois)
        if offset is None:
            offset = input.new_zeros(0)
        ctx.output_size = _pair(output_size)
        ctx.spatial_scale = float(spatial_scale)
        ctx.sampling_ratio = int(sampling_ratio)
        ctx.gamma = float(gamma)
        ctx.save_for_backward(input, rois, offset)
        return deform_roi_pool_forward(input, rois, offset, ctx.output_size, ctx.spatial_scale, ctx.sampling_ratio,
                                       ctx.gamma)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: Tensor):
        input, rois, offset = ctx.saved_tensors
        grad_input, grad_offset = deform_roi_pool_backward(grad_output.contiguous(), input, rois, offset,
                                                           ctx.output_size, ctx.spatial_scale, ctx.sampling_ratio,
                                                           ctx.gamma)
        return grad_input, None, grad_offset, None, None, None, None


deform_roi_pool = DeformRoIPoolFunction.apply


class DeformRoIPool(nn.Module):
    """Deformable RoI pooling with externally given offsets (K, 2, ph, pw), as mmcv's.

    Shapes: input (N, C, H, W), rois (K, 5) as ``(batch index, x1, y1, x2, y2)``; output
    (K, C, output_size[0], output_size[1]).
    """

    def __init__(self, output_size: Tuple[int, ...], spatial_scale: float = 1.0, sampling_ratio: int = 0,
                 gamma: float = 0.1):
        super().__init__()
        self.output_size = _pair(output_size)
        self.spatial_scale = float(spatial_scale)
        self.sampling_ratio = int(sampling_ratio)
        self.gamma = float(gamma)

    def forward(self, input: Tensor, rois: Tensor, offset: Optional[Tensor] = None) -> Tensor:
        return deform_roi_pool(input, rois, offset, self.output_size, self.spatial_scale, self.sampling_ratio,
                               self.gamma)


def _offset_head(output_size: Tuple[int, int], channels: int, hidden: int, outputs: int) -> nn.Sequential:
    """mmcv's three-layer fc head predicting per-bin offsets; its last layer starts at zero."""
    bins = output_size[0] * output_size[1]
    head = nn.Sequential(nn.Linear(bins * channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, hidden),
                         nn.ReLU(inplace=True), nn.Linear(hidden, bins * outputs))
    head[-1].weight.data.zero_()
    head[-1].bias.data.zero_()
    return head


class DeformRoIPoolPack(DeformRoIPool):
    """Deformable RoI pooling that predicts its offsets from a first, undeformed pooling (mmcv's
    ``offset_fc`` head: state_dict keys ``offset_fc.{0,2,4}.{weight,bias}``)."""

    def __init__(self, output_size: Tuple[int, ...], output_channels: int, deform_fc_channels: int = 1024,
                 spatial_scale: float = 1.0, sampling_ratio: int = 0, gamma: float = 0.1):
        super().__init__(output_size, spatial_scale, sampling_ratio, gamma)
        self.output_channels = output_channels
        self.deform_fc_channels = deform_fc_channels
        self.offset_fc = _offset_head(self.output_size, output_channels, deform_fc_channels, 2)

    def forward(self, input: Tensor, rois: Tensor) -> Tensor:  # type: ignore[override]
        return _pool_twice(self, input, rois)[0]


class ModulatedDeformRoIPoolPack(DeformRoIPool):
    """:class:`DeformRoIPoolPack` plus a sigmoid mask per bin (mmcv's ``mask_fc``: keys
    ``mask_fc.{0,2}.{weight,bias}``), built after ``offset_fc`` like mmcv's, so seeded initialisation
    gives the same weights."""

    def __init__(self, output_size: Tuple[int, ...], output_channels: int, deform_fc_channels: int = 1024,
                 spatial_scale: float = 1.0, sampling_ratio: int = 0, gamma: float = 0.1):
        super().__init__(output_size, spatial_scale, sampling_ratio, gamma)
        self.output_channels = output_channels
        self.deform_fc_channels = deform_fc_channels
        self.offset_fc = _offset_head(self.output_size, output_channels, deform_fc_channels, 2)
        bins = self.output_size[0] * self.output_size[1]
        self.mask_fc = nn.Sequential(nn.Linear(bins * output_channels, deform_fc_channels), nn.ReLU(inplace=True),
                                     nn.Linear(deform_fc_channels, bins), nn.Sigmoid())
        self.mask_fc[2].weight.data.zero_()
        self.mask_fc[2].bias.data.zero_()

    def forward(self, input: Tensor, rois: Tensor) -> Tensor:  # type: ignore[override]
        deformed, plain = _pool_twice(self, input, rois)
        return deformed * self.mask_fc(plain).view(rois.size(0), 1, *self.output_size)


def _pool_twice(pack: DeformRoIPool, input: Tensor, rois: Tensor) -> Tuple[Tensor, Tensor]:
    """``(deformed pooling, plain pooling flattened per RoI)``: the plain one predicts the offsets."""
    if input.size(1) != pack.output_channels:
        raise ValueError(f"{_OP}: input has {input.size(1)} channels, the module was built for "
                         f"{pack.output_channels}")
    args = (pack.output_size, pack.spatial_scale, pack.sampling_ratio, pack.gamma)
    plain = deform_roi_pool(input, rois, None, *args).view(rois.size(0), -1)
    offset = pack.offset_fc(plain).view(rois.size(0), 2, *pack.output_size)
    return deform_roi_pool(input, rois, offset, *args), plain


registry.register(registry.OpEntry(
    op="deform_roi_pool",
    names=("DeformRoIPool", "DeformRoIPoolFunction", "DeformRoIPoolPack", "ModulatedDeformRoIPoolPack",
           "deform_roi_pool"),
    ext_functions=("deform_roi_pool_backward", "deform_roi_pool_forward"),
    backward="yes",
    devices=("any",),
))
