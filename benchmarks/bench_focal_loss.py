"""Focal losses: mmcv_runtime against a naive autograd formula (mmcv has no CPU kernel), absolute times.

    python benchmarks/bench_focal_loss.py [--repeat 7] [--threads N] [--memory] [--only TEXT] [--json OUT]
    BENCH_DEVICE=cuda python benchmarks/bench_focal_loss.py   # on a GPU (mmcv's CUDA op too, if importable)

Sizes: RetinaNet-like sigmoid focal loss, 100k anchors x 80 classes (a quarter background), and
softmax focal loss, 20k rows x 81 classes; forward and forward+backward, ``'mean'`` reduction.
The ``naive`` baseline is the loss written in plain torch ops with autograd through it (what a user
without the compiled op would write): its gradient is autograd's, not the kernels' clamped formula.
"""

from __future__ import annotations

import os
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F
from _harness import mmcv_ops as mm
from _harness import forward_backward, run

import mmcv_runtime.ops.focal_loss as rt

DEVICE = torch.device(os.environ.get("BENCH_DEVICE", "cpu"))
GAMMA, ALPHA = 2.0, 0.25


def naive_sigmoid_focal_loss(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    num_classes = x.size(1)
    onehot = F.one_hot(target, num_classes + 1)[:, :num_classes].to(x.dtype)  # label C: background
    p = x.sigmoid()
    pt = (1 - p) * onehot + p * (1 - onehot)
    focal = (ALPHA * onehot + (1 - ALPHA) * (1 - onehot)) * pt.pow(GAMMA)
    loss = F.binary_cross_entropy_with_logits(x, onehot, reduction="none") * focal
    return loss.sum() / x.size(0)


def naive_softmax_focal_loss(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    log_p = F.log_softmax(x, dim=1).gather(1, target[:, None]).squeeze(1)
    loss = -ALPHA * (1 - log_p.exp()).pow(GAMMA) * log_p
    return loss.sum() / x.size(0)


def synced(fn: Callable) -> Callable:
    if DEVICE.type != "cuda":
        return fn

    def call():
        fn()
        torch.cuda.synchronize()

    return call



def cases() -> List[Dict]:
    g = torch.Generator().manual_seed(0)
    x_sig = torch.randn(100_000, 80, generator=g).to(DEVICE) * 2 - 3  # mostly confident negatives
    t_sig = torch.randint(0, 80, (100_000,), generator=g)
    t_sig[torch.rand(100_000, generator=g) < 0.25] = 80  # background anchors
    t_sig = t_sig.to(DEVICE)
    x_soft = torch.randn(20_000, 81, generator=g).to(DEVICE)
    t_soft = torch.randint(0, 81, (20_000,), generator=g).to(DEVICE)
    mmcv_on_device = mm is not None and DEVICE.type == "cuda"  # mmcv's focal losses are CUDA-only
    out = []

    def add(name, runtime_fn, mmcv_fn, naive_fn, x, t):
        out.append(dict(name=f"{name} fwd", runtime=synced(lambda: runtime_fn(x, t)),
                        mmcv=synced(lambda: mmcv_fn(x, t)) if mmcv_fn else None,
                        naive=synced(lambda: naive_fn(x, t))))
        out.append(dict(name=f"{name} fwd+bwd", runtime=synced(forward_backward(runtime_fn, x, t)),
                        mmcv=synced(forward_backward(mmcv_fn, x, t)) if mmcv_fn else None,
                        naive=synced(forward_backward(naive_fn, x, t))))

    def bind(fn):
        return lambda x, t: fn(x, t, GAMMA, ALPHA, None, "mean")

    add("sigmoid_focal_loss 100k x 80", bind(rt.sigmoid_focal_loss),
        bind(mm.sigmoid_focal_loss) if mmcv_on_device else None, naive_sigmoid_focal_loss, x_sig, t_sig)
    add("softmax_focal_loss 20k x 81", bind(rt.softmax_focal_loss),
        bind(mm.softmax_focal_loss) if mmcv_on_device else None, naive_softmax_focal_loss, x_soft, t_soft)
    return out


def main(argv=None) -> int:
    return run(cases(), __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())
