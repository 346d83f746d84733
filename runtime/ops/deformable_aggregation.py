"""Sparse4D / SparseDrive's deformable aggregation, in pure PyTorch (forward and backward, any device).

This is not an mmcv op: Sparse4D (v2, v3), SparseDrive and their forks carry it as a project-local
compiled extension (``ops/deformable_aggregation_ext``) behind a small wrapper package
(``ops/__init__.py`` + ``ops/deformable_aggregation.py``). This module provides that wrapper's public
names, so the projects can drop the extension:

- :class:`DeformableAggregationFunction`, the autograd Function, with the projects'
  ``forward(ctx, mc_ms_feat, spatial_shape, scale_start_index, sampling_location, weights)``;
- :func:`deformable_aggregation_function` (Sparse4D v3 / SparseDrive, usually imported as ``DAF``);
- :func:`feature_maps_format` (v3 / SparseDrive) and ``DeformableAggregationFunction.feature_maps_format``
  (the static method Sparse4D v2 calls as ``DAF.feature_maps_format``).

Layouts (each project version has its own kernel; here the rank of ``mc_ms_feat`` picks the layout):

===================  =========================================  ===============================
argument             v3 / SparseDrive                           Sparse4D v2
===================  =========================================  ===============================
mc_ms_feat           (bs, num_feat, C), cameras and levels      (bs, num_cams, num_feat, C)
                     flattened, channels last
spatial_shape        (num_cams, num_levels, 2): (H, W)          (num_levels, 2)
scale_start_index    (num_cams, num_levels): first feature      (num_levels,): within a camera
sampling_location    (bs, num_anchors, num_pts, num_cams, 2)    (bs, num_pts, num_cams, 2)
weights              (bs, num_anchors, num_pts, num_cams,       (bs, num_pts, num_cams,
                     num_levels, num_groups)                     num_levels, num_groups)
output               (bs, num_anchors, C): summed over points   (bs, num_pts, C)
===================  =========================================  ===============================

Semantics of the CUDA kernels, reproduced exactly:

- ``sampling_location`` is ``(x, y)`` normalised to the image; a sample reads only when
  ``0 < x < 1`` and ``0 < y < 1`` strictly. Otherwise it contributes nothing and gets no gradient.
  A NaN coordinate passes v3's test (``loc <= 0 || loc >= 1`` skips) and poisons the output, and fails
  v2's (``loc > 0 && loc < 1`` reads), so it is dropped there: both as in the kernels.
  The projects' ``grid_sample`` fallback differs here: it zero-pads, so a point just outside the
  image, or exactly on its border, still reads half a pixel.
- ``(x, y)`` maps to pixels with ``align_corners=False``: ``x * W - 0.5`` (computed in float32 as the
  kernel does), then bilinear with zero padding per corner (:func:`._bilinear.zero_padded_taps`).
- channel ``c`` belongs to group ``c // (C // num_groups)``; the sample of group g is weighted by
  ``weights[..., g]`` and everything is summed over cameras, levels (and points in v3).
- backward: the true derivative, as the kernel computes it: ``grad mc_ms_feat`` is the transposed
  gather, ``grad weights`` the bilinear value dotted with the output gradient, ``grad
  sampling_location`` the slope of the zero-padded blend times ``W`` (x) or ``H`` (y), one-sided
  (from the right) at integral pixel coordinates because the kernel takes ``floor``. No gradient for
  ``spatial_shape`` / ``scale_start_index``; the backward is ``once_differentiable`` like the projects'.
- dtypes as the projects' wrapper, which casts to ``float``: half, bfloat16 and float32 inputs are
  computed in float32 and the output is float32 (autograd casts the gradients back to each input's
  dtype). One extension: float64 features are computed and returned in float64 (the compiled op
  would have returned float32), so the op can be checked with ``gradcheck``. Autocast is ignored,
  as by the compiled op.

Not reproduced: out-of-bounds reads. Where the kernel would read past ``mc_ms_feat`` (a map that does
not fit between its ``scale_start_index`` and ``num_feat``), this raises ``ValueError`` instead; with
tensors off the CPU that check reads ``spatial_shape`` / ``scale_start_index`` to the host once per
distinct pair (cached), not on every call. Non-finite aggregation weights or pixels combine
slightly differently from the kernel (which skips off-map corners instead of weighting them by 0).

The core is one sparse weighted gather: ``mc_ms_feat`` is viewed as rows of ``C // num_groups``
channels, ``(bs * num_feat * num_groups, C // num_groups)``; every (anchor, group) is one bag of
``num_pts * num_cams * num_levels * 4`` taps with weight = bilinear weight x aggregation weight, summed
by one ``F.embedding_bag``. Nothing of size (samples x channels) is materialised. Chunks of anchors
bound the memory, and only the inputs are saved for the backward (as by the kernel), which recomputes
the taps and then takes: the tap-weight gradients ``<row, output gradient>`` from embedding_bag's fused
per-sample-weight backward (autograd carries them to the locations and weights through the
bilinear weights, see :func:`._bilinear.zero_padded_taps`), and the features' gradient as one more
weighted gather over the pixel reads sorted once for all groups. The backward is deterministic
(the kernel's atomics are not).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor
from torch.autograd.function import Function, once_differentiable
from torch.nn import functional as F

from ._bilinear import tap_dots, zero_padded_taps
from ._checks import no_autocast

__all__ = ["DeformableAggregationFunction", "deformable_aggregation_function", "feature_maps_format"]

_OP = "deformable_aggregation"

#: Taps (row reads) handled at once; index, weights and their temporaries take ~40 bytes per tap.
_CHUNK_TAPS = 1 << 22
#: Pixels searched for a finite one, where off-map and dropped taps are sent (see :func:`_sentinel`).
_SENTINEL_CANDIDATES = 64

# --- input handling ------------------------------------------------------------------------------


class _Problem(NamedTuple):
    """The inputs in the v3 layout and the compute dtype (see the module docstring)."""

    feat: Tensor  # (bs, num_feat, C), contiguous
    hw: Tensor  # (num_cams, num_levels, 2) int64, on feat's device
    start: Tensor  # (num_cams, num_levels) int64
    loc: Tensor  # (bs, num_anchors, num_pts, num_cams, 2)
    weights: Tensor  # (bs, num_anchors, num_pts, num_cams, num_levels, num_groups)
    v2: bool  # the caller used Sparse4D v2's layout


def _require_tensor(name: str, value: object) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{_OP}: {name} must be a torch.Tensor, got {type(value).__name__}")
    if value.is_complex():
        raise TypeError(f"{_OP}: {name} must be a real tensor, got {value.dtype}")
    return value


def _require_shape(name: str, value: Tensor, shape: Sequence[object], meaning: str) -> None:
    """``value`` has ``len(shape)`` dims and each int entry of ``shape`` matches (None: any size)."""
    ok = value.dim() == len(shape) and all(s is None or value.size(i) == s for i, s in enumerate(shape))
    if not ok:
        want = ", ".join("?" if s is None else str(s) for s in shape)
        raise ValueError(f"{_OP}: {name} must have shape {meaning} = ({want}), got {tuple(value.shape)}")


def _check_shapes(feat: Tensor, spatial_shape: Tensor, scale_start_index: Tensor, loc: Tensor,
                  weights: Tensor) -> None:
    v2 = feat.dim() == 4
    if v2:
        bs, cams, _, channels = feat.shape
        _require_shape("spatial_shape", spatial_shape, (None, 2), "(num_levels, 2)")
        levels = spatial_shape.size(0)
        _require_shape("scale_start_index", scale_start_index, (levels,), "(num_levels,)")
        _require_shape("sampling_location", loc, (bs, None, cams, 2), "(bs, num_pts, num_cams, 2)")
        _require_shape("weights", weights, (bs, loc.size(1), cams, levels, None),
                       "(bs, num_pts, num_cams, num_levels, num_groups)")
    else:
        bs, _, channels = feat.shape
        _require_shape("spatial_shape", spatial_shape, (None, None, 2), "(num_cams, num_levels, 2)")
        cams, levels = spatial_shape.shape[:2]
        _require_shape("scale_start_index", scale_start_index, (cams, levels), "(num_cams, num_levels)")
        _require_shape("sampling_location", loc, (bs, None, None, cams, 2),
                       "(bs, num_anchors, num_pts, num_cams, 2)")
        _require_shape("weights", weights, (bs, *loc.shape[1:3], cams, levels, None),
                       "(bs, num_anchors, num_pts, num_cams, num_levels, num_groups)")
    groups = weights.size(-1)
    if groups == 0 or channels % groups:
        raise ValueError(f"{_OP}: the {channels} channels of mc_ms_feat must split into num_groups = "
                         f"weights.size(-1) = {groups} equal groups")


#: (spatial_shape, scale_start_index, num_feat) keys already checked, for tensors off the CPU.
_CHECKED: "OrderedDict[tuple, None]" = OrderedDict()


def _key(t: Tensor) -> tuple:
    return (t.data_ptr(), t._version, str(t.device), tuple(t.shape), t.dtype)


def _check_values(spatial_shape: Tensor, scale_start_index: Tensor, num_feat: int) -> None:
    """Every map has H, W >= 0 and lies within the ``num_feat`` features: the kernel would read out
    of bounds otherwise. Off the CPU the values are read once per distinct tensor pair."""
    on_host = spatial_shape.device.type == "cpu" and scale_start_index.device.type == "cpu"
    key = None if on_host else (_key(spatial_shape), _key(scale_start_index), num_feat)
    if key is not None and key in _CHECKED:
        _CHECKED.move_to_end(key)
        return
    hw = spatial_shape.detach().reshape(-1, 2).long().cpu()
    start = scale_start_index.detach().reshape(-1).long().cpu()
    area = hw[:, 0] * hw[:, 1]
    bad = (hw < 0).any(1) | (start < 0) | ((area > 0) & (start + area > num_feat))
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        where = f"map {i} (camera-major)" if spatial_shape.dim() == 3 else f"level {i}"
        raise ValueError(f"{_OP}: {where} with spatial_shape {hw[i].tolist()} at scale_start_index "
                         f"{int(start[i])} does not fit in the {num_feat} features of mc_ms_feat")
    if key is not None:
        _CHECKED[key] = None
        while len(_CHECKED) > 256:
            _CHECKED.popitem(last=False)


def _prepare(mc_ms_feat: Tensor, spatial_shape: Tensor, scale_start_index: Tensor,
             sampling_location: Tensor, weights: Tensor) -> _Problem:
    """Check the inputs and bring them to the v3 layout in the compute dtype (module docstring)."""
    feat = _require_tensor("mc_ms_feat", mc_ms_feat)
    spatial_shape = _require_tensor("spatial_shape", spatial_shape)
    scale_start_index = _require_tensor("scale_start_index", scale_start_index)
    loc = _require_tensor("sampling_location", sampling_location)
    weights = _require_tensor("weights", weights)
    for name, t in (("sampling_location", loc), ("weights", weights)):
        if t.device != feat.device:
            raise ValueError(f"{_OP}: {name} is on device {t.device} but mc_ms_feat is on {feat.device}")
    if feat.dim() not in (3, 4):
        raise ValueError(f"{_OP}: mc_ms_feat must be 3-D (bs, num_feat, C) or, in Sparse4D v2's layout, "
                         f"4-D (bs, num_cams, num_feat, C), got {tuple(feat.shape)}")
    _check_shapes(feat, spatial_shape, scale_start_index, loc, weights)
    v2 = feat.dim() == 4
    _check_values(spatial_shape, scale_start_index, feat.size(-2))

    dtype = torch.float64 if feat.dtype == torch.float64 else torch.float32
    feat, loc, weights = (t.to(dtype=dtype, memory_format=torch.contiguous_format) for t in (feat, loc, weights))
    hw = spatial_shape.to(feat.device, torch.int64)
    start = scale_start_index.to(feat.device, torch.int64)
    if v2:  # one anchor per point, cameras stacked along the features
        bs, cams, num_feat, channels = feat.shape
        feat = feat.reshape(bs, cams * num_feat, channels)
        start = start[None, :] + num_feat * torch.arange(cams, device=feat.device)[:, None]
        hw = hw[None].expand(cams, -1, -1)
        loc, weights = loc.unsqueeze(2), weights.unsqueeze(2)
    return _Problem(feat, hw, start, loc, weights, v2)


# --- the gather core -----------------------------------------------------------------------------


class _Taps(NamedTuple):
    """The reads of a chunk of queries (query = batch x anchor), ``T = P * cams * L * 4`` per query."""

    pixel: Tensor  # (q, T) rows of the (bs * num_feat, C) pixel table; off-map / dropped: the sentinel
    index: Tensor  # (q * G * T,) rows of the (bs * num_feat * G, C // G) table, bag = (query, group)
    weight: Tensor  # (q * G * T,) bilinear weight x aggregation weight, 0 for off-map and dropped taps

    @property
    def bag_size(self) -> int:
        return self.pixel.size(1)


def _sentinel(feat: Tensor) -> Tensor:
    """0-dim index of a pixel (of the first few) whose channels are all finite, without a host sync.
    Off-map corners and dropped samples read it with weight 0, so a non-finite pixel elsewhere, e.g.
    at (0, 0), cannot turn them into NaN (the kernel does not read them at all)."""
    head = feat.detach().reshape(-1, feat.size(-1))[:_SENTINEL_CANDIDATES]
    return torch.isfinite(head).all(1).int().argmax()


def _taps(problem: _Problem, lo: int, hi: int, loc: Tensor, weights: Tensor, sentinel: Tensor) -> _Taps:
    """Taps of the flattened queries ``lo:hi``. ``loc`` (q, P, cams, 2) and ``weights``
    (q, P, cams, L, G) are those queries' slices, with autograd when the caller wants it."""
    num_anchors = problem.loc.size(1)
    num_feat, groups = problem.feat.size(1), problem.weights.size(-1)
    x, y = loc[..., 0], loc[..., 1]  # (q, P, cams)
    if problem.v2:  # v2's kernel reads when `loc > 0 && loc < 1`: a NaN fails that
        keep = (x > 0) & (x < 1) & (y > 0) & (y < 1)
    else:  # v3's skips when `loc <= 0 || loc >= 1`: a NaN passes that
        keep = ~((x <= 0) | (x >= 1) | (y <= 0) | (y >= 1))
    half = torch.full((), 0.5, dtype=loc.dtype, device=loc.device)
    x, y = torch.where(keep, x, half), torch.where(keep, y, half)  # finite stand-ins, weighted 0 below
    height, width = problem.hw[..., 0], problem.hw[..., 1]  # (cams, L)
    ys = y[..., None] * height.to(loc.dtype) - 0.5  # (q, P, cams, L): float32 like the kernel's h_im
    xs = x[..., None] * width.to(loc.dtype) - 0.5
    pixel, bilinear, valid = zero_padded_taps(ys, xs, height, width)  # (q, P, cams, L, 4)

    batch = torch.arange(lo, hi, device=loc.device) // num_anchors
    first = (batch * num_feat).view(-1, 1, 1, 1, 1) + problem.start[:, :, None]
    pixel = torch.where(valid & keep[..., None, None], first + pixel, sentinel)
    if problem.feat.size(0) * num_feat * groups < 2 ** 31:
        pixel = pixel.int()  # halves the largest tensors; embedding_bag takes int32 indices
    group = torch.arange(groups, device=loc.device, dtype=pixel.dtype).view(1, groups, 1, 1, 1, 1)
    index = pixel.unsqueeze(1) * groups + group  # (q, G, P, cams, L, 4): one bag per (query, group)
    weights = torch.where(keep[..., None, None], weights, torch.zeros_like(weights))
    # the (small) weights made contiguous first, so that the (large) product is laid out like index
    weight = bilinear.unsqueeze(1) * weights.permute(0, 4, 1, 2, 3).contiguous().unsqueeze(-1)
    return _Taps(pixel.reshape(hi - lo, -1), index.reshape(-1), weight.reshape(-1))


def _chunks(problem: _Problem) -> List[Tuple[int, int]]:
    bs, anchors, pts, cams = problem.loc.shape[:4]
    levels, groups = problem.weights.shape[-2:]
    per_query = max(groups * pts * cams * levels * 4, 1)
    step = max(1, _CHUNK_TAPS // per_query)
    queries = bs * anchors
    return [(lo, min(lo + step, queries)) for lo in range(0, queries, step)]


def _is_empty(problem: _Problem) -> bool:
    feat, weights = problem.feat, problem.weights
    return feat.size(1) == 0 or feat.size(2) == 0 or weights.numel() == 0




def _bag_offsets(taps: _Taps) -> Tensor:
    return torch.arange(0, taps.index.numel(), taps.bag_size, device=taps.index.device, dtype=taps.index.dtype)


def _forward(problem: _Problem) -> Tensor:
    """(bs, num_anchors, C): the aggregation (no autograd; see :class:`DeformableAggregationFunction`)."""
    feat = problem.feat
    bs, anchors = problem.loc.shape[:2]
    channels, groups = feat.size(2), problem.weights.size(-1)
    out = feat.new_zeros((bs * anchors, channels))
    if _is_empty(problem):
        return out.view(bs, anchors, channels)
    rows = feat.view(-1, channels // groups)
    loc, weights = problem.loc.flatten(0, 1), problem.weights.flatten(0, 1)
    sentinel = _sentinel(feat)
    for lo, hi in _chunks(problem):
        taps = _taps(problem, lo, hi, loc[lo:hi], weights[lo:hi], sentinel)
        out[lo:hi] = F.embedding_bag(taps.index, rows, _bag_offsets(taps), mode="sum",
                                     per_sample_weights=taps.weight).view(hi - lo, channels)
    return out.view(bs, anchors, channels)


def _tap_grads(rows: Tensor, taps: _Taps, grad_bags: Tensor) -> Tensor:
    """(q * G * T,): ``<rows[index[t]], grad_bags[bag of t]>``, the gradient of every tap weight."""
    bag = torch.arange(grad_bags.size(0), device=rows.device, dtype=taps.index.dtype)
    return tap_dots(rows, taps.index, grad_bags, bag.repeat_interleave(taps.bag_size))


def _feature_grads(grad_bags: Tensor, taps: _Taps, first: int, count: int) -> Tensor:
    """(count, G, C // G): for the pixels ``first:first + count``, the sum of tap weight x output
    gradient over the taps that read them (the chunk's taps read no other pixel with a weight).

    One weighted gather over the taps sorted by pixel, with bags (group, pixel): the sort is over the
    (q * T) pixel reads, G times fewer than the taps, and serves every group."""
    queries, groups, per_query = taps.pixel.size(0), grad_bags.size(0) // taps.pixel.size(0), taps.bag_size
    # the sentinel may lie outside the range; its taps weigh 0, any pixel in range does for them
    reads = (taps.pixel.reshape(-1) - first).clamp_(0, count - 1)
    sorted_reads, order = reads.sort()
    # where each pixel's run of reads starts (searchsorted, unlike bincount, needs no host sync on GPUs)
    starts = torch.searchsorted(sorted_reads, torch.arange(count, device=reads.device, dtype=reads.dtype))
    dtype = torch.int32 if grad_bags.size(0) + reads.numel() * groups < 2 ** 31 else torch.int64
    group = torch.arange(groups, device=reads.device, dtype=dtype)[:, None]
    index = (order // per_query).to(dtype)[None, :] * groups + group  # (G, q * T) rows of grad_bags
    weight = taps.weight.view(queries, groups, per_query).transpose(0, 1).reshape(groups, -1)[:, order]
    offsets = starts.to(dtype)[None, :] + group * reads.numel()
    out = F.embedding_bag(index.reshape(-1), grad_bags, offsets.reshape(-1), mode="sum",
                          per_sample_weights=weight.reshape(-1))
    return out.view(groups, count, -1).transpose(0, 1)


def _backward(problem: _Problem, grad_output: Tensor, needs: Sequence[bool]
              ) -> Tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
    """Gradients of ``(feat, loc, weights)`` in the v3 layout, None where ``needs`` says so."""
    feat, loc_all, weights_all = problem.feat, problem.loc, problem.weights
    num_feat, channels = feat.shape[1:]
    anchors, groups = loc_all.size(1), weights_all.size(-1)
    need_feat, need_loc, need_weights = needs
    grad_feat = torch.zeros_like(feat) if need_feat else None
    grad_loc = torch.zeros_like(loc_all) if need_loc else None
    grad_weights = torch.zeros_like(weights_all) if need_weights else None
    if _is_empty(problem) or not any(needs):
        return grad_feat, grad_loc, grad_weights
    rows = feat.view(-1, channels // groups)
    grad_bags = grad_output.to(feat.dtype).contiguous().view(-1, channels // groups)  # (queries * G, C // G)
    loc, weights = loc_all.flatten(0, 1), weights_all.flatten(0, 1)
    sentinel = _sentinel(feat)
    for lo, hi in _chunks(problem):
        with torch.enable_grad():
            leaves = (loc[lo:hi].detach().requires_grad_(need_loc),
                      weights[lo:hi].detach().requires_grad_(need_weights))
            taps = _taps(problem, lo, hi, *leaves, sentinel)
        chunk_grads = grad_bags[lo * groups:hi * groups]
        if need_feat:  # the pixels of the batches the chunk's queries belong to
            first, last = (lo // anchors) * num_feat, (1 + (hi - 1) // anchors) * num_feat
            grad_feat.view(-1, groups, channels // groups)[first:last].add_(
                _feature_grads(chunk_grads, taps._replace(weight=taps.weight.detach()), first, last - first))
        if need_loc or need_weights:
            wanted = [leaf for leaf in leaves if leaf.requires_grad]
            grads = iter(torch.autograd.grad(taps.weight, wanted, _tap_grads(rows, taps, chunk_grads)))
            if need_loc:
                grad_loc.view(-1, *loc.shape[1:])[lo:hi] = next(grads)
            if need_weights:
                grad_weights.view(-1, *weights.shape[1:])[lo:hi] = next(grads)
    return grad_feat, grad_loc, grad_weights


# --- public API ----------------------------------------------------------------------------------


def forward_core(mc_ms_feat: Tensor, spatial_shape: Tensor, scale_start_index: Tensor,
                 sampling_location: Tensor, weights: Tensor) -> Tensor:
    """The aggregation without autograd, as the compiled ``deformable_aggregation_forward`` returns it
    (either layout; float32, or float64 for float64 features): for an ``_ext`` adapter and the Function."""
    problem = _prepare(mc_ms_feat, spatial_shape, scale_start_index, sampling_location, weights)
    with no_autocast(problem.feat.device):
        return _forward(problem)


def backward_core(mc_ms_feat: Tensor, spatial_shape: Tensor, scale_start_index: Tensor, sampling_location: Tensor,
                  weights: Tensor, grad_output: Tensor, needs: Sequence[bool] = (True, True, True)
                  ) -> Tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
    """``(grad mc_ms_feat, grad sampling_location, grad weights)`` in the inputs' shapes and the compute
    dtype, what the compiled ``deformable_aggregation_backward`` accumulates into its zeroed outputs;
    None where ``needs`` (three flags, same order) says not wanted."""
    problem = _prepare(mc_ms_feat, spatial_shape, scale_start_index, sampling_location, weights)
    with no_autocast(problem.feat.device):
        grad_feat, grad_loc, grad_weights = _backward(problem, grad_output, needs)
    if problem.v2:  # back to the caller's layout
        grad_feat = None if grad_feat is None else grad_feat.view(mc_ms_feat.shape)
        grad_loc = None if grad_loc is None else grad_loc.squeeze(2)
        grad_weights = None if grad_weights is None else grad_weights.squeeze(2)
    return grad_feat, grad_loc, grad_weights


class DeformableAggregationFunction(Function):
    """The projects' autograd Function: ``DeformableAggregationFunction.apply(mc_ms_feat, spatial_shape,
    scale_start_index, sampling_location, weights)`` (shapes: module docstring; either layout)."""

    @staticmethod
    def forward(ctx, mc_ms_feat: Tensor, spatial_shape: Tensor, scale_start_index: Tensor,
                sampling_location: Tensor, weights: Tensor) -> Tensor:
        out = forward_core(mc_ms_feat, spatial_shape, scale_start_index, sampling_location, weights)
        ctx.save_for_backward(mc_ms_feat, spatial_shape, scale_start_index, sampling_location, weights)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: Tensor):
        needs = (ctx.needs_input_grad[0], ctx.needs_input_grad[3], ctx.needs_input_grad[4])
        grad_feat, grad_loc, grad_weights = backward_core(*ctx.saved_tensors, grad_output, needs)
        return grad_feat, None, None, grad_loc, grad_weights

    @staticmethod
    def feature_maps_format(feature_maps: Sequence[Tensor], inverse: bool = False) -> List[Tensor]:
        """Sparse4D v2's format (its wrapper's static method): per-level ``(bs, num_cams, C, H, W)`` maps
        -> ``[col_feats (bs, num_cams, sum(H * W), C) (a permuted view), spatial_shape (num_levels, 2),
        scale_start_index (num_levels,)]`` (int64, on the maps' device); ``inverse=True`` maps such a
        list back to the list of per-level maps."""
        bs, num_cams = feature_maps[0].shape[:2]  # read in both directions, as in v2
        if inverse:
            hw = feature_maps[1].int()
            flat = feature_maps[0].permute(0, 1, 3, 2)
            parts = torch.split(flat, (hw[:, 0] * hw[:, 1]).tolist(), dim=-1)
            return [part.reshape(part.shape[:3] + tuple(size)) for part, size in zip(parts, hw.tolist())]
        sizes = [tuple(feat.shape[-2:]) for feat in feature_maps]
        starts, total = [], 0
        for h, w in sizes:
            starts.append(total)
            total += h * w
        flat = torch.cat([feat.reshape(bs, num_cams, feat.size(2), -1) for feat in feature_maps], dim=-1)
        col_feats = flat.permute(0, 1, 3, 2)
        device = col_feats.device
        return [col_feats, torch.tensor(sizes, dtype=torch.int64, device=device),
                torch.tensor(starts, dtype=torch.int64, device=device)]


def deformable_aggregation_function(feature_maps: Tensor, spatial_shape: Tensor, scale_start_index: Tensor,
                                    sampling_location: Tensor, weights: Tensor) -> Tensor:
    """Sparse4D v3 / SparseDrive's ``DAF``: :class:`DeformableAggregationFunction` applied to the five
    tensors (``DAF(*feature_maps_format(maps), points_2d, weights)``)."""
    return DeformableAggregationFunction.apply(feature_maps, spatial_shape, scale_start_index,
                                               sampling_location, weights)


FeatureMaps = Union[Sequence[Tensor], Sequence[Sequence[Tensor]]]


def feature_maps_format(feature_maps: FeatureMaps, inverse: bool = False) -> list:
    """Sparse4D v3 / SparseDrive's format between per-level maps and the op's flattened features.

    Forward: ``feature_maps`` is a list over levels of ``(bs, num_cams, C, H_l, W_l)`` maps; returns
    ``[col_feats (bs, num_cams * sum(H_l * W_l), C), spatial_shape (num_cams, num_levels, 2),
    scale_start_index (num_cams, num_levels)]`` (int64 on the maps' device; every camera shares the
    levels' shapes). A list of such lists (camera groups of different shapes) is formatted group by
    group and concatenated: the features along dim 1 and the tables along dim 0, with each group's
    ``scale_start_index`` still counted from 0, exactly as in the projects (so the op reads the first
    group's features for the later groups' cameras; only the inverse round-trips them).

    Inverse (``inverse=True``, given such a three-item list): returns a list over runs of consecutive
    cameras with equal shapes, each a list over levels of ``(bs, cameras_in_run, C, H_l, W_l)`` maps
    (permuted views); for the common case of equal cameras, ``result[0][level]``.
    """
    if inverse:
        col_feats, spatial_shape, _ = feature_maps
        return _unformat(col_feats, spatial_shape)
    if isinstance(feature_maps[0], (list, tuple)):
        parts = [feature_maps_format(group) for group in feature_maps]
        return [torch.cat([part[0] for part in parts], dim=1),
                torch.cat([part[1] for part in parts], dim=0),
                torch.cat([part[2] for part in parts], dim=0)]
    bs, num_cams = feature_maps[0].shape[:2]
    flat = torch.cat([feat.reshape(bs, num_cams, feat.size(2), -1) for feat in feature_maps], dim=-1)
    col_feats = flat.permute(0, 1, 3, 2).flatten(1, 2)
    sizes = [list(feat.shape[-2:]) for feat in feature_maps]
    spatial_shape = torch.tensor([sizes] * num_cams, dtype=torch.int64, device=col_feats.device)
    area = (spatial_shape[..., 0] * spatial_shape[..., 1]).flatten()
    scale_start_index = (area.cumsum(0) - area).reshape(num_cams, -1)  # where each map starts
    return [col_feats, spatial_shape, scale_start_index]


def _unformat(col_feats: Tensor, spatial_shape: Tensor) -> List[List[Tensor]]:
    shapes = spatial_shape.tolist()  # (num_cams, num_levels, 2)
    runs: List[List[int]] = []  # [first camera, cameras] of each run of equal shapes
    for cam, shape in enumerate(shapes):
        if runs and shape == shapes[cam - 1]:
            runs[-1][1] += 1
        else:
            runs.append([cam, 1])
    areas = [[h * w for h, w in levels] for levels in shapes]
    run_sizes = [count * sum(areas[first]) for first, count in runs]
    out = []
    for (first, count), part in zip(runs, col_feats.split(run_sizes, dim=1)):
        part = part.unflatten(1, (count, -1))
        levels = part.split(areas[first], dim=2)
        out.append([level.unflatten(2, size).permute(0, 1, 4, 2, 3) for level, size in zip(levels, shapes[first])])
    return out
