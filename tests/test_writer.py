"""Tests for mmcv_migrate.writer (atomic, mode-keeping, root-confined writes)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from mmcv_migrate import writer
from mmcv_migrate.writer import UnsafeWriteError, is_within, write_atomic

posix_only = pytest.mark.skipif(os.name == "nt", reason="posix modes / symlinks")


def leftovers(d: Path) -> list:
    return [p.name for p in d.iterdir() if p.name.endswith(".mmcv-migrate.tmp")]


@posix_only
@pytest.mark.parametrize("mode", [0o755, 0o600, 0o644, 0o640])
def test_mode_preserved(tmp_path, mode):
    f = tmp_path / "tool.py"
    f.write_bytes(b"old\n")
    os.chmod(f, mode)
    write_atomic(f, b"new\n", root=tmp_path)
    assert f.read_bytes() == b"new\n"
    assert stat.S_IMODE(f.stat().st_mode) == mode
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "data",
    [
        b"import mmcv\r\nx = 1\r\n",  # CRLF
        b"\xef\xbb\xbfimport mmcv\n",  # UTF-8 BOM
        b"# -*- coding: latin-1 -*-\ns = '\xe9\xe8'\n",  # latin-1 bytes
        b"a\rb\r\n\n",  # mixed
        b"",  # empty
        bytes(range(256)) * 64,  # every byte, larger than one write
    ],
)
def test_exact_bytes(tmp_path, data):
    f = tmp_path / "m.py"
    f.write_bytes(b"something else\n")
    write_atomic(f, data, root=tmp_path)
    assert f.read_bytes() == data
    assert leftovers(tmp_path) == []


def test_accepts_bytearray_and_rejects_str(tmp_path):
    f = tmp_path / "m.py"
    f.write_bytes(b"x")
    write_atomic(f, bytearray(b"yz"), root=tmp_path)
    assert f.read_bytes() == b"yz"
    with pytest.raises(TypeError):
        write_atomic(f, "text", root=tmp_path)  # type: ignore[arg-type]


def test_replaces_inode_atomically(tmp_path):
    f = tmp_path / "m.py"
    f.write_bytes(b"old")
    before = f.stat().st_ino
    write_atomic(f, b"new", root=tmp_path)
    assert f.read_bytes() == b"new"
    if os.name != "nt":
        assert f.stat().st_ino != before  # a rename, not an in-place rewrite


def test_new_file_gets_umask_mode(tmp_path):
    f = tmp_path / "sub" / "n.py"
    f.parent.mkdir()
    write_atomic(f, b"x = 1\n", root=tmp_path)
    assert f.read_bytes() == b"x = 1\n"
    if os.name != "nt":
        mask = os.umask(0)
        os.umask(mask)
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~mask


def test_refuses_outside_root(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    other = tmp_path / "other.py"
    other.write_bytes(b"keep")
    with pytest.raises(UnsafeWriteError):
        write_atomic(other, b"x", root=root)
    with pytest.raises(UnsafeWriteError):
        write_atomic(root / ".." / "other.py", b"x", root=root)
    assert other.read_bytes() == b"keep"
    assert leftovers(tmp_path) == []


@posix_only
def test_refuses_symlink(tmp_path):
    target = tmp_path / "real.py"
    target.write_bytes(b"keep")
    link = tmp_path / "link.py"
    os.symlink(target, link)
    with pytest.raises(UnsafeWriteError, match="symlink"):
        write_atomic(link, b"x", root=tmp_path)
    assert target.read_bytes() == b"keep"
    assert link.is_symlink()
    assert leftovers(tmp_path) == []


@posix_only
def test_refuses_through_symlinked_dir_leaving_root(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "t.py").write_bytes(b"keep")
    os.symlink(outside, root / "d")
    with pytest.raises(UnsafeWriteError):
        write_atomic(root / "d" / "t.py", b"x", root=root)
    assert (outside / "t.py").read_bytes() == b"keep"


def test_refuses_directory(tmp_path):
    (tmp_path / "d.py").mkdir()
    with pytest.raises(UnsafeWriteError):
        write_atomic(tmp_path / "d.py", b"x", root=tmp_path)


def test_temp_cleaned_on_replace_failure(tmp_path, monkeypatch):
    f = tmp_path / "m.py"
    f.write_bytes(b"original")

    def boom(src, dst):
        assert Path(src).exists()
        assert Path(src).name.startswith(".m.py.") and src.endswith(".mmcv-migrate.tmp")
        raise OSError("disk on fire")

    monkeypatch.setattr(writer.os, "replace", boom)
    with pytest.raises(OSError, match="disk on fire"):
        write_atomic(f, b"new", root=tmp_path)
    assert f.read_bytes() == b"original"
    assert leftovers(tmp_path) == []


def test_temp_cleaned_on_write_failure(tmp_path, monkeypatch):
    f = tmp_path / "m.py"
    f.write_bytes(b"original")

    def boom(fd):
        raise OSError("fsync failed")

    monkeypatch.setattr(writer.os, "fsync", boom)
    with pytest.raises(OSError, match="fsync failed"):
        write_atomic(f, b"new", root=tmp_path)
    assert f.read_bytes() == b"original"
    assert leftovers(tmp_path) == []


def test_is_within(tmp_path):
    (tmp_path / "a/b").mkdir(parents=True)
    assert is_within(tmp_path / "a/b/c.py", tmp_path)
    assert is_within(tmp_path, tmp_path)
    assert is_within(tmp_path / "a" / ".." / "a", tmp_path / "a")
    assert not is_within(tmp_path / "a" / ".." / "x.py", tmp_path / "a")
    assert not is_within(tmp_path.parent / (tmp_path.name + "2") / "x.py", tmp_path)  # prefix trap
    if os.name != "nt":
        os.symlink(tmp_path / "a", tmp_path / "alias")
        assert is_within(tmp_path / "alias/b", tmp_path / "a")
