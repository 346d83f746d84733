"""Per-file result cache, keyed on content hash, tool version, catalogue and runtime registry.

Like ruff's cache, it lets a re-scan of an unchanged tree skip parsing. It is content-addressed and
lives outside the scanned tree (``$MMCV_MIGRATE_CACHE_DIR``, else ``$XDG_CACHE_HOME/mmcv-migrate``,
else ``~/.cache/mmcv-migrate``), so a scan writes nothing into the user's project. Entries hold the
findings of a file and whether ``apply`` would change it; a file apply must rewrite is always
re-analysed (the new text is not stored). Any cache failure (read-only home, corrupt entry) falls
back to analysing the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Optional

from mmcv_migrate import __version__
from mmcv_migrate.findings import FileError, FileResult, Finding

CACHE_ENV = "MMCV_MIGRATE_CACHE_DIR"


def cache_root() -> Path:
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mmcv-migrate"


def key(data: bytes, module: Optional[str], is_package: bool) -> str:
    """A file's cache key; the module name matters because relative imports resolve through it."""
    digest = hashlib.blake2b(data, digest_size=20)
    digest.update(f"\0{module}\0{is_package}".encode())
    return digest.hexdigest()


class Cache:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @classmethod
    def open(cls, coverage_digest: str) -> Optional["Cache"]:
        namespace = hashlib.sha256(f"{__version__}\0{coverage_digest}".encode()).hexdigest()[:16]
        directory = cache_root() / namespace
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError:
            return None
        return cls(directory)

    def _file(self, key: str) -> Path:
        return self.directory / key[:2] / key

    def get(self, key: str, path: str, fix: bool) -> Optional[FileResult]:
        """The cached result for ``path``, or None (missing, corrupt, or apply must rewrite it)."""
        try:
            entry = json.loads(self._file(key).read_bytes())
            if fix and entry["changes"]:
                return None
            findings = [Finding.from_dict(dict(f, path=path)) for f in entry["findings"]]
            error = FileError(path, entry["error"]) if entry.get("error") else None
            return FileResult(path, findings=findings, error=error)
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def put(self, key: str, result: FileResult) -> None:
        entry = {
            "findings": [dict(f.to_dict(), path="") for f in result.findings],
            "error": result.error.message if result.error else None,
            "changes": result.changed or any(f.fixable for f in result.findings),
        }
        target = self._file(key)
        try:
            target.parent.mkdir(exist_ok=True)
            handle, temp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
            with os.fdopen(handle, "wb") as stream:
                stream.write(json.dumps(entry, separators=(",", ":")).encode())
            os.replace(temp, target)
        except OSError:
            pass
