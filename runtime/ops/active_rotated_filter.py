"""``mmcv.ops.active_rotated_filter``: the rotated copies of an oriented filter bank (ORN / S2ANet / ReDet).

Semantics follow mmcv's kernels (CPU and CUDA agree). ``input`` is (O_p, I_p, O, kH, kW) weights and
``indices`` (O, kH, kW, R) 1-based positions; with ``E = O * kH * kW`` entries per filter and the
output viewed as (O_p, R, I_p, E):

- forward: ``output[i, k, j, indices[l, k] - 1] = input[i, j, l]`` for every entry ``l`` and
  rotation ``k``: a scatter that overwrites. Positions no entry names stay as they were (zeros from
  the Python wrapper); where two entries name one position the last entry wins, as in the CPU
  kernel's sequential loop (CUDA races there; mmcv's own index tables are permutations);
- backward: ``grad_input[i, j, l] = sum_k grad_output[i, k, j, indices[l, k] - 1]``, a gather that
  **overwrites** ``grad_input`` (the kernels set it to 0 first, they do not accumulate). With
  duplicate indices this is not the derivative of the forward (an overwritten entry still gets the
  gradient); reproduced as is.

The output is (O_p * R, I_p * O, kH, kW). ``indices`` may have any integer dtype (mmcv's kernels
read int32); out-of-range indices, which the kernels would write out of bounds with, raise.
The forward is computed as a gather through a (R, E) "which entry lands here" table, which is
deterministic and fast on every device.
"""

from __future__ import annotations

from typing import Any, Tuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .. import registry
from ._checks import check_same_device, is_integer_dtype

__all__ = ["ActiveRotatedFilterFunction", "active_rotated_filter"]

_OP = "active_rotated_filter"


def _check_indices(indices: Any, orientations: int, kh: int, kw: int) -> Tensor:
    """(E, R) zero-based int64 targets from the (O, kH, kW, R) 1-based ``indices``."""
    if not isinstance(indices, Tensor):
        raise TypeError(f"{_OP}: indices must be a torch.Tensor, got {type(indices).__name__}")
    if not is_integer_dtype(indices.dtype):
        raise TypeError(f"{_OP}: indices must be an integer tensor, got {indices.dtype}")
    if indices.dim() != 4 or tuple(indices.shape[:3]) != (orientations, kh, kw):
        raise ValueError(f"{_OP}: indices must have shape (nOrientation, kH, kW, nRotation) = "
                         f"({orientations}, {kh}, {kw}, R), got {tuple(indices.shape)}")
    entries = orientations * kh * kw
    target = indices.reshape(entries, indices.size(3)).long() - 1
    if target.numel() and bool(((target < 0) | (target >= entries)).any()):
        raise ValueError(f"{_OP}: indices must lie in [1, {entries}] (nOrientation * kH * kW)")
    return target


def _check_input(input: Any, name: str = "input") -> None:
    if not isinstance(input, Tensor):
        raise TypeError(f"{_OP}: {name} must be a torch.Tensor, got {type(input).__name__}")
    if input.dim() != 5:
        raise ValueError(f"{_OP}: {name} must have shape (nOutputPlane, nInputPlane, nOrientation, kH, kW), "
                         f"got {tuple(input.shape)}")
    if not input.is_floating_point():
        raise TypeError(f"{_OP}: {name} must be a floating point tensor, got {input.dtype}")


def source_entries(target: Tensor) -> Tensor:
    """(R, E): the entry that the forward writes to each (rotation, position), or -1 where none does.

    The last entry wins where several name one position (the CPU kernel's loop order)."""
    entries, rotations = target.shape
    source = torch.full((rotations, entries), -1, dtype=torch.long, device=target.device)
    entry = torch.arange(entries, device=target.device).unsqueeze(0).expand(rotations, entries)
    return source.scatter_reduce_(1, target.t(), entry, reduce="amax", include_self=True)


def _forward_with_mask(input: Tensor, indices: Tensor) -> Tuple[Tensor, Tensor]:
    """(output (O_p, R, I_p, E), written (R, E) bool) of the forward scatter, as a gather."""
    _check_input(input)
    out_planes, in_planes, orientations, kh, kw = input.shape
    target = _check_indices(indices, orientations, kh, kw)
    check_same_device(_OP, input=input, indices=indices)
    source = source_entries(target.to(input.device))
    written = source >= 0
    entries = orientations * kh * kw
    rotations = source.size(0)
    shape = (out_planes, rotations, in_planes, entries)
    # one gather straight into the output layout: out[i, k, j, t] = input[i, j, source[k, t]]
    weights = input.detach().reshape(out_planes, 1, in_planes, entries).expand(shape)
    picked = torch.gather(weights, 3, source.clamp(min=0).view(1, rotations, 1, entries).expand(shape))
    picked = torch.where(written.view(1, rotations, 1, entries), picked, picked.new_zeros(()))
    return picked, written


def active_rotated_filter_forward(input: Tensor, indices: Tensor) -> Tensor:
    """(O_p * R, I_p * O, kH, kW) rotated filters of input (O_p, I_p, O, kH, kW); no autograd graph."""
    with torch.no_grad():
        out, _ = _forward_with_mask(input, indices)
    out_planes, in_planes, orientations, kh, kw = input.shape
    return out.reshape(out_planes * indices.size(3), in_planes * orientations, kh, kw)


def active_rotated_filter_backward(grad_out: Tensor, indices: Tensor) -> Tensor:
    """(O_p, I_p, O, kH, kW) input gradient of grad_out (O_p * R, I_p * O, kH, kW), as mmcv's kernel."""
    if not isinstance(grad_out, Tensor) or grad_out.dim() != 4:
        raise ValueError(f"{_OP}: grad_out must be a 4-D tensor (nOutputPlane * nRotation, "
                         f"nInputPlane * nOrientation, kH, kW)")
    if not isinstance(indices, Tensor) or indices.dim() != 4:
        raise ValueError(f"{_OP}: indices must have shape (nOrientation, kH, kW, nRotation)")
    orientations, kh, kw, rotations = indices.shape
    target = _check_indices(indices, orientations, kh, kw)
    check_same_device(_OP, grad_out=grad_out, indices=indices)
    if (grad_out.size(0) % max(rotations, 1) or grad_out.size(1) % max(orientations, 1)
            or tuple(grad_out.shape[2:]) != (kh, kw) or rotations == 0 or orientations == 0):
        raise ValueError(f"{_OP}: grad_out of shape {tuple(grad_out.shape)} does not match indices of shape "
                         f"{tuple(indices.shape)}")
    out_planes, in_planes = grad_out.size(0) // rotations, grad_out.size(1) // orientations
    entries = orientations * kh * kw
    with torch.no_grad():
        grad = grad_out.detach().reshape(out_planes, rotations, in_planes, entries)
        target = target.to(grad.device)
        shape = (out_planes, in_planes, entries)
        total = torch.gather(grad[:, 0], 2, target[:, 0].expand(shape))
        for k in range(1, rotations):  # a handful of rotations, summed in the kernel's order
            total += torch.gather(grad[:, k], 2, target[:, k].expand(shape))
    return total.reshape(out_planes, in_planes, orientations, kh, kw)


class ActiveRotatedFilterFunction(torch.autograd.Function):
    """mmcv's ``ActiveRotatedFilterFunction``: orientation-sensitive filters (arXiv:2008.09397)."""

    @staticmethod
    def forward(ctx: Any, input: Tensor, indices: Tensor) -> Tensor:
        """input (O_p, I_p, O, kH, kW), indices (O, kH, kW, R) -> (O_p * R, I_p * O, kH, kW)."""
        output = active_rotated_filter_forward(input, indices)
        ctx.save_for_backward(input, indices)
        return output

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> Tuple[Tensor, None]:
        input, indices = ctx.saved_tensors
        return active_rotated_filter_backward(grad_out.contiguous(), indices).to(input.dtype), None


active_rotated_filter = ActiveRotatedFilterFunction.apply


registry.register(registry.OpEntry(
    op="active_rotated_filter",
    names=("ActiveRotatedFilterFunction", "active_rotated_filter"),
    ext_functions=("active_rotated_filter_backward", "active_rotated_filter_forward"),
    backward="yes",
    devices=("any",),
))
