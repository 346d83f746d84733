"""The one-line-per-finding text that the ``*.findings.txt`` fixture expectations hold."""

from __future__ import annotations


def findings_text(findings) -> str:
    lines = []
    for f in findings:
        flags = [flag for flag, on in (("fixable", f.fixable), ("remaining", f.remaining),
                                        ("suppressed", f.suppressed)) if on]
        lines.append(f"{f.line}:{f.column} {f.rule} {f.kind} {f.symbol} {f.status} {' '.join(flags)}".rstrip())
    return "\n".join(lines) + "\n"
