"""What a scan finds: one :class:`Finding` per use of mmcv's compiled ops, grouped per file.

Plain dataclasses with no third-party imports, so results cross process boundaries (the engine's
pool) and go into the cache as JSON.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

# Status of a use, from the runtime registry's point of view.
CONVERTED = "converted"  # the runtime provides it fully (forward, and backward where one exists)
PARTIAL = "partial"  # the runtime provides part of it (e.g. forward only, or a dynamic lookup)
UNCONVERTED = "unconverted"  # the runtime lacks it, or no rewrite can reach it
STATUSES = (CONVERTED, PARTIAL, UNCONVERTED)

# Kinds: the syntactic form of a use.
KIND_IMPORT = "import"  # an import statement naming an mmcv.ops (or deprecated re-export) symbol
KIND_ATTRIBUTE = "attribute"  # mmcv.ops.X / ops.X through a module binding
KIND_DYNAMIC = "dynamic"  # getattr(ops, name) or the module object passed around
KIND_EXT_LOADER = "ext_loader"  # import of mmcv's ext_loader, or a load_ext(...) call
KIND_EXT_MODULE = "ext_module"  # import mmcv._ext / from mmcv import _ext
KIND_EXT_CALL = "ext_call"  # ext_module.fn(...) on a loaded _ext
KIND_TORCH_OPS = "torch_ops"  # torch.ops.mmcv.*
KIND_CONFIG = "config"  # dict(type='RoIAlign') / {'type': 'DCNv2'}
KIND_COMPILED_EXTENSION = "compiled_extension"  # CUDAExtension / CppExtension / cpp_extension.load
KIND_DEPENDENCY = "dependency"  # an mmcv requirement (requirements*.txt, setup.py/cfg, pyproject, pip/mim install)
KINDS = (
    KIND_IMPORT,
    KIND_ATTRIBUTE,
    KIND_DYNAMIC,
    KIND_EXT_LOADER,
    KIND_EXT_MODULE,
    KIND_EXT_CALL,
    KIND_TORCH_OPS,
    KIND_CONFIG,
    KIND_COMPILED_EXTENSION,
    KIND_DEPENDENCY,
)


@dataclass
class Finding:
    """One use of mmcv's compiled ops at ``path:line:column`` (1-based line, 1-based column).

    ``status`` is how well the runtime covers ``symbol``; ``fixable`` says ``apply`` rewrites this
    occurrence; ``remaining`` says it still ties the code to compiled mmcv (what ``check`` and
    ``--fail-on-remaining`` count). A finding on a line marked ``# mmcv-migrate: ignore`` is
    ``suppressed``: reported, never rewritten, never remaining.
    """

    path: str
    line: int
    column: int
    rule: str
    kind: str
    symbol: str
    status: str
    fixable: bool
    message: str
    remaining: bool = True
    suppressed: bool = False
    end_line: Optional[int] = None

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "Finding":
        return cls(**data)


@dataclass
class FileError:
    """A file that could not be processed (syntax error, undecodable bytes, unreadable)."""

    path: str
    message: str

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class FileResult:
    """What the engine made of one file: its findings and, for apply, its new text (or None)."""

    path: str
    findings: List[Finding] = field(default_factory=list)
    new_source: Optional[bytes] = None  # set only when apply changes the file
    error: Optional[FileError] = None

    @property
    def changed(self) -> bool:
        return self.new_source is not None


@dataclass
class CoverageRow:
    """One mmcv symbol used by the scanned code, joined with what the runtime provides for it."""

    symbol: str  # e.g. "mmcv.ops.nms", "mmcv._ext.ms_deform_attn_forward"
    uses: int
    status: str  # converted | partial | unconverted
    backward: str  # "yes" | "no" | "n/a" | "-" (runtime lacks the op)
    kernels: List[str] = field(default_factory=list)
    op: Optional[str] = None  # the mmcv.ops submodule the symbol belongs to, when known

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class ScanReport:
    """Everything a command reports: the input of every output format."""

    command: str  # "scan" | "apply" | "check"
    roots: List[str]
    files_scanned: int
    findings: List[Finding]
    coverage: List[CoverageRow]
    errors: List[FileError]
    files_changed: List[str] = field(default_factory=list)  # apply: relative paths rewritten/pending

    @property
    def remaining(self) -> List[Finding]:
        return [f for f in self.findings if f.remaining and not f.suppressed]
