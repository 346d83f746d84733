"""mmcv.ops.psa_mask in pure PyTorch: PSANet's point-wise spatial attention mask (collect / distribute).

The mask ``input (N, h_mask*w_mask, H, W)`` holds, for every feature pixel ``(h, w)``, an
``h_mask x w_mask`` window of attention weights centred on it (centre ``(half_h, half_w)`` with
``half = (size - 1) // 2``). The op writes it into the over-complete map ``output (N, H*W, H, W)``:

* ``collect`` (psa_type 0):    ``output[n, p*W + q, h, w] = input[n, i*w_mask + j, h, w]``
* ``distribute`` (psa_type 1): ``output[n, h*W + w, p, q] = input[n, i*w_mask + j, h, w]``

with ``p = h + i - half_h``, ``q = w + j - half_w``, for the window taps that land on the map
(``0 <= p < H``, ``0 <= q < W``, as mmcv's ``[hstart, hend) x [wstart, wend)``); every other output
entry is 0 and window taps off the map are dropped. Each output entry receives at most one tap, so
the backward is the transposed gather: ``grad_input`` = ``grad_output`` at the tap's target, 0 for
taps off the map. Like mmcv's kernels, any ``psa_type`` other than 0 means distribute.

Both directions are one advanced-indexing gather with broadcast (tiny) index tensors into a copy of
the source padded by one zero row and column, where the off-window / off-map positions point.
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
from torch import Tensor, nn
from torch.autograd import Function
from torch.nn.modules.utils import _pair

from .. import registry

__all__ = ["PSAMaskFunction", "psa_mask", "PSAMask"]

_TYPES = {"collect": 0, "distribute": 1}


def psa_type_enum(psa_type: Union[int, str]) -> int:
    """0 (collect) or 1 (distribute); ints as mmcv's kernels read them (non-zero = distribute)."""
    if isinstance(psa_type, str):
        if psa_type not in _TYPES:
            raise ValueError(f"psa_mask: psa_type must be 'collect' or 'distribute' (or 0/1), got {psa_type!r}")
        return _TYPES[psa_type]
    if isinstance(psa_type, bool) or not isinstance(psa_type, int):
        raise TypeError(f"psa_mask: psa_type must be an int (0 collect, 1 distribute) or str, "
                        f"got {type(psa_type).__name__}")
    return 0 if psa_type == 0 else 1


def mask_hw(mask_size) -> Tuple[int, int]:
    """``(h_mask, w_mask)`` from an int or a pair, validated."""
    size = _pair(mask_size)
    if len(size) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size):
        raise ValueError(f"psa_mask: mask_size must be a positive int or a pair of them, got {mask_size!r}")
    return size[0], size[1]


def check_input(input: Tensor, h_mask: int, w_mask: int) -> None:
    if not isinstance(input, Tensor):
        raise TypeError(f"psa_mask: input must be a torch.Tensor, got {type(input).__name__}")
    if input.dim() != 4:
        raise ValueError(f"psa_mask: input must have shape (N, h_mask*w_mask, H, W), got {tuple(input.shape)}")
    if input.size(1) != h_mask * w_mask:
        raise ValueError(f"psa_mask: input has {input.size(1)} channels, mask_size ({h_mask}, {w_mask}) "
                         f"needs h_mask*w_mask = {h_mask * w_mask}")
    if not input.is_floating_point():
        raise TypeError(f"psa_mask: input must be floating point, got {input.dtype}")


def _window_index(size: int, feat: int, half: int, device: torch.device) -> Tuple[Tensor, Tensor]:
    """Per (tap, pixel) the target ``p = pixel + tap - half`` and per (target, pixel) the tap.

    Returns ``(tap_of (feat, feat) [p, h], target_of (size, feat) [i, h])``; misses point one past
    the end (the zero row of the padded source).
    """
    tap = torch.arange(size, device=device)
    pos = torch.arange(feat, device=device)
    i = pos[:, None] - pos[None, :] + half  # [p, h] -> tap index
    tap_of = torch.where((i >= 0) & (i < size), i, torch.full_like(i, size))
    p = tap[:, None] + pos[None, :] - half  # [i, h] -> target index
    target_of = torch.where((p >= 0) & (p < feat), p, torch.full_like(p, feat))
    return tap_of, target_of


def _pad_last_rows(x: Tensor) -> Tensor:
    """(N, A, B, H, W) -> (N, A+1, B+1, H, W) with zeros in the new row and column."""
    return torch.nn.functional.pad(x, (0, 0, 0, 0, 0, 1, 0, 1))


def _halves(h_mask: int, w_mask: int, half_h: Optional[int], half_w: Optional[int]) -> Tuple[int, int]:
    return ((h_mask - 1) // 2 if half_h is None else half_h), ((w_mask - 1) // 2 if half_w is None else half_w)


def window_valid(h_mask: int, w_mask: int, h: int, w: int, half_h: Optional[int] = None,
                 half_w: Optional[int] = None, device=None) -> Tuple[Tensor, Tensor]:
    """Which taps land on the map: ``(rows (h_mask, H) [i, h], cols (w_mask, W) [j, w])`` booleans."""
    half_h, half_w = _halves(h_mask, w_mask, half_h, half_w)
    return (_window_index(h_mask, h, half_h, device)[1] < h), (_window_index(w_mask, w, half_w, device)[1] < w)


def _flat_targets(n: int, h: int, w: int, h_mask: int, w_mask: int, half_h: int, half_w: int, psa_type: int,
                  device) -> Tuple[Tensor, Tensor]:
    """Per tap ``(N, h_mask, w_mask, H, W)``: flat output index (``N*(H*W)**2`` = off the map) and validity."""
    hh = torch.arange(h, device=device)
    ww = torch.arange(w, device=device)
    _, tgt_h = _window_index(h_mask, h, half_h, device)  # [i, h] -> p
    _, tgt_w = _window_index(w_mask, w, half_w, device)  # [j, w] -> q
    hw = h * w
    if psa_type == 0:  # output [n, p, q, h, w]
        rows = (tgt_h * w * hw + hh * w).view(1, h_mask, 1, h, 1)
        cols = (tgt_w * hw + ww).view(1, 1, w_mask, 1, w)
    else:  # output [n, h, w, p, q]
        rows = (hh * w * hw + tgt_h * w).view(1, h_mask, 1, h, 1)
        cols = (ww * hw + tgt_w).view(1, 1, w_mask, 1, w)
    valid = (tgt_h < h).view(1, h_mask, 1, h, 1) & (tgt_w < w).view(1, 1, w_mask, 1, w)
    flat = torch.arange(n, device=device).view(n, 1, 1, 1, 1) * (hw * hw) + rows + cols
    return torch.where(valid, flat, torch.full_like(flat, n * hw * hw)), valid


def _sparse_window(input_numel: int, output_numel: int) -> bool:
    """Small windows touch few output entries: zero-fill + scatter beats a gather over the whole output."""
    return input_numel < output_numel


def psamask_scatter(input: Tensor, psa_type: int, h_mask: int, w_mask: int, half_h: Optional[int] = None,
                    half_w: Optional[int] = None) -> Tensor:
    """Forward: ``input (N, h_mask*w_mask, H, W)`` -> over-complete ``(N, H*W, H, W)``."""
    half_h, half_w = _halves(h_mask, w_mask, half_h, half_w)
    n, _, h, w = input.shape
    if _sparse_window(input.numel(), n * (h * w) ** 2):
        target, _ = _flat_targets(n, h, w, h_mask, w_mask, half_h, half_w, psa_type, input.device)
        # one spare slot at the end takes the off-map taps; the view drops it and stays contiguous
        flat = input.new_zeros(n * (h * w) ** 2 + 1).index_put((target.reshape(-1),), input.reshape(-1))
        return flat[:-1].view(n, h * w, h, w)
    dev = input.device
    src = _pad_last_rows(input.reshape(n, h_mask, w_mask, h, w))
    tap_h, _ = _window_index(h_mask, h, half_h, dev)
    tap_w, _ = _window_index(w_mask, w, half_w, dev)
    hh = torch.arange(h, device=dev)
    ww = torch.arange(w, device=dev)
    nn_ = torch.arange(n, device=dev).view(n, 1, 1, 1, 1)
    if psa_type == 0:  # out[n, p, q, h, w]
        out = src[nn_, tap_h.view(1, h, 1, h, 1), tap_w.view(1, 1, w, 1, w), hh.view(1, 1, 1, h, 1),
                  ww.view(1, 1, 1, 1, w)]
    else:  # out[n, h, w, p, q]
        out = src[nn_, tap_h.t().contiguous().view(1, h, 1, h, 1), tap_w.t().contiguous().view(1, 1, w, 1, w),
                  hh.view(1, h, 1, 1, 1), ww.view(1, 1, w, 1, 1)]
    return out.reshape(n, h * w, h, w).contiguous()  # mmcv returns a dense tensor (callers .view it)


def psamask_gather(grad_output: Tensor, psa_type: int, h_mask: int, w_mask: int, half_h: Optional[int] = None,
                   half_w: Optional[int] = None) -> Tensor:
    """Backward: ``grad_output (N, H*W, H, W)`` -> ``grad_input (N, h_mask*w_mask, H, W)``."""
    half_h, half_w = _halves(h_mask, w_mask, half_h, half_w)
    n, _, h, w = grad_output.shape
    if _sparse_window(n * h_mask * w_mask * h * w, grad_output.numel()):
        target, valid = _flat_targets(n, h, w, h_mask, w_mask, half_h, half_w, psa_type, grad_output.device)
        picked = grad_output.reshape(-1)[target.clamp(max=max(grad_output.numel() - 1, 0))]
        return torch.where(valid, picked, picked.new_zeros(())).reshape(n, h_mask * w_mask, h, w)
    dev = grad_output.device
    g = grad_output.reshape(n, h, w, h, w)
    if psa_type != 0:  # distribute stores [n, h, w, p, q]: bring the targets to the front
        g = g.permute(0, 3, 4, 1, 2)
    g = _pad_last_rows(g)  # [n, p, q, h, w] with a zero target row/column for off-map taps
    _, tgt_h = _window_index(h_mask, h, half_h, dev)
    _, tgt_w = _window_index(w_mask, w, half_w, dev)
    hh = torch.arange(h, device=dev)
    ww = torch.arange(w, device=dev)
    nn_ = torch.arange(n, device=dev).view(n, 1, 1, 1, 1)
    grad = g[nn_, tgt_h.view(1, h_mask, 1, h, 1), tgt_w.view(1, 1, w_mask, 1, w), hh.view(1, 1, 1, h, 1),
             ww.view(1, 1, 1, 1, w)]
    return grad.reshape(n, h_mask * w_mask, h, w).contiguous()


class PSAMaskFunction(Function):
    """mmcv's autograd Function: ``apply(input, psa_type, mask_size)``."""

    @staticmethod
    def forward(ctx, input: Tensor, psa_type: Union[int, str], mask_size) -> Tensor:
        kind = psa_type_enum(psa_type)
        h_mask, w_mask = mask_hw(mask_size)
        check_input(input, h_mask, w_mask)
        ctx.psa_type = kind
        ctx.mask_size = (h_mask, w_mask)
        return psamask_scatter(input, kind, h_mask, w_mask)

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> Tuple[Optional[Tensor], None, None]:
        # built from differentiable ops, so double backward works too
        return psamask_gather(grad_output, ctx.psa_type, *ctx.mask_size), None, None


def psa_mask(input: Tensor, psa_type: Union[int, str], mask_size) -> Tensor:
    """``input (N, h_mask*w_mask, H, W)`` -> ``(N, H*W, H, W)``; ``psa_type`` 0/'collect', 1/'distribute'."""
    return PSAMaskFunction.apply(input, psa_type, mask_size)


class PSAMask(nn.Module):
    """PSANet's mask op as a module: ``PSAMask('collect' | 'distribute', mask_size)``."""

    def __init__(self, psa_type: str, mask_size: Optional[tuple] = None):
        super().__init__()
        if psa_type not in ("collect", "distribute"):
            raise ValueError(f"PSAMask: psa_type must be 'collect' or 'distribute', got {psa_type!r}")
        self.psa_type_enum = _TYPES[psa_type]
        self.mask_size = mask_size
        self.psa_type = psa_type

    def forward(self, input: Tensor) -> Tensor:
        return psa_mask(input, self.psa_type_enum, self.mask_size)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(psa_type={self.psa_type}, mask_size={self.mask_size})"


registry.register(registry.OpEntry(
    op="psa_mask",
    names=("PSAMask", "PSAMaskFunction", "psa_mask"),
    ext_functions=("psamask_backward", "psamask_forward"),
    backward="yes",
    devices=("any",),
))
