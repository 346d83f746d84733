"""``mmcv.ops.riroi_align_rotated``: rotation-invariant RoI align of rotated RoIs (ReDet).

Semantics follow mmcv's CUDA kernel (mmcv has no CPU one). ``features`` is (N, C * O, H, W) with
``O = num_orientations`` orientation channels per feature channel (channel ``c * O + o``); a RoI is
``(batch, x_ctr, y_ctr, w, h, theta)`` with ``theta`` in radians. Per RoI:

- centre and size are scaled by ``spatial_scale`` (rounded to float32 first: the kernel takes a
  ``float``); width and height are at least 1; ``clockwise`` negates ``theta`` for the sampling;
- each of the ``out_h x out_w`` bins is sampled on a ``num_samples``-square grid or, for
  ``num_samples <= 0``, adaptively ``ceilf(roi size / bins)`` per side; sample ``(yy, xx)``, relative
  to the centre, is rotated to ``(yy cos - xx sin + y_ctr, yy sin + xx cos + x_ctr)`` and read
  bilinearly with mmcv's border rules (:mod:`._bilinear`); a bin averages its samples;
- the orientation step: ``t = theta * O / (2 pi)`` (the un-negated ``theta``; the product in the
  input dtype, the division in double), ``i = floorf(t)`` (a double ``t`` is rounded to float
  first, as ``floorf`` does), ``l = t - i``; output orientation ``o`` reads input orientations
  ``(o - i) mod O`` with weight ``1 - l`` and ``(o - i + 1) mod O`` with weight ``l`` (cyclic, any
  ``i``). Reproduced as is: the interpolation leans toward ``o - i + 1`` while ``i`` grows, so the
  output jumps where ``t`` crosses an integer.

Sampling and orientation mixing are both linear, so a bin averages first and mixes its two
orientation rows after (one small GEMM per RoI; two gathers where a pooled value is not finite,
so that no 0 * inf reaches orientations a RoI does not read). The backward pass is the exact
adjoint (the kernel's atomicAdds): the orientation mix transposed, then the bilinear taps
transposed, recomputed chunk by chunk (:mod:`._roi_sampling`). RoIs get no gradient, as in mmcv.
float16/bfloat16 run in float32 and return their dtype.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Optional, Tuple, Union

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

from .. import registry
from ._checks import autocast_common_dtype, check_feature_map, check_int, check_rois, compute_dtype
from ._roi_sampling import BinSamples, average_bins, average_bins_backward

__all__ = ["RiRoIAlignRotated", "RiRoIAlignRotatedFunction", "riroi_align_rotated"]

_OP = "riroi_align_rotated"


def _out_size(out_size: Any) -> Tuple[int, int]:
    """mmcv accepts an int or a tuple of two ints (not a list)."""
    if isinstance(out_size, int):
        pooled = (out_size, out_size)
    elif isinstance(out_size, tuple) and all(isinstance(v, int) for v in out_size):
        if len(out_size) != 2:
            raise ValueError(f"{_OP}: out_size must be an int or a tuple of 2 ints, got {out_size}")
        pooled = out_size
    else:
        raise TypeError(f'{_OP}: "out_size" should be an integer or tuple of integers, but got {out_size}')
    if min(pooled) <= 0:
        raise ValueError(f"{_OP}: out_size must be positive, got {out_size}")
    return int(pooled[0]), int(pooled[1])


def _autocast_off(device: torch.device):
    """The core runs in its inputs' dtypes: mmcv's kernels ignore autocast, and the orientation GEMM
    must not drop to half precision."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


class _Geometry:
    """Where the kernel samples each RoI and how it mixes orientations, in the kernel's arithmetic."""

    def __init__(self, feature_shape, rois: Tensor, pooled: Tuple[int, int], spatial_scale: float,
                 num_samples: int, num_orientations: int, clockwise: bool, dtype: torch.dtype):
        n, channels, height, width = feature_shape
        num_orientations = check_int(_OP, "num_orientations", num_orientations, 1)
        if channels % num_orientations:
            raise ValueError(f"{_OP}: features has {channels} channels, not a multiple of "
                             f"num_orientations={num_orientations}")
        self.batch = check_rois(_OP, rois, n, 6)
        if rois.numel() and not bool(torch.isfinite(rois).all()):
            raise ValueError(f"{_OP}: rois must be finite")
        if rois.size(0) and height * width == 0:
            raise ValueError(f"{_OP}: features must have a non-empty (H, W), got {(height, width)}")
        self.pooled, self.orientations = pooled, num_orientations
        rois = rois.detach().to(dtype)
        # the launcher takes spatial_scale as a C++ float
        scale = torch.tensor(float(spatial_scale), dtype=torch.float32).to(device=rois.device, dtype=dtype)
        self.ctr_w, self.ctr_h = rois[:, 1] * scale, rois[:, 2] * scale
        roi_w, roi_h = (rois[:, 3] * scale).clamp(min=1.0), (rois[:, 4] * scale).clamp(min=1.0)
        self.start_w, self.start_h = -roi_w / 2, -roi_h / 2
        self.bin_h, self.bin_w = roi_h / pooled[0], roi_w / pooled[1]
        self.grid_h, self.grid_w = self._grid(roi_h, pooled[0], num_samples), self._grid(roi_w, pooled[1], num_samples)
        theta = rois[:, 5]
        sampling_theta = -theta if clockwise else theta
        self.cos, self.sin = torch.cos(sampling_theta), torch.sin(sampling_theta)
        # t = theta * O / (2 * M_PI): the product in scalar_t, the division in double, stored as scalar_t
        t = ((theta * num_orientations).double() / (2 * math.pi)).to(dtype)
        shift = torch.floor(t.float())  # floorf, also for double
        self.l_var = t - shift.to(dtype)
        self.r_var = 1.0 - self.l_var
        self.shift = shift.long()

    @staticmethod
    def _grid(size: Tensor, pooled: int, num_samples: int) -> Tensor:
        """(K,) samples per bin side: ``num_samples``, or ``ceilf(size / pooled)`` (in float, as ceilf)."""
        if num_samples > 0:
            return torch.full(size.shape, num_samples, dtype=torch.long, device=size.device)
        return torch.ceil((size / pooled).float()).long()

    def place(self, s: BinSamples, lo: int) -> Tuple[Tensor, Tensor]:
        """(y, x) of samples: the bin grid relative to the centre, rotated and translated."""
        k = s.roi + lo
        bin_h, bin_w = self.bin_h[k], self.bin_w[k]
        dtype = bin_h.dtype
        yy = (self.start_h[k] + s.ph.to(dtype) * bin_h) + (s.iy.to(dtype) + 0.5) * bin_h / self.grid_h[k].to(dtype)
        xx = (self.start_w[k] + s.pw.to(dtype) * bin_w) + (s.ix.to(dtype) + 0.5) * bin_w / self.grid_w[k].to(dtype)
        cos, sin = self.cos[k], self.sin[k]
        return yy * cos - xx * sin + self.ctr_h[k], yy * sin + xx * cos + self.ctr_w[k]

    def mix(self, pooled: Tensor, transpose: bool = False) -> Tensor:
        """(K, C, PH, PW) -> (K, C, PH, PW): output orientation o = (1 - l) * in[o - i] + l * in[o - i + 1].

        ``transpose`` applies the adjoint: in[j] gets (1 - l) * out[j + i] + l * out[j + i - 1].
        """
        k, c = pooled.shape[:2]
        o = self.orientations
        values = pooled.reshape(k, c // o, o, pooled.size(2) * pooled.size(3))
        sign = 1 if transpose else -1
        first = (torch.arange(o, device=pooled.device) + sign * self.shift[:, None]) % o  # (K, O)
        second = (first - sign) % o
        r_var, l_var = (v.to(pooled.dtype).view(-1, 1, 1, 1) for v in (self.r_var, self.l_var))
        if bool(torch.isfinite(values).all()):
            # one (O x O) matrix per RoI in a batched GEMM: much faster than two gathers, and exact
            # while no 0 * inf can come from an orientation that a RoI does not read
            matrix = (r_var * F.one_hot(first, o).to(pooled.dtype).unsqueeze(1)
                      + l_var * F.one_hot(second, o).to(pooled.dtype).unsqueeze(1))  # (K, 1, O, O)
            return torch.matmul(matrix, values).reshape(pooled.shape)
        read0 = values.gather(2, first[:, None, :, None].expand(values.shape))
        read1 = values.gather(2, second[:, None, :, None].expand(values.shape))
        return (r_var * read0 + l_var * read1).reshape(pooled.shape)


def riroi_align_rotated_forward(features: Tensor, rois: Tensor, pooled: Tuple[int, int], spatial_scale: float,
                                num_samples: int, num_orientations: int, clockwise: bool) -> Tensor:
    """(K, C * O, PH, PW) from features (N, C * O, H, W) and rois (K, 6); no autograd graph."""
    check_feature_map(_OP, features, rois, "features")
    dtype = compute_dtype(features.dtype)
    geometry = _Geometry(features.shape, rois, pooled, spatial_scale, num_samples, num_orientations,
                         bool(clockwise), dtype)
    with torch.no_grad(), _autocast_off(features.device):
        out = average_bins(features.detach().to(dtype), geometry.batch, geometry.grid_h, geometry.grid_w,
                           pooled, geometry.place)
        return geometry.mix(out).to(features.dtype)


def riroi_align_rotated_backward(grad_output: Tensor, rois: Tensor, feature_shape, pooled: Tuple[int, int],
                                 spatial_scale: float, num_samples: int, num_orientations: int,
                                 clockwise: bool) -> Tensor:
    """The features gradient (N, C * O, H, W) for grad_output (K, C * O, PH, PW): mmcv's backward kernel."""
    feature_shape = tuple(feature_shape)
    expected = (rois.size(0) if rois.dim() == 2 else -1, feature_shape[1], *pooled)
    if grad_output.dim() != 4 or tuple(grad_output.shape) != expected:
        raise ValueError(f"{_OP}: grad_output must have shape {expected}, got {tuple(grad_output.shape)}")
    dtype = compute_dtype(grad_output.dtype)
    geometry = _Geometry(feature_shape, rois, pooled, spatial_scale, num_samples, num_orientations,
                         bool(clockwise), dtype)
    with torch.no_grad(), _autocast_off(grad_output.device):
        grad_bins = geometry.mix(grad_output.detach().to(dtype), transpose=True)
        grad = average_bins_backward(grad_bins, feature_shape, geometry.batch, geometry.grid_h, geometry.grid_w,
                                     pooled, geometry.place)
    return grad.to(grad_output.dtype)


class RiRoIAlignRotatedFunction(torch.autograd.Function):
    """mmcv's ``RiRoIAlignRotatedFunction``; ``riroi_align_rotated = RiRoIAlignRotatedFunction.apply``."""

    @staticmethod
    def forward(ctx: Any, features: Tensor, rois: Tensor, out_size: Union[int, tuple], spatial_scale: float,
                num_samples: int = 0, num_orientations: int = 8, clockwise: bool = False) -> Tensor:
        pooled = _out_size(out_size)
        ctx.features_dtype = getattr(features, "dtype", None)
        features, rois = autocast_common_dtype(features, rois)
        ctx.spatial_scale = spatial_scale
        ctx.num_samples = num_samples
        ctx.num_orientations = num_orientations
        ctx.clockwise = clockwise
        ctx.pooled = pooled
        ctx.feature_size = features.size() if isinstance(features, Tensor) else None
        output = riroi_align_rotated_forward(features, rois, pooled, spatial_scale, int(num_samples),
                                             num_orientations, clockwise)
        ctx.save_for_backward(rois)
        return output

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_output: Tensor) -> Tuple[Optional[Tensor], None, None, None, None, None, None]:
        (rois,) = ctx.saved_tensors
        grad_input = None
        if ctx.needs_input_grad[0]:
            grad_input = riroi_align_rotated_backward(grad_output.contiguous(), rois, ctx.feature_size, ctx.pooled,
                                                      ctx.spatial_scale, int(ctx.num_samples),
                                                      ctx.num_orientations, ctx.clockwise)
            grad_input = grad_input.to(ctx.features_dtype)
        return grad_input, None, None, None, None, None, None


riroi_align_rotated = RiRoIAlignRotatedFunction.apply


class RiRoIAlignRotated(nn.Module):
    """Rotation-invariant RoI align of rotated proposals, as mmcv's (ReDet, arXiv:2103.07733).

    Args:
        out_size (int or tuple): (h, w) of the output bins.
        spatial_scale (float): scale from RoI coordinates to the feature map.
        num_samples (int): samples per bin side; 0 samples ``ceil(roi size / out size)`` per side.
        num_orientations (int): orientation channels per feature channel.
        clockwise (bool): whether RoI angles run clockwise in image space. Default: False.

    Shapes: features (N, C * num_orientations, H, W); rois (K, 6) as
    ``(batch index, x_ctr, y_ctr, w, h, angle)``, angle in radians; output (K, C * num_orientations,
    out_h, out_w).
    """

    def __init__(self, out_size: tuple, spatial_scale: float, num_samples: int = 0, num_orientations: int = 8,
                 clockwise: bool = False):
        super().__init__()
        self.out_size = out_size
        self.spatial_scale = float(spatial_scale)
        self.num_samples = int(num_samples)
        self.num_orientations = int(num_orientations)
        self.clockwise = clockwise

    def forward(self, features: Tensor, rois: Tensor) -> Tensor:
        return RiRoIAlignRotatedFunction.apply(features, rois, self.out_size, self.spatial_scale, self.num_samples,
                                               self.num_orientations, self.clockwise)


registry.register(registry.OpEntry(
    op="riroi_align_rotated",
    names=("RiRoIAlignRotated", "RiRoIAlignRotatedFunction", "riroi_align_rotated"),
    ext_functions=("riroi_align_rotated_backward", "riroi_align_rotated_forward"),
    backward="yes",
    devices=("any",),
))
