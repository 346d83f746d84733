"""The rules, in the order they run on a file's collected facts (see :mod:`.collect`).

``module_imports`` runs first: the ext-call rule reads whether the file's ext_loader import is
being rewritten.
"""

from __future__ import annotations

from typing import Callable, Tuple

from mmcv_migrate.rewrites import (
    compiled_extensions,
    config_types,
    dependencies,
    ext_calls,
    module_imports,
    torch_ops,
)
from mmcv_migrate.rewrites.context import FileContext

RULES: Tuple[Callable[[FileContext], None], ...] = (
    module_imports.run,
    ext_calls.run,
    torch_ops.run,
    config_types.run,
    compiled_extensions.run,
    dependencies.run,
)
