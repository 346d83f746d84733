"""``mmcv.ops.point_sample``: PointRend's point sampling helpers and ``SimpleRoIAlign``.

Coordinates, as in mmcv:

- *relative image points* lie in ``[0, 1] x [0, 1]`` over the whole map, ``(x, y)`` order;
- *relative RoI points* lie in ``[0, 1] x [0, 1]`` over one RoI;
- ``F.grid_sample`` grids lie in ``[-1, 1]`` (:func:`denormalize` maps the first onto it).

:func:`point_sample` is ``F.grid_sample`` on denormalized points, as in mmcv. :func:`bilinear_grid_sample`
is mmcv's pure-PyTorch grid sampler: ``F.grid_sample(mode='bilinear', padding_mode='zeros')`` computed as
one sparse weighted gather (the runtime's :mod:`._bilinear` row-sum core), gradients to the map and the
grid included. :class:`SimpleRoIAlign` samples a regular grid in every RoI with the same gather, all
RoIs at once, where mmcv loops over the images.

mmcv quirks kept on purpose:

- :class:`SimpleRoIAlign` returns the RoIs grouped by image (stable order within an image), because mmcv
  concatenates the per-image results; for RoIs sorted by batch index (``bbox2roi``) that is the input
  order. Batch indices are truncated toward zero (``rois[:, 0].long()``).
- Its ``__repr__`` has no closing parenthesis: ``SimpleRoIAlign(output_size=(7, 7), spatial_scale=0.25``.
- :func:`rel_roi_point_to_abs_img_point` runs under ``torch.no_grad()``: RoIs get no gradient.
- Coordinates keep mmcv's dtype promotion (the float32 grid of :func:`generate_grid` and the float32
  image scale promote half RoIs to float32).

Where mmcv asserted, the runtime raises errors that are both ``ValueError``/``TypeError`` (naming the
op and argument) and ``AssertionError``, so code written against either keeps working. Empty RoIs give
an empty result (mmcv fails in ``torch.cat``), and a batch index outside the batch raises ``ValueError``.
"""

from __future__ import annotations

from typing import Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.nn.modules.utils import _pair

from .. import registry
from ._bilinear import channels_last_rows, weighted_row_sum
from ._checks import check_same_device, check_tensor


class _PointSampleValueError(ValueError, AssertionError):
    """Bad shape or value; an ``AssertionError`` too, as mmcv asserted these."""


class _PointSampleTypeError(TypeError, AssertionError):
    """Bad type or dtype; an ``AssertionError`` too, as mmcv asserted these."""


def _require_tensor(op: str, name: str, value: object) -> None:
    check_tensor(op, name, value, type_error=_PointSampleTypeError)


def _require_floating(op: str, name: str, value: Tensor) -> None:
    check_tensor(op, name, value, kind="floating", type_error=_PointSampleTypeError)


def _require_points(op: str, name: str, points: Tensor, ranks: Tuple[int, ...], coords: int = 2) -> None:
    if points.dim() not in ranks or points.size(-1) != coords:
        shapes = " or ".join(f"{r}-D (..., {coords})" for r in ranks)
        raise _PointSampleValueError(f"{op}: {name} must be {shapes}, got {tuple(points.shape)}")


# --- the sampling core --------------------------------------------------------------------------


def _unnormalize(coord: Tensor, size: int, align_corners: bool) -> Tensor:
    """``[-1, 1]`` grid coordinate -> pixel coordinate, with ``F.grid_sample``'s float formulas."""
    if align_corners:
        return ((coord + 1) / 2) * (size - 1)
    return ((coord + 1) * size - 1) / 2


def _zero_padding_taps(x: Tensor, y: Tensor, height: int, width: int) -> Tuple[Tensor, Tensor]:
    """``(index, weight)``, each ``(*x.shape, 4)``: flat ``row * width + col`` indices of the four
    neighbours of pixel point ``(x, y)`` (order nw, ne, sw, se as ``F.grid_sample``) and their
    bilinear weights, a neighbour outside the map contributing zero (``padding_mode='zeros'``).

    ``_bilinear.bilinear_taps`` does not fit here: it follows roi_align's rules (points clamped onto
    the border, zero only beyond one pixel out), while grid_sample zero-pads each corner on its own.
    Weights are differentiable in ``x`` and ``y``; corners outside (NaN/inf points too) get weight 0.
    """
    x0, y0 = x.detach().floor(), y.detach().floor()
    x1, y1 = x0 + 1, y0 + 1
    # the same products as grid_sample: nw = (x1 - x)(y1 - y), ne = (x - x0)(y1 - y), ...
    weight = torch.stack([(x1 - x) * (y1 - y), (x - x0) * (y1 - y), (x1 - x) * (y - y0), (x - x0) * (y - y0)], -1)
    cols = torch.stack([x0, x1, x0, x1], -1)
    rows = torch.stack([y0, y0, y1, y1], -1)
    inside = (cols >= 0) & (cols <= width - 1) & (rows >= 0) & (rows <= height - 1)
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    # long before multiplying: float row * width loses exactness past 2**24 pixels
    index = torch.where(inside, rows, zero).long() * width + torch.where(inside, cols, zero).long()
    return index, torch.where(inside, weight, zero)


def _gather_points(rows: Tensor, base: Tensor, x: Tensor, y: Tensor, height: int, width: int) -> Tensor:
    """(M, C) bilinear samples with zero padding of ``rows`` (``channels_last_rows`` of an
    (N, C, H, W) map) at M pixel points ``(x, y)``, point m reading image rows ``base[m] + ...``.

    Args:
        rows: (N * H * W, C).
        base: (M,) long, ``batch_index * H * W`` of each point.
        x, y: (M,) pixel coordinates.
    """
    if rows.size(0) == 0 or x.numel() == 0:  # empty map (all corners are padding) or no points
        # zeros that stay in the graph, so backward gives zero gradients instead of failing
        return rows.new_zeros((x.numel(), rows.size(1))) + 0 * (rows.sum() + x.sum() + y.sum())
    index, weight = _zero_padding_taps(x, y, height, width)
    return weighted_row_sum(rows, index + base[:, None], weight)


def _sample_rows(input: Tensor, batch: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """(M, C) samples of ``input`` (N, C, H, W) at pixel points (x, y) of images ``batch`` (M,)."""
    height, width = input.shape[-2:]
    dtype = torch.promote_types(input.dtype, x.dtype)
    compute = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    rows = channels_last_rows(input).to(compute)
    out = _gather_points(rows, batch * (height * width), x.to(compute), y.to(compute), height, width)
    return out.to(dtype)


# --- public API ---------------------------------------------------------------------------------


def bilinear_grid_sample(im: Tensor, grid: Tensor, align_corners: bool = False) -> Tensor:
    """``F.grid_sample(im, grid, mode='bilinear', padding_mode='zeros', align_corners=...)`` in plain
    PyTorch ops, differentiable in ``im`` and ``grid``.

    Args:
        im: (N, C, H, W) feature map.
        grid: (N, Hg, Wg, 2) sampling points ``(x, y)`` in ``[-1, 1]``; outside reads zeros.
        align_corners: ``-1``/``1`` are the centres (True) or the outer corners (False) of the
            corner pixels.

    Returns:
        (N, C, Hg, Wg), in the promoted dtype of ``im`` and ``grid`` (as mmcv's arithmetic gives).
    """
    op = "bilinear_grid_sample"
    _require_tensor(op, "im", im)
    _require_tensor(op, "grid", grid)
    if im.dim() != 4:
        raise _PointSampleValueError(f"{op}: im must be 4-D (N, C, H, W), got {tuple(im.shape)}")
    _require_points(op, "grid", grid, (4,))
    if grid.size(0) != im.size(0):
        raise _PointSampleValueError(f"{op}: grid must have the batch size of im ({im.size(0)}), "
                                     f"got {tuple(grid.shape)}")
    _require_floating(op, "im", im)
    _require_floating(op, "grid", grid)
    check_same_device(op, im=im, grid=grid)
    n, c, height, width = im.shape
    _, gh, gw, _ = grid.shape
    x = _unnormalize(grid[..., 0], width, align_corners).reshape(-1)
    y = _unnormalize(grid[..., 1], height, align_corners).reshape(-1)
    batch = torch.arange(n, device=im.device).repeat_interleave(gh * gw)
    out = _sample_rows(im, batch, x, y)
    return out.reshape(n, gh, gw, c).permute(0, 3, 1, 2).contiguous()


def normalize(grid: Tensor) -> Tensor:
    """Map a grid from ``[-1, 1]`` to ``[0, 1]``: ``(grid + 1) / 2``. Any shape."""
    return (grid + 1.0) / 2.0


def denormalize(grid: Tensor) -> Tensor:
    """Map a grid from ``[0, 1]`` to ``[-1, 1]``: ``grid * 2 - 1``. Any shape."""
    return grid * 2.0 - 1.0


def generate_grid(num_grid: int, size: Tuple[int, int], device: torch.device) -> Tensor:
    """Centres of a regular ``size = (h, w)`` grid of cells over ``[0, 1] x [0, 1]``, as ``(x, y)``.

    Returns:
        float32 (num_grid, h * w, 2), row-major over (h, w); one grid expanded (stride 0) over
        ``num_grid``, like mmcv.
    """
    h, w = _pair(size)
    # F.affine_grid's identity base grid (align_corners=False): linspace(-1, 1, n) * (n - 1) / n
    xs = torch.linspace(-1.0, 1.0, w, device=device) * (w - 1) / w
    ys = torch.linspace(-1.0, 1.0, h, device=device) * (h - 1) / h
    grid = torch.stack([xs.expand(h, w), ys[:, None].expand(h, w)], -1)
    return normalize(grid).view(1, -1, 2).expand(num_grid, -1, -1)


def rel_roi_point_to_abs_img_point(rois: Tensor, rel_roi_points: Tensor) -> Tensor:
    """RoI-relative points -> absolute image points: ``(x1 + px * (x2 - x1), y1 + py * (y2 - y1))``.

    Args:
        rois: (N, 4) boxes ``(x1, y1, x2, y2)`` or (N, 5) RoIs ``(batch_index, x1, y1, x2, y2)``.
        rel_roi_points: (N, P, 2) points in ``[0, 1]`` relative to each RoI.

    Returns:
        (N, P, 2), computed without gradient (as mmcv, under ``torch.no_grad()``).
    """
    op = "rel_roi_point_to_abs_img_point"
    _require_tensor(op, "rois", rois)
    _require_tensor(op, "rel_roi_points", rel_roi_points)
    if rois.dim() != 2 or rois.size(1) not in (4, 5):
        raise _PointSampleValueError(f"{op}: rois must have shape (N, 4) or (N, 5), got {tuple(rois.shape)}")
    _require_points(op, "rel_roi_points", rel_roi_points, (3,))
    if rel_roi_points.size(0) != rois.size(0):
        raise _PointSampleValueError(f"{op}: rel_roi_points must have one row per roi ({rois.size(0)}), "
                                     f"got {tuple(rel_roi_points.shape)}")
    check_same_device(op, rois=rois, rel_roi_points=rel_roi_points)
    with torch.no_grad():
        boxes = rois[:, -4:]
        x1, y1, x2, y2 = (boxes[:, i:i + 1] for i in range(4))
        xs = rel_roi_points[:, :, 0] * (x2 - x1) + x1
        ys = rel_roi_points[:, :, 1] * (y2 - y1) + y1
        return torch.stack([xs, ys], dim=2)


def get_shape_from_feature_map(x: Tensor) -> Tensor:
    """float32 (1, 1, 2) tensor ``(W, H)`` of an (N, C, H, W) map, on its device."""
    _require_tensor("get_shape_from_feature_map", "x", x)
    if x.dim() != 4:
        raise _PointSampleValueError(f"get_shape_from_feature_map: x must be (N, C, H, W), got {tuple(x.shape)}")
    height, width = x.shape[-2:]
    return torch.tensor([[[width, height]]], dtype=torch.float32).to(x.device)


def _image_scale(op: str, img: Union[tuple, Tensor], device: torch.device) -> Tensor:
    """float32 (1, 1, 2) ``(W, H)`` from an ``(h, w)`` tuple or an (N, C, H, W) map."""
    if isinstance(img, tuple):
        if len(img) != 2:
            raise _PointSampleValueError(f"{op}: img as a tuple must be (height, width), got {img!r}")
        height, width = img
        return torch.tensor([width, height], dtype=torch.float32, device=device).view(1, 1, 2)
    if isinstance(img, Tensor):
        if img.dim() != 4:
            raise _PointSampleValueError(f"{op}: img as a tensor must be 4-D (N, C, H, W), got {tuple(img.shape)}")
        return get_shape_from_feature_map(img)
    raise _PointSampleTypeError(f"{op}: img must be a (height, width) tuple or an (N, C, H, W) tensor, "
                                f"got {type(img).__name__}")


def abs_img_point_to_rel_img_point(abs_img_points: Tensor, img: Union[tuple, Tensor],
                                   spatial_scale: float = 1.) -> Tensor:
    """Absolute image points -> points relative to the map: ``points / (W, H) * spatial_scale``.

    Args:
        abs_img_points: (N, P, 2) absolute ``(x, y)``.
        img: ``(height, width)`` tuple, or an (N, C, H, W) map whose size is used.
        spatial_scale: factor applied after dividing by the size.

    Returns:
        (N, P, 2) relative points (float32 or wider: the scale is a float32 tensor, as in mmcv).
    """
    op = "abs_img_point_to_rel_img_point"
    _require_tensor(op, "abs_img_points", abs_img_points)
    scale = _image_scale(op, img, abs_img_points.device)
    return abs_img_points / scale * spatial_scale


def rel_roi_point_to_rel_img_point(rois: Tensor, rel_roi_points: Tensor, img: Union[tuple, Tensor],
                                   spatial_scale: float = 1.) -> Tensor:
    """RoI-relative points -> map-relative points (:func:`rel_roi_point_to_abs_img_point`, then
    :func:`abs_img_point_to_rel_img_point`).

    Args:
        rois: (N, 4) or (N, 5).
        rel_roi_points: (N, P, 2) in ``[0, 1]``.
        img: ``(height, width)`` tuple or an (N, C, H, W) map.
        spatial_scale: scale from image to map coordinates.

    Returns:
        (N, P, 2).
    """
    abs_img_point = rel_roi_point_to_abs_img_point(rois, rel_roi_points)
    return abs_img_point_to_rel_img_point(abs_img_point, img, spatial_scale)


def is_in_onnx_export_without_custom_ops() -> bool:
    """mmcv-full 1.x: exporting to ONNX without mmcv's ONNX Runtime custom ops. The runtime ships no
    such ops, so this is ``torch.onnx.is_in_onnx_export()``. (mmcv 1.x then sampled with
    :func:`bilinear_grid_sample`; the runtime keeps ``F.grid_sample``, which ONNX opset 16+ exports.)
    """
    return bool(torch.onnx.is_in_onnx_export())


def point_sample(input: Tensor, points: Tensor, align_corners: bool = False, **kwargs) -> Tensor:
    """``F.grid_sample`` with points in ``[0, 1] x [0, 1]``, and 3-D point sets.

    Args:
        input: (N, C, H, W) feature map (or (N, C, D, H, W) with 5-D points, passed through).
        points: (N, P, 2) or (N, Hgrid, Wgrid, 2) relative ``(x, y)`` points.
        align_corners: as in ``F.grid_sample``.
        **kwargs: more ``F.grid_sample`` arguments (``mode``, ``padding_mode``).

    Returns:
        (N, C, P) for 3-D points, else (N, C, Hgrid, Wgrid).
    """
    op = "point_sample"
    _require_tensor(op, "input", input)
    _require_tensor(op, "points", points)
    if input.dim() == 5:
        _require_points(op, "points", points, (5,), coords=3)
    elif input.dim() == 4:
        _require_points(op, "points", points, (3, 4))
    else:
        raise _PointSampleValueError(f"{op}: input must be 4-D (N, C, H, W), got {tuple(input.shape)}")
    if points.size(0) != input.size(0):
        raise _PointSampleValueError(f"{op}: points must have the batch size of input ({input.size(0)}), "
                                     f"got {tuple(points.shape)}")
    if points.dtype != input.dtype:
        raise _PointSampleTypeError(f"{op}: points and input must have one dtype (F.grid_sample), "
                                    f"got {points.dtype} and {input.dtype}")
    check_same_device(op, input=input, points=points)
    flat = points.dim() == 3
    grid = denormalize(points.unsqueeze(2) if flat else points)
    output = F.grid_sample(input, grid, align_corners=align_corners, **kwargs)
    return output.squeeze(3) if flat else output


class SimpleRoIAlign(nn.Module):
    """PointRend's RoI align: bilinear samples (zero padding) at the cell centres of an
    ``output_size`` grid in every RoI, faster than :class:`RoIAlign` (one sample per bin).

    Args:
        output_size: ``(h, w)`` or an int.
        spatial_scale: image-to-map scale of the boxes.
        aligned: True: a pixel's value sits at its centre (``align_corners=False`` in
            ``F.grid_sample``); False: the legacy MMDetection behaviour (``align_corners=True``).

    Forward: ``features`` (N, C, H, W), ``rois`` (R, 5) ``(batch_index, x1, y1, x2, y2)`` ->
    (R, C, h, w), RoIs grouped by image (see the module docstring). No gradient to ``rois``.
    """

    def __init__(self, output_size: Tuple[int], spatial_scale: float, aligned: bool = True) -> None:
        super().__init__()
        self.output_size = _pair(output_size)
        self.spatial_scale = float(spatial_scale)
        # mmcv keeps this flag for consistency with the other RoI ops
        self.use_torchvision = False
        self.aligned = aligned

    def forward(self, features: Tensor, rois: Tensor) -> Tensor:
        op = "SimpleRoIAlign"
        _require_tensor(op, "features", features)
        _require_tensor(op, "rois", rois)
        if features.dim() != 4:
            raise _PointSampleValueError(f"{op}: features must be 4-D (N, C, H, W), got {tuple(features.shape)}")
        if rois.dim() != 2 or rois.size(1) != 5:
            raise _PointSampleValueError(f"{op}: rois must have shape (R, 5), got {tuple(rois.shape)}")
        _require_floating(op, "features", features)
        _require_floating(op, "rois", rois)
        check_same_device(op, features=features, rois=rois)
        num_imgs, channels, height, width = features.shape
        out_h, out_w = self.output_size
        if rois.size(0) == 0:
            return features.new_zeros((0, channels, out_h, out_w)) + 0 * features.sum()

        batch = rois[:, 0].long()  # truncation toward zero, as mmcv
        if bool(((batch < 0) | (batch >= num_imgs)).any()):
            raise _PointSampleValueError(f"{op}: rois[:, 0] must be batch indices in [0, {num_imgs}), "
                                         f"got values outside")
        # mmcv concatenates per-image results: RoIs come out grouped by image, stable within one
        order = torch.argsort(batch, stable=True)
        rois, batch = rois[order], batch[order]

        rel_roi_points = generate_grid(rois.size(0), self.output_size, device=rois.device)
        grid = denormalize(rel_roi_point_to_rel_img_point(rois, rel_roi_points, features, self.spatial_scale))
        align_corners = not self.aligned
        x = _unnormalize(grid[..., 0], width, align_corners).reshape(-1)
        y = _unnormalize(grid[..., 1], height, align_corners).reshape(-1)
        points_batch = batch.repeat_interleave(out_h * out_w)
        out = _sample_rows(features, points_batch, x, y).to(features.dtype)
        return out.reshape(-1, out_h, out_w, channels).permute(0, 3, 1, 2).contiguous()

    def __repr__(self) -> str:
        # mmcv's repr, unclosed parenthesis included
        return f"{self.__class__.__name__}(output_size={self.output_size}, spatial_scale={self.spatial_scale}"


registry.register(registry.OpEntry(
    op="point_sample",
    names=("SimpleRoIAlign", "abs_img_point_to_rel_img_point", "bilinear_grid_sample", "denormalize",
           "generate_grid", "get_shape_from_feature_map", "is_in_onnx_export_without_custom_ops", "normalize",
           "point_sample", "rel_roi_point_to_abs_img_point", "rel_roi_point_to_rel_img_point"),
    ext_functions=(),
    backward="yes",
    devices=("any",),
))
