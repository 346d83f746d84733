"""Per-file state shared by the rules: the parsed module, positions, findings and the edit plan.

The engine parses a file once, runs one collecting pass (:mod:`.collect`), lets every rule turn
the collected facts into findings and edits, then (for ``apply``) runs one transforming pass that
applies the edits. Edits are keyed on the *original* nodes (libcst nodes compare by identity), so
rules never need to coordinate the order in which they touch the tree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, Set, Tuple, Union

import libcst as cst
from libcst.metadata import CodeRange

from mmcv_migrate.findings import Finding
from mmcv_migrate.rewrites.catalogue import Catalogue

if TYPE_CHECKING:
    from mmcv_migrate.coverage import Coverage

SUPPRESSION_MARK = "mmcv-migrate: ignore"

Container = Union[cst.SimpleStatementLine, cst.SimpleStatementSuite]
Replacement = Union[cst.CSTNode, Callable[[cst.CSTNode], cst.CSTNode]]


@dataclass
class Binding:
    """A local name bound by an import (or by ``x = load_ext(...)``) to a dotted target."""

    name: str
    target: str  # e.g. "mmcv.ops", "mmcv", "mmcv.ops.nms", "mmcv._ext"
    statement: cst.CSTNode  # the Import / ImportFrom / Assign that binds it
    alias: Optional[cst.ImportAlias] = None
    container: Optional[Container] = None  # the line holding the statement
    module_import: Optional[str] = None  # ``import a.b.c`` binds ``a`` but loads a.b.c: "a.b.c"
    scope: Optional[cst.CSTNode] = None  # innermost enclosing def/class; None at module level


@dataclass
class Use:
    """A load of a bound name: a dotted chain ``head.a.b`` (node is the Attribute) or a bare Name."""

    head: str
    dotted: str
    node: cst.CSTNode
    in_getattr: Optional[cst.Call] = None  # ``getattr(head, ...)``: the call


@dataclass
class ImportStatement:
    node: Union[cst.Import, cst.ImportFrom]
    container: Optional[Container]
    module: Optional[str]  # ImportFrom: the absolute module (relative ones resolved), else None
    scope: Optional[cst.CSTNode] = None


@dataclass
class EditPlan:
    replacements: Dict[cst.CSTNode, Replacement] = field(default_factory=dict)
    # small statement -> the small statements that take its place (an import split in two)
    splits: Dict[cst.CSTNode, List[cst.BaseSmallStatement]] = field(default_factory=dict)
    # small statement -> statements to add right after its line
    after: Dict[cst.CSTNode, List[cst.BaseSmallStatement]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.replacements or self.splits or self.after)


@dataclass
class FileContext:
    path: str
    module: cst.Module
    positions: Dict[cst.CSTNode, CodeRange]
    catalogue: Catalogue
    coverage: "Coverage"
    module_name: Optional[str] = None  # dotted name of this file, when inside a package
    is_package: bool = False  # the file is a package's __init__.py
    bindings: Dict[str, List[Binding]] = field(default_factory=dict)
    uses: Dict[str, List[Use]] = field(default_factory=dict)
    imports: List[ImportStatement] = field(default_factory=list)
    calls: List[cst.Call] = field(default_factory=list)
    dicts: List[cst.Dict] = field(default_factory=list)
    assigns: List[Tuple[cst.Assign, cst.Call]] = field(default_factory=list)
    ignored_lines: Set[int] = field(default_factory=set)
    findings: List[Finding] = field(default_factory=list)
    plan: EditPlan = field(default_factory=EditPlan)
    _added_imports: Set[Tuple[Optional[cst.CSTNode], str]] = field(default_factory=set)

    # --- facts -----------------------------------------------------------------------------

    @property
    def inside_mmcv(self) -> bool:
        """True for files of an mmcv tree itself (a fork or vendored copy)."""
        return self.module_name is not None and (
            self.module_name == "mmcv" or self.module_name.startswith("mmcv.")
        )

    def resolve_relative(self, level: int, module: Optional[str]) -> Optional[str]:
        """Absolute module of ``from <.. * level><module> import``; None when unknown."""
        if level == 0:
            return module
        if self.module_name is None:
            return None
        package = self.module_name if self.is_package else self.module_name.rpartition(".")[0]
        parts = package.split(".") if package else []
        if level - 1 > len(parts) or (level - 1 == len(parts) and not module):
            return None
        base = parts[: len(parts) - (level - 1)]
        if module:
            base.append(module)
        return ".".join(base) or None

    def binding(self, name: str) -> Optional[Binding]:
        """The binding of ``name`` this file's imports make; the first one wins (flat table)."""
        found = self.bindings.get(name)
        return found[0] if found else None

    def resolve(self, dotted: str) -> Optional[str]:
        """Fully qualified target of a dotted name read in this file, through its bindings."""
        head, _, rest = dotted.partition(".")
        bound = self.binding(head)
        if bound is None:
            return None
        return f"{bound.target}.{rest}" if rest else bound.target

    # --- positions and suppression ---------------------------------------------------------

    def span(self, node: cst.CSTNode) -> Tuple[int, int, int]:
        """(line, 1-based column, end line) of a node of the original tree."""
        code_range = self.positions[node]
        return code_range.start.line, code_range.start.column + 1, code_range.end.line

    def is_suppressed(self, *nodes: cst.CSTNode) -> bool:
        if not self.ignored_lines:
            return False
        for node in nodes:
            line, _, end = self.span(node)
            if line in self.ignored_lines or end in self.ignored_lines:
                return True
        return False

    def add(
        self,
        node: cst.CSTNode,
        *,
        rule: str,
        kind: str,
        symbol: str,
        status: str,
        fixable: bool,
        message: str,
        remaining: bool,
        statement: Optional[cst.CSTNode] = None,
    ) -> Finding:
        line, column, end = self.span(node)
        suppressed = self.is_suppressed(node) or (
            statement is not None and self.is_suppressed(statement)
        )
        finding = Finding(
            path=self.path,
            line=line,
            column=column,
            end_line=end,
            rule=rule,
            kind=kind,
            symbol=symbol,
            status=status,
            fixable=fixable and not suppressed,
            message=message,
            remaining=remaining and not suppressed,
            suppressed=suppressed,
        )
        self.findings.append(finding)
        return finding

    # --- edits -----------------------------------------------------------------------------

    def replace(self, original: cst.CSTNode, replacement: Replacement) -> None:
        self.plan.replacements[original] = replacement

    def split(self, original: cst.BaseSmallStatement, parts: Sequence[cst.BaseSmallStatement]) -> None:
        self.plan.splits[original] = list(parts)

    def ensure_import(self, module: str, after: cst.BaseSmallStatement, scope: Optional[cst.CSTNode]) -> None:
        """Add ``import <module>`` after ``after`` unless the same scope already imports it."""
        if (scope, module) in self._imported_modules():
            return
        self._added_imports.add((scope, module))
        parts = module.split(".")
        name: cst.BaseExpression = cst.Name(parts[0])
        for part in parts[1:]:
            name = cst.Attribute(value=name, attr=cst.Name(part))
        self.plan.after.setdefault(after, []).append(cst.Import(names=[cst.ImportAlias(name=name)]))

    def note_import(self, scope: Optional[cst.CSTNode], module: str) -> None:
        """Record that an edit makes ``scope`` import ``module`` (so no second import is added)."""
        self._added_imports.add((scope, module))

    def _imported_modules(self) -> Set[Tuple[Optional[cst.CSTNode], str]]:
        existing = {
            (binding.scope, binding.module_import)
            for bindings in self.bindings.values()
            for binding in bindings
            if binding.module_import
        }
        return existing | self._added_imports

    def apply(self) -> cst.Module:
        return self.module.visit(_Applier(self.plan))


class _Applier(cst.CSTTransformer):
    """Applies an :class:`EditPlan`; untouched nodes are returned as they are (byte-identical)."""

    def __init__(self, plan: EditPlan) -> None:
        super().__init__()
        self.plan = plan

    def on_leave(self, original_node, updated_node):  # type: ignore[override]
        replacement = self.plan.replacements.get(original_node)
        if replacement is not None:
            updated_node = replacement(updated_node) if callable(replacement) else replacement
        if isinstance(original_node, (cst.SimpleStatementLine, cst.SimpleStatementSuite)):
            return self._expand(original_node, updated_node)
        return updated_node

    def _expand(self, original: Container, updated: Container):
        plan = self.plan
        if not any(s in plan.splits or s in plan.after for s in original.body):
            return updated
        body: List[cst.BaseSmallStatement] = []
        added: List[cst.BaseSmallStatement] = []
        for before, after in zip(original.body, updated.body):
            parts = plan.splits.get(before)
            body.extend([_no_semicolon(p) for p in parts] if parts else [after])
            added.extend(_no_semicolon(s) for s in plan.after.get(before, []))
        if isinstance(updated, cst.SimpleStatementLine) and len(updated.body) == 1:
            # One statement on its own line: every part gets a line of its own. The blank lines
            # and comments above stay above the first; the parts of a split import keep the
            # line's trailing comment (e.g. ``# noqa: F401`` applies to both halves); an added
            # import gets none.
            lines = [
                updated.with_changes(body=[part], leading_lines=updated.leading_lines if i == 0 else ())
                for i, part in enumerate(body)
            ]
            bare = cst.TrailingWhitespace(newline=updated.trailing_whitespace.newline)
            lines += [updated.with_changes(body=[s], leading_lines=(), trailing_whitespace=bare) for s in added]
            return cst.FlattenSentinel(lines)
        # Several statements on one line (``a; b``) or a one-line suite (``if x: import a``):
        # the parts stay on that line, separated by semicolons.
        return updated.with_changes(body=body + added)


def _no_semicolon(statement: cst.BaseSmallStatement) -> cst.BaseSmallStatement:
    if isinstance(getattr(statement, "semicolon", None), cst.Semicolon):
        return statement.with_changes(semicolon=cst.MaybeSentinel.DEFAULT)
    return statement
