"""The user's journey end to end: a detector built from mmcv.ops modules (fixtures/detector) stops
needing mmcv after ``mmcv-migrate apply --inplace``, and computes what compiled mmcv computed
(fixtures/detector/golden.pt, made with mmcv 2.2.0's CPU ops): outputs, every parameter gradient of
a training step, and the detections after batched NMS."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
DETECTOR = ROOT / "fixtures" / "detector"


def _run(args, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, MMCV_MIGRATE_CACHE_DIR=str(cwd / ".cache"),
               PYTHONPATH=os.pathsep.join([str(cwd), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def migrated(tmp_path_factory):
    project = tmp_path_factory.mktemp("detector") / "detector"
    shutil.copytree(DETECTOR, project, ignore=shutil.ignore_patterns("golden.pt", "__pycache__"))
    apply = _run(["-m", "mmcv_migrate.cli", "apply", "--inplace", "--no-cache", "."], project)
    run = _run(["run.py", str(project / "result.pt")], project)
    return project, apply, run


def test_apply_converts_every_use(migrated):
    project, apply, _ = migrated
    assert apply.returncode == 0, apply.stdout + apply.stderr  # nothing remains
    model = (project / "tinydet" / "model.py").read_text()
    assert "from mmcv_runtime.ops import ModulatedDeformConv2dPack, RoIAlign, batched_nms" in model
    assert not [line for line in model.splitlines() if line.startswith(("from mmcv", "import mmcv"))
                and not line.startswith(("from mmcv_runtime", "import mmcv_runtime"))]


def test_migrated_detector_matches_compiled_mmcv(migrated):
    project, _, run = migrated
    assert run.returncode == 0, run.stdout + run.stderr
    got = torch.load(project / "result.pt")
    expected = torch.load(DETECTOR / "golden.pt")
    for key in ("scores", "boxes"):
        torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-5)
    assert got["grads"].keys() == expected["grads"].keys()
    for name, grad in expected["grads"].items():
        torch.testing.assert_close(got["grads"][name], grad, rtol=1e-4, atol=1e-5, msg=lambda m: f"{name}: {m}")
    assert torch.equal(got["labels"], expected["labels"])
    torch.testing.assert_close(got["dets"], expected["dets"], rtol=1e-4, atol=1e-5)
