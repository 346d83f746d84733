"""The runtime skeleton: package, _ext ABI, ext_loader, ops namespace, registry, kernels backend."""

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest

import mmcv_runtime
from mmcv_runtime import ext_loader, kernels, registry
from mmcv_runtime.registry import OpEntry

REPO = Path(__file__).resolve().parents[1]
REGISTRY_JSON = REPO / "mmcv_migrate" / "runtime_registry.json"
FORBIDDEN = ("libcst", "click", "rich", "mmcv", "mmengine")



def _run_python(code: str, *args: str) -> subprocess.CompletedProcess:
    """Run ``python -c code`` (or ``python *args`` when code is empty) in the repository root."""
    return subprocess.run(
        [sys.executable, "-c", code, *args] if code else [sys.executable, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


@pytest.fixture(scope="module")
def catalogue():
    from mmcv_migrate.rewrites.catalogue import load_catalogue

    return load_catalogue()


@pytest.fixture(scope="module")
def ext():
    return ext_loader.load_ext("_ext", [])


def _entry(op="nms", **kw):
    fields = dict(names=("nms",), ext_functions=("nms",), backward="n/a", devices=("any",))
    fields.update(kw)
    return OpEntry(op=op, **fields)


# --- the package ---------------------------------------------------------------------------------


def _forbidden_check() -> str:
    return (
        "import sys\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        "assert not bad, bad\n"
    )


def test_import_is_light():
    proc = _run_python(
        "import mmcv_runtime, mmcv_runtime.ext, mmcv_runtime.ext_loader\n"
        "import mmcv_runtime.ops, mmcv_runtime.registry, mmcv_runtime.kernels\n" + _forbidden_check()
    )
    assert proc.returncode == 0, proc.stderr


def test_using_the_abi_stays_light():
    # load_ext, stubs, dir() and the ops namespace read the catalogue: still no libcst & co.
    proc = _run_python(
        "from mmcv_runtime import ext_loader, ops, registry\n"
        "ext = ext_loader.load_ext('_ext', ['nms', 'roi_align_forward'])\n"
        "assert 'nms' in dir(ext)\n"
        "try:\n    ops.CARAFE\nexcept NotImplementedError:\n    pass\n"
        "registry.snapshot()\n" + _forbidden_check()
    )
    assert proc.returncode == 0, proc.stderr


def test_version_and_submodules():
    assert mmcv_runtime.__version__ == importlib.metadata.version("mmcv-migrate")
    for name in ("ext", "ext_loader", "ops", "registry", "kernels"):
        assert name in dir(mmcv_runtime)
        assert getattr(mmcv_runtime, name).__name__ == f"mmcv_runtime.{name}"
    with pytest.raises(AttributeError):
        mmcv_runtime.not_a_submodule  # noqa: B018


# --- the _ext ABI and ext_loader -----------------------------------------------------------------


def test_load_ext_returns_the_runtime_abi(ext, catalogue):
    assert ext.__name__ == "mmcv_runtime.ext"
    assert ext_loader.load_ext("_ext", list(catalogue.ext_functions)) is ext
    assert ext_loader.check_ops_exist() is True


def test_every_catalogued_ext_function_exists(ext, catalogue):
    assert len(catalogue.ext_functions) > 50  # sanity: the real catalogue, not an empty one
    implemented = registry.implemented_ext_functions()
    listed = set(dir(ext))
    for name, info in catalogue.ext_functions.items():
        assert hasattr(ext, name), name
        assert name in listed, name
        fn = getattr(ext, name)
        assert callable(fn), name
        if name in implemented:
            continue
        assert fn.__name__ == name and fn.__qualname__ == name
        assert info.declaration in fn.__doc__
        with pytest.raises(NotImplementedError) as excinfo:
            fn()
        message = str(excinfo.value)
        assert f"mmcv._ext.{name} " in message, message
        for sub in info.submodules:
            assert f"mmcv.ops.{sub}" in message, message
        assert "mmcv-migrate ops" in message
        assert getattr(ext, name) is fn  # made once


def test_stub_signature_follows_pybind_args(ext, catalogue):
    import inspect

    implemented = registry.implemented_ext_functions()
    for name, info in sorted(catalogue.ext_functions.items()):
        if not info.args:  # no py::arg names: pybind takes positional arguments
            continue
        # stubs and adapters alike expose the py::arg names of mmcv's pybind signature
        assert list(inspect.signature(getattr(ext, name)).parameters) == list(info.args), name
    assert implemented, "some _ext functions are implemented"


def test_ext_unknown_names(ext):
    assert not hasattr(ext, "not_an_ext_function")
    with pytest.raises(AttributeError, match="not_an_ext_function"):
        ext.not_an_ext_function  # noqa: B018
    assert getattr(ext, "not_an_ext_function", None) is None


def test_adapters_match_registry():
    import mmcv_runtime.ext as ext_module

    assert ext_module.IMPLEMENTED == registry.implemented_ext_functions()
    for name in ext_module.IMPLEMENTED:
        assert getattr(ext_module, name).__module__.startswith("mmcv_runtime.ext._"), name


def test_load_ext_missing_function_uses_mmcv_message():
    with pytest.raises(AssertionError) as excinfo:
        ext_loader.load_ext("_ext", ["nms", "not_an_ext_function"])
    assert str(excinfo.value) == "not_an_ext_function miss in module _ext"


def test_load_ext_other_module():
    with pytest.raises(ModuleNotFoundError) as excinfo:
        ext_loader.load_ext("_ext_other", ["nms"])
    assert excinfo.value.name == "mmcv._ext_other"
    assert "mmcv._ext_other" in str(excinfo.value)
    assert "only" in str(excinfo.value) and "_ext" in str(excinfo.value)


# --- the ops namespace ---------------------------------------------------------------------------


def _unimplemented_exports(catalogue):
    entries = registry.entries()
    return [
        name
        for name, sub in sorted(catalogue.exports.items())
        if sub not in entries or catalogue.export_aliases.get(name, name) not in entries[sub].names
    ]


def test_ops_missing_op_raises_not_implemented(catalogue):
    import mmcv_runtime.ops as ops

    names = _unimplemented_exports(catalogue)
    if "CARAFE" in names:
        with pytest.raises(NotImplementedError) as excinfo:
            ops.CARAFE  # noqa: B018
        assert str(excinfo.value) == (
            "mmcv_runtime does not implement mmcv.ops.CARAFE (mmcv.ops.carafe) yet; "
            "`mmcv-migrate ops` lists what it covers"
        )
        with pytest.raises(NotImplementedError, match="CARAFE"):
            exec("from mmcv_runtime.ops import CARAFE", {})
    for name in names:
        with pytest.raises(NotImplementedError) as excinfo:
            getattr(ops, name)
        assert f"mmcv.ops.{name}" in str(excinfo.value)
        assert f"mmcv.ops.{catalogue.exports[name]}" in str(excinfo.value)
        assert "mmcv-migrate ops" in str(excinfo.value)


def test_ops_submodule_only_names_raise_not_implemented(catalogue):
    """A name only an unimplemented submodule has (not exported by mmcv.ops) still raises by name."""
    import mmcv_runtime.ops as ops

    entries = registry.entries()
    found = [(sub_name, name) for sub_name, sub in sorted(catalogue.submodules.items()) if sub_name not in entries
             for name in sorted(sub.names) if name not in catalogue.exports]
    assert found, "every submodule-only name is implemented: pick another case for this test"
    sub_name, name = found[0]
    with pytest.raises(NotImplementedError, match=f"mmcv.ops.{sub_name}.{name} "):
        getattr(ops, name)


def test_ops_unknown_names():
    import mmcv_runtime.ops as ops

    with pytest.raises(AttributeError):
        ops.not_a_thing  # noqa: B018
    assert not hasattr(ops, "not_a_thing")
    assert getattr(ops, "not_a_thing", 42) == 42
    assert not hasattr(ops, "__wrapped__")
    assert hasattr(ops, "__all__") and hasattr(ops, "__path__")
    namespace = {}
    exec("from mmcv_runtime.ops import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(ops.__all__)


def test_ops_exports_registered_names(catalogue):
    import mmcv_runtime.ops as ops

    expected_all = []
    for op, entry in registry.entries().items():
        module = importlib.import_module(f"mmcv_runtime.ops.{op}")
        for name in entry.names:
            assert hasattr(module, name), f"mmcv_runtime.ops.{op} registers {name} but lacks it"
        for export, sub in catalogue.exports.items():
            defined = catalogue.export_aliases.get(export, export)
            if sub == op and defined in entry.names:
                assert getattr(ops, export) is getattr(module, defined), export
                expected_all.append(export)
    assert ops.__all__ == sorted(expected_all)


# --- the registry --------------------------------------------------------------------------------


def test_registry_is_consistent_with_catalogue(catalogue):
    for op, entry in registry.entries().items():
        assert entry.op == op
        assert op in catalogue.submodules, f"{op} is not an mmcv.ops submodule"
        for name in entry.names:
            assert name in catalogue.submodules[op].names, f"mmcv.ops.{op} has no {name}"
        for fn in entry.ext_functions:
            assert fn in catalogue.ext_functions, f"mmcv._ext has no {fn}"


def test_entries_is_read_only():
    with pytest.raises(TypeError):
        registry.entries()["x"] = _entry("x")  # type: ignore[index]


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(backward="maybe"), ValueError, "backward"),
        (dict(backward=True), ValueError, "backward"),
        (dict(devices=()), ValueError, "devices"),
        (dict(devices="cuda"), TypeError, "devices"),
        (dict(names="nms"), TypeError, "names"),
        (dict(names=["nms"]), TypeError, "names"),
        (dict(names=("nms", 3)), TypeError, "names"),
        (dict(names=("nms", "nms")), ValueError, "repeats"),
        (dict(names=("",)), ValueError, "names"),
        (dict(ext_functions=["nms"]), TypeError, "ext_functions"),
        (dict(kernels="triton"), TypeError, "kernels"),
        (dict(names=(), ext_functions=()), ValueError, "neither"),
        (dict(op="not an op"), ValueError, "op"),
        (dict(op=""), ValueError, "op"),
    ],
)
def test_entry_validation(kwargs, error, match):
    with pytest.raises(error, match=match):
        _entry(**kwargs)


def test_entry_valid_and_frozen():
    entry = _entry(kernels=("triton",), devices=("cuda", "cpu"))
    assert entry.to_json() == {
        "names": ["nms"],
        "ext_functions": ["nms"],
        "backward": "n/a",
        "devices": ["cuda", "cpu"],
        "kernels": ["triton"],
    }
    with pytest.raises(AttributeError):
        entry.backward = "yes"  # type: ignore[misc]


def test_register_duplicates_into_a_temporary_registry():
    before = dict(registry.entries())
    table = {}
    first = registry._register_into(table, _entry("nms"))
    assert table == {"nms": first}
    with pytest.raises(ValueError, match="already registered"):
        registry._register_into(table, _entry("nms", backward="no"))
    with pytest.raises(ValueError, match="nms.*already registered by nms"):
        registry._register_into(table, _entry("nms_rotated", names=("nms_rotated",)))
    with pytest.raises(TypeError):
        registry._register_into(table, {"op": "x"})  # type: ignore[arg-type]
    registry._register_into(table, _entry("roi_align", names=("roi_align",), ext_functions=()))
    assert registry._snapshot_of(table) == {
        "schema": 1,
        "ops": {"nms": first.to_json(), "roi_align": table["roi_align"].to_json()},
    }
    assert list(registry._snapshot_of(table)["ops"]) == ["nms", "roi_align"]
    assert dict(registry.entries()) == before  # the global registry is untouched


def test_snapshot_shape():
    snap = registry.snapshot()
    assert snap["schema"] == registry.SCHEMA == 1
    assert list(snap["ops"]) == sorted(snap["ops"])
    assert json.loads(json.dumps(snap)) == snap
    assert registry.implemented_ext_functions() == frozenset(
        fn for op in snap["ops"].values() for fn in op["ext_functions"]
    )


def test_committed_registry_json_matches_live_registry():
    hint = f"mmcv_migrate/runtime_registry.json is stale; regenerate it: {registry.REGENERATE_COMMAND}"
    assert REGISTRY_JSON.is_file(), hint
    text = REGISTRY_JSON.read_text(encoding="utf-8")
    assert json.loads(text) == registry.snapshot(), hint
    assert text == registry.dumps(), hint + " (formatting differs)"


def test_registry_command(tmp_path):
    proc = _run_python("", "-W", "error::RuntimeWarning", "-m", "mmcv_runtime.registry")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == registry.dumps()
    assert proc.stderr == ""
    out = tmp_path / "registry.json"
    proc = _run_python("", "-m", "mmcv_runtime.registry", "--write", str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert out.read_text(encoding="utf-8") == registry.dumps()


# --- kernels -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [(None, "auto"), ("", "auto"), ("auto", "auto"), ("torch", "torch"), (" Torch ", "torch")],
)
def test_backend(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("MMCV_RUNTIME_BACKEND", raising=False)
    else:
        monkeypatch.setenv("MMCV_RUNTIME_BACKEND", value)
    assert kernels.backend() == expected


@pytest.mark.parametrize("value", ["cuda", "triton", "pytorch"])
def test_backend_rejects_other_values(monkeypatch, value):
    monkeypatch.setenv("MMCV_RUNTIME_BACKEND", value)
    with pytest.raises(ValueError, match="MMCV_RUNTIME_BACKEND"):
        kernels.backend()
