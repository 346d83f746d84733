"""Coverage: the join of the catalogue (what mmcv has) and the runtime registry (what we implement).

The tool must not import torch, so it reads the registry's static snapshot
(``mmcv_migrate/runtime_registry.json``, kept equal to the live registry by a test). The
``MMCV_MIGRATE_REGISTRY`` environment variable points at another snapshot file; the test-suite uses
it to run the rewrite fixtures against a fixed, known set of implemented ops.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Dict, FrozenSet, Iterable, List, Mapping, Optional

from mmcv_migrate.findings import CONVERTED, PARTIAL, UNCONVERTED, CoverageRow, Finding
from mmcv_migrate.rewrites.catalogue import Catalogue, load_catalogue

REGISTRY_ENV = "MMCV_MIGRATE_REGISTRY"
_OPS_HINT = "`mmcv-migrate ops` lists what the runtime covers"


@dataclass(frozen=True)
class RuntimeOp:
    op: str
    names: FrozenSet[str]
    ext_functions: FrozenSet[str]
    backward: str
    devices: tuple
    kernels: tuple


class Coverage:
    """What the runtime provides, per mmcv symbol (what the rules and reports ask)."""

    def __init__(self, catalogue: Catalogue, ops: Mapping[str, RuntimeOp], registry_digest: str) -> None:
        self.catalogue = catalogue
        self.ops = dict(ops)
        self._ext = frozenset(fn for op in self.ops.values() for fn in op.ext_functions)
        self.digest = hashlib.sha256((catalogue.digest + registry_digest).encode()).hexdigest()

    # --- per symbol ------------------------------------------------------------------------

    def entry(self, symbol: str) -> Optional[RuntimeOp]:
        op = self.catalogue.submodule_of(symbol)
        return self.ops.get(op) if op else None

    def _provided_name(self, symbol: str) -> bool:
        if symbol.startswith("mmcv._ext."):
            return symbol[len("mmcv._ext."):] in self._ext
        if symbol in ("mmcv.ops", "mmcv._ext") or symbol.startswith("mmcv.utils.ext_loader"):
            return True
        entry = self.entry(symbol)
        if entry is None:
            return False
        name = symbol.rpartition(".")[2]
        return name in entry.names or (name == entry.op and symbol == f"mmcv.ops.{entry.op}"
                                       and name not in self.catalogue.exports)

    def status(self, symbol: str) -> str:
        if not self._provided_name(symbol):
            return UNCONVERTED
        entry = self.entry(symbol)
        if entry is not None and entry.backward == "no" and not symbol.startswith("mmcv._ext."):
            return PARTIAL
        return CONVERTED

    def provides(self, symbol: str) -> bool:
        return self._provided_name(symbol)

    def implemented_ext_functions(self) -> FrozenSet[str]:
        return self._ext

    def describe(self, symbol: str) -> str:
        status = self.status(symbol)
        entry = self.entry(symbol)
        if status == CONVERTED:
            if entry is None:
                return "provided by mmcv_runtime"
            return f"provided by mmcv_runtime (backward: {entry.backward}; devices: {', '.join(entry.devices)})"
        if status == PARTIAL:
            return "mmcv_runtime provides the forward only (no backward yet)"
        op = self.catalogue.submodule_of(symbol)
        where = f" (mmcv.ops.{op})" if op and not symbol.startswith(f"mmcv.ops.{op}") else ""
        return f"mmcv_runtime does not implement {symbol}{where} yet; {_OPS_HINT}"

    # --- reports ---------------------------------------------------------------------------

    def rows(self, findings: Iterable[Finding]) -> List[CoverageRow]:
        """One row per symbol the findings use, with its runtime coverage."""
        uses: Counter = Counter()
        statuses: Dict[str, str] = {}
        for finding in findings:
            if finding.symbol.startswith(("mmcv.ops", "mmcv._ext", "mmcv.utils.ext_loader")):
                uses[finding.symbol] += 1
                statuses[finding.symbol] = self.status(finding.symbol)
        rows = []
        for symbol in sorted(uses):
            entry = self.entry(symbol)
            provided = self.provides(symbol)
            rows.append(CoverageRow(
                symbol=symbol,
                uses=uses[symbol],
                status=statuses[symbol],
                backward=(entry.backward if entry is not None and provided else "-"),
                kernels=list(entry.kernels) if entry is not None and provided else [],
                op=self.catalogue.submodule_of(symbol),
            ))
        return rows

    def op_rows(self):
        """One row per mmcv.ops submodule, for ``mmcv-migrate ops``."""
        from mmcv_migrate.reports import OpRow

        rows = []
        for name, sub in sorted(self.catalogue.submodules.items()):
            entry = self.ops.get(name)
            names = sorted(sub.names)
            ext = sorted(sub.ext_functions)
            versions = sorted({v for vs in sub.names.values() for v in vs})
            if entry is None:
                status = UNCONVERTED
            elif set(names) <= entry.names and set(ext) <= entry.ext_functions and entry.backward != "no":
                status = CONVERTED
            else:
                status = PARTIAL
            rows.append(OpRow(
                op=name, names=names, ext_functions=ext, status=status,
                backward=entry.backward if entry else "-", devices=list(entry.devices) if entry else [],
                kernels=list(entry.kernels) if entry else [], versions=versions,
            ))
        return rows


def _read_registry() -> bytes:
    override = os.environ.get(REGISTRY_ENV)
    if override:
        with open(override, "rb") as handle:
            return handle.read()
    return resources.files("mmcv_migrate").joinpath("runtime_registry.json").read_bytes()


@lru_cache(maxsize=None)
def _load(registry_bytes: bytes) -> Coverage:
    data = json.loads(registry_bytes)
    ops = {
        name: RuntimeOp(
            op=name,
            names=frozenset(entry.get("names", ())),
            ext_functions=frozenset(entry.get("ext_functions", ())),
            backward=entry.get("backward", "no"),
            devices=tuple(entry.get("devices", ())),
            kernels=tuple(entry.get("kernels", ())),
        )
        for name, entry in data.get("ops", {}).items()
    }
    return Coverage(load_catalogue(), ops, hashlib.sha256(registry_bytes).hexdigest())


def load_coverage(registry: Optional[str] = None) -> Coverage:
    """The coverage for a registry snapshot file: by default the shipped one (or ``$MMCV_MIGRATE_REGISTRY``)."""
    if registry is not None:
        with open(registry, "rb") as handle:
            return _load(handle.read())
    return _load(_read_registry())
