"""Drop-in for ``mmcv.utils.ext_loader`` (same contract in mmcv-full 1.7.2 and mmcv 2.2.0).

``from mmcv_runtime import ext_loader`` replaces ``from mmcv.utils import ext_loader`` (or the relative
``from ..utils import ext_loader`` inside an mmcv tree); every ``ext_loader.load_ext('_ext', [...])``
call and every ``ext_module.fn(...)`` call then keeps working unchanged, against the runtime's
``_ext`` ABI (:mod:`mmcv_runtime.ext`) instead of the compiled ``mmcv._ext``.

mmcv's ext_loader also has a parrots branch (``torch.__version__ == 'parrots'``) defining
``get_fake_func``, ``has_return_value_ops`` and a namedtuple-returning ``load_ext``; those exist only
under parrots, where ``mmcv.ops`` is not used through this loader by downstream code, so they are not
provided here.
"""

import importlib

__all__ = ["check_ops_exist", "load_ext"]

#: The only extension module mmcv loads through ``load_ext``; the runtime provides its ABI.
EXT_NAME = "_ext"


def load_ext(name, funcs):
    """Return the extension module ``mmcv.<name>``, checking that it has every function in ``funcs``.

    For ``name == '_ext'`` this is :mod:`mmcv_runtime.ext`, on which every ``mmcv._ext`` function
    exists (an unimplemented one raises ``NotImplementedError`` when called). A name missing from it
    raises ``AssertionError('<fun> miss in module _ext')``, as mmcv does; unlike mmcv's ``assert`` the
    check also runs under ``python -O``. Any other ``name`` raises ``ModuleNotFoundError``, as mmcv's
    ``importlib.import_module('mmcv.' + name)`` would.
    """
    if name != EXT_NAME:
        module = f"mmcv.{name}"
        raise ModuleNotFoundError(
            f"No module named {module!r}: mmcv_runtime provides only mmcv's compiled extension "
            f"'{EXT_NAME}' (as mmcv_runtime.ext), so load_ext({name!r}, ...) has nothing to load",
            name=module,
        )
    ext = importlib.import_module("mmcv_runtime.ext")
    for fun in funcs:
        if not hasattr(ext, fun):
            raise AssertionError(f"{fun} miss in module {name}")
    return ext


def check_ops_exist() -> bool:
    """Whether the ``_ext`` ops are available: always, the runtime provides the ABI in pure PyTorch."""
    return True
