"""Zero-touch mode: ``import mmcv._ext`` resolves to mmcv_runtime.ext (mmcv_runtime.shim, `mmcv-migrate shim`).

CI tests use a fake, mmcv-shaped package (mmcv's own ``load_ext`` logic and an op wrapper calling
``ext_module.nms``) in a temp dir. The real check, mmcv-lite 2.2.0 from PyPI in a throwaway venv, is
opt-in: ``MMCV_MIGRATE_NETWORK_TESTS=1`` (it downloads packages).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from mmcv_migrate.cli import main
from mmcv_migrate.shim import PTH_NAME, SITE_DIR_ENV
from mmcv_runtime import model_registry, shim

REPO = Path(__file__).resolve().parents[1]

# mmcv's ext_loader.load_ext (mmcv 1.7.2 and 2.2.0 alike, non-parrots branch) and an nms wrapper.
FAKE_MMCV = {
    "mmcv/__init__.py": "",
    "mmcv/version.py": "__version__ = '2.2.0'\n",
    "mmcv/utils/__init__.py": "",
    "mmcv/utils/ext_loader.py": """
        import importlib

        def load_ext(name, funcs):
            ext = importlib.import_module('mmcv.' + name)
            for fun in funcs:
                assert hasattr(ext, fun), f'{fun} miss in module {name}'
            return ext
        """,
    "mmcv/ops/__init__.py": "from .nms import nms\n",
    "mmcv/ops/nms.py": """
        from ..utils import ext_loader

        ext_module = ext_loader.load_ext('_ext', ['nms', 'softnms', 'nms_match', 'nms_rotated'])

        def nms(boxes, scores, iou_threshold, offset=0):
            inds = ext_module.nms(boxes, scores, iou_threshold=float(iou_threshold), offset=offset)
            return inds
        """,
}


def _write_tree(root: Path, files: dict) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def _forget(*tops: str) -> None:
    for name in list(sys.modules):
        if name.split(".")[0] in tops:
            del sys.modules[name]


@pytest.fixture
def fake_mmcv(tmp_path, monkeypatch):
    """A fake mmcv on sys.path; sys.meta_path and the mmcv/mmengine modules are restored afterwards."""
    root = tmp_path / "pkgs"
    _write_tree(root, FAKE_MMCV)
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    monkeypatch.syspath_prepend(str(root))
    saved = {name: mod for name, mod in sys.modules.items() if name.split(".")[0] in ("mmcv", "mmengine")}
    _forget("mmcv", "mmengine")
    importlib.invalidate_caches()
    shim.uninstall_shim()
    yield root / "mmcv"
    shim.uninstall_shim()
    _forget("mmcv", "mmengine")
    sys.modules.update(saved)


def _boxes():
    generator = torch.Generator().manual_seed(0)
    boxes = torch.rand(64, 4, generator=generator) * 40
    boxes[:, 2:] += boxes[:, :2] + 1
    return boxes, torch.rand(64, generator=generator)


def test_without_the_shim_mmcv_ext_is_missing(fake_mmcv):
    with pytest.raises(ModuleNotFoundError, match="mmcv._ext"):
        importlib.import_module("mmcv.ops")
    assert importlib.util.find_spec("mmcv._ext") is None  # mmengine's mmcv_full_available() is False
    assert shim.shim_status().ext_in_use == shim.NONE


def test_install_shim_makes_mmcv_ops_work_unchanged(fake_mmcv):
    import mmcv_runtime
    from mmcv_runtime.ops import nms as runtime_nms

    assert mmcv_runtime.install_shim() is True
    assert shim.install_shim() is False  # idempotent: one finder
    assert sum(type(f).__name__ == "ExtShimFinder" for f in sys.meta_path) == 1

    ops = importlib.import_module("mmcv.ops")
    import mmcv
    import mmcv_runtime.ext

    assert mmcv._ext is mmcv_runtime.ext and sys.modules["mmcv._ext"] is mmcv_runtime.ext
    assert mmcv_runtime.ext.__spec__.name == "mmcv_runtime.ext"  # the runtime module keeps its identity
    boxes, scores = _boxes()
    _, expected = runtime_nms(boxes, scores, 0.5)
    assert torch.equal(ops.nms(boxes, scores, 0.5), expected)
    # mmengine's mmcv_full_available(): pkgutil.find_loader('mmcv._ext') is not None (= find_spec)
    assert importlib.util.find_spec("mmcv._ext") is not None
    assert shim.shim_status().ext_in_use == shim.RUNTIME


def test_only_mmcv_ext_is_answered(fake_mmcv):
    shim.install_shim()
    finder = next(f for f in sys.meta_path if isinstance(f, shim.ExtShimFinder))
    for name in ("mmcv._ext2", "mmcv.ops._ext", "_ext", "mmcv_runtime.ext", "mmcv"):
        assert finder.find_spec(name, None) is None
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("mmcv._other_ext")


def test_uninstall_restores_no_module_named_mmcv_ext(fake_mmcv):
    shim.install_shim()
    importlib.import_module("mmcv._ext")
    assert shim.uninstall_shim() is True
    assert shim.uninstall_shim() is False
    assert "mmcv._ext" not in sys.modules
    with pytest.raises(ModuleNotFoundError, match="No module named 'mmcv._ext'"):
        importlib.import_module("mmcv._ext")
    assert shim.shim_status().ext_in_use == shim.NONE


def test_a_compiled_ext_is_never_shadowed(fake_mmcv):
    # A file Python would load as mmcv._ext (here: garbage, like a build broken by a torch upgrade).
    compiled = fake_mmcv / f"_ext{importlib.machinery.EXTENSION_SUFFIXES[0]}"
    compiled.write_bytes(b"not an ELF file")
    shim.install_shim()
    status = shim.shim_status()
    assert status.ext_in_use == shim.COMPILED and status.compiled_origin == str(compiled)
    assert "compiled mmcv._ext" in status.describe() and "never shadows" in status.describe()
    with pytest.raises(ImportError) as raised:
        importlib.import_module("mmcv._ext")
    assert "mmcv_runtime" not in str(raised.value)
    assert "mmcv._ext" not in sys.modules
    # Even if asked first (another tool reordered sys.meta_path), the finder declines.
    assert shim.ExtShimFinder().find_spec("mmcv._ext", [str(fake_mmcv)]) is None


def test_a_compiled_ext_for_another_python_does_not_count(fake_mmcv):
    (fake_mmcv / "_ext.cpython-27mu-x86_64-linux-gnu.so").write_bytes(b"")
    shim.install_shim()
    assert shim.shim_status().ext_in_use == shim.RUNTIME


def test_status_without_mmcv(monkeypatch):
    monkeypatch.setattr(shim, "_mmcv_path", lambda: None)
    assert shim.shim_status().ext_in_use == shim.NO_MMCV


def test_model_registry_leaves_the_names_to_mmcv_ops_while_the_shim_is_installed(fake_mmcv, monkeypatch):
    registered = {}

    class Models:
        def get(self, key):
            return registered.get(key)

        def register_module(self, name=None, module=None, force=False):
            registered[name] = module

    _write_tree(fake_mmcv.parent, {"mmengine/__init__.py": "", "mmengine/registry.py": ""})
    monkeypatch.setattr(importlib.import_module("mmengine.registry"), "MODELS", Models(), raising=False)

    class DCN:
        pass

    shim.install_shim()
    model_registry.register_model("DCN", mmcv1_registry="CONV_LAYERS")(DCN)
    assert registered == {}  # mmcv.ops registers DCN itself; ours would make it fail with KeyError
    # Without mmcv the shim changes nothing: the runtime still registers (mmengine only).
    monkeypatch.setattr(model_registry, "_package_dir", lambda name: None if name == "mmcv" else "x")
    model_registry.register_model("DCN", mmcv1_registry="CONV_LAYERS")(DCN)
    assert registered == {"DCN": DCN}


def test_installing_the_shim_late_hands_registered_names_back_to_mmcv_ops(fake_mmcv, monkeypatch):
    class Models:  # mmengine's Registry keeps names in _module_dict and has no unregister
        def __init__(self):
            self._module_dict = {}

        def get(self, key):
            return self._module_dict.get(key)

        def register_module(self, name=None, module=None, force=False):
            if name in self._module_dict and not force:
                raise KeyError(f"{name} is already registered")
            self._module_dict[name] = module

    models = Models()
    monkeypatch.setattr(model_registry, "_target_registry", lambda cls, mmcv1_registry: models)
    monkeypatch.setattr(model_registry, "_REGISTERED", [])

    class DCN:
        pass

    model_registry.register_model("DCN", mmcv1_registry="CONV_LAYERS")(DCN)
    models.register_module("Other", "someone else's")
    assert models.get("DCN") is DCN
    shim.install_shim()  # e.g. `import mmcv_runtime.ops` came first
    assert models._module_dict == {"Other": "someone else's"}
    models.register_module("DCN", "mmcv.ops' own DCN")  # what importing mmcv.ops does next


# --- the CLI and the .pth hook ----------------------------------------------------------------------


def _cli(*args, env=None):
    result = CliRunner().invoke(main, ["shim", *args], env=env, catch_exceptions=False)
    return result.exit_code, result.output


def test_cli_install_status_uninstall_round_trip(tmp_path, fake_mmcv):
    site_dir = tmp_path / "site"
    code, out = _cli("status", "--site-dir", str(site_dir))
    assert code == 0 and "hook: not installed" in out and "mmcv._ext in use: none" in out

    code, out = _cli("install", "--site-dir", str(site_dir))
    assert code == 0, out
    pth = site_dir / PTH_NAME
    assert pth.is_file() and f"installed: {pth}" in out
    code, out = _cli("status", env={SITE_DIR_ENV: str(site_dir)})  # the directory via the env var
    assert code == 0 and f"hook: installed ({pth})" in out
    assert "mmcv_runtime shim in new interpreters" in out and "active in this interpreter: no" in out

    shim.install_shim()
    assert "mmcv._ext in use: mmcv_runtime shim" in _cli("status", "--site-dir", str(site_dir))[1]
    code, out = _cli("uninstall", "--site-dir", str(site_dir))
    assert code == 0 and f"removed: {pth}" in out and not pth.exists()
    assert _cli("uninstall", "--site-dir", str(site_dir)) == (0, f"not installed: {pth}\n")


def test_cli_uninstall_leaves_a_foreign_file(tmp_path):
    (tmp_path / PTH_NAME).write_text("import something_else\n")
    code, out = _cli("uninstall", "--site-dir", str(tmp_path))
    assert code == 1 and "not written by mmcv-migrate" in out
    assert (tmp_path / PTH_NAME).exists()


def _python(code: str, *, pythonpath: list, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", shim.DISABLE_ENV)}
    env["PYTHONPATH"] = os.pathsep.join(pythonpath)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


_STARTUP = """
import site, sys
site.addsitedir(sys.argv[1] if len(sys.argv) > 1 else {site_dir!r})
print('torch at startup:', 'torch' in sys.modules)
print('finder:', any(type(f).__name__ == 'ExtShimFinder' for f in sys.meta_path))
"""


def test_pth_hook_gives_new_interpreters_the_shim_without_importing_torch(tmp_path, fake_mmcv):
    site_dir = tmp_path / "site"
    assert _cli("install", "--site-dir", str(site_dir))[0] == 0
    code = _STARTUP.format(site_dir=str(site_dir)) + textwrap.dedent("""
        import torch, mmcv.ops, mmcv_runtime.ext, mmcv_runtime.ops as rops
        print('mmcv._ext is runtime:', sys.modules['mmcv._ext'] is mmcv_runtime.ext)
        b = torch.tensor([[0., 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]]); s = torch.tensor([.9, .8, .7])
        print('nms:', mmcv.ops.nms(b, s, 0.5).tolist(), rops.nms(b, s, 0.5)[1].tolist())
        """)
    proc = _python(code, pythonpath=[str(fake_mmcv.parent)])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "torch at startup: False", "finder: True", "mmcv._ext is runtime: True", "nms: [0, 2] [0, 2]"]

    disabled = _python(_STARTUP.format(site_dir=str(site_dir)), pythonpath=[str(fake_mmcv.parent)],
                       env_extra={shim.DISABLE_ENV: "0"})
    assert disabled.stdout.splitlines()[1] == "finder: False"

    assert _cli("uninstall", "--site-dir", str(site_dir))[0] == 0
    gone = _python(_STARTUP.format(site_dir=str(site_dir)) + "import mmcv._ext\n",
                   pythonpath=[str(fake_mmcv.parent)])
    assert "finder: False" in gone.stdout and "No module named 'mmcv._ext'" in gone.stderr


def test_pth_hook_is_silent_when_mmcv_runtime_is_gone(tmp_path):
    site_dir = tmp_path / "site"
    assert _cli("install", "--site-dir", str(site_dir))[0] == 0
    # -S: no site-packages, so neither mmcv_runtime nor its editable finder is importable.
    proc = subprocess.run([sys.executable, "-S", "-c", _STARTUP.format(site_dir=str(site_dir))],
                          capture_output=True, text=True, timeout=60, env={"PATH": os.environ.get("PATH", "")})
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert "finder: False" in proc.stdout


# --- the real thing: mmcv-lite 2.2.0 from PyPI (opt-in, downloads) ------------------------------------

_MMCV_LITE_CHECK = """
import sys
assert 'torch' not in sys.modules
import torch, mmcv, mmcv._ext, mmcv_runtime.ext, mmcv_runtime.ops as rops
from mmcv.ops import nms, roi_align, RoIAlign, DeformConv2dPack, MultiScaleDeformableAttention
from mmengine.utils.dl_utils import mmcv_full_available
from mmengine.registry import MODELS
assert mmcv._ext is mmcv_runtime.ext and mmcv_full_available()
torch.manual_seed(0)
boxes = torch.rand(100, 4) * 50; boxes[:, 2:] += boxes[:, :2] + 1; scores = torch.rand(100)
assert torch.equal(nms(boxes, scores, 0.5)[1], rops.nms(boxes, scores, 0.5)[1])
feat = torch.rand(2, 8, 16, 16); rois = torch.tensor([[0, 1., 1, 12, 12], [1, 2, 3, 15, 10]])
assert torch.equal(roi_align(feat, rois, (7, 7), 0.5, 2, 'avg', True), rops.roi_align(feat, rois, (7, 7), 0.5, 2, 'avg', True))
assert RoIAlign((7, 7), 0.5, 2)(feat, rois).shape == (2, 8, 7, 7)
dcn = DeformConv2dPack(8, 4, 3, padding=1); ours = rops.DeformConv2dPack(8, 4, 3, padding=1)
ours.load_state_dict(dcn.state_dict(), strict=True)
assert torch.allclose(dcn(feat), ours(feat))
kw = dict(embed_dims=32, num_heads=4, num_levels=1, num_points=2, batch_first=True)
attn = MultiScaleDeformableAttention(**kw).eval(); ours = rops.MultiScaleDeformableAttention(**kw).eval()
ours.load_state_dict(attn.state_dict(), strict=True)
q = torch.rand(1, 64, 32); ref = torch.rand(1, 64, 1, 2); shapes = torch.tensor([[8, 8]]); start = torch.tensor([0])
assert torch.allclose(attn(q, value=q, reference_points=ref, spatial_shapes=shapes, level_start_index=start),
                      ours(q, value=q, reference_points=ref, spatial_shapes=shapes, level_start_index=start), atol=1e-5)
assert MODELS.get('DCN').__module__ == 'mmcv.ops.deform_conv'
print('ok')
"""


@pytest.mark.skipif(os.environ.get("MMCV_MIGRATE_NETWORK_TESTS") != "1",
                    reason="downloads mmcv-lite from PyPI: set MMCV_MIGRATE_NETWORK_TESTS=1")
def test_mmcv_lite_from_pypi_in_a_throwaway_venv(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    python = str(venv / ("Scripts" if os.name == "nt" else "bin") / "python")

    def run(*args, check=True):
        return subprocess.run([python, *args], capture_output=True, text=True, check=check, cwd=tmp_path)

    run("-m", "pip", "install", "-q", "mmcv-lite==2.2.0")
    # The hook needs mmcv_runtime importable while the venv's own site-packages is processed.
    run("-m", "pip", "install", "-q", "--no-deps", "-e", str(REPO))
    assert "No module named 'mmcv._ext'" in run("-c", "import mmcv._ext", check=False).stderr

    assert run("-m", "mmcv_migrate.cli", "shim", "install").returncode == 0
    assert "mmcv._ext in use: mmcv_runtime shim" in run("-m", "mmcv_migrate.cli", "shim", "status").stdout
    assert run("-c", _MMCV_LITE_CHECK).stdout.strip().endswith("ok")
    # The unmodified detector of fixtures/detector (on mmcv.ops) reproduces compiled mmcv's numbers.
    detector = REPO / "fixtures" / "detector"
    result = tmp_path / "detector.pt"
    run("-c", f"import sys; sys.path.insert(0, {str(detector)!r}); import run; run.main({str(result)!r})")
    got, expected = torch.load(result), torch.load(detector / "golden.pt")
    for key in ("scores", "boxes", "dets"):
        torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-5)
    assert torch.equal(got["labels"], expected["labels"])
    for name, grad in expected["grads"].items():
        torch.testing.assert_close(got["grads"][name], grad, rtol=1e-4, atol=1e-5)

    assert run("-m", "mmcv_migrate.cli", "shim", "uninstall").returncode == 0
    assert "No module named 'mmcv._ext'" in run("-c", "import mmcv._ext", check=False).stderr
    assert "mmcv._ext in use: none" in run("-m", "mmcv_migrate.cli", "shim", "status").stdout
