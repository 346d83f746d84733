"""mmcv_runtime.local_ext: stand-ins for compiled ops that projects build themselves.

Sparse4D, SparseDrive and their forks compile ``deformable_aggregation_ext`` next to their mmcv use.
Each module here has that extension's name and functions (same positional signatures, same return
values, gradients accumulated into the caller's tensors as the kernels' atomics do), over the op's
functional core in ``mmcv_runtime.ops``; ``mmcv-migrate apply`` points the projects' wrappers at
it (``from . import deformable_aggregation_ext`` -> ``from mmcv_runtime.local_ext import
deformable_aggregation_ext``). The tool's table of these ops is ``mmcv_migrate.rewrites.local_ops``.
"""
