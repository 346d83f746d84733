"""Tests for mmcv_migrate.discovery (file discovery and module names)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mmcv_migrate.discovery import (
    DEFAULT_EXCLUDES,
    DiscoveryError,
    SourceFile,
    discover,
    module_name,
)

needs_symlinks = pytest.mark.skipif(not hasattr(os, "symlink") or os.name == "nt", reason="symlinks")


def touch(root: Path, *rels: str, text: str = "x = 1\n") -> None:
    for rel in rels:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def rels(files) -> list:
    return [f.rel for f in files]


@pytest.fixture(autouse=True)
def _cwd_elsewhere(tmp_path_factory, monkeypatch):
    # cwd outside the trees, so only root-relative matching is in play unless a test changes it
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


# ---------------------------------------------------------------- basics


def test_walks_py_only_sorted(tmp_path):
    touch(tmp_path, "b.py", "a.py", "pkg/__init__.py", "pkg/z.py", "pkg/sub/m.py", "notes.txt", "stub.pyi", "c.pyc")
    files = discover([tmp_path])
    assert rels(files) == ["a.py", "b.py", "pkg/__init__.py", "pkg/sub/m.py", "pkg/z.py"]
    assert files == sorted(files, key=lambda f: (f.root, f.rel))
    for f in files:
        assert isinstance(f, SourceFile)
        assert f.path.is_absolute() and f.root.is_absolute()
        assert f.root == tmp_path
        assert f.path == tmp_path / f.rel


def test_relative_path_argument_gives_absolute(tmp_path, monkeypatch):
    touch(tmp_path, "proj/a.py")
    monkeypatch.chdir(tmp_path)
    files = discover(["proj"])
    assert files == [SourceFile(path=tmp_path / "proj/a.py", root=tmp_path / "proj", rel="a.py")]


def test_nonexistent_path_raises_naming_it(tmp_path):
    touch(tmp_path, "a.py")
    missing = tmp_path / "nope"
    with pytest.raises(DiscoveryError, match="nope"):
        discover([tmp_path, missing])


def test_file_argument(tmp_path):
    touch(tmp_path, "pkg/a.py", "pkg/b.py")
    write(tmp_path / "bin/runme", "import mmcv\n")  # no extension: explicit, so taken
    files = discover([tmp_path / "pkg/a.py", tmp_path / "bin/runme"])
    assert [(f.root, f.rel) for f in files] == [(tmp_path / "bin", "runme"), (tmp_path / "pkg", "a.py")]
    assert files[1].path == tmp_path / "pkg/a.py"


def test_file_argument_excluded(tmp_path, monkeypatch):
    touch(tmp_path, "a/b/c.py", "a/b/x_pb2.py", "a/b/keep.py")
    assert discover([tmp_path / "a/b/x_pb2.py"], excludes=["*_pb2.py"]) == []
    monkeypatch.chdir(tmp_path)
    assert discover(["a/b/c.py"], excludes=["a/b/c.py"]) == []
    assert rels(discover(["a/b/keep.py"], excludes=["a/b/c.py"])) == ["keep.py"]


def test_file_argument_inside_default_exclude_is_taken(tmp_path):
    touch(tmp_path, "build/gen.py")
    assert rels(discover([tmp_path / "build/gen.py"])) == ["gen.py"]
    assert discover([tmp_path]) == []


# ---------------------------------------------------------------- default excludes


def test_default_excludes_pruned(tmp_path):
    touch(tmp_path, "src/a.py")
    for d in DEFAULT_EXCLUDES:
        touch(tmp_path, f"{d}/x.py", f"src/{d}/deep/y.py")
    touch(tmp_path, "myenv/pyvenv.cfg", "myenv/lib/python3.11/mod.py")
    touch(tmp_path, "src/nested/.customvenv/pyvenv.cfg", "src/nested/.customvenv/bin/t.py")
    touch(tmp_path, "src/nested/ok.py")
    # names that merely resemble excluded ones stay
    touch(tmp_path, "src/builder/b.py", "src/environment/e.py", "src/env.py", "src/build.py")
    assert rels(discover([tmp_path])) == [
        "src/a.py",
        "src/build.py",
        "src/builder/b.py",
        "src/env.py",
        "src/environment/e.py",
        "src/nested/ok.py",
    ]


# ---------------------------------------------------------------- --exclude


@pytest.fixture
def tree(tmp_path):
    touch(
        tmp_path,
        "main.py",
        "tests/test_a.py",
        "pkg/tests/test_b.py",
        "configs/base.py",
        "configs/sub/c.py",
        "pkg/configs/d.py",
        "pkg/msg_pb2.py",
        "a/b/c.py",
        "a/b/d.py",
    )
    return tmp_path


def test_exclude_basename_dir(tree):
    assert "tests/test_a.py" not in rels(discover([tree], ["tests"]))
    assert "pkg/tests/test_b.py" not in rels(discover([tree], ["tests"]))


def test_exclude_anchored_glob(tree):
    got = rels(discover([tree], ["configs/*"]))
    assert "configs/base.py" not in got and "configs/sub/c.py" not in got
    assert "pkg/configs/d.py" in got  # pattern with a slash is relative to the root


def test_exclude_file_glob_and_path(tree):
    got = rels(discover([tree], ["*_pb2.py", "a/b/c.py"]))
    assert got == [
        "a/b/d.py",
        "configs/base.py",
        "configs/sub/c.py",
        "main.py",
        "pkg/configs/d.py",
        "pkg/tests/test_b.py",
        "tests/test_a.py",
    ]


def test_exclude_relative_to_cwd_and_absolute(tree, monkeypatch):
    monkeypatch.chdir(tree)
    # scanning a sub-root: a cwd-relative pattern still applies
    assert rels(discover(["a"], ["a/b/c.py"])) == ["b/d.py"]
    # an absolute path pattern
    assert rels(discover([tree / "a"], [str(tree / "a/b/d.py")])) == ["b/c.py"]


def test_exclude_prunes_without_walking(tree, monkeypatch):
    seen = []
    real_scandir = os.scandir

    def spy(p="."):
        seen.append(os.fspath(p))
        return real_scandir(p)

    monkeypatch.setattr(os, "scandir", spy)
    discover([tree], ["tests", "configs/"])
    assert not any(s.endswith(os.sep + "tests") or s.endswith(os.sep + "configs") for s in seen)


# ---------------------------------------------------------------- .gitignore


def test_nested_gitignore_negation_and_dir_only(tmp_path):
    write(tmp_path / ".gitignore", "*_gen.py\n!keep_gen.py\nout/\n")
    touch(
        tmp_path,
        "a_gen.py",
        "keep_gen.py",
        "src/b_gen.py",
        "out/o.py",
        "src/out/o2.py",
        "src/ok.py",
        "sub/x.py",
        "sub/secret.py",
        "sub/deep/secret.py",
        "sub/deep/c_gen.py",
    )
    # a file named like a dir-only pattern is not matched by it
    write(tmp_path / "src/out.py", "x = 1\n")
    # nested file: applies to its own subtree, overrides the parent (re-includes *_gen.py)
    write(tmp_path / "sub/.gitignore", "/secret.py\n!*_gen.py\n")
    assert rels(discover([tmp_path])) == [
        "keep_gen.py",
        "src/ok.py",
        "src/out.py",
        "sub/deep/c_gen.py",
        "sub/deep/secret.py",  # '/secret.py' is anchored to sub/
        "sub/x.py",
    ]


def test_gitignored_dir_cannot_be_reincluded(tmp_path):
    write(tmp_path / ".gitignore", "gen/\n!gen/keep.py\n")
    touch(tmp_path, "gen/keep.py", "a.py")
    assert rels(discover([tmp_path])) == ["a.py"]


def test_use_gitignore_false(tmp_path):
    write(tmp_path / ".gitignore", "*.py\n")
    touch(tmp_path, "a.py")
    assert rels(discover([tmp_path])) == []
    assert rels(discover([tmp_path], use_gitignore=False)) == ["a.py"]


def test_ancestor_gitignore_up_to_git_top(tmp_path):
    # /outer/.gitignore is above the work tree top: must not apply
    write(tmp_path / ".gitignore", "*.py\n")
    top = tmp_path / "repo"
    (top / ".git").mkdir(parents=True)
    write(top / ".gitignore", "proj/generated/\n*_skip.py\n")
    write(top / "proj/.gitignore", "local_only.py\n")
    touch(top, "proj/a.py", "proj/b_skip.py", "proj/generated/g.py", "proj/local_only.py", "proj/inner/c.py")
    assert rels(discover([top / "proj"])) == ["a.py", "inner/c.py"]
    # ancestors are only read when there is a work tree top above
    assert rels(discover([top / "proj"], use_gitignore=False)) == [
        "a.py",
        "b_skip.py",
        "generated/g.py",
        "inner/c.py",
        "local_only.py",
    ]


def test_no_git_top_ignores_ancestor_gitignore(tmp_path):
    write(tmp_path / ".gitignore", "*.py\n")
    touch(tmp_path, "proj/a.py")
    assert rels(discover([tmp_path / "proj"])) == ["a.py"]


def test_git_info_exclude(tmp_path):
    (tmp_path / ".git/info").mkdir(parents=True)
    write(tmp_path / ".git/info/exclude", "scratch/\n")
    touch(tmp_path, "scratch/s.py", "src/scratch/t.py", "src/a.py")
    assert rels(discover([tmp_path])) == ["src/a.py"]
    # also when scanning below the top
    assert rels(discover([tmp_path / "src"])) == ["a.py"]
    # .gitignore takes precedence over info/exclude
    write(tmp_path / ".gitignore", "!scratch/\n")
    assert rels(discover([tmp_path])) == ["scratch/s.py", "src/a.py", "src/scratch/t.py"]


def test_git_file_worktree_info_exclude(tmp_path):
    gitdir = tmp_path / "store/worktrees/wt"
    (tmp_path / "store/info").mkdir(parents=True)
    gitdir.mkdir(parents=True)
    write(gitdir / "commondir", "../..\n")
    write(tmp_path / "store/info/exclude", "tmp_*.py\n")
    top = tmp_path / "wt"
    write(top / ".git", f"gitdir: {gitdir}\n")
    touch(top, "a.py", "tmp_b.py")
    assert rels(discover([top])) == ["a.py"]


# ---------------------------------------------------------------- symlinks


@needs_symlinks
def test_symlinked_file_outside_root_skipped(tmp_path):
    outside = tmp_path / "outside"
    touch(outside, "evil.py")
    root = tmp_path / "root"
    touch(root, "a.py")
    os.symlink(outside / "evil.py", root / "link.py")
    assert rels(discover([root])) == ["a.py"]


@needs_symlinks
def test_symlinked_file_inside_root_deduped(tmp_path):
    touch(tmp_path, "pkg/real.py")
    os.symlink(tmp_path / "pkg/real.py", tmp_path / "alias.py")  # sorts before pkg/real.py
    os.symlink("real.py", tmp_path / "pkg/z_alias.py")
    os.symlink(tmp_path / "nothing.py", tmp_path / "broken.py")
    files = discover([tmp_path])
    # one entry per real file; the real path wins over links to it
    assert rels(files) == ["pkg/real.py"]


@needs_symlinks
def test_symlinked_file_inside_root_to_excluded_target_kept_once(tmp_path):
    touch(tmp_path, "build/gen.py")
    os.symlink(tmp_path / "build/gen.py", tmp_path / "gen_a.py")
    os.symlink(tmp_path / "build/gen.py", tmp_path / "gen_b.py")
    files = discover([tmp_path])
    assert rels(files) == ["gen_a.py"]
    assert files[0].path == tmp_path / "gen_a.py"  # as found, not resolved


@needs_symlinks
def test_directory_symlink_not_followed_incl_cycle(tmp_path):
    touch(tmp_path, "pkg/a.py")
    outside = tmp_path.parent / (tmp_path.name + "_outside")
    touch(outside, "o.py")
    os.symlink(tmp_path / "pkg", tmp_path / "pkg_link")
    os.symlink(tmp_path, tmp_path / "pkg/loop")  # cycle
    os.symlink(outside, tmp_path / "escape")
    assert rels(discover([tmp_path])) == ["pkg/a.py"]


@needs_symlinks
def test_symlinked_root_directory_is_walked(tmp_path):
    touch(tmp_path, "real/a.py")
    os.symlink(tmp_path / "real", tmp_path / "alias")
    files = discover([tmp_path / "alias"])
    assert [(f.root, f.rel) for f in files] == [(tmp_path / "alias", "a.py")]


@needs_symlinks
def test_file_argument_symlink_outside_its_dir_skipped(tmp_path):
    touch(tmp_path, "outside/t.py")
    (tmp_path / "d").mkdir()
    os.symlink(tmp_path / "outside/t.py", tmp_path / "d/l.py")
    assert discover([tmp_path / "d/l.py"]) == []


# ---------------------------------------------------------------- several roots


def test_overlapping_roots_dedupe(tmp_path):
    touch(tmp_path, "a.py", "sub/b.py", "sub/c.py")
    files = discover([tmp_path / "sub", tmp_path, tmp_path / "sub/b.py"])
    assert [(f.root, f.rel) for f in files] == [(tmp_path, "a.py"), (tmp_path, "sub/b.py"), (tmp_path, "sub/c.py")]
    # same root twice
    assert rels(discover([tmp_path, tmp_path])) == ["a.py", "sub/b.py", "sub/c.py"]


def test_multiple_roots_sorted(tmp_path):
    touch(tmp_path, "z/a.py", "a/z.py", "a/b.py")
    files = discover([tmp_path / "z", tmp_path / "a"])
    assert [(f.root.name, f.rel) for f in files] == [("a", "b.py"), ("a", "z.py"), ("z", "a.py")]


# ---------------------------------------------------------------- module_name


def test_module_name(tmp_path):
    touch(
        tmp_path,
        "proj/mmdet/__init__.py",
        "proj/mmdet/ops/__init__.py",
        "proj/mmdet/ops/nms.py",
        "proj/mmdet/nopkg/x.py",
        "proj/tools/train.py",
        "proj/setup.py",
    )
    by_rel = {f.rel: f for f in discover([tmp_path / "proj"])}
    assert module_name(by_rel["mmdet/ops/nms.py"]) == "mmdet.ops.nms"
    assert module_name(by_rel["mmdet/ops/__init__.py"]) == "mmdet.ops"
    assert module_name(by_rel["mmdet/__init__.py"]) == "mmdet"
    assert module_name(by_rel["mmdet/nopkg/x.py"]) is None
    assert module_name(by_rel["tools/train.py"]) is None
    assert module_name(by_rel["setup.py"]) is None


def test_module_name_not_bounded_by_root(tmp_path):
    touch(tmp_path, "mmdet/__init__.py", "mmdet/models/__init__.py", "mmdet/models/head.py")
    (f,) = [f for f in discover([tmp_path / "mmdet/models"]) if f.rel == "head.py"]
    assert module_name(f) == "mmdet.models.head"


def test_file_argument_not_subject_to_gitignore(tmp_path):
    write(tmp_path / ".gitignore", "gen_*.py\n")
    touch(tmp_path, "gen_a.py", "b.py")
    assert rels(discover([tmp_path])) == ["b.py"]
    assert rels(discover([tmp_path / "gen_a.py"])) == ["gen_a.py"]


def test_quick_miss_checker_agrees_with_pathspec():
    """The combined-regex fast path answers exactly what pathspec's own check answers."""
    from mmcv_migrate import discovery

    lines = ["__pycache__/", "*.py[cod]", "build/", "*.egg-info/", "data/", "!data/keep.py", "work_dirs/",
             "/top_only.py", "docs/**/gen_*.py", "!docs/**/gen_keep.py", "*.log", "a/b/", "[Tt]emp*"]
    spec = discovery._compile(lines)
    check = discovery._make_checker(spec)
    paths = ["x.py", "a.pyc", "build/x.py", "src/build/x.py", "pkg.egg-info/PKG", "data/x.py", "data/keep.py",
             "work_dirs/exp/cfg.py", "top_only.py", "sub/top_only.py", "docs/a/b/gen_x.py", "docs/a/gen_keep.py",
             "run.log", "a/b/c.py", "a/c.py", "Temp.py", "temp/x.py", "deep/__pycache__/m.py"]
    for path in paths:
        assert check(path) == spec.check_file(path).include, path
