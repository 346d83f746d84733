"""Zero-touch mode: make ``import mmcv._ext`` resolve to :mod:`mmcv_runtime.ext`.

For code that cannot be rewritten: with an mmcv that has no compiled extension (``mmcv-lite`` 2.x, or
the ops-less ``mmcv`` 1.x build), :func:`install_shim` puts a finder on ``sys.meta_path`` that answers
exactly one name, ``mmcv._ext``, with the runtime's ``_ext`` ABI. mmcv's own
``ext_loader.load_ext('_ext', [...])`` then succeeds, so ``mmcv.ops`` and everything importing it work
unchanged, and mmengine's ``mmcv_full_available()`` (a ``find_spec('mmcv._ext')``) is true.

Rules:

- **A real ``mmcv._ext`` always wins.** The finder is appended to ``sys.meta_path`` (the normal path
  finder looks first) and it also declines whenever mmcv's package directory holds an ``_ext`` that
  Python would load (``_ext.cpython-*.so``, ``_ext.pyd``, ...). A compiled ``_ext`` that fails to load
  (undefined symbols after a torch upgrade) is not shadowed either: that is a broken build the user
  should see, and silently swapping kernels under them would hide it. ``shim_status()`` says which
  ``_ext`` is in use.
- **Cheap and lazy.** This module imports only the standard library; the ``.pth`` hook written by
  ``mmcv-migrate shim install`` runs at every interpreter start, so torch and the runtime's ops are
  imported only when ``mmcv._ext`` itself is imported.
- ``mmcv._ext`` *is* ``mmcv_runtime.ext`` (same module object), so ``mmcv._ext.nms`` is the runtime's
  adapter. While the shim is installed, ``mmcv_runtime.model_registry`` leaves the registry names
  (``DCN``, ``DCNv2``, ``MultiScaleDeformableAttention``) to ``mmcv.ops``, which registers them itself.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import sys

# Only the cheapest standard-library modules: this runs at every interpreter start (the .pth hook), so no
# typing/dataclasses (inspect alone costs ~7 ms); annotations are strings (``from __future__``).

__all__ = ["ShimStatus", "install_shim", "is_installed", "shim_status", "uninstall_shim"]

EXT_NAME = "mmcv._ext"
RUNTIME_EXT = "mmcv_runtime.ext"
#: ``MMCV_RUNTIME_SHIM=0`` disables the ``.pth`` hook for one process without uninstalling it.
DISABLE_ENV = "MMCV_RUNTIME_SHIM"

#: Values of ``ShimStatus.ext_in_use``.
COMPILED, RUNTIME, NONE, NO_MMCV = "compiled", "mmcv_runtime", "none", "no-mmcv"


def _mmcv_path() -> list[str] | None:
    """mmcv's package directories, found without importing mmcv (its ``__init__`` pulls in cv2)."""
    module = sys.modules.get("mmcv")
    if module is not None and getattr(module, "__path__", None) is not None:
        return list(module.__path__)
    try:
        spec = importlib.util.find_spec("mmcv")
    except (ImportError, ValueError):
        return None
    if spec is None or spec.submodule_search_locations is None:
        return None
    return list(spec.submodule_search_locations)


def compiled_ext_origin(mmcv_path: list[str]) -> str | None:
    """The file a real ``mmcv._ext`` would load from (a compiled extension, or a vendored .py), or None.

    Asks the normal path finder, which only looks at files: exactly the files ``import mmcv._ext`` would
    try, for this interpreter's extension suffixes. A namespace directory named ``_ext`` does not count.
    """
    spec = importlib.machinery.PathFinder.find_spec(EXT_NAME, list(mmcv_path))
    if spec is None or spec.loader is None:
        return None
    return spec.origin or "?"


class _RuntimeExtLoader:
    """Loads ``mmcv._ext`` as the already importable module :mod:`mmcv_runtime.ext` (same object)."""

    def create_module(self, spec):
        module = importlib.import_module(RUNTIME_EXT)
        # The import system overwrites __spec__ on the module we return; keep the runtime's own.
        self._runtime_spec = module.__spec__
        return module

    def exec_module(self, module) -> None:
        module.__spec__ = self._runtime_spec


class ExtShimFinder:
    """A ``sys.meta_path`` finder for exactly ``mmcv._ext``, declining when a real one exists."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != EXT_NAME:
            return None
        mmcv_path = path if path is not None else _mmcv_path()
        if mmcv_path is None or compiled_ext_origin(mmcv_path) is not None:
            return None
        return importlib.machinery.ModuleSpec(EXT_NAME, _RuntimeExtLoader(), origin=RUNTIME_EXT)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {EXT_NAME} -> {RUNTIME_EXT}>"


def _installed_finders() -> list:
    # Compare by name, not identity: a reloaded module has a new class, and the finder must stay unique.
    return [f for f in sys.meta_path if type(f).__name__ == ExtShimFinder.__name__]


def is_installed() -> bool:
    """Whether the shim's finder is on ``sys.meta_path`` in this interpreter."""
    return bool(_installed_finders())


def install_shim() -> bool:
    """Make ``import mmcv._ext`` resolve to ``mmcv_runtime.ext`` when mmcv has no compiled ``_ext``.

    Idempotent; returns whether the finder was added now. Call it before ``mmcv.ops`` is imported. Registry names
    the runtime's ops already registered (``DCN``, ...) are withdrawn, so that ``mmcv.ops`` can
    register its own. Imports nothing heavy.
    """
    if is_installed():
        return False
    sys.meta_path.append(ExtShimFinder())
    # The runtime's ops may already have registered DCN etc.; mmcv.ops registers them itself now.
    registrations = sys.modules.get("mmcv_runtime.model_registry")
    if registrations is not None and _mmcv_path() is not None:
        registrations.withdraw_registrations()
    return True


def uninstall_shim() -> bool:
    """Remove the finder; an ``mmcv._ext`` the shim resolved is dropped from ``sys.modules`` too.

    Modules that already hold a reference (``mmcv.ops.*``'s ``ext_module``) keep it: reversing the
    switch fully needs a new interpreter. Returns whether anything was removed.
    """
    finders = _installed_finders()
    for finder in finders:
        sys.meta_path.remove(finder)
    ext = sys.modules.get(EXT_NAME)
    if ext is not None and getattr(ext, "__name__", None) == RUNTIME_EXT:
        del sys.modules[EXT_NAME]
        mmcv = sys.modules.get("mmcv")
        if mmcv is not None and getattr(mmcv, "_ext", None) is ext:
            delattr(mmcv, "_ext")
    return bool(finders)


def install_from_hook() -> None:
    """Entry point of the ``.pth`` hook: install the shim unless ``MMCV_RUNTIME_SHIM=0``."""
    if os.environ.get(DISABLE_ENV, "").strip().lower() not in ("0", "false", "no", "off"):
        install_shim()


class ShimStatus:
    """Which ``mmcv._ext`` an ``import mmcv._ext`` in this interpreter gets.

    ``ext_in_use`` is one of COMPILED, RUNTIME, NONE, NO_MMCV; ``compiled_origin`` is the compiled
    file when COMPILED.
    """

    def __init__(self, ext_in_use: str, shim_installed: bool, mmcv_path: list[str] | None = None,
                 compiled_origin: str | None = None) -> None:
        self.ext_in_use = ext_in_use
        self.shim_installed = shim_installed
        self.mmcv_path = list(mmcv_path or [])
        self.compiled_origin = compiled_origin

    def __repr__(self) -> str:
        return (f"ShimStatus(ext_in_use={self.ext_in_use!r}, shim_installed={self.shim_installed!r}, "
                f"mmcv_path={self.mmcv_path!r}, compiled_origin={self.compiled_origin!r})")

    def describe(self) -> str:
        if self.ext_in_use == COMPILED:
            note = " (the shim never shadows it)" if self.shim_installed else ""
            return f"compiled mmcv._ext: {self.compiled_origin}{note}"
        if self.ext_in_use == RUNTIME:
            return f"mmcv_runtime shim: mmcv._ext is {RUNTIME_EXT} (mmcv has no compiled _ext)"
        if self.ext_in_use == NO_MMCV:
            return "none: mmcv is not installed"
        return "none: mmcv has no compiled _ext and the shim is not installed (No module named 'mmcv._ext')"


def shim_status() -> ShimStatus:
    """Which ``_ext`` is in use, decided from files and ``sys.meta_path`` without importing mmcv or torch."""
    installed = is_installed()
    mmcv_path = _mmcv_path()
    if mmcv_path is None:
        return ShimStatus(NO_MMCV, installed)
    loaded = sys.modules.get(EXT_NAME)
    if loaded is not None:  # already imported: report what it is, not what a new import would do
        if getattr(loaded, "__name__", None) == RUNTIME_EXT:
            return ShimStatus(RUNTIME, installed, mmcv_path)
        return ShimStatus(COMPILED, installed, mmcv_path, getattr(loaded, "__file__", None) or "?")
    origin = compiled_ext_origin(mmcv_path)
    if origin is not None:
        return ShimStatus(COMPILED, installed, mmcv_path, origin)
    return ShimStatus(RUNTIME if installed else NONE, installed, mmcv_path)
