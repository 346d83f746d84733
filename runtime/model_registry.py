"""The registry names mmcv gives its op modules (``DCN``, ``DCNv2``, ``MultiScaleDeformableAttention``).

Configs build these modules by name: mmdet's ``dcn=dict(type='DCN')`` goes through
``build_conv_layer``, a transformer's ``dict(type='MultiScaleDeformableAttention')`` through
``build_attention`` / ``MODELS.build``. mmcv registers them when ``mmcv.ops`` is imported, which is
exactly what fails without ``mmcv._ext``; so the runtime registers its own classes under the same
names, into the registry the installed OpenMMLab generation looks in:

- mmcv 1.x (the ops-less ``mmcv`` build): mmcv's own registries, e.g. ``mmcv.cnn.CONV_LAYERS``;
- mmcv 2.x / mmcv-lite (or no mmcv at all): mmengine's root ``MODELS``.

It never clashes with mmcv: nothing is registered when mmcv's ``mmcv.ops`` can import and would
register the same names itself (and fail with a KeyError on ours): when mmcv has a compiled ``_ext``,
when its op wrappers were migrated to the runtime's ``_ext`` ABI (``mmcv-migrate apply`` on an mmcv
tree), or while the zero-touch shim (``mmcv_runtime.shim``) resolves ``mmcv._ext`` to the runtime. Nor
under a name that is already taken; and nothing is imported when neither mmcv nor mmengine
is installed (the runtime imports with torch alone).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
from typing import Callable, Optional, TypeVar

__all__ = ["register_model"]

T = TypeVar("T", bound=type)


def _package_dir(name: str) -> Optional[str]:
    """The directory of an installed top-level package, found without importing it."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return next(iter(spec.submodule_search_locations))


def _mmcv_major_version(mmcv_dir: str) -> Optional[int]:
    """mmcv's major version, read from ``mmcv/version.py`` (importing mmcv pulls in cv2 and more)."""
    try:
        with open(os.path.join(mmcv_dir, "version.py"), encoding="utf-8") as f:
            match = re.search(r"""__version__\s*=\s*['"](\d+)\.""", f.read())
    except OSError:
        return None
    return int(match.group(1)) if match else None


def _has_compiled_ext(mmcv_dir: str) -> bool:
    return any(entry.startswith("_ext.") or entry == "_ext.py" for entry in os.listdir(mmcv_dir))


def _wrapper_reaches_runtime(mmcv_dir: str, cls: type) -> bool:
    """Whether mmcv's own module for ``cls`` (``mmcv/ops/<same name>.py``) was migrated to the runtime's
    ``_ext`` ABI (``mmcv-migrate apply`` on an mmcv tree): that mmcv.ops imports, and registers the name."""
    try:
        with open(os.path.join(mmcv_dir, "ops", cls.__module__.rpartition(".")[2] + ".py"), encoding="utf-8") as f:
            return "mmcv_runtime" in f.read()
    except (OSError, UnicodeDecodeError):
        return False


def _target_registry(cls: type, mmcv1_registry: str):
    """The registry to register into, or None (see the module docstring)."""
    from mmcv_runtime.shim import is_installed as shim_installed

    mmcv_dir = _package_dir("mmcv")
    if mmcv_dir is not None:
        if shim_installed() or _has_compiled_ext(mmcv_dir) or _wrapper_reaches_runtime(mmcv_dir, cls):
            return None
        if _mmcv_major_version(mmcv_dir) == 1:
            try:
                return getattr(importlib.import_module("mmcv.cnn.bricks.registry"), mmcv1_registry)
            except (ImportError, AttributeError):
                return None
    if _package_dir("mmengine") is None:
        return None
    try:
        return importlib.import_module("mmengine.registry").MODELS
    except (ImportError, AttributeError):
        return None


#: (registry, name, class) for each name registered here, so that installing the zero-touch shim later
#: can hand the names back to mmcv.ops (see withdraw_registrations).
_REGISTERED: list = []


def withdraw_registrations() -> None:
    """Unregister every name registered here (``mmcv_runtime.install_shim()`` after the runtime's ops
    were imported: ``mmcv.ops`` is about to register the same names and would fail on ours).

    mmengine's and mmcv 1.x's ``Registry`` have no unregister; both keep names in ``_module_dict``.
    """
    while _REGISTERED:
        registry, key, cls = _REGISTERED.pop()
        modules = getattr(registry, "_module_dict", None)
        if isinstance(modules, dict) and modules.get(key) is cls:
            del modules[key]


def register_model(name: Optional[str] = None, *, mmcv1_registry: str) -> Callable[[T], T]:
    """Class decorator: register the class as mmcv does, under ``name`` (default: its ``__name__``).

    ``mmcv1_registry`` names the registry mmcv 1.x uses for it in ``mmcv.cnn.bricks.registry``
    (``"CONV_LAYERS"`` for DCN, ``"ATTENTION"`` for MultiScaleDeformableAttention). The class is
    returned unchanged whether or not a registry took it.
    """

    def decorate(cls: T) -> T:
        registry = _target_registry(cls, mmcv1_registry)
        key = name or cls.__name__
        if registry is not None and registry.get(key) is None:
            registry.register_module(name=key, module=cls)
            _REGISTERED.append((registry, key, cls))
        return cls

    return decorate
