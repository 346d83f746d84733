"""Migrating an mmcv tree (fixtures/mmcv_tree, a miniature mmcv): ``apply --inplace`` points its
``ext_loader`` imports at the runtime, after which ``import mmcv.ops`` works with no compiled ``_ext``
and mmcv's own wrappers (autograd Functions included) compute what the runtime's ops compute."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TREE = ROOT / "fixtures" / "mmcv_tree"


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, MMCV_MIGRATE_CACHE_DIR=str(cwd / ".cache"))
    return subprocess.run([sys.executable, "-m", "mmcv_migrate.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def _python(code: str, tree: Path) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter that sees the tree's ``mmcv`` first (and no other mmcv)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tree), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def migrated(tmp_path_factory):
    tree = tmp_path_factory.mktemp("tree") / "mmcv_tree"
    shutil.copytree(TREE, tree)
    before = _python("import mmcv.ops", tree)
    result = _cli("apply", "--inplace", "--no-cache", ".", cwd=tree)
    again = _cli("apply", "--no-cache", ".", cwd=tree)
    return tree, before, result, again


def test_the_fixture_still_has_an_op_the_runtime_lacks():
    import mmcv_runtime.ext as ext

    assert "tin_shift_forward" not in ext.IMPLEMENTED, (
        "the runtime implements tin_shift now: give fixtures/mmcv_tree another op it lacks")


def test_unmigrated_tree_needs_the_compiled_ext(migrated):
    _, before, _, _ = migrated
    assert before.returncode != 0 and "No module named 'mmcv._ext'" in before.stderr


def test_apply_rewrites_only_the_loader_imports(migrated):
    tree, _, result, again = migrated
    # tin_shift is not in the runtime: its calls remain, so apply --inplace exits 1
    assert result.returncode == 1, result.stdout + result.stderr
    changed = []
    for original in sorted(TREE.rglob("*.py")):
        rel = original.relative_to(TREE)
        new = (tree / rel).read_text()
        if new != original.read_text():
            changed.append(str(rel))
            removed = set(original.read_text().splitlines()) - set(new.splitlines())
            assert all("ext_loader" in line for line in removed), (rel, removed)
    assert changed == ["mmcv/ops/modulated_deform_conv.py", "mmcv/ops/nms.py", "mmcv/ops/roi_align.py",
                       "mmcv/ops/tin_shift.py", "mmcv/utils/__init__.py"]
    assert "from mmcv_runtime import ext_loader" in (tree / "mmcv/ops/nms.py").read_text()
    assert again.returncode == 0 and "+++" not in again.stdout, again.stdout  # idempotent: no diff pending


def test_migrated_wrappers_compute_what_the_runtime_computes(migrated):
    tree, _, _, _ = migrated
    run = _python("""
        import torch
        import mmcv.ops
        import mmcv_runtime.ops as rt
        assert mmcv.ops.__file__.startswith(%r)

        g = torch.Generator().manual_seed(0)
        xy = torch.rand(200, 2, generator=g) * 100
        boxes = torch.cat([xy, xy + 5 + torch.rand(200, 2, generator=g) * 40], 1)
        scores = torch.rand(200, generator=g)
        dets, keep = mmcv.ops.nms(boxes, scores, 0.5)
        ref_dets, ref_keep = rt.nms(boxes, scores, 0.5)
        assert torch.equal(keep, ref_keep) and torch.equal(dets, ref_dets)

        x = torch.randn(2, 8, 24, 24, generator=g, dtype=torch.float64)
        rois = torch.tensor([[0, 1.5, 2, 20, 14], [1, -3, 4, 10, 30], [0, 5, 5, 5.5, 6]], dtype=torch.float64)
        for mode in ("avg", "max"):
            a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
            out = mmcv.ops.RoIAlign(3, 0.5, 2, mode, True)(a, rois)
            ref = rt.RoIAlign(3, 0.5, 2, mode, True)(b, rois)
            out.square().sum().backward(); ref.square().sum().backward()
            assert torch.equal(out, ref) and torch.equal(a.grad, b.grad), mode

        inputs = [torch.randn(2, 4, 9, 9), torch.randn(2, 18, 9, 9), torch.rand(2, 9, 9, 9),
                  torch.randn(6, 4, 3, 3), torch.randn(6)]
        mine = [t.double().requires_grad_() for t in inputs]
        theirs = [t.double().requires_grad_() for t in inputs]
        out = mmcv.ops.modulated_deform_conv2d(*mine, 1, 1, 1, 1, 1)
        ref = rt.modulated_deform_conv2d(*theirs, 1, 1, 1, 1, 1)
        out.square().sum().backward(); ref.square().sum().backward()
        assert torch.allclose(out, ref, rtol=0, atol=1e-12)
        for p, q in zip(mine, theirs):
            assert torch.allclose(p.grad, q.grad, rtol=0, atol=1e-10)
        small = [torch.randn(1, 2, 5, 5), torch.randn(1, 18, 5, 5) * 2, torch.rand(1, 9, 5, 5),
                 torch.randn(3, 2, 3, 3), torch.randn(3)]
        assert torch.autograd.gradcheck(lambda *t: mmcv.ops.modulated_deform_conv2d(*t, 1, 1, 1, 1, 1),
                                        [t.double().requires_grad_() for t in small], fast_mode=True)

        try:
            mmcv.ops.tin_shift(torch.randn(1, 4, 8, 5), torch.zeros(1, 2, dtype=torch.int32))
        except NotImplementedError as error:
            assert "tin_shift_forward" in str(error), error
        else:
            raise AssertionError("tin_shift must say it is not implemented")
        print("ok")
    """ % str(tree), tree)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stdout + run.stderr
