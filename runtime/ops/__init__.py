"""mmcv_runtime.ops: mmcv's ops in pure PyTorch, laid out like ``mmcv.ops``.

One module per ``mmcv.ops`` submodule (``nms.py``, ``roi_align.py``, ``deform_conv.py``, ...) with the
same public names, signatures, defaults, return types, module attributes and state_dict keys as mmcv.

Adding an op module ``<op>.py``:

1. write the module; at import it calls
   ``mmcv_runtime.registry.register(OpEntry(op="<op>", names=(...), ...))`` where ``names`` are the
   public names of ``mmcv.ops.<op>`` it provides (each must be a module attribute);
2. add ``"<op>"`` to ``_OP_MODULES`` below.

This package then re-exports, like ``mmcv/ops/__init__.py`` does, every registered name that
``mmcv.ops`` itself exports from that submodule (per the catalogue, aliases included: ``Conv2d`` is
``deprecated_wrappers.Conv2d_deprecated``), and lists them in ``__all__``. Names the submodule has but
``mmcv.ops`` does not export stay in the submodule only, as in mmcv.

A name ``mmcv.ops`` has but the runtime does not implement raises ``NotImplementedError`` naming it, its
mmcv submodule and ``mmcv-migrate ops``; never a silent stand-in. Any other unknown name raises
``AttributeError``, so ``hasattr()``, ``getattr(ops, name, default)`` and ``from ... import *`` behave.
"""

from __future__ import annotations

import importlib as _importlib

from .. import registry as _registry

#: Implemented op modules, by mmcv.ops submodule name, e.g. ("nms", "roi_align"). Keep sorted.
_OP_MODULES: tuple[str, ...] = (
    "active_rotated_filter", "ball_query", "bbox", "bezier_align", "border_align", "box_iou_quadri",
    "box_iou_rotated", "carafe", "deform_conv", "deform_roi_pool", "focal_loss",
    "furthest_point_sample", "gather_points", "group_points", "iou3d", "knn",
    "modulated_deform_conv", "multi_scale_deform_attn", "nms", "point_sample", "points_in_boxes",
    "prroi_pool", "psa_mask", "riroi_align_rotated", "roi_align", "roi_align_rotated", "roi_pool",
    "rotated_feature_align", "scatter_points", "three_interpolate", "three_nn", "voxelize",
)

_HINT = "`mmcv-migrate ops` lists what it covers"


def _catalogue():
    # Imported lazily: the catalogue is stdlib-only, but there is no need to read it at import time
    # unless an op module is implemented or an unknown name is looked up.
    from mmcv_migrate.rewrites.catalogue import load_catalogue

    return load_catalogue()


def _import_op_modules() -> list[str]:
    """Import every op module (each registers itself) and re-export what mmcv.ops exports."""
    # Import all modules first: importing ``ops.nms`` binds the package attribute ``nms`` to the
    # module, and the re-export below must rebind it to the function, as in mmcv.
    modules = {op: _importlib.import_module(f"{__name__}.{op}") for op in _OP_MODULES}
    if not modules:
        return []
    cat = _catalogue()
    for op, module in modules.items():
        if op not in _registry._ENTRIES:
            raise ImportError(f"{module.__name__} did not register an OpEntry for {op!r}")
    exported = []
    for export, op in cat.exports.items():
        entry = _registry._ENTRIES.get(op)
        # mmcv.ops exports a few names under an alias (Conv2d is deprecated_wrappers.Conv2d_deprecated)
        defined = cat.export_aliases.get(export, export)
        if op in modules and defined in entry.names:
            globals()[export] = getattr(modules[op], defined)
            exported.append(export)
    return sorted(exported)


__all__ = _import_op_modules()


def _mmcv_submodule_of(name: str) -> str | None:
    """The mmcv.ops submodule that defines ``name``, or None when mmcv.ops has no such name."""
    cat = _catalogue()
    sub = cat.exports.get(name)
    if sub is not None:
        return sub
    for sub_name in sorted(cat.submodules):
        if name in cat.submodules[sub_name].names:
            return sub_name
    if name in cat.submodules:  # the submodule itself, e.g. mmcv.ops.multi_scale_deform_attn
        return name
    return None


def __getattr__(name: str):
    if name.startswith("__"):  # dunder probes (__wrapped__, __path__ lookups ...) are never ops
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    sub = _mmcv_submodule_of(name)
    if sub is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    entry = _registry._ENTRIES.get(sub)
    if entry is not None and name in entry.names:
        # Implemented, but mmcv.ops does not export it from the package either: same as mmcv.
        raise AttributeError(
            f"module {__name__!r} has no attribute {name!r}; "
            f"like mmcv, it is in the submodule: from {__name__}.{sub} import {name}"
        )
    if name == sub:
        what = f"mmcv.ops.{sub}"
    elif name in _catalogue().exports:
        what = f"mmcv.ops.{name} (mmcv.ops.{sub})"
    else:
        what = f"mmcv.ops.{sub}.{name}"
    raise NotImplementedError(f"mmcv_runtime does not implement {what} yet; {_HINT}")
