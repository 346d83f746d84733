"""mmcv_runtime: mmcv's ops in pure PyTorch, a drop-in for ``mmcv.ops`` and ``mmcv._ext``.

Submodules (imported on first attribute access, so ``import mmcv_runtime`` stays cheap):

- ``mmcv_runtime.ops``: laid out like ``mmcv.ops`` (same public names, signatures and state_dict keys);
- ``mmcv_runtime.ext``: the ``mmcv._ext`` ABI (every compiled function, as adapters over the ops);
- ``mmcv_runtime.ext_loader``: drop-in for ``mmcv.utils.ext_loader`` (``load_ext('_ext', [...])``);
- ``mmcv_runtime.registry``: what the runtime implements (``python -m mmcv_runtime.registry``);
- ``mmcv_runtime.kernels``: optional compiled kernels, selected by ``MMCV_RUNTIME_BACKEND``;
- ``mmcv_runtime.install_shim()``: zero-touch mode, ``import mmcv._ext`` resolves to ``mmcv_runtime.ext``
  when mmcv has no compiled ``_ext`` (``mmcv_runtime.shim``).

The runtime imports with torch alone: never libcst, click, rich, mmcv or mmengine at import time.
Submodules are loaded lazily (PEP 562) rather than imported here; importing ``registry`` here would also
make ``python -m mmcv_runtime.registry`` warn that the module was already in ``sys.modules``.
"""

from __future__ import annotations

import importlib

__all__ = ["__version__", "ext", "ext_loader", "install_shim", "kernels", "ops", "registry", "shim"]


def _version() -> str:
    """The distribution's version (runtime and tool ship together as ``mmcv-migrate``)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mmcv-migrate")
    except PackageNotFoundError:  # a source tree on sys.path that is not installed
        pass
    try:  # the tool's package is import-light: no libcst, click or rich
        from mmcv_migrate import __version__ as tool_version
    except ImportError:
        return "0+unknown"
    return tool_version


_SUBMODULES = frozenset({"ext", "ext_loader", "kernels", "ops", "registry", "shim"})


def __getattr__(name: str):
    # __version__ is computed on first use: importlib.metadata costs ~20 ms, and the zero-touch .pth
    # hook imports this package at every interpreter start.
    if name == "__version__":
        globals()[name] = _version()
        return globals()[name]
    if name == "install_shim":
        from .shim import install_shim

        return install_shim
    if name in _SUBMODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _SUBMODULES | {"__version__", "install_shim"})
