"""Scalar transcriptions of mmcv kernel helpers, shared by the op tests' kernel references."""

from __future__ import annotations

from typing import Callable, List, NamedTuple, Optional, Tuple


class Bilinear(NamedTuple):
    y_low: int
    y_high: int
    x_low: int
    x_high: int
    taps: List[Tuple[int, int, float]]  # (row, col, weight), in mmcv's w1..w4 order


def mmcv_bilinear(height: int, width: int, y: float, x: float,
                  rnd: Callable[[float], float] = float) -> Optional[Bilinear]:
    """mmcv's ``bilinear_interpolate(_gradient)`` for one point: None outside ``[-1, H] x [-1, W]``.
    ``rnd`` rounds every intermediate (e.g. to float32) where a test needs the kernel's precision."""
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return None
    y, x = max(y, rnd(0)), max(x, rnd(0))
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
        y_low = y_high = height - 1
        y = rnd(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_low = x_high = width - 1
        x = rnd(x_low)
    else:
        x_high = x_low + 1
    ly, lx = rnd(y - y_low), rnd(x - x_low)
    hy, hx = rnd(1) - ly, rnd(1) - lx
    return Bilinear(y_low, y_high, x_low, x_high,
                    [(y_low, x_low, hy * hx), (y_low, x_high, hy * lx), (y_high, x_low, ly * hx),
                     (y_high, x_high, ly * lx)])
