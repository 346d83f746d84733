"""Safe in-place writes for ``mmcv-migrate apply --inplace``.

``write_atomic`` writes the exact bytes it is given (the engine keeps encoding, BOM and line
endings; nothing here transcodes or touches newlines) to a temp file in the target's directory,
fsyncs it, gives it the original file's permission bits and swaps it in with ``os.replace``, so a
reader sees either the old file or the new one, never a torn one. It refuses to write outside the
run's root or through a symlink. Stdlib only.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import Optional, Union

__all__ = ["UnsafeWriteError", "is_within", "write_atomic"]

_PathLike = Union[str, "os.PathLike[str]"]


class UnsafeWriteError(Exception):
    """A write that would leave the given root or go through a symlink."""


def _resolve(p: _PathLike) -> str:
    return os.path.normcase(os.path.realpath(os.fspath(p)))


def is_within(path: _PathLike, root: _PathLike) -> bool:
    """True when ``path`` resolved lies at or under ``root`` resolved."""
    rp = _resolve(path)
    rr = _resolve(root)
    if rp == rr:
        return True
    base = rr if rr.endswith(os.sep) else rr + os.sep
    return rp.startswith(base)


def _current_umask() -> int:
    try:  # linux: read it without changing it (os.umask swap is racy under threads)
        with open("/proc/self/status", "r", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(directory: str) -> None:
    flags = getattr(os, "O_DIRECTORY", 0) | os.O_RDONLY
    try:
        fd = os.open(directory, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: _PathLike, data: bytes, *, root: _PathLike) -> None:
    """Replace ``path`` with ``data`` atomically; keep the file's permission bits.

    Raises :class:`UnsafeWriteError` when ``path`` is a symlink, is not a regular file, or resolves
    outside ``root``. On any error the temp file is removed and the error re-raised; the original
    file is then untouched.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"write_atomic needs bytes, got {type(data).__name__}")
    path = Path(path)
    if os.path.islink(path):
        raise UnsafeWriteError(f"refusing to write through a symlink: {path}")
    if not is_within(path, root):
        raise UnsafeWriteError(f"refusing to write outside {root}: {path}")

    try:
        st: Optional[os.stat_result] = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise UnsafeWriteError(f"refusing to replace a non-regular file: {path}")
    mode = stat.S_IMODE(st.st_mode) if st is not None else (0o666 & ~_current_umask())

    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + path.name + ".", suffix=".mmcv-migrate.tmp")
    try:
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
            if hasattr(os, "fchmod"):
                os.fchmod(fd, mode)
            if st is not None and hasattr(os, "fchown"):
                # keep the owner when we may (e.g. running as root over a user's tree)
                try:
                    tst = os.fstat(fd)
                    if (tst.st_uid, tst.st_gid) != (st.st_uid, st.st_gid):
                        os.fchown(fd, st.st_uid, st.st_gid)
                except OSError:
                    pass
        finally:
            os.close(fd)
        if not hasattr(os, "fchmod"):  # pragma: no cover - windows
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(directory)
