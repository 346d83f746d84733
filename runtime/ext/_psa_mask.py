"""``_ext`` adapters of mmcv.ops.psa_mask: ``psamask_forward`` / ``psamask_backward`` (mmcv's pybind signatures).

Like the kernels they ASSIGN (not accumulate) the entries the window reaches and leave every other
entry of ``output`` / ``grad_input`` untouched (mmcv's wrapper passes zero-filled tensors).
"""

from __future__ import annotations

import torch
from torch import Tensor

from mmcv_runtime.ops.psa_mask import _window_index, psamask_gather, psamask_scatter, window_valid

__all__ = ["psamask_forward", "psamask_backward"]


def psamask_forward(input: Tensor, output: Tensor, psa_type: int, num_: int, h_feature: int, w_feature: int,
                    h_mask: int, w_mask: int, half_h_mask: int, half_w_mask: int) -> None:
    """Writes the window taps of ``input (N, h_mask*w_mask, H, W)`` into ``output (N, H*W, H, W)``."""
    n, h, w, hm, wm = int(num_), int(h_feature), int(w_feature), int(h_mask), int(w_mask)
    kind = 0 if int(psa_type) == 0 else 1
    src = input.reshape(n, hm * wm, h, w)
    with torch.no_grad():
        full = psamask_scatter(src, kind, hm, wm, int(half_h_mask), int(half_w_mask)).view(n, h, w, h, w)
        hit_h = _window_index(hm, h, int(half_h_mask), output.device)[0] < hm  # [p, h]
        hit_w = _window_index(wm, w, int(half_w_mask), output.device)[0] < wm  # [q, w]
        if kind == 0:  # [n, p, q, h, w]
            hit = hit_h.view(h, 1, h, 1) & hit_w.view(1, w, 1, w)
        else:  # [n, h, w, p, q]
            hit = hit_h.t().reshape(h, 1, h, 1) & hit_w.t().reshape(1, w, 1, w)
        out = output.view(n, h, w, h, w)
        out.copy_(torch.where(hit, full.to(output.dtype), out))


def psamask_backward(grad_output: Tensor, grad_input: Tensor, psa_type: int, num_: int, h_feature: int,
                     w_feature: int, h_mask: int, w_mask: int, half_h_mask: int, half_w_mask: int) -> None:
    """Writes ``grad_output (N, H*W, H, W)`` at each on-map tap into ``grad_input (N, h_mask*w_mask, H, W)``."""
    n, h, w, hm, wm = int(num_), int(h_feature), int(w_feature), int(h_mask), int(w_mask)
    kind = 0 if int(psa_type) == 0 else 1
    with torch.no_grad():
        g = psamask_gather(grad_output.reshape(n, h * w, h, w), kind, hm, wm, int(half_h_mask), int(half_w_mask))
        rows, cols = window_valid(hm, wm, h, w, int(half_h_mask), int(half_w_mask), grad_input.device)
        hit = rows.view(hm, 1, h, 1) & cols.view(1, wm, 1, w)  # [i, j, h, w]
        gi = grad_input.view(n, hm, wm, h, w)
        gi.copy_(torch.where(hit, g.view(n, hm, wm, h, w).to(grad_input.dtype), gi))
