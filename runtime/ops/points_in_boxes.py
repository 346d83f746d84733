"""``mmcv.ops.points_in_boxes``: which LiDAR 3D boxes contain which points.

Boxes are ``(x, y, z, x_size, y_size, z_size, rz)`` with ``(x, y, z)`` the centre of the box's
BOTTOM face and ``rz`` the yaw. The test is the one of mmcv's kernels
(csrc/common/cuda/points_in_boxes_cuda_kernel.cuh and csrc/pytorch/cpu/points_in_boxes.cpp):

* the box centre height ``cz + z_size / 2`` (computed in double, stored in the box dtype);
* ``|z - cz| > z_size / 2`` rejects, so points exactly on the bottom or top face are INSIDE
  (the kernels take the absolute value with ``fabsf``: for float64 boxes the difference is
  rounded to float32 before the comparison, which is reproduced);
* the point's offset is rotated by ``-rz``: ``local_x = dx * cos(-rz) + dy * (-sin(-rz))``,
  ``local_y = dx * sin(-rz) + dy * cos(-rz)``, each product and the sum rounded in the box dtype
  (cos/sin are evaluated in double and rounded to the box dtype);
* ``-x_size / 2 < local_x < x_size / 2`` and ``-y_size / 2 < local_y < y_size / 2`` strictly, so
  points on the side faces are OUTSIDE and zero-size boxes contain nothing.

``points_in_boxes_cpu`` casts both inputs to float32 first (as mmcv's wrapper does) and returns
mmcv's non-contiguous ``(B, T, M).transpose(1, 2)`` view; ``points_in_boxes_part`` returns the FIRST
containing box (``-1`` for none) and ``points_in_boxes_all`` a 0/1 mask, both computed in the input
dtype like the CUDA kernels (bfloat16, which mmcv's kernels reject, runs in float32). All outputs
are int32; nothing is differentiable. Unlike mmcv, every function runs on any device: the CUDA
wrapper's ``torch.cuda.set_device`` dance is not needed because nothing is allocated on the
current device. (mmcv's CUDA kernels contract ``a * b + c * d`` into fused multiply-adds, so on
points within a rounding error of a side face they can differ from its CPU kernel; the runtime
follows the CPU kernel's separately rounded arithmetic.)

Work is chunked over points so that a (B, chunk, T) block stays near ``_BLOCK`` elements.
"""

from __future__ import annotations

from typing import Iterator, Tuple

import torch
from torch import Tensor

from .. import registry
from ._checks import check_same_device

_BLOCK = 1 << 21  # point-box pairs tested at a time (a few 8 MB float32 temporaries)


# --- the vectorised core ---------------------------------------------------------------------


def _box_terms(boxes: Tensor, dtype: torch.dtype) -> Tuple[Tensor, ...]:
    """Per-box terms of the kernels' test, each (B, 1, T) in ``dtype``:
    ``cx, cy, cz (centre height), half x/y/z sizes, cos(-rz), sin(-rz)``."""
    b = boxes.to(dtype)  # the CPU wrapper's .float() comes before any arithmetic
    wide = b.double()
    # cz += z_size / 2.0: the sum is formed in double and stored in the box type.
    cz = (wide[..., 2] + wide[..., 5] / 2).to(dtype)
    rz = -wide[..., 6]
    cosa, sina = torch.cos(rz).to(dtype), torch.sin(rz).to(dtype)
    halves = b[..., 3:6] / 2  # exact halving; the kernels compare against size / 2.0
    terms = (b[..., 0], b[..., 1], cz, halves[..., 0], halves[..., 1], halves[..., 2], cosa, sina)
    return tuple(t.unsqueeze(1) for t in terms)


def _inside(points: Tensor, terms: Tuple[Tensor, ...], fabsf_rounding: bool) -> Tensor:
    """(B, m, T) bool: point (B, m, 3) inside box, by the kernels' arithmetic (see the module doc)."""
    cx, cy, cz, hx, hy, hz, cosa, sina = terms
    x, y, z = (points[..., i:i + 1] for i in range(3))
    dz = (z - cz).abs_()
    if fabsf_rounding:  # fabsf() of a double difference rounds it to float first
        dz = dz.float().double()
    inside = ~(dz > hz)  # the kernels reject |z - cz| > z_size / 2 (so a NaN z is not rejected here)
    dx, dy = x - cx, y - cy
    local = dx * cosa
    local += dy * (-sina)
    inside &= local.abs_() < hx  # -hx < local_x < hx
    local = dx * sina
    local += dy * cosa
    inside &= local.abs_() < hy
    return inside


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The arithmetic dtype of the CUDA kernels for boxes of ``dtype`` (bfloat16 widened to float32)."""
    return torch.float32 if dtype == torch.bfloat16 else dtype


def inside_chunks(points: Tensor, boxes: Tensor, dtype: torch.dtype) -> Iterator[Tuple[int, int, Tensor]]:
    """``(start, end, inside)`` over chunks of points, ``inside`` (B, end - start, T) bool.

    points: (B, M, 3); boxes: (B, T, 7); ``dtype`` is the arithmetic dtype (float32 for the CPU kernel).
    """
    batch, num_points, num_boxes = points.size(0), points.size(1), boxes.size(1)
    terms = _box_terms(boxes, dtype)
    pts = points.to(dtype)
    step = max(1, _BLOCK // max(1, batch * num_boxes))
    for start in range(0, num_points, step):
        end = min(num_points, start + step)
        yield start, end, _inside(pts[:, start:end], terms, dtype == torch.float64)


def first_box_index(inside: Tensor) -> Tensor:
    """(B, m) int32: index of the first True along the last axis of (B, m, T), -1 where none."""
    if inside.size(-1) == 0:
        return torch.full(inside.shape[:-1], -1, dtype=torch.int32, device=inside.device)
    hit = inside.to(torch.uint8)
    first = hit.argmax(-1)  # argmax returns the first maximal index
    return torch.where(hit.amax(-1).bool(), first, first.new_tensor(-1)).to(torch.int32)


def write_part(points: Tensor, boxes: Tensor, out: Tensor) -> None:
    """Set ``out[b, m]`` (B, M) int32 to the first containing box; points in no box are left alone."""
    for start, end, inside in inside_chunks(points, boxes, compute_dtype(boxes.dtype)):
        first = first_box_index(inside)
        view = out[:, start:end]
        view.copy_(torch.where(first >= 0, first, view))


def write_all(points: Tensor, boxes: Tensor, out: Tensor) -> None:
    """Set ``out[b, m, t]`` (B, M, T) int32 to 1 where point m is in box t; other entries are left alone."""
    for start, end, inside in inside_chunks(points, boxes, compute_dtype(boxes.dtype)):
        out[:, start:end].masked_fill_(inside, 1)


def write_cpu(points: Tensor, boxes: Tensor, out: Tensor) -> None:
    """Fill ``out`` (B, T, M) int32 with 0/1 in float32 arithmetic (mmcv's CPU kernel, every entry written)."""
    for start, end, inside in inside_chunks(points, boxes, torch.float32):
        out[:, :, start:end].copy_(inside.transpose(1, 2))


# --- input checks ----------------------------------------------------------------------------


def _check(op: str, points: Tensor, boxes: Tensor, cuda_kernel: bool) -> None:
    for name, value, width in (("points", points, 3), ("boxes", boxes, 7)):
        if not isinstance(value, Tensor):
            raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(value).__name__}")
        if value.dim() != 3 or value.size(2) != width:
            raise ValueError(f"{op}: {name} must have shape (B, {'M' if width == 3 else 'T'}, {width}), "
                             f"got {tuple(value.shape)}")
        if cuda_kernel and not value.is_floating_point():
            raise TypeError(f"{op}: {name} must be a floating point tensor, got {value.dtype}")
        if value.is_complex():
            raise TypeError(f"{op}: {name} must be a real tensor, got {value.dtype}")
    if points.size(0) != boxes.size(0):
        raise ValueError(f"{op}: points and boxes should have the same batch size, "
                         f"but got {points.size(0)} and {boxes.size(0)}")
    check_same_device(op, points=points, boxes=boxes)
    if cuda_kernel and points.dtype != boxes.dtype:  # the CUDA kernels read both as one scalar type
        raise TypeError(f"{op}: points and boxes must have the same dtype, got {points.dtype} and {boxes.dtype}")


# --- public API (mmcv's names and signatures) ------------------------------------------------


def points_in_boxes_part(points: Tensor, boxes: Tensor) -> Tensor:
    """Find the box in which each point is (the first containing box).

    Args:
        points (torch.Tensor): [B, M, 3], [x, y, z] in LiDAR/DEPTH coordinate.
        boxes (torch.Tensor): [B, T, 7], [x, y, z, x_size, y_size, z_size, rz]
            in LiDAR/DEPTH coordinate, (x, y, z) is the bottom center.

    Returns:
        torch.Tensor: (B, M) int32 box index of each point, -1 for none.
    """
    _check("points_in_boxes_part", points, boxes, True)
    out = torch.full(points.shape[:2], -1, dtype=torch.int32, device=points.device)
    write_part(points, boxes, out)
    return out


def points_in_boxes_cpu(points: Tensor, boxes: Tensor) -> Tensor:
    """Find all boxes in which each point is (mmcv's CPU version, float32 arithmetic; any device here).

    Args:
        points (torch.Tensor): [B, M, 3], [x, y, z] in LiDAR/DEPTH coordinate.
        boxes (torch.Tensor): [B, T, 7], [x, y, z, x_size, y_size, z_size, rz],
            (x, y, z) is the bottom center.

    Returns:
        torch.Tensor: (B, M, T) int32, 1 where the point is in the box, else 0
        (a transposed view of a (B, T, M) tensor, as mmcv returns).
    """
    _check("points_in_boxes_cpu", points, boxes, False)
    out = torch.zeros((points.size(0), boxes.size(1), points.size(1)), dtype=torch.int32, device=points.device)
    write_cpu(points, boxes, out)
    return out.transpose(1, 2)


def points_in_boxes_all(points: Tensor, boxes: Tensor) -> Tensor:
    """Find all boxes in which each point is.

    Args:
        points (torch.Tensor): [B, M, 3], [x, y, z] in LiDAR/DEPTH coordinate.
        boxes (torch.Tensor): [B, T, 7], [x, y, z, x_size, y_size, z_size, rz],
            (x, y, z) is the bottom center.

    Returns:
        torch.Tensor: (B, M, T) int32, 1 where the point is in the box, else 0.
    """
    _check("points_in_boxes_all", points, boxes, True)
    out = torch.zeros((points.size(0), points.size(1), boxes.size(1)), dtype=torch.int32, device=points.device)
    write_all(points, boxes, out)
    return out


registry.register(registry.OpEntry(
    op="points_in_boxes",
    names=("points_in_boxes_part", "points_in_boxes_cpu", "points_in_boxes_all"),
    ext_functions=("points_in_boxes_part_forward", "points_in_boxes_all_forward", "points_in_boxes_cpu_forward"),
    backward="n/a",
    devices=("any",),
))
