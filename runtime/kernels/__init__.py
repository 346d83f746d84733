"""mmcv_runtime.kernels: optional accelerated implementations of the runtime's ops.

Triton kernels and CUDA C++ extensions built on demand live here, one module per op (e.g.
``kernels/ms_deform_attn_triton.py``). They are never required: every op's pure-PyTorch functional
core in ``mmcv_runtime.ops`` is always present and always tested, and a kernel is used only when it is
available for the input's device and faster. An op lists its kernels in its registry entry
(``OpEntry.kernels``, e.g. ``("triton",)``).

Selection is automatic and can be overridden with the environment variable ``MMCV_RUNTIME_BACKEND``:

- ``auto`` (default): use an available kernel for the device, else the pure-PyTorch core;
- ``torch``: always the pure-PyTorch core.

Importing this package imports nothing heavy (no torch, no triton).
"""

import os

__all__ = ["BACKENDS", "ENV_VAR", "backend"]

ENV_VAR = "MMCV_RUNTIME_BACKEND"
BACKENDS = ("auto", "torch")
_DEFAULT = "auto"


def backend() -> str:
    """The backend selected by ``MMCV_RUNTIME_BACKEND``: ``"auto"`` (default, also when empty) or ``"torch"``.

    Read on every call, so tests and users may change the variable at run time. Surrounding
    whitespace and case are ignored; any other value raises ``ValueError`` naming the variable.
    """
    raw = os.environ.get(ENV_VAR, "")
    value = raw.strip().lower() or _DEFAULT
    if value not in BACKENDS:
        raise ValueError(f"{ENV_VAR}={raw!r} is not supported; use one of: {', '.join(BACKENDS)}")
    return value
