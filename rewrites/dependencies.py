"""mmcv requirements in setup.py: the string literals of ``install_requires=[...]`` and
``extras_require={...: [...]}`` (also through a name assigned a list/dict literal in the file).

A plain string is rewritten like a requirements line (see :mod:`.requirement_spec`): only the name
changes, inside the same quotes, and ``"mmcv-migrate"`` is added after the first rewritten one
unless the file already lists it. A requirement built at run time (f-string, concatenation, call)
that mentions mmcv is reported, never rewritten.
"""

from __future__ import annotations

import os
from typing import Iterator, List, Optional, Tuple

import libcst as cst

from mmcv_migrate.findings import KIND_DEPENDENCY, UNCONVERTED
from mmcv_migrate.rewrites import requirement_spec as spec
from mmcv_migrate.rewrites.context import FileContext

_KEYWORDS = ("install_requires", "extras_require")


class _Lists(cst.CSTVisitor):
    """Keyword values of ``install_requires``/``extras_require`` and single-name assignments."""

    def __init__(self) -> None:
        super().__init__()
        self.values: List[cst.BaseExpression] = []
        self.assigned: dict = {}

    def visit_Arg(self, node: cst.Arg) -> None:
        if node.keyword is not None and node.keyword.value in _KEYWORDS:
            self.values.append(node.value)

    def visit_Assign(self, node: cst.Assign) -> None:
        if len(node.targets) == 1 and isinstance(node.targets[0].target, cst.Name):
            self.assigned.setdefault(node.targets[0].target.value, node.value)


def _requirement_lists(module: cst.Module) -> List[cst.List]:
    found = _Lists()
    module.visit(found)
    lists: List[cst.List] = []
    for value in found.values:
        if isinstance(value, cst.Name):
            value = found.assigned.get(value.value, value)
        if isinstance(value, cst.List):
            lists.append(value)
        elif isinstance(value, cst.Dict):
            lists.extend(e.value for e in value.elements if isinstance(e, cst.DictElement)
                         and isinstance(e.value, cst.List))
        elif isinstance(value, cst.Call) and isinstance(value.func, cst.Name) and value.func.value == "dict":
            lists.extend(a.value for a in value.args if a.keyword is not None and isinstance(a.value, cst.List))
    unique = {id(node): node for node in lists}
    return list(unique.values())


def _string_parts(node: cst.SimpleString) -> Optional[Tuple[str, str, str]]:
    """(prefix + quote, content, quote) of a plain one-line string whose text is its value."""
    quote = node.quote
    prefix = node.prefix
    if "b" in prefix.lower() or len(quote) == 3:
        return None
    content = node.value[len(prefix) + len(quote): -len(quote)]
    if "\\" in content:
        return None
    return node.value[: len(prefix) + len(quote)], content, quote


def _items(lists: List[cst.List]) -> Iterator[Tuple[cst.List, int, cst.BaseExpression]]:
    for node in lists:
        for index, element in enumerate(node.elements):
            if isinstance(element, cst.Element):
                yield node, index, element.value


def run(ctx: FileContext) -> None:
    if os.path.basename(ctx.path) != "setup.py" or "mmcv" not in ctx.module.code.lower():
        return
    items = list(_items(_requirement_lists(ctx.module)))
    lists_runtime = False
    for _, _, value in items:
        if isinstance(value, cst.SimpleString) and _string_parts(value):
            req = spec.parse(_string_parts(value)[1])
            lists_runtime |= req is not None and req.canonical == spec.RUNTIME_DISTRIBUTION
    added = lists_runtime
    for owner, index, value in items:
        if not isinstance(value, cst.SimpleString) or _string_parts(value) is None:
            _report_dynamic(ctx, value)
            continue
        opening, content, quote = _string_parts(value)
        req = spec.parse(content)
        verdict = spec.classify(req) if req is not None else None
        if verdict is None:
            continue
        finding = ctx.add(value, rule=spec.RULE, kind=KIND_DEPENDENCY, symbol=verdict.symbol,
                          status=verdict.status, fixable=verdict.fixable, remaining=verdict.remaining,
                          message=verdict.message)
        if not (finding.fixable and verdict.changes):
            continue
        new = (content[: req.name_start] + (verdict.new_name or req.name) + content[req.name_end: req.spec_end]
               + verdict.append_spec + content[req.spec_end:])
        ctx.replace(value, value.with_changes(value=f"{opening}{new}{quote}"))
        if not added:
            added = True
            entry = cst.SimpleString(f"{quote}{spec.RUNTIME_DISTRIBUTION}{quote}")
            ctx.replace(owner, lambda updated, i=index, e=entry: _insert_after(updated, i, e))


def _report_dynamic(ctx: FileContext, value: cst.BaseExpression) -> None:
    code = ctx.module.code_for_node(value)
    if "mmcv" not in code.lower():
        return
    ctx.add(value, rule=spec.RULE, kind=KIND_DEPENDENCY, symbol="mmcv", status=UNCONVERTED,
            fixable=False, remaining=True,
            message=f"`{code}` is built at run time and may pull mmcv's compiled ops; write `mmcv-lite` "
                    "(2.x) or `mmcv` below 2.0 (1.x) by hand and add `mmcv-migrate`")


def _insert_after(node: cst.List, index: int, entry: cst.SimpleString) -> cst.List:
    """``node`` with ``entry`` after element ``index``, laid out like the list's other items."""
    elements = list(node.elements)
    current = elements[index]
    comma = current.comma
    if not isinstance(comma, cst.Comma):
        # the last item: borrow the separator of the item before (one per line, or inline)
        previous = elements[index - 1].comma if index > 0 else None
        comma = previous if isinstance(previous, cst.Comma) else cst.Comma(whitespace_after=cst.SimpleWhitespace(" "))
        comma = _without_comment(comma, keep_lines=False)
        closing = node.rbracket.whitespace_before
        if isinstance(closing, cst.ParenthesizedWhitespace) and isinstance(comma.whitespace_after,
                                                                           cst.ParenthesizedWhitespace):
            # the item's trailing comment sits before "]": keep it on the item's line
            comma = comma.with_changes(whitespace_after=comma.whitespace_after.with_changes(
                first_line=closing.first_line))
            node = node.with_changes(rbracket=node.rbracket.with_changes(whitespace_before=closing.with_changes(
                first_line=cst.TrailingWhitespace(newline=closing.first_line.newline))))
        elements[index] = current.with_changes(comma=comma)
        elements.insert(index + 1, cst.Element(entry))
        return node.with_changes(elements=elements)
    # the comment after this item stays on its line; blank lines before the next item stay before it
    elements[index] = current.with_changes(comma=_without_comment(comma, keep_lines=False, keep_comment=True))
    elements.insert(index + 1, cst.Element(entry, comma=_without_comment(comma, keep_lines=True)))
    return node.with_changes(elements=elements)


def _without_comment(comma: cst.Comma, *, keep_lines: bool, keep_comment: bool = False) -> cst.Comma:
    after = comma.whitespace_after
    if not isinstance(after, cst.ParenthesizedWhitespace):
        return comma
    first = after.first_line if keep_comment else cst.TrailingWhitespace(newline=after.first_line.newline)
    return comma.with_changes(whitespace_after=after.with_changes(
        first_line=first, empty_lines=after.empty_lines if keep_lines else ()))
