"""``mmcv.ops.carafe``: CARAFE content-aware feature reassembly (naive and fast variants) and ``CARAFEPack``.

Semantics follow mmcv's CUDA kernels (``carafe_cuda_kernel.cuh``, ``carafe_naive_cuda_kernel.cuh``; mmcv
has no CPU kernel). For features (N, C, H, W), masks (N, G*k*k, H*s, W*s) and output (N, C, H*s, W*s):

    out[n, c, oy, ox] = sum_{dy, dx} features[n, c, oy // s + dy - r, ox // s + dx - r]
                                     * masks[n, g * k * k + dy * k + dx, oy, ox]

with ``r = (k - 1) // 2``, ``g = c // (C // G)`` and off-map neighbours contributing 0. Both kernels'
backward passes are the exact transposes of this bilinear map (the fast kernel's flipped-mask
high-resolution pass followed by an s x s box sum is the same sum in another order), so one vectorised
core serves both ``carafe`` and ``carafe_naive``.

The core works per source pixel, channels-last: that pixel's masks for its s*s output pixels,
(N, H*W, s*s, k*k), times the k*k neighbourhood of a chunk of channels, (N, H*W, k*k, c), is a batched
matmul giving (N, H*W, s*s, c). The backward is the two transposed matmuls, plus a fold of the
neighbourhood gradient back onto the map. Channels are processed in chunks so that the unfolded
neighbourhoods (k*k times the chunk) and per-pixel output rows (s*s times the chunk) stay bounded.

Differences from mmcv's fast CUDA kernel, on purpose: it keeps masks in a ``float`` shared-memory
buffer, so float64 masks are rounded to float32 there; this runtime computes in the input dtype
(float16/bfloat16 are computed in float32 and cast back).
"""

from __future__ import annotations

import numbers
from typing import Iterator, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.autograd import Function
from torch.autograd.function import once_differentiable

from .. import registry
from ..model_registry import register_model

__all__ = ["carafe_naive", "CARAFENaive", "CARAFENaiveFunction", "carafe", "CARAFE", "CARAFEFunction",
           "CARAFEPack", "carafe_forward_core", "carafe_backward_core", "check_carafe_inputs"]

_CHUNK_ELEMENTS = 1 << 24  # elements of one (N, H*W, max(k*k, s*s), c) channel chunk


# --- input checks ------------------------------------------------------------------------------


def _as_int(op: str, name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, float)):
        raise TypeError(f"{op}: {name} must be an int, got {type(value).__name__}")
    if isinstance(value, float) and not value.is_integer():
        raise TypeError(f"{op}: {name} must be an int, got {value!r}")
    return int(value)


def check_carafe_inputs(op: str, features: Tensor, masks: Tensor, kernel_size, group_size,
                        scale_factor) -> Tuple[int, int, int]:
    """Validate as mmcv's asserts do (with clear errors); returns ``(kernel_size, group_size, scale_factor)``."""
    k = _as_int(op, "kernel_size", kernel_size)
    g = _as_int(op, "group_size", group_size)
    s = _as_int(op, "scale_factor", scale_factor)
    for name, t in (("features", features), ("masks", masks)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{op}: {name} must be 4-D (N, C, H, W), got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"{op}: {name} must be a floating point tensor, got {t.dtype}")
    if masks.dtype != features.dtype:
        raise TypeError(f"{op}: masks dtype {masks.dtype} must match features dtype {features.dtype}")
    if masks.device != features.device:
        raise ValueError(f"{op}: features and masks must be on one device, got {features.device} and "
                         f"{masks.device}")
    if k < 1 or k % 2 == 0:
        raise ValueError(f"{op}: kernel_size must be a positive odd int, got {k}")
    if g < 1:
        raise ValueError(f"{op}: group_size must be >= 1, got {g}")
    if s < 1:
        raise ValueError(f"{op}: scale_factor must be >= 1, got {s}")
    n, c, h, w = features.shape
    if c % g != 0:
        raise ValueError(f"{op}: group_size {g} must divide the feature channels {c}")
    expected = (n, g * k * k, h * s, w * s)
    if tuple(masks.shape) != expected:
        raise ValueError(f"{op}: masks must have shape (N, group_size*kernel_size**2, H*scale_factor, "
                         f"W*scale_factor) = {expected}, got {tuple(masks.shape)}")
    return k, g, s


# --- the vectorised core -----------------------------------------------------------------------


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _chunks(channels: int, groups: int, per_channel: int) -> Iterator[Tuple[int, int, int]]:
    """``(group, first, last)`` channel chunks, never straddling a mask group."""
    per_group = channels // groups
    step = max(1, min(per_group, _CHUNK_ELEMENTS // max(per_channel, 1)))
    for g in range(groups):
        for c0 in range(g * per_group, (g + 1) * per_group, step):
            yield g, c0, min(c0 + step, (g + 1) * per_group)


def _mask_rows(masks: Tensor, group: int, k: int, s: int) -> Tensor:
    """(N, G*k*k, H*s, W*s) -> (N, H*W, k*k, s*s): one group's masks per source pixel."""
    n, _, hs, ws = masks.shape
    h, w = hs // s, ws // s
    m = masks[:, group * k * k:(group + 1) * k * k].reshape(n, k * k, h, s, w, s)
    return m.permute(0, 2, 4, 1, 3, 5).reshape(n, h * w, k * k, s * s)


def _neighbour_rows(features: Tensor, k: int) -> Tensor:
    """(N, c, H, W) -> (N, H*W, k*k, c): each source pixel's zero-padded k x k neighbourhood, tap dy*k+dx.

    Built channels-last from sliding-window views, so that the one copy moves contiguous channel rows
    (an ``F.unfold`` followed by this permutation costs about three times as much)."""
    n, c, h, w = features.shape
    r = (k - 1) // 2
    padded = F.pad(features, (r, r, r, r)).permute(0, 2, 3, 1).contiguous()  # (N, H+2r, W+2r, c)
    windows = padded.unfold(1, k, 1).unfold(2, k, 1)  # (N, H, W, c, k, k) view
    return windows.permute(0, 1, 2, 4, 5, 3).reshape(n, h * w, k * k, c)


def _fold_rows(rows: Tensor, h: int, w: int, k: int) -> Tensor:
    """Transpose of :func:`_neighbour_rows`: (N, H*W, k*k, c) -> (N, c, H, W), off-map taps dropped."""
    n, _, _, c = rows.shape
    r = (k - 1) // 2
    taps = rows.view(n, h, w, k, k, c)
    padded = rows.new_zeros((n, h + 2 * r, w + 2 * r, c))
    for dy in range(k):  # k*k shifted adds of whole maps (the windows overlap, so no single view)
        for dx in range(k):
            padded[:, dy:dy + h, dx:dx + w] += taps[:, :, :, dy, dx]
    return padded[:, r:r + h, r:r + w].permute(0, 3, 1, 2)


def _pixel_rows(hi: Tensor, s: int) -> Tensor:
    """(N, c, H*s, W*s) -> (N, H*W, s*s, c): each source pixel's s x s output pixels."""
    n, c, hs, ws = hi.shape
    h, w = hs // s, ws // s
    return hi.reshape(n, c, h, s, w, s).permute(0, 2, 4, 3, 5, 1).reshape(n, h * w, s * s, c)


def _from_pixel_rows(rows: Tensor, h: int, w: int, s: int) -> Tensor:
    """(N, H*W, s*s, c) -> (N, c, H*s, W*s)."""
    n, _, _, c = rows.shape
    return rows.view(n, h, w, s, s, c).permute(0, 5, 1, 3, 2, 4).reshape(n, c, h * s, w * s)


def carafe_forward_core(features: Tensor, masks: Tensor, k: int, group_size: int, s: int) -> Tensor:
    """(N, C, H, W), (N, G*k*k, H*s, W*s) -> (N, C, H*s, W*s) in features' dtype (no autograd)."""
    n, c, h, w = features.shape
    out_dtype, dtype = features.dtype, _compute_dtype(features.dtype)
    output = features.new_empty((n, c, h * s, w * s), dtype=dtype)  # every channel chunk is written
    if output.numel() == 0:
        return output.to(out_dtype)
    features, masks = features.to(dtype), masks.to(dtype)
    last_group, mrows_t = -1, None
    for g, c0, c1 in _chunks(c, group_size, n * h * w * max(k * k, s * s)):
        if g != last_group:
            last_group, mrows_t = g, _mask_rows(masks, g, k, s).transpose(-1, -2)
        rows = torch.matmul(mrows_t, _neighbour_rows(features[:, c0:c1], k))  # (N, HW, s*s, c)
        output[:, c0:c1] = _from_pixel_rows(rows, h, w, s)
    return output.to(out_dtype)


def carafe_backward_core(grad_output: Tensor, features: Tensor, masks: Tensor, k: int, group_size: int,
                         s: int) -> Tuple[Tensor, Tensor]:
    """Gradients ``(grad_features (N, C, H, W), grad_masks (N, G*k*k, H*s, W*s))`` of the CARAFE map."""
    n, c, h, w = features.shape
    out_dtype, dtype = features.dtype, _compute_dtype(features.dtype)
    grad_features = features.new_zeros(features.shape, dtype=dtype)
    grad_masks = masks.new_zeros(masks.shape, dtype=dtype)
    if grad_output.numel() == 0 or grad_masks.numel() == 0:
        return grad_features.to(out_dtype), grad_masks.to(out_dtype)
    grad_output, features, masks = grad_output.to(dtype), features.to(dtype), masks.to(dtype)
    gm = grad_masks.view(n, group_size, k * k, h, s, w, s)
    last_group, mrows = -1, None
    for g, c0, c1 in _chunks(c, group_size, n * h * w * max(k * k, s * s)):
        if g != last_group:
            last_group, mrows = g, _mask_rows(masks, g, k, s)
        grows = _pixel_rows(grad_output[:, c0:c1], s)  # (N, HW, s*s, c)
        # features: dU = M @ dOut per source pixel, folded back onto the map.
        grad_features[:, c0:c1] = _fold_rows(torch.matmul(mrows, grows), h, w, k)
        # masks: dM = U @ dOut^T, summed over the group's channels (chunks accumulate).
        dm = torch.matmul(_neighbour_rows(features[:, c0:c1], k), grows.transpose(-1, -2))  # (N,HW,kk,ss)
        gm[:, g] += dm.view(n, h, w, k * k, s, s).permute(0, 3, 1, 4, 2, 5)
    return grad_features.to(out_dtype), grad_masks.to(out_dtype)


# --- autograd Functions and modules --------------------------------------------------------------


def _function_forward(op: str, ctx, features: Tensor, masks: Tensor, kernel_size: int, group_size: int,
                      scale_factor: int) -> Tensor:
    """The forward of both autograd Functions (mmcv's two kernels compute the same values)."""
    k, g, s = check_carafe_inputs(op, features, masks, kernel_size, group_size, scale_factor)
    ctx.kernel_size, ctx.group_size, ctx.scale_factor = k, g, s
    ctx.feature_size, ctx.mask_size = features.size(), masks.size()
    ctx.save_for_backward(features, masks)
    return carafe_forward_core(features, masks, k, g, s)


def _function_backward(ctx, grad_output: Tensor) -> Tuple[Tensor, Tensor, None, None, None]:
    features, masks = ctx.saved_tensors
    grad_features, grad_masks = carafe_backward_core(grad_output, features, masks, ctx.kernel_size,
                                                     ctx.group_size, ctx.scale_factor)
    return grad_features, grad_masks, None, None, None


class CARAFENaiveFunction(Function):
    """autograd Function of :func:`carafe_naive` (mmcv's per-element kernel; same values as ``carafe``)."""

    @staticmethod
    def symbolic(g, features: Tensor, masks: Tensor, kernel_size: int, group_size: int, scale_factor: int):
        return g.op("mmcv::MMCVCARAFENaive", features, masks, kernel_size_i=kernel_size,
                    group_size_i=group_size, scale_factor_f=scale_factor)

    @staticmethod
    def forward(ctx, features: Tensor, masks: Tensor, kernel_size: int, group_size: int,
                scale_factor: int) -> Tensor:
        return _function_forward("carafe_naive", ctx, features, masks, kernel_size, group_size, scale_factor)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: Tensor) -> Tuple[Tensor, Tensor, None, None, None]:
        return _function_backward(ctx, grad_output)


carafe_naive = CARAFENaiveFunction.apply


class CARAFEFunction(Function):
    """autograd Function of :func:`carafe` (mmcv's fast NHWC kernel)."""

    @staticmethod
    def symbolic(g, features: Tensor, masks: Tensor, kernel_size: int, group_size: int, scale_factor: int):
        return g.op("mmcv::MMCVCARAFE", features, masks, kernel_size_i=kernel_size, group_size_i=group_size,
                    scale_factor_f=scale_factor)

    @staticmethod
    def forward(ctx, features: Tensor, masks: Tensor, kernel_size: int, group_size: int,
                scale_factor: int) -> Tensor:
        return _function_forward("carafe", ctx, features, masks, kernel_size, group_size, scale_factor)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: Tensor) -> Tuple[Tensor, Tensor, None, None, None]:
        return _function_backward(ctx, grad_output)


carafe = CARAFEFunction.apply


def _check_module_ints(op: str, kernel_size, group_size, scale_factor) -> None:
    for name, value in (("kernel_size", kernel_size), ("group_size", group_size),
                        ("scale_factor", scale_factor)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{op}: {name} must be an int, got {type(value).__name__}")


class CARAFENaive(nn.Module):
    """Module form of :func:`carafe_naive`: ``forward(features (N, C, H, W), masks) -> (N, C, H*s, W*s)``."""

    def __init__(self, kernel_size: int, group_size: int, scale_factor: int):
        super().__init__()
        _check_module_ints("CARAFENaive", kernel_size, group_size, scale_factor)
        self.kernel_size = kernel_size
        self.group_size = group_size
        self.scale_factor = scale_factor

    def forward(self, features: Tensor, masks: Tensor) -> Tensor:
        return carafe_naive(features, masks, self.kernel_size, self.group_size, self.scale_factor)


class CARAFE(nn.Module):
    """CARAFE: Content-Aware ReAssembly of FEatures (https://arxiv.org/abs/1905.02188).

    Args:
        kernel_size: reassemble kernel size (odd).
        group_size: reassemble group size (divides the channels).
        scale_factor: upsample ratio.

    ``forward(features (N, C, H, W), masks (N, G*k*k, H*s, W*s)) -> (N, C, H*s, W*s)``.
    """

    def __init__(self, kernel_size: int, group_size: int, scale_factor: int):
        super().__init__()
        _check_module_ints("CARAFE", kernel_size, group_size, scale_factor)
        self.kernel_size = kernel_size
        self.group_size = group_size
        self.scale_factor = scale_factor

    def forward(self, features: Tensor, masks: Tensor) -> Tensor:
        return carafe(features, masks, self.kernel_size, self.group_size, self.scale_factor)


@register_model("carafe", mmcv1_registry="UPSAMPLE_LAYERS")
class CARAFEPack(nn.Module):
    """CARAFE upsampler: 1x1 channel compressor, content encoder (predicts the reassembly kernels,
    softmax-normalised) and the CARAFE op (ICCV 2019, https://arxiv.org/abs/1905.02188).

    Args:
        channels: input feature channels.
        scale_factor: upsample ratio.
        up_kernel: kernel size of the CARAFE op.
        up_group: group size of the CARAFE op.
        encoder_kernel: kernel size of the content encoder.
        encoder_dilation: dilation of the content encoder.
        compressed_channels: output channels of the channel compressor.

    ``forward(x (N, channels, H, W)) -> (N, channels, H*scale_factor, W*scale_factor)``.
    """

    def __init__(self, channels: int, scale_factor: int, up_kernel: int = 5, up_group: int = 1,
                 encoder_kernel: int = 3, encoder_dilation: int = 1, compressed_channels: int = 64):
        super().__init__()
        self.channels = channels
        self.scale_factor = scale_factor
        self.up_kernel = up_kernel
        self.up_group = up_group
        self.encoder_kernel = encoder_kernel
        self.encoder_dilation = encoder_dilation
        self.compressed_channels = compressed_channels
        self.channel_compressor = nn.Conv2d(channels, self.compressed_channels, 1)
        self.content_encoder = nn.Conv2d(
            self.compressed_channels,
            self.up_kernel * self.up_kernel * self.up_group * self.scale_factor * self.scale_factor,
            self.encoder_kernel,
            padding=int((self.encoder_kernel - 1) * self.encoder_dilation / 2),
            dilation=self.encoder_dilation,
            groups=1)
        self.init_weights()

    def init_weights(self) -> None:
        """As mmcv: xavier-uniform convs with zero bias, then the content encoder ~ N(0, 0.001)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight, gain=1)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)
        nn.init.normal_(self.content_encoder.weight, 0, 0.001)
        if self.content_encoder.bias is not None:
            nn.init.constant_(self.content_encoder.bias, 0)

    def kernel_normalizer(self, mask: Tensor) -> Tensor:
        """(N, G*k*k*s*s, H, W) -> (N, G*k*k, H*s, W*s), softmax over each group's k*k taps."""
        mask = F.pixel_shuffle(mask, self.scale_factor)
        n, mask_c, h, w = mask.size()
        mask_channel = int(mask_c / float(self.up_kernel ** 2))  # float division as mmcv (ONNX export)
        mask = mask.view(n, mask_channel, -1, h, w)
        mask = F.softmax(mask, dim=2, dtype=mask.dtype)
        return mask.view(n, mask_c, h, w).contiguous()

    def feature_reassemble(self, x: Tensor, mask: Tensor) -> Tensor:
        return carafe(x, mask, self.up_kernel, self.up_group, self.scale_factor)

    def forward(self, x: Tensor) -> Tensor:
        compressed_x = self.channel_compressor(x)
        mask = self.content_encoder(compressed_x)
        mask = self.kernel_normalizer(mask)
        return self.feature_reassemble(x, mask)


registry.register(registry.OpEntry(
    op="carafe",
    names=("carafe_naive", "CARAFENaive", "CARAFENaiveFunction", "carafe", "CARAFE", "CARAFEFunction",
           "CARAFEPack"),
    ext_functions=("carafe_forward", "carafe_backward", "carafe_naive_forward", "carafe_naive_backward"),
    backward="yes",
    devices=("any",),
))
