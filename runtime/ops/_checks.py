"""Input handling shared by the ops: numpy in/out like mmcv, and clear errors for bad input.

Every error names the op and the argument, as the runtime's rules require: ``ValueError`` for a bad
shape or value, ``TypeError`` for a bad type or dtype.
"""

from __future__ import annotations

import contextlib
import functools
import operator
import warnings
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor


def is_numpy(value: Any) -> bool:
    return type(value).__module__ == "numpy" and type(value).__name__ == "ndarray"


def to_tensor(op: str, name: str, value: Any) -> Tuple[Tensor, bool]:
    """``(tensor, was_numpy)`` for a tensor or numpy array argument."""
    if isinstance(value, Tensor):
        return value, False
    if is_numpy(value):
        return torch.from_numpy(value), True
    raise TypeError(f"{op}: {name} must be a torch.Tensor or numpy.ndarray, got {type(value).__name__}")


def check_boxes(op: str, name: str, boxes: Tensor, widths: Union[int, Sequence[int]],
                *, allow_empty_any_shape: bool = False) -> None:
    """``boxes`` is a floating (N, W) tensor with W in ``widths``."""
    widths = (widths,) if isinstance(widths, int) else tuple(widths)
    if allow_empty_any_shape and boxes.numel() == 0:
        return
    if boxes.dim() != 2 or boxes.size(1) not in widths:
        shape = " or ".join(f"(N, {w})" for w in widths)
        raise ValueError(f"{op}: {name} must have shape {shape}, got {tuple(boxes.shape)}")
    if not boxes.is_floating_point():
        raise TypeError(f"{op}: {name} must be a floating point tensor, got {boxes.dtype}")


def check_scores(op: str, name: str, scores: Tensor, count: int) -> None:
    if scores.dim() != 1 or scores.size(0) != count:
        raise ValueError(f"{op}: {name} must have shape ({count},) to match the boxes, got {tuple(scores.shape)}")
    if not scores.is_floating_point():
        raise TypeError(f"{op}: {name} must be a floating point tensor, got {scores.dtype}")


def check_same_device(op: str, **tensors: Optional[Tensor]) -> None:
    present = {name: t for name, t in tensors.items() if t is not None}
    devices = {t.device for t in present.values()}
    if len(devices) > 1:
        listing = ", ".join(f"{name} on {t.device}" for name, t in present.items())
        raise ValueError(f"{op}: all tensors must be on one device, got {listing}")


def check_choice(op: str, name: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        raise ValueError(f"{op}: {name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def renamed_kwargs(renames: Dict[str, str]) -> Callable:
    """Accept deprecated keyword names (mmcv's ``deprecated_api_warning``), with a warning."""

    def decorate(func: Callable) -> Callable:
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            for old, new in renames.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(f"{func.__name__}: got both {old!r} (deprecated) and {new!r}")
                    warnings.warn(f"{func.__name__}: {old!r} is deprecated, use {new!r} instead",
                                  DeprecationWarning, stacklevel=2)
                    kwargs[new] = kwargs.pop(old)
            return func(*args, **kwargs)

        return wrapper

    return decorate


def check_box_pairs(op: str, bboxes1: Tensor, bboxes2: Tensor, width: int, mode: str, aligned: bool) -> None:
    """The shared checks of the pairwise IoU ops: types, (N, width) shapes, one device, mode, aligned sizes."""
    check_choice(op, "mode", mode, ("iou", "iof"))
    for name, boxes in (("bboxes1", bboxes1), ("bboxes2", bboxes2)):
        if not isinstance(boxes, Tensor):
            raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(boxes).__name__}")
        if boxes.numel():
            check_boxes(op, name, boxes, width)
    check_same_device(op, bboxes1=bboxes1, bboxes2=bboxes2)
    if aligned and bboxes1.size(0) != bboxes2.size(0):
        raise ValueError(f"{op}: aligned needs as many bboxes1 as bboxes2, got {bboxes1.size(0)} and {bboxes2.size(0)}")


def check_rois(op: str, rois: Tensor, batch_size: int, width: int, name: str = "rois") -> Tensor:
    """(K,) batch index of each RoI (the first column, truncated to int as the kernels do)."""
    if not isinstance(rois, Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(rois).__name__}")
    if rois.dim() != 2 or rois.size(1) != width:
        raise ValueError(f"{op}: {name} must have shape (K, {width}), got {tuple(rois.shape)}")
    if not rois.is_floating_point():
        raise TypeError(f"{op}: {name} must be a floating point tensor, got {rois.dtype}")
    batch = rois[:, 0].long()
    if batch.numel() and bool(((batch < 0) | (batch >= batch_size)).any()):
        raise ValueError(f"{op}: {name}[:, 0] (batch index) must be in [0, {batch_size}), "
                         f"got values in [{int(batch.min())}, {int(batch.max())}]")
    return batch


def check_feature_map(op: str, input: Tensor, rois: Tensor, name: str = "input") -> None:
    if not isinstance(input, Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(input).__name__}")
    if input.dim() != 4:
        raise ValueError(f"{op}: {name} must have shape (N, C, H, W), got {tuple(input.shape)}")
    if not input.is_floating_point():
        raise TypeError(f"{op}: {name} must be a floating point tensor, got {input.dtype}")
    check_same_device(op, **{name: input, "rois": rois})
    if isinstance(rois, Tensor) and rois.dtype != input.dtype:  # the kernels read both as one scalar type
        raise TypeError(f"{op}: rois must have the dtype of {name} ({input.dtype}), got {rois.dtype}")


def autocast_common_dtype(features: Any, boxes: Any) -> Tuple[Any, Any]:
    """Under autocast, half features with float32 boxes (what autocast produces) run in the wider
    dtype, so that box coordinates are not rounded to half precision; mmcv's kernels, which ignore
    autocast, would reject the pair. Outside autocast a dtype mismatch stays an error."""
    if not (isinstance(features, Tensor) and isinstance(boxes, Tensor)) or features.dtype == boxes.dtype:
        return features, boxes
    if not (features.is_floating_point() and boxes.is_floating_point()):
        return features, boxes
    if not torch.is_autocast_enabled(features.device.type):
        return features, boxes
    common = torch.promote_types(features.dtype, boxes.dtype)
    return features.to(common), boxes.to(common)


def check_int(op: str, name: str, value: Any, minimum: int) -> int:
    """``value`` as an int (anything with ``__index__``, not a bool) of at least ``minimum``."""
    if isinstance(value, bool):
        raise TypeError(f"{op}: {name} must be an int, got bool")
    try:
        number = operator.index(value)
    except TypeError:
        raise TypeError(f"{op}: {name} must be an int, got {type(value).__name__}") from None
    if number < minimum:
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {number}")
    return number


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype an op computes in: half precision is widened to float32 (box and RoI geometry in
    fp16 is too coarse, and CPU gathers want float32); other dtypes are kept."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def no_autocast(device: torch.device):
    """A context in which autocast is off on ``device``: mmcv's kernels ignore autocast, so the
    GEMMs and gathers of an op must not be cast down either (a no-op for device types autocast
    does not know)."""
    try:
        return torch.autocast(device.type, enabled=False)
    except (RuntimeError, ValueError):
        return contextlib.nullcontext()


def is_integer_dtype(dtype: torch.dtype) -> bool:
    """An integer dtype (what index arguments take): neither floating, complex nor bool."""
    return not (dtype.is_floating_point or dtype.is_complex or dtype == torch.bool)


def check_tensor(op: str, name: str, value: Any, *, dim: Optional[int] = None, kind: Optional[str] = None,
                 type_error: type = TypeError, value_error: type = ValueError) -> Tensor:
    """``value`` itself when it is a tensor with ``dim`` dimensions (any when None) of a ``kind`` dtype
    (``"floating"``, ``"integer"``, or any when None); otherwise a clear error naming the op and the
    argument. Ops whose mmcv counterparts raised other exception types pass subclasses that are both."""
    if not isinstance(value, Tensor):
        raise type_error(f"{op}: {name} must be a torch.Tensor, got {type(value).__name__}")
    if dim is not None and value.dim() != dim:
        raise value_error(f"{op}: {name} must have {dim} dimensions, got shape {tuple(value.shape)}")
    if kind == "floating" and not value.is_floating_point():
        raise type_error(f"{op}: {name} must be a floating point tensor, got {value.dtype}")
    if kind == "integer" and not is_integer_dtype(value.dtype):
        raise type_error(f"{op}: {name} must be an integer tensor, got {value.dtype}")
    return value
