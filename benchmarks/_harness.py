"""The shared loop of the op benchmarks: the runtime against compiled mmcv (and optionally a naive
baseline), in one process, interleaved rounds, medians; optionally the peak memory of each call.

A case is a dict: ``name``, and callables (or None) ``runtime``, ``mmcv``, ``naive``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

try:
    import mmcv.ops as mmcv_ops  # the oracle, when importable
except Exception:  # noqa: BLE001 - any import failure means "no oracle"
    mmcv_ops = None

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kb(field: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def peak_extra_mb(fn: Callable) -> Optional[float]:
    """Resident memory a call adds at its peak, in MiB (Linux: resets VmHWM through clear_refs).

    Meaningful only when freed memory leaves the process, which :func:`run` arranges by starting
    itself again with glibc's ``MALLOC_MMAP_THRESHOLD_`` set: large blocks are then mapped per
    allocation and unmapped when freed, instead of staying in the heap for the next call to reuse.
    """
    if not _CLEAR_REFS.exists():
        return None
    gc.collect()
    _CLEAR_REFS.write_text("5")
    base = _status_kb("VmRSS")
    fn()
    return (_status_kb("VmHWM") - base) / 1024


def forward_backward(fn: Callable, leaves, *args, dense_grad: bool = False) -> Callable:
    """A call that runs ``fn(*leaves, *args)`` and its backward, for the ``fwd+bwd`` cases.

    ``leaves`` is one tensor or a sequence of them. They are cloned once as leaves that require
    grad, and their gradients are reset before every call. A tuple output backpropagates through its
    first element, a scalar directly, anything else through its sum. With ``dense_grad``, a
    materialised gradient of ones is used instead of the sum: ``out.sum().backward()`` hands the
    backward an expanded (stride 0) gradient, which some of mmcv's kernels read as if it were dense.
    """
    leaves = [leaves] if isinstance(leaves, torch.Tensor) else list(leaves)
    leaves = [t.detach().clone().requires_grad_() for t in leaves]

    def call():
        for leaf in leaves:
            leaf.grad = None
        out = fn(*leaves, *args)
        out = out[0] if isinstance(out, tuple) else out
        if out.dim() == 0:
            out.backward()
        elif dense_grad:
            out.backward(torch.ones_like(out))
        else:
            out.sum().backward()

    return call


def _timed(fn: Optional[Callable], store: List[float]) -> None:
    if fn is not None:
        start = time.perf_counter()
        fn()
        store.append(time.perf_counter() - start)


def run(cases: List[Dict], description: str, argv=None) -> int:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--memory", action="store_true",
                        help="report the peak memory of each call instead of timing it (timings under --memory are skewed)")
    parser.add_argument("--only", default=None, help="run the cases whose name contains this text")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.memory and "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"
        os.execv(sys.executable, [sys.executable, *sys.argv])
    if args.threads:
        torch.set_num_threads(args.threads)
    oracle = "mmcv " + __import__("mmcv").__version__ if mmcv_ops else "not importable"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}, oracle: {oracle}")
    results = []
    for case in cases:
        if args.only and args.only not in case["name"]:
            continue
        row: Dict = dict(name=case["name"])
        if args.memory:  # the mapped allocations it needs slow calls down: no timing then
            for key in ("runtime", "mmcv"):
                if case.get(key) is not None:
                    case[key]()  # warm-up: lazy imports and caches are not the op's memory
                    row[f"{key}_peak_mb"] = peak_extra_mb(case[key])
        else:
            times: Dict[str, List[float]] = {"runtime": [], "mmcv": [], "naive": []}
            for key in times:  # warm-up
                _timed(case.get(key), [])
            for _ in range(args.repeat):  # interleaved rounds
                for key in times:
                    _timed(case.get(key), times[key])
            row.update({f"{k}_s": statistics.median(v) for k, v in times.items() if v})
            if "mmcv_s" in row:
                row["ratio"] = row["runtime_s"] / row["mmcv_s"]
        results.append(row)
        _print_row(row, args.memory, header=len(results) == 1)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


def _print_row(row: Dict, memory: bool, header: bool) -> None:
    def cell(key: str, scale: float = 1e3, width: int = 9, digits: int = 2) -> str:
        return f"{row[key] * scale:{width}.{digits}f}" if row.get(key) is not None else f"{'-':>{width}s}"

    if header:
        print(f"{'case':48s} {'runtime ms':>10s} {'mmcv ms':>9s} {'ratio':>6s} {'naive ms':>9s}"
              + (f" {'runtime MiB':>11s} {'mmcv MiB':>9s}" if memory else ""))
    line = (f"{row['name']:48s} {cell('runtime_s', width=10)} {cell('mmcv_s')} {cell('ratio', 1, 6)} "
            f"{cell('naive_s')}")
    if memory:
        line += f" {cell('runtime_peak_mb', 1, 11, 1)} {cell('mmcv_peak_mb', 1, 9, 1)}"
    print(line, flush=True)
