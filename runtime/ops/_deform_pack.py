"""Pieces the two deformable-convolution op modules share above the numeric core: mmcv's
``_output_size`` helper of both Functions, the offset-predicting conv of the Pack layers, and the
checkpoint-key upgrade of their versioned ``_load_from_state_dict``."""

from __future__ import annotations

import logging
from typing import Tuple

import torch.nn as nn
from torch import Tensor
from torch.nn.modules.utils import _pair

from ._deform_columns import DeformConvError, output_extent

_logger = logging.getLogger(__name__)


def conv_output_size(ctx, input: Tensor, weight: Tensor) -> Tuple[int, ...]:
    """mmcv's ``_output_size``: (N, C_out, H_out, W_out), raising when any of them is not positive."""
    output_size = (input.size(0), weight.size(0))
    for d in range(input.dim() - 2):
        output_size += (output_extent(input.size(d + 2), ctx.padding[d], ctx.dilation[d], weight.size(d + 2),
                                      ctx.stride[d]),)
    if not all(s > 0 for s in output_size):
        raise DeformConvError("convolution input is too small (output would be "
                              + "x".join(map(str, output_size)) + ")")
    return output_size


def offset_conv(module: nn.Module, per_tap: int) -> nn.Conv2d:
    """The ``conv_offset`` of a Pack layer: the layer's kernel/stride/padding/dilation and
    ``deform_groups * per_tap * kh * kw`` outputs (2 per tap: offsets; 3: offsets then mask)."""
    kh, kw = module.kernel_size
    return nn.Conv2d(module.in_channels, module.deform_groups * per_tap * kh * kw, kernel_size=module.kernel_size,
                     stride=_pair(module.stride), padding=_pair(module.padding), dilation=_pair(module.dilation),
                     bias=True)


def upgrade_offset_keys(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    """mmcv's version-1 checkpoints stored the offset conv as a sibling ``<name>_offset``: move those
    keys to ``<name>.conv_offset`` (in place), as mmcv's ``_load_from_state_dict`` does."""
    version = local_metadata.get("version", None)
    if version is None or version < 2:
        for suffix in ("weight", "bias"):
            new, old = f"{prefix}conv_offset.{suffix}", f"{prefix[:-1]}_offset.{suffix}"
            if new not in state_dict and old in state_dict:
                state_dict[new] = state_dict.pop(old)
    if version is not None and version > 1:
        _logger.info("%s %s is upgraded to version 2.", type(module).__name__, prefix.rstrip("."))
