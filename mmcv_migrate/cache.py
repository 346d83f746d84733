"""Per-file result cache, keyed on content hash, tool version, rule code, catalogue and runtime registry.

Like ruff's cache, it lets a re-scan of an unchanged tree skip parsing. A stat index per file set
(path -> size, mtime, inode, module name, content key) lets a re-scan skip even reading files that
have not changed since the index was written; a file modified within the same second as the index
was written is never trusted (the "racy" case git also guards against). It is content-addressed and
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
import time
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from mmcv_migrate import __version__
from mmcv_migrate.findings import FileError, FileResult, Finding

CACHE_ENV = "MMCV_MIGRATE_CACHE_DIR"
NOT_A_CANDIDATE = "-"  # index value: the prefilter rejected the file, it holds no use
_RACY_SECONDS = 2.0


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


@lru_cache(maxsize=None)
def analysis_digest() -> str:
    """Digest of the code that turns a file into findings (the engine and the rules), so that a
    changed rule never serves results cached by an older one, even within one version (a dev install)."""
    from mmcv_migrate import engine, findings
    from mmcv_migrate import rewrites

    digest = hashlib.sha256()
    sources = [Path(engine.__file__), Path(findings.__file__)]
    sources += sorted(Path(rewrites.__file__).parent.glob("*.py"))
    for source in sources:
        try:
            digest.update(source.name.encode() + b"\0" + source.read_bytes())
        except OSError:
            digest.update(source.name.encode() + b"\0?")
    return digest.hexdigest()


class Cache:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @classmethod
    def open(cls, coverage_digest: str) -> Optional["Cache"]:
        namespace = hashlib.sha256(
            f"{__version__}\0{coverage_digest}\0{analysis_digest()}".encode()).hexdigest()[:16]
        directory = cache_root() / namespace
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError:
            return None
        return cls(directory)

    def _file(self, key: str) -> Path:
        return self.directory / key[:2] / key

    def stat_index(self, files: Sequence) -> "StatIndex":
        """The stat index of this set of files (keyed on their resolved roots)."""
        roots = sorted({str(Path(root).resolve()) for root in {f.root for f in files}})
        name = hashlib.sha256("\0".join(roots).encode()).hexdigest()[:16]
        return StatIndex(self.directory / f"index-{name}.json")

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


class StatIndex:
    """path -> (size, mtime_ns, inode, module, content key) from the previous run."""

    def __init__(self, location: Path) -> None:
        self.location = location
        self.entries: Dict[str, List] = {}
        self.written_at = 0.0
        self.dirty = False
        try:
            data = json.loads(location.read_bytes())
            self.entries, self.written_at = data["entries"], float(data["written_at"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        self.started_at = time.time()

    @staticmethod
    def stamp(file) -> Optional[Tuple[int, int, int]]:
        try:
            info = os.stat(file.path)
        except OSError:
            return None
        return info.st_size, info.st_mtime_ns, info.st_ino

    def lookup(self, file, stamp, module: Optional[str]) -> Optional[str]:
        entry = self.entries.get(str(file.path))
        if entry is None or stamp is None:
            return None
        size, mtime_ns, inode, known_module, key = entry
        if (size, mtime_ns, inode) != tuple(stamp) or known_module != module:
            return None
        if mtime_ns / 1e9 >= self.written_at - _RACY_SECONDS:
            self.dirty = True  # re-read it now; a later index trusts it
            return None
        return key

    def record(self, file, stamp, module: Optional[str], key: Optional[str]) -> None:
        if key is None:
            return
        entry = [stamp[0], stamp[1], stamp[2], module, key]
        if self.entries.get(str(file.path)) != entry:
            self.entries[str(file.path)] = entry
            self.dirty = True

    def save(self) -> None:
        if not self.dirty and self.written_at:
            return
        payload = {"written_at": self.started_at, "entries": self.entries}
        try:
            handle, temp = tempfile.mkstemp(dir=self.location.parent, suffix=".tmp")
            with os.fdopen(handle, "wb") as stream:
                stream.write(json.dumps(payload, separators=(",", ":")).encode())
            os.replace(temp, self.location)
        except OSError:
            pass
