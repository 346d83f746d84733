"""Imports of mmcv's op namespaces and the uses made through them, rewritten to the runtime.

Handles every import form of the families in :mod:`.families`:

* ``from mmcv.ops[.sub] import A, B as C`` (and deprecated re-exports): names the runtime provides
  move to ``from mmcv_runtime.ops[.sub] import ...``; a mix is split and the rest stays;
* module bindings, ``import mmcv.ops as o`` / ``from mmcv import ops`` / ``from mmcv import _ext`` /
  ``from mmcv.utils import ext_loader``: when every use through the binding is provided, the import
  is pointed at the runtime and the uses stay as they are; otherwise the provided uses are written
  out as ``mmcv_runtime.ops.X`` with an ``import mmcv_runtime.ops`` added after the binding import;
* the root binding of ``import mmcv`` / ``import mmcv.ops`` with ``mmcv.ops.X`` uses: provided uses
  become ``mmcv_runtime.ops.X``; an ``import mmcv.ops`` none of whose ops uses remain becomes
  ``import mmcv`` (when ``mmcv`` is still needed) or ``import mmcv_runtime.ops``.

Inside an mmcv tree (a fork or vendored copy) only ext_loader and ``_ext`` imports are rewritten:
mmcv's own wrappers keep working and reach the runtime through its ``_ext`` ABI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import libcst as cst
from libcst.helpers import get_full_name_for_node

from mmcv_migrate.findings import KIND_ATTRIBUTE, KIND_DYNAMIC, PARTIAL, UNCONVERTED
from mmcv_migrate.rewrites.context import Binding, FileContext, ImportStatement, Use
from mmcv_migrate.rewrites.families import RULE_DEPRECATED, RULE_OPS, Target, classify

_NOT_IN_MMCV_TREE = (RULE_OPS, RULE_DEPRECATED)


def _expr(dotted: str) -> cst.BaseExpression:
    parts = dotted.split(".")
    node: cst.BaseExpression = cst.Name(parts[0])
    for part in parts[1:]:
        node = cst.Attribute(value=node, attr=cst.Name(part))
    return node


def _convertible(target: Target, ctx: FileContext) -> bool:
    if not target.convertible or target.in_runtime:
        return False
    return not (ctx.inside_mmcv and target.rule in _NOT_IN_MMCV_TREE)


def _remaining(target: Target, ctx: FileContext) -> bool:
    if target.in_runtime:
        return target.status == "unconverted"
    return not (ctx.inside_mmcv and target.rule in _NOT_IN_MMCV_TREE)


def _message(target: Target, ctx: FileContext, converting: bool) -> str:
    if ctx.inside_mmcv and target.rule in _NOT_IN_MMCV_TREE and not target.in_runtime:
        return ("inside mmcv itself: left as is; its wrappers reach the runtime through the _ext ABI "
                "once ext_loader is migrated")
    if converting:
        return f"{target.path} -> {target.runtime_path}: {target.message}"
    return target.message


@dataclass
class _UsePlan:
    use: Use
    target: Optional[Target]  # None: a use of the binding outside our families (e.g. mmcv.Config)
    dynamic: bool = False


@dataclass
class _ModuleBinding:
    binding: Binding
    target: Target


def run(ctx: FileContext) -> None:
    """Findings and edits for every import statement and module binding of the file."""
    root_bindings: Dict[str, List[Binding]] = {}
    module_bindings: List[_ModuleBinding] = []
    # ImportFrom alias decisions: alias -> runtime target, or None to keep it where it is.
    moved: Dict[cst.ImportAlias, Target] = {}

    for statement in ctx.imports:
        node = statement.node
        if isinstance(node, cst.ImportFrom):
            _import_from(ctx, statement, moved, module_bindings)
        else:
            for alias in node.names:
                full = get_full_name_for_node(alias.name) or ""
                if alias.asname is not None:
                    target = classify(full, ctx, module_context=True)
                    if target is not None and target.is_module:
                        binding = _binding_of(ctx, alias)
                        if binding is not None:
                            module_bindings.append(_ModuleBinding(binding, target))
                    elif target is not None:
                        _report_import(ctx, alias, node, target, converting=False)
                elif full.split(".")[0] in ("mmcv", "mmcv_runtime"):
                    binding = _binding_of(ctx, alias)
                    if binding is not None:
                        root_bindings.setdefault(binding.name, []).append(binding)
                elif "." not in full:
                    # ``import deformable_aggregation_ext``: a top-level project-local extension
                    target = classify(full, ctx, module_context=True)
                    binding = _binding_of(ctx, alias) if target is not None and target.is_module else None
                    if binding is not None:
                        module_bindings.append(_ModuleBinding(binding, target))

    for module_binding in module_bindings:
        _module_binding(ctx, module_binding, moved)
    for name, bindings in root_bindings.items():
        _root_binding(ctx, name, bindings)
    _rewrite_import_froms(ctx, moved)


def _binding_of(ctx: FileContext, alias: cst.ImportAlias) -> Optional[Binding]:
    for bindings in ctx.bindings.values():
        for binding in bindings:
            if binding.alias is alias:
                return binding
    return None


# --- from X import a, b ---------------------------------------------------------------------


def _import_from(ctx: FileContext, statement: ImportStatement, moved, module_bindings) -> None:
    node = statement.node
    assert isinstance(node, cst.ImportFrom)
    module = statement.module
    if module is None:
        if not node.relative:
            return
        # A relative import outside a known package: only paths that name themselves (project-local
        # ops, e.g. ``..ops.deformable_aggregation_function``) can still be recognised.
        module = "." * len(node.relative) + (get_full_name_for_node(node.module) or "" if node.module else "")
    if isinstance(node.names, cst.ImportStar):
        target = classify(module, ctx)
        if target is not None:
            ctx.add(node, rule=target.rule, kind=target.import_kind, symbol=target.symbol + ".*",
                    status="unconverted", fixable=False, remaining=_remaining(target, ctx),
                    message="star import: import the names you use explicitly so they can be converted")
        return
    for alias in node.names:
        name = get_full_name_for_node(alias.name)
        target = classify(f"{module}{'' if module.endswith('.') else '.'}{name}", ctx)
        if target is None:
            continue
        if target.is_module and not target.in_runtime:
            binding = _binding_of(ctx, alias)
            if binding is not None:
                module_bindings.append(_ModuleBinding(binding, target))
                continue
        converting = _convertible(target, ctx) and not ctx.is_suppressed(alias, node)
        if converting:
            moved[alias] = target
        _report_import(ctx, alias, node, target, converting)


def _report_import(ctx: FileContext, alias, statement, target: Target, converting: bool) -> None:
    ctx.add(alias, rule=target.rule, kind=target.import_kind, symbol=target.symbol, status=target.status,
            fixable=converting, remaining=_remaining(target, ctx), statement=statement,
            message=_message(target, ctx, converting))


def _rewrite_import_froms(ctx: FileContext, moved: Dict[cst.ImportAlias, Target]) -> None:
    for statement in ctx.imports:
        node = statement.node
        if not isinstance(node, cst.ImportFrom) or isinstance(node.names, cst.ImportStar):
            continue
        aliases = list(node.names)
        if not any(alias in moved for alias in aliases):
            continue
        groups: Dict[Optional[str], List[cst.ImportAlias]] = {}
        for alias in aliases:
            target = moved.get(alias)
            module = None
            if target is not None:
                module, _, new_name = target.runtime_path.rpartition(".")
                alias = _renamed(alias, new_name)
            groups.setdefault(module, []).append(alias)
        # Visual indent (first name on the parenthesis line): continuation lines align to its column.
        first_line, first_column, _ = ctx.span(aliases[0])
        aligned = first_column - 1 if first_line == ctx.span(node)[0] else -1
        parts = [
            _realign(_with_aliases(node, module, group, aliases[-1]), node, aligned)
            for module, group in groups.items()
        ]
        if len(parts) == 1:
            ctx.replace(node, parts[0])
        else:
            ctx.split(node, parts)


def _renamed(alias: cst.ImportAlias, new_name: str) -> cst.ImportAlias:
    old = get_full_name_for_node(alias.name)
    if old == new_name:
        return alias
    asname = alias.asname or cst.AsName(name=cst.Name(old))
    return alias.with_changes(name=cst.Name(new_name), asname=asname)


def _with_aliases(node: cst.ImportFrom, module: Optional[str], group: Sequence[cst.ImportAlias],
                  last: cst.ImportAlias) -> cst.ImportFrom:
    """``node`` holding only ``group`` (from ``module`` if given), commas fixed up for the new order.

    In a parenthesised import every comma carries the line break and comment after its name, so
    names keep their own commas; the group's last name takes the layout of the original last one
    (trailing comma or not, indentation before the closing parenthesis).
    """
    names = list(group)
    changes = {}
    for index, alias in enumerate(names):
        own = alias.comma
        if index < len(names) - 1:
            if not isinstance(own, cst.Comma):
                names[index] = alias.with_changes(comma=_separator(node))
        elif alias is not last:
            comma, closes_line = _closing_comma(own, last.comma)
            names[index] = alias.with_changes(comma=comma)
            if closes_line and node.rpar is not None:
                # The kept comment already ends the line: the parenthesis must not add a second break.
                changes["rpar"] = node.rpar.with_changes(whitespace_before=cst.SimpleWhitespace(""))
    if module is not None:
        changes.update(module=_expr(module), relative=())
    return node.with_changes(names=names, **changes)


def _realign(new: cst.ImportFrom, old: cst.ImportFrom, column: int) -> cst.ImportFrom:
    """Keep continuation lines aligned with the parenthesis when the module's name changes length.

    ``from mmcv.ops import (a,`` / ``<22 spaces>b)``: the second line was aligned under ``a``;
    after ``mmcv.ops`` becomes ``mmcv_runtime.ops`` it must move right by the same amount.
    """
    empty = cst.Module([])
    shift = (len(empty.code_for_node(new.module)) - len(new.relative)
             - len(empty.code_for_node(old.module)) + len(old.relative)) if old.module and new.module else 0
    if shift == 0 or new.lpar is None:
        return new

    def moved(whitespace):
        if isinstance(whitespace, cst.ParenthesizedWhitespace) and len(whitespace.last_line.value) == column:
            return whitespace.with_changes(last_line=cst.SimpleWhitespace(" " * max(0, column + shift)))
        return whitespace

    names = [a.with_changes(comma=a.comma.with_changes(whitespace_after=moved(a.comma.whitespace_after)))
             if isinstance(a.comma, cst.Comma) else a for a in new.names]
    rpar = new.rpar.with_changes(whitespace_before=moved(new.rpar.whitespace_before)) if new.rpar else None
    return new.with_changes(names=names, rpar=rpar)


def _separator(node: cst.ImportFrom) -> cst.Comma:
    """A comma after a name that used to end the list, laid out like the list's other commas."""
    others = [a.comma for a in node.names if isinstance(a.comma, cst.Comma)]
    if others and isinstance(others[0].whitespace_after, cst.ParenthesizedWhitespace):
        layout = others[0].whitespace_after
        return cst.Comma(whitespace_after=layout.with_changes(
            first_line=cst.TrailingWhitespace(newline=layout.first_line.newline), empty_lines=()))
    return cst.Comma(whitespace_after=cst.SimpleWhitespace(" "))


def _closing_comma(own, original_last):
    """(comma, ends_line) for a name that becomes the last of its list."""
    if isinstance(original_last, cst.Comma):
        if isinstance(own, cst.Comma) and isinstance(own.whitespace_after, cst.ParenthesizedWhitespace):
            closing = original_last.whitespace_after
            last_line = (closing.last_line if isinstance(closing, cst.ParenthesizedWhitespace)
                         else cst.SimpleWhitespace(""))
            # Keep this name's own comment and line break; indent the parenthesis as before.
            return own.with_changes(whitespace_after=own.whitespace_after.with_changes(last_line=last_line)), False
        return original_last, False
    # The original list had no trailing comma: the layout before ``)`` lives on the parenthesis.
    if (isinstance(own, cst.Comma) and isinstance(own.whitespace_after, cst.ParenthesizedWhitespace)
            and own.whitespace_after.first_line.comment is not None):
        return own.with_changes(whitespace_after=own.whitespace_after.with_changes(
            last_line=cst.SimpleWhitespace(""))), True
    return cst.MaybeSentinel.DEFAULT, False


# --- module bindings ------------------------------------------------------------------------


def _plan_uses(ctx: FileContext, binding: Binding) -> List[_UsePlan]:
    plans = []
    for use in ctx.uses.get(binding.name, []):
        if use.dotted == binding.name:
            name = _literal_getattr_name(use)
            if name is not None:
                plans.append(_UsePlan(use, classify(f"{binding.target}.{name}", ctx)))
            else:
                plans.append(_UsePlan(use, None, dynamic=True))
            continue
        rest = use.dotted[len(binding.name) + 1 :]
        plans.append(_UsePlan(use, classify(f"{binding.target}.{rest}", ctx)))
    return plans


def _literal_getattr_name(use: Use) -> Optional[str]:
    """``b`` of ``getattr(a, 'b')``; None for other uses."""
    call = use.in_getattr
    if call is None or len(call.args) < 2 or not isinstance(call.args[1].value, cst.SimpleString):
        return None
    value = call.args[1].value.evaluated_value
    return value if isinstance(value, str) and value.isidentifier() else None


def _report_use(ctx: FileContext, plan: _UsePlan, module_target: Target, converting: bool) -> None:
    if plan.dynamic:
        target = module_target
        ctx.add(plan.use.node, rule=target.rule, kind=KIND_DYNAMIC, symbol=target.symbol,
                status=PARTIAL if _convertible(target, ctx) else target.status, fixable=converting,
                remaining=_remaining(target, ctx),
                message=("names looked up at run time on " + target.symbol +
                         ": the runtime raises NotImplementedError for the ones it lacks"
                         + ("; converted with the import" if converting else "")))
        return
    target = plan.target
    if target is None or target.path.endswith(".load_ext"):
        return  # load_ext calls are reported by the ext-call rule
    ctx.add(plan.use.node, rule=target.rule, kind=KIND_DYNAMIC if plan.use.in_getattr else KIND_ATTRIBUTE, symbol=target.symbol, status=target.status,
            fixable=converting, remaining=_remaining(target, ctx), message=_message(target, ctx, converting))


def _use_convertible(ctx: FileContext, plan: _UsePlan) -> bool:
    return plan.target is not None and _convertible(plan.target, ctx) and not ctx.is_suppressed(plan.use.node)


def _module_binding(ctx: FileContext, module_binding: _ModuleBinding, moved) -> None:
    """``import mmcv.ops as o`` / ``from mmcv import ops``: retarget the import, or the uses."""
    binding, target = module_binding.binding, module_binding.target
    plans = _plan_uses(ctx, binding)
    statement = binding.statement
    import_ok = _convertible(target, ctx) and not ctx.is_suppressed(binding.alias, statement)
    static = [p for p in plans if not p.dynamic and p.target is not None]
    retarget = import_ok and all(_use_convertible(ctx, p) for p in static)
    kept = sorted({p.target.symbol for p in static if not _use_convertible(ctx, p)})
    message = _message(target, ctx, retarget)
    if kept and not (ctx.inside_mmcv and target.rule in _NOT_IN_MMCV_TREE):
        message = ("kept: the runtime lacks " + ", ".join(kept) + " used through it; the uses it provides "
                   "are rewritten to " + target.runtime_path)
    ctx.add(binding.alias, rule=target.rule, kind=target.import_kind, symbol=target.symbol,
            status=target.status if retarget or not static else PARTIAL, fixable=retarget,
            remaining=_remaining(target, ctx), statement=statement, message=message)
    if retarget:
        if isinstance(statement, cst.ImportFrom):
            moved[binding.alias] = target
        elif binding.alias.asname is None:  # ``import ext`` -> ``import mmcv_runtime...ext as ext``
            ctx.replace(binding.alias, binding.alias.with_changes(
                name=_expr(target.runtime_path), asname=cst.AsName(name=cst.Name(binding.name))))
        else:
            ctx.replace(binding.alias.name, _expr(target.runtime_path))
        for plan in plans:
            _report_use(ctx, plan, target, converting=True)
        return
    added = set()
    for plan in plans:
        converting = not plan.dynamic and _use_convertible(ctx, plan)
        _report_use(ctx, plan, target, converting)
        if converting:
            added.add(_rewrite_use(ctx, plan))
    for module in sorted(added):
        ctx.ensure_import(module, statement, binding.scope)


def _rewrite_use(ctx: FileContext, plan: _UsePlan) -> str:
    """Point a dotted use at the runtime; returns the runtime module that must be imported."""
    target = plan.target
    assert target is not None
    node = plan.use.node
    module, _, _ = target.runtime_path.rpartition(".")
    if plan.use.in_getattr is not None:
        ctx.replace(node, _expr(module))  # getattr(ops, 'X') -> getattr(mmcv_runtime.ops, 'X')
        return module
    # Walk down the chain to the node naming exactly the matched path (``mmcv.ops.X`` of
    # ``mmcv.ops.X.forward``) and replace that node only.
    depth = plan.use.dotted.count(".") - _path_depth(ctx, plan)
    for _ in range(depth):
        assert isinstance(node, cst.Attribute)
        node = node.value
    ctx.replace(node, _expr(target.runtime_path))
    return module


def _path_depth(ctx: FileContext, plan: _UsePlan) -> int:
    """How many dots of the use's dotted text make up the matched path."""
    binding = ctx.binding(plan.use.head)
    assert binding is not None and plan.target is not None
    extra = plan.target.path.count(".") - binding.target.count(".")
    return extra


def _root_binding(ctx: FileContext, name: str, bindings: List[Binding]) -> None:
    """``import mmcv`` / ``import mmcv.ops`` / ``import mmcv._ext``: the name ``mmcv`` is shared."""
    plans = _plan_uses(ctx, bindings[0])
    runtime_modules = set()
    leftover_prefixes = set()  # families with uses that stay on mmcv
    other_uses = False
    for plan in plans:
        target = plan.target
        if target is None:
            other_uses = other_uses or plan.dynamic or name == "mmcv"
            continue
        converting = _use_convertible(ctx, plan)
        _report_use(ctx, plan, target, converting)
        if converting:
            runtime_modules.add(_rewrite_use(ctx, plan))
        elif not target.in_runtime:
            leftover_prefixes.add(target.path)
    if name != "mmcv":
        return
    anchor = next((b for b in bindings if b.scope is None), bindings[0])
    for binding in bindings:
        loaded = binding.module_import or ""
        target = classify(loaded, ctx, module_context=True) if loaded != "mmcv" else None
        if target is None:
            continue
        still_needed = any(p == target.path or p.startswith(target.path + ".") for p in leftover_prefixes)
        dropping = (not still_needed and _convertible(target, ctx)
                    and not ctx.is_suppressed(binding.alias, binding.statement))
        message = _message(target, ctx, dropping)
        if still_needed and not (ctx.inside_mmcv and target.rule in _NOT_IN_MMCV_TREE):
            kept = sorted(p for p in leftover_prefixes if p.startswith(target.path + "."))
            message = f"kept: {', '.join(kept)} still used through it; the runtime lacks them"
        ctx.add(binding.alias, rule=target.rule, kind=target.import_kind, symbol=target.symbol,
                status=target.status if dropping else PARTIAL if runtime_modules else UNCONVERTED,
                fixable=dropping, remaining=_remaining(target, ctx),
                statement=binding.statement, message=message)
        if not dropping:
            continue
        # No use of this namespace stays on mmcv: stop importing it (it would load mmcv._ext).
        # ``mmcv`` itself stays bound when something else still reads it.
        if other_uses or any(b is not binding and (b.module_import or "") == "mmcv" for b in bindings):
            ctx.replace(binding.alias.name, _expr("mmcv"))
        else:
            ctx.replace(binding.alias.name, _expr(target.runtime_path))
            ctx.note_import(binding.scope, target.runtime_path)
    for module in sorted(runtime_modules):
        ctx.ensure_import(module, anchor.statement, anchor.scope)
