"""mmcv_runtime.ext: the ``mmcv._ext`` ABI, what ``ext_loader.load_ext('_ext', [...])`` returns.

Every function of mmcv's compiled extension (mmcv 1.7 and 2.x, per the catalogue) is an attribute:

- **implemented** ones come from adapter modules ``mmcv_runtime/ext/_<op>.py``: thin functions with the
  exact ``_ext`` signature (py::arg names, in-place outputs, return values) over the op's functional
  core in ``mmcv_runtime.ops.<op>``. Each adapter module lists the ``_ext`` names it defines in
  ``__all__``; this package imports the modules named in ``_ADAPTER_MODULES`` and binds those names.
  The op's ``OpEntry.ext_functions`` (``mmcv_runtime.registry``) lists the same names; a test keeps the
  two equal. Adapter modules start with ``_`` so that a submodule never shadows a function of the same
  name (``ext.nms`` is the function, ``ext._nms`` the module).
- **not implemented** ones are stubs, made on first access from the catalogue (no torch needed): real
  functions named like the ``_ext`` function, documented with its C++ declaration, that raise
  ``NotImplementedError`` naming the function, the mmcv.ops submodule using it and ``mmcv-migrate ops``.

Any other name raises ``AttributeError``, as on mmcv's ``_ext``; ``dir()`` lists every function.
"""

import importlib as _importlib

#: Adapter modules, e.g. ("_nms", "_roi_align"): each defines the _ext functions named in its __all__.
_ADAPTER_MODULES: tuple[str, ...] = (
    "_active_rotated_filter", "_ball_query", "_bbox", "_bezier_align", "_border_align",
    "_box_iou_quadri", "_box_iou_rotated", "_carafe", "_deform_conv", "_deform_roi_pool",
    "_focal_loss", "_furthest_point_sample", "_gather_points", "_group_points", "_iou3d", "_knn",
    "_modulated_deform_conv", "_multi_scale_deform_attn", "_nms", "_points_in_boxes", "_prroi_pool",
    "_psa_mask", "_riroi_align_rotated", "_roi_align", "_roi_align_rotated", "_roi_pool",
    "_rotated_feature_align", "_scatter_points", "_three_interpolate", "_three_nn", "_voxelize",
)

_HINT = "`mmcv-migrate ops` lists what it covers"


def _bind_adapters() -> frozenset[str]:
    bound: dict[str, str] = {}
    for module_name in _ADAPTER_MODULES:
        module = _importlib.import_module(f"{__name__}.{module_name}")
        for fn in module.__all__:
            if fn in bound:
                raise ImportError(
                    f"mmcv._ext.{fn} is defined by both {__name__}.{bound[fn]} and {module.__name__}"
                )
            bound[fn] = module_name
            globals()[fn] = getattr(module, fn)
    return frozenset(bound)


#: The _ext functions this ABI implements (bound above); the rest are stubs.
IMPLEMENTED: frozenset[str] = _bind_adapters()


def _ext_functions():
    from mmcv_migrate.rewrites.catalogue import load_catalogue

    return load_catalogue().ext_functions


def _make_stub(name: str, info) -> object:
    used_by = ", ".join(f"mmcv.ops.{sub}" for sub in info.submodules)
    where = f" (used by {used_by})" if used_by else ""
    message = f"mmcv_runtime does not implement mmcv._ext.{name}{where} yet; {_HINT}"

    def stub(*args, **kwargs):
        raise NotImplementedError(message)

    stub.__name__ = name
    stub.__qualname__ = name
    stub.__module__ = __name__
    stub.__doc__ = (
        f"{info.declaration}\n\n"
        f"mmcv._ext.{name}{where}, mmcv {', '.join(info.versions)}.\n"
        f"Not implemented by mmcv_runtime yet: calling it raises NotImplementedError."
    )
    if info.args:
        import inspect  # stdlib; only for help()/inspect.signature on stubs

        try:
            stub.__signature__ = inspect.Signature(
                [inspect.Parameter(arg, inspect.Parameter.POSITIONAL_OR_KEYWORD) for arg in info.args]
            )
        except ValueError:  # an argument name that is not a valid Python identifier
            pass
    return stub


def __getattr__(name: str):
    if not name.startswith("__"):
        info = _ext_functions().get(name)
        if info is not None:
            stub = _make_stub(name, info)
            globals()[name] = stub  # made once, then found like any attribute
            return stub
    raise AttributeError(f"module {__name__!r} (mmcv._ext ABI) has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_ext_functions()))
