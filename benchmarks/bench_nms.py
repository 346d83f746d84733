"""NMS / box-IoU family: mmcv_runtime against compiled mmcv CPU, in the same process, interleaved.

    python benchmarks/bench_nms.py [--repeat 7] [--threads N] [--memory] [--only TEXT] [--json OUT]

With the reference oracle importable (see ../shared/tools/build-mmcv-reference.sh; install this
package into its venv with ``pip install -e . --no-deps`` and run with ``PYTHONPATH=<mmcv src>``) it
prints runtime/mmcv time ratios; without it, absolute times and a naive baseline (IoU matrix plus a
Python loop over boxes) instead. Goal (issue 3): every ratio at or below 1.0 on 2 cores.
"""

from __future__ import annotations

from typing import Dict, List

import torch
from _harness import mmcv_ops as mm
from _harness import run

import mmcv_runtime.ops as rt


def boxes_and_scores(n: int, seed: int, scale: float = 800.0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * scale
    wh = 8 + torch.rand(n, 2, generator=g) * 80
    return torch.cat([xy, xy + wh], 1), torch.rand(n, generator=g)


def naive_nms(boxes, scores, thr):
    from mmcv_runtime.ops.bbox import pairwise_iou

    order = scores.sort(descending=True)[1]
    iou = pairwise_iou(boxes[order], boxes[order])
    keep = torch.ones(len(order), dtype=torch.bool)
    for i in range(len(order)):
        if keep[i]:
            keep[i + 1:] &= ~(iou[i, i + 1:] > thr)
    return order[keep]


def cases() -> List[Dict]:
    out = []
    for n in (1000, 5000):
        b, s = boxes_and_scores(n, n)
        out.append(dict(name=f"nms {n} boxes", runtime=lambda b=b, s=s: rt.nms(b, s, 0.5),
                        mmcv=(lambda b=b, s=s: mm.nms(b, s, 0.5)) if mm else None,
                        naive=lambda b=b, s=s: naive_nms(b, s, 0.5)))
    b, s = boxes_and_scores(10000, 7, scale=1200)
    idxs = torch.randint(0, 80, (10000,), generator=torch.Generator().manual_seed(3))
    cfg = dict(type="nms", iou_threshold=0.5)
    out.append(dict(name="batched_nms 10k boxes / 80 classes",
                    runtime=lambda: rt.batched_nms(b, s, idxs, cfg),
                    mmcv=(lambda: mm.batched_nms(b, s, idxs, cfg)) if mm else None, naive=None))
    b1, s1 = boxes_and_scores(1000, 11)
    out.append(dict(name="soft_nms 1000 boxes (linear)", runtime=lambda: rt.soft_nms(b1, s1, 0.3),
                    mmcv=(lambda: mm.soft_nms(b1, s1, 0.3)) if mm else None, naive=None))
    b2, _ = boxes_and_scores(2000, 13)
    b3, _ = boxes_and_scores(2000, 17)
    out.append(dict(name="bbox_overlaps 2000x2000", runtime=lambda: rt.bbox_overlaps(b2, b3),
                    mmcv=(lambda: mm.bbox_overlaps(b2, b3)) if mm else None, naive=None))
    r1, r2 = rotated_boxes(2000, 19), rotated_boxes(2000, 23)
    rs = torch.rand(2000, generator=torch.Generator().manual_seed(29))
    out.append(dict(name="nms_rotated 2k boxes", runtime=lambda: rt.nms_rotated(r1, rs, 0.5),
                    mmcv=(lambda: mm.nms_rotated(r1, rs, 0.5)) if mm else None, naive=None))
    out.append(dict(name="box_iou_rotated 1000x1000", runtime=lambda: rt.box_iou_rotated(r1[:1000], r2[:1000]),
                    mmcv=(lambda: mm.box_iou_rotated(r1[:1000], r2[:1000])) if mm else None, naive=None))
    jitter = torch.Generator().manual_seed(31)
    q1 = torch.cat([r1[:1000, :2] + torch.randn(1000, 2, generator=jitter) * 10 for _ in range(4)], 1)
    q2 = torch.cat([r2[:1000, :2] + torch.randn(1000, 2, generator=jitter) * 10 for _ in range(4)], 1)
    out.append(dict(name="box_iou_quadri 1000x1000", runtime=lambda: rt.box_iou_quadri(q1, q2),
                    mmcv=(lambda: mm.box_iou_quadri(q1, q2)) if mm else None, naive=None))
    out.append(dict(name="nms_quadri 1000 quadrilaterals", runtime=lambda: rt.nms_quadri(q1, rs[:1000], 0.5),
                    mmcv=(lambda: mm.nms_quadri(q1, rs[:1000], 0.5)) if mm else None, naive=None))
    return out


def rotated_boxes(n: int, seed: int, scale: float = 800.0):
    g = torch.Generator().manual_seed(seed)
    return torch.cat([torch.rand(n, 2, generator=g) * scale, 8 + torch.rand(n, 2, generator=g) * 80,
                      (torch.rand(n, 1, generator=g) - 0.5) * 3.1416], 1)


def main(argv=None) -> int:
    return run(cases(), __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())
