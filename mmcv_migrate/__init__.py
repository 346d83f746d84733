"""mmcv-migrate: find and rewrite uses of mmcv's compiled ops (``mmcv.ops``, ``mmcv._ext``).

Kept import-light on purpose: the runtime reads the catalogue through this package, and
``mmcv_runtime`` must import with torch alone (no libcst, click or rich).
"""

__version__ = "0.1.0"
