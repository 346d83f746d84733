"""mmcv_runtime.model_registry: registry names (DCN, DCNv2, ...) go where the installed mmcv looks."""

from __future__ import annotations

import importlib
import sys

import pytest

from mmcv_runtime import model_registry


class FakeRegistry:
    def __init__(self):
        self.modules = {}

    def get(self, key):
        return self.modules.get(key)

    def register_module(self, name=None, module=None, force=False):
        if name in self.modules and not force:
            raise KeyError(f"{name} is already registered")
        self.modules[name] = module
        return module


def _package(tmp_path, name, files):
    root = tmp_path / name
    root.mkdir()
    for rel, text in files.items():
        (root / rel).write_text(text)
    return root


@pytest.fixture
def site(tmp_path, monkeypatch):
    """An isolated import path with fake mmengine / mmcv packages; sys.modules restored after."""
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in list(sys.modules):
        if name.split(".")[0] in ("mmcv", "mmengine"):
            monkeypatch.delitem(sys.modules, name)
    importlib.invalidate_caches()
    return tmp_path


def _fake_mmengine(site, monkeypatch):
    _package(site, "mmengine", {"__init__.py": "", "registry.py": ""})
    registry = importlib.import_module("mmengine.registry")
    monkeypatch.setattr(registry, "MODELS", FakeRegistry(), raising=False)
    return registry.MODELS


def test_nothing_installed_registers_nothing_and_imports_nothing(site, monkeypatch):
    monkeypatch.setattr(model_registry, "_package_dir", lambda name: None)

    class Op:
        pass

    assert model_registry.register_model("DCN", mmcv1_registry="CONV_LAYERS")(Op) is Op
    assert not any(name.split(".")[0] in ("mmcv", "mmengine") for name in sys.modules)


def test_mmengine_models_gets_the_name(site, monkeypatch):
    models = _fake_mmengine(site, monkeypatch)

    @model_registry.register_model("DCN", mmcv1_registry="CONV_LAYERS")
    class Op:
        pass

    @model_registry.register_model(mmcv1_registry="ATTENTION")
    class MultiScaleDeformableAttention:
        pass

    assert models.get("DCN") is Op
    assert models.get("MultiScaleDeformableAttention") is MultiScaleDeformableAttention


def test_a_taken_name_is_left_alone(site, monkeypatch):
    models = _fake_mmengine(site, monkeypatch)
    models.register_module(name="DCN", module="mmcv's own")
    model_registry.register_model("DCN", mmcv1_registry="CONV_LAYERS")(type("Op", (), {}))
    assert models.get("DCN") == "mmcv's own"


def test_mmcv_lite_2x_uses_mmengine(site, monkeypatch):
    models = _fake_mmengine(site, monkeypatch)
    _package(site, "mmcv", {"__init__.py": "", "version.py": "__version__ = '2.2.0'\n"})
    cls = model_registry.register_model("DCNv2", mmcv1_registry="CONV_LAYERS")(type("Op", (), {}))
    assert models.get("DCNv2") is cls


def test_compiled_mmcv_is_never_shadowed(site, monkeypatch):
    models = _fake_mmengine(site, monkeypatch)
    _package(site, "mmcv", {"__init__.py": "", "version.py": "__version__ = '2.2.0'\n",
                            "_ext.cpython-311-x86_64-linux-gnu.so": ""})
    model_registry.register_model("DCN", mmcv1_registry="CONV_LAYERS")(type("Op", (), {}))
    assert models.get("DCN") is None


def test_mmcv_1x_uses_its_own_registry(site, monkeypatch):
    _fake_mmengine(site, monkeypatch)
    root = _package(site, "mmcv", {"__init__.py": "", "version.py": "__version__ = '1.7.2'\n"})
    (root / "cnn").mkdir()
    (root / "cnn" / "__init__.py").write_text("")
    (root / "cnn" / "bricks").mkdir()
    (root / "cnn" / "bricks" / "__init__.py").write_text("")
    (root / "cnn" / "bricks" / "registry.py").write_text("")
    bricks = importlib.import_module("mmcv.cnn.bricks.registry")
    conv_layers = FakeRegistry()
    monkeypatch.setattr(bricks, "CONV_LAYERS", conv_layers, raising=False)
    cls = model_registry.register_model("DCN", mmcv1_registry="CONV_LAYERS")(type("Op", (), {}))
    assert conv_layers.get("DCN") is cls
    assert sys.modules["mmengine.registry"].MODELS.get("DCN") is None



def test_a_migrated_mmcv_tree_registers_its_own_names(site, monkeypatch):
    """mmcv-migrate apply on an mmcv tree: its ops import (through the runtime's _ext ABI) and register
    DCNv2 themselves, possibly while importing the runtime: the runtime must leave the name free."""
    models = _fake_mmengine(site, monkeypatch)
    root = _package(site, "mmcv", {"__init__.py": "", "version.py": "__version__ = '2.2.0'\n"})
    (root / "ops").mkdir()
    (root / "ops" / "modulated_deform_conv.py").write_text("from mmcv_runtime import ext_loader\n")
    cls = type("ModulatedDeformConv2dPack", (), {"__module__": "mmcv_runtime.ops.modulated_deform_conv"})
    model_registry.register_model("DCNv2", mmcv1_registry="CONV_LAYERS")(cls)
    assert models.get("DCNv2") is None
    other = type("DeformConv2dPack", (), {"__module__": "mmcv_runtime.ops.deform_conv"})  # not migrated
    model_registry.register_model("DCN", mmcv1_registry="CONV_LAYERS")(other)
    assert models.get("DCN") is other
