"""Rewrite rules, one module per usage family, and the catalogue of mmcv's API.

Imported as ``mmcv_migrate.rewrites``. This ``__init__`` stays import-light: the catalogue is read by
the runtime too, which must not pull in libcst.
"""
