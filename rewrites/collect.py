"""The one pass over a file's tree: collect imports, bindings, dotted uses, calls and comments.

Rules never walk the tree themselves; they read what this pass collected (see
:class:`~mmcv_migrate.rewrites.context.FileContext`). The import table is flat: a name bound by an
import anywhere in the file (module level, function, ``if``/``try`` branch) is resolved the same
everywhere. That is what makes the pass cheap (no scope analysis, which costs several parses), and
it is exact for the way mmcv is imported in practice.
"""

from __future__ import annotations

from typing import List, Optional, Set, Union

import libcst as cst
from libcst.helpers import get_full_name_for_node

from mmcv_migrate.rewrites.context import SUPPRESSION_MARK, Binding, Container, FileContext, ImportStatement, Use

# Calls other rules look at; everything else is skipped to keep the pass lean.
_INTERESTING_CALL_TAILS = ("load_ext", "getattr", "dict", "Extension", "load", "load_inline")


def dotted_name(node: Union[cst.Attribute, cst.Name, cst.BaseExpression]) -> Optional[str]:
    """``a.b.c`` for a pure Name/Attribute chain, else None."""
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        inner = dotted_name(node.value)
        return None if inner is None else f"{inner}.{node.attr.value}"
    return None


class Collector(cst.CSTVisitor):
    def __init__(self, ctx: FileContext) -> None:
        super().__init__()
        self.ctx = ctx
        self._container: Optional[Container] = None
        self._not_loads: Set[cst.Name] = set()
        self._scopes: List[cst.CSTNode] = []  # enclosing defs and classes
        self._in_import = False

    # --- lines and comments ----------------------------------------------------------------

    def visit_SimpleStatementLine(self, node: cst.SimpleStatementLine) -> None:
        self._container = node

    def visit_SimpleStatementSuite(self, node: cst.SimpleStatementSuite) -> None:
        self._container = node

    def visit_Comment(self, node: cst.Comment) -> None:
        if SUPPRESSION_MARK in node.value:
            self.ctx.ignored_lines.add(self.ctx.positions[node].start.line)

    # --- imports ---------------------------------------------------------------------------

    def visit_Import(self, node: cst.Import) -> bool:
        self._in_import = True  # comments inside are still visited (suppression marks)
        self.ctx.imports.append(ImportStatement(node, self._container, None, self._scope))
        for alias in node.names:
            full = get_full_name_for_node(alias.name)
            if full is None:
                continue
            if alias.asname is not None and isinstance(alias.asname.name, cst.Name):
                self._bind(alias.asname.name.value, full, node, alias, None)
            else:
                head = full.partition(".")[0]
                self._bind(head, head, node, alias, full)
        return True

    def leave_Import(self, original_node: cst.Import) -> None:
        self._in_import = False

    def visit_ImportFrom(self, node: cst.ImportFrom) -> bool:
        relative = len(node.relative)
        name = get_full_name_for_node(node.module) if node.module is not None else None
        module = self.ctx.resolve_relative(relative, name)
        self._in_import = True
        self.ctx.imports.append(ImportStatement(node, self._container, module, self._scope))
        if module is None or isinstance(node.names, cst.ImportStar):
            return True
        for alias in node.names:
            imported = get_full_name_for_node(alias.name)
            if imported is None:
                continue
            local = imported
            if alias.asname is not None and isinstance(alias.asname.name, cst.Name):
                local = alias.asname.name.value
            self._bind(local, f"{module}.{imported}", node, alias, None)
        return True

    def leave_ImportFrom(self, original_node: cst.ImportFrom) -> None:
        self._in_import = False

    def _bind(self, name, target, statement, alias, module_import) -> None:
        binding = Binding(name, target, statement, alias, self._container, module_import, self._scope)
        self.ctx.bindings.setdefault(name, []).append(binding)

    # --- uses ------------------------------------------------------------------------------

    def visit_Attribute(self, node: cst.Attribute) -> bool:
        if self._in_import:
            return False
        dotted = dotted_name(node)
        if dotted is None:
            node.value.visit(self)  # e.g. ``f(x).attr``: the value may hold uses, ``attr`` is none
            return False
        head = dotted.partition(".")[0]
        self.ctx.uses.setdefault(head, []).append(Use(head, dotted, node))
        return False  # a pure chain holds no further uses

    def visit_Name(self, node: cst.Name) -> None:
        if not self._in_import and node not in self._not_loads:
            self.ctx.uses.setdefault(node.value, []).append(Use(node.value, node.value, node))

    # Names that are not loads of a binding: definitions, parameters, keywords, assignment targets.
    @property
    def _scope(self) -> Optional[cst.CSTNode]:
        return self._scopes[-1] if self._scopes else None

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self._not_loads.add(node.name)
        self._scopes.append(node)

    def leave_FunctionDef(self, original_node: cst.FunctionDef) -> None:
        self._scopes.pop()

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        self._not_loads.add(node.name)
        self._scopes.append(node)

    def leave_ClassDef(self, original_node: cst.ClassDef) -> None:
        self._scopes.pop()

    def visit_Param(self, node: cst.Param) -> None:
        self._not_loads.add(node.name)

    def visit_Arg(self, node: cst.Arg) -> None:
        if node.keyword is not None:
            self._not_loads.add(node.keyword)

    def visit_AssignTarget(self, node: cst.AssignTarget) -> None:
        if isinstance(node.target, cst.Name):
            self._not_loads.add(node.target)

    # --- calls, dicts, assignments ---------------------------------------------------------

    def visit_Call(self, node: cst.Call) -> None:
        func = node.func
        tail = func.attr.value if isinstance(func, cst.Attribute) else getattr(func, "value", None)
        if isinstance(tail, str) and tail.endswith(_INTERESTING_CALL_TAILS):
            self.ctx.calls.append(node)
            if tail == "getattr" and node.args and isinstance(node.args[0].value, cst.Name):
                target = node.args[0].value
                self._not_loads.add(target)
                self.ctx.uses.setdefault(target.value, []).append(
                    Use(target.value, target.value, target, in_getattr=node)
                )

    def visit_Dict(self, node: cst.Dict) -> None:
        self.ctx.dicts.append(node)

    def visit_Assign(self, node: cst.Assign) -> None:
        if isinstance(node.value, cst.Call):
            self.ctx.assigns.append((node, node.value))
