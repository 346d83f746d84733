"""``_ext`` adapters of mmcv.ops.focal_loss: sigmoid/softmax focal loss forward and backward.

mmcv's pybind signatures. An empty ``weight`` (mmcv passes ``input.new_empty(0)``) means no weight.
The kernels ASSIGN every element they own (they do not accumulate), so the adapters overwrite:

- ``sigmoid_focal_loss_forward``: ``output`` (N, C) per-element loss;
- ``sigmoid_focal_loss_backward``: ``grad_input`` (N, C), d(loss)/d(input) before ``grad_output``;
- ``softmax_focal_loss_forward``: ``input`` holds the softmax probabilities; ``output`` (N,) per-row loss;
- ``softmax_focal_loss_backward``: ``buff`` (N,) the per-row factor, ``grad_input`` (N, C).

The forward launchers assert ``target.max() <= num_classes``; so do these (a ``ValueError``).
"""

from __future__ import annotations

from torch import Tensor

from mmcv_runtime.ops.focal_loss import _check_labels, sigmoid_focal_loss_core, softmax_focal_loss_core

__all__ = ["sigmoid_focal_loss_backward", "sigmoid_focal_loss_forward", "softmax_focal_loss_backward",
           "softmax_focal_loss_forward"]


def sigmoid_focal_loss_forward(input: Tensor, target: Tensor, weight: Tensor, output: Tensor, gamma: float,
                               alpha: float) -> None:
    _check_labels("sigmoid_focal_loss_forward", target, input.size(1))
    loss, _ = sigmoid_focal_loss_core(input, target, weight, float(gamma), float(alpha))
    output.copy_(loss)


def sigmoid_focal_loss_backward(input: Tensor, target: Tensor, weight: Tensor, grad_input: Tensor, gamma: float,
                                alpha: float) -> None:
    _, grad = sigmoid_focal_loss_core(input, target, weight, float(gamma), float(alpha), want_loss=False,
                                      want_grad=True)
    grad_input.copy_(grad)


def softmax_focal_loss_forward(input: Tensor, target: Tensor, weight: Tensor, output: Tensor, gamma: float,
                               alpha: float) -> None:
    _check_labels("softmax_focal_loss_forward", target, input.size(1))
    loss, _, _ = softmax_focal_loss_core(input, target, weight, float(gamma), float(alpha))
    output.copy_(loss)


def softmax_focal_loss_backward(input: Tensor, target: Tensor, weight: Tensor, buff: Tensor, grad_input: Tensor,
                                gamma: float, alpha: float) -> None:
    _, factor, grad = softmax_focal_loss_core(input, target, weight, float(gamma), float(alpha), want_loss=False,
                                              want_grad=True)
    buff.copy_(factor)
    grad_input.copy_(grad)
