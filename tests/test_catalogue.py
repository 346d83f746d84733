"""The catalogue of mmcv's API (rewrites/catalogue.json and its loader)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmcv_migrate.rewrites import _generate_catalogue as gen
from mmcv_migrate.rewrites.catalogue import catalogue_bytes, load_catalogue, parse_catalogue

JSON_PATH = Path(gen.__file__).with_name("catalogue.json")


@pytest.fixture(scope="module")
def cat():
    return load_catalogue()


def _sdists() -> list[Path]:
    roots = [Path(os.environ["MMCV_SRC_DIR"])] if os.environ.get("MMCV_SRC_DIR") else []
    roots.append(Path.home() / ".cache" / "mmcv-src")
    for root in roots:
        srcs = [root / "mmcv-2.2.0", root / "mmcv-full-1.7.2"]
        if all((s / "mmcv" / "ops" / "__init__.py").is_file() for s in srcs):
            return srcs
    pytest.skip(
        "mmcv sdists not unpacked in $MMCV_SRC_DIR or ~/.cache/mmcv-src "
        "(mmcv-2.2.0, mmcv-full-1.7.2); see rewrites/_generate_catalogue.py"
    )


# ------------------------------------------------------------------ shape of the data


def test_versions(cat):
    assert cat.versions == ("1.7.2", "2.2.0")


@pytest.mark.parametrize("version, count", [("2.2.0", 112), ("1.7.2", 107)])
def test_ext_function_counts(cat, version, count):
    assert sum(version in fn.versions for fn in cat.ext_functions.values()) == count


def test_ext_nms(cat):
    fn = cat.ext_functions["nms"]
    assert fn.args == ("boxes", "scores", "iou_threshold", "offset")
    assert fn.declaration == "Tensor nms(Tensor boxes, Tensor scores, float iou_threshold, int offset)"
    assert fn.submodules == ("nms",)
    assert fn.versions == ("1.7.2", "2.2.0")
    assert cat.ext_symbol("nms") == "mmcv._ext.nms" == fn.symbol


def test_ext_oddities(cat):
    # knn_forward is m.def'd twice in pybind.cpp: one entry, the second binding kept as an overload
    knn = cat.ext_functions["knn_forward"]
    assert knn.args[:4] == ("xyz_tensor", "new_xyz_tensor", "idx_tensor", "dist2_tensor")
    assert knn.overloads == (("b", "n", "m", "nsample", "xyz_tensor", "new_xyz_tensor", "idx_tensor",
                              "dist2_tensor"),)
    # templated C++ functions bound under several names
    assert "get_indice_pairs_forward" in cat.ext_functions["get_indice_pairs_3d_forward"].declaration
    # upfirdn2d's binding changed between 1.7 and 2.x
    up = cat.ext_functions["upfirdn2d"]
    assert up.args[-2:] == ("flip", "gain")
    assert up.signature("1.7.2").args[1] == "kernel"
    assert up.signature("2.2.0").args == up.args
    # only in 2.x
    assert cat.ext_functions["bias_act"].versions == ("2.2.0",)
    assert cat.ext_functions["ms_deform_attn_forward"].submodules == ("multi_scale_deform_attn",)


def test_every_ext_function_has_a_declaration_and_args_match_it(cat):
    for fn in cat.ext_functions.values():
        assert "(" in fn.declaration and fn.declaration.endswith(")"), fn.name
        params = fn.declaration[fn.declaration.index("(") + 1: -1]
        n_params = 0 if not params.strip() else params.count(",") + 1
        if fn.args:  # functions bound without py::arg (get_compiler_version) have none
            assert len(fn.args) == n_params, fn.name


def test_exports_spot_checks(cat):
    expected = {
        "nms": "nms",
        "batched_nms": "nms",
        "RoIAlign": "roi_align",
        "roi_align": "roi_align",
        "Conv2d": "deprecated_wrappers",
        "MaxPool2d": "deprecated_wrappers",
        "MultiScaleDeformableAttention": "multi_scale_deform_attn",
        "SparseConvTensor": "sparse_structure",
        "get_compiler_version": "info",
        "DeformConv2dPack": "deform_conv",
        "SyncBatchNorm": "sync_bn",
        "filtered_lrelu": "filtered_lrelu",  # 2.x only
        "get_onnxruntime_op_path": "info",  # 1.7 only
    }
    for name, sub in expected.items():
        assert cat.exports[name] == sub, name
    assert cat.export_versions["nms"] == ("1.7.2", "2.2.0")
    assert cat.export_versions["bezier_align"] == ("2.2.0",)
    assert cat.export_versions["get_onnxruntime_op_path"] == ("1.7.2",)
    assert cat.export_aliases["Conv2d"] == "Conv2d_deprecated"
    # MLU-guarded names are submodule names, not exports
    assert "DeformConv2dPack_MLU" not in cat.exports
    assert "DeformConv2dPack_MLU" in cat.submodules["deform_conv"].names
    assert set(cat.export_versions) == set(cat.exports)


def test_export_counts(cat):
    # len(mmcv.ops.__all__): 124 in 2.2.0, 117 in 1.7.2
    assert sum("2.2.0" in v for v in cat.export_versions.values()) == 124
    assert sum("1.7.2" in v for v in cat.export_versions.values()) == 117


def test_exports_point_at_defined_names(cat):
    for name, sub in cat.exports.items():
        assert sub in cat.submodules
        assert cat.export_aliases.get(name, name) in cat.submodules[sub].names


def test_all_of_both_versions_is_in_exports(cat):
    for src in _sdists():
        names, _ = gen.read_ops_init(src / "mmcv" / "ops" / "__init__.py")
        version = gen.read_version(src)
        assert names and set(names) <= set(cat.exports)
        assert {n for n, v in cat.export_versions.items() if version in v} == set(names)


def test_submodules(cat):
    assert "__init__" not in cat.submodules
    assert {"nms", "roi_align", "merge_cells", "sparse_ops", "deprecated_wrappers", "bias_act"} <= set(
        cat.submodules
    )
    assert len(cat.submodules) == 64  # 2.2.0's 64 modules include all of 1.7.2's 60
    nms = cat.submodules["nms"]
    assert {"nms", "soft_nms", "batched_nms", "nms_match", "nms_rotated", "nms_quadri", "NMSop"} <= set(nms.names)
    assert "ext_module" not in nms.names
    assert "softnms" in nms.ext_functions
    assert cat.submodules["merge_cells"].names["ConcatCell"] == ("1.7.2", "2.2.0")
    assert cat.submodules["bias_act"].versions == ("2.2.0",)
    assert "multi_scale_deformable_attn_pytorch" in cat.submodules["multi_scale_deform_attn"].names
    # imported names are not the module's own names
    assert "SparseConvTensor" not in cat.submodules["sparse_conv"].names
    assert "ext_loader" not in cat.submodules["roi_align"].names
    for sub in cat.submodules.values():
        for fn in sub.ext_functions:
            assert sub.name in cat.ext_functions[fn].submodules


# ------------------------------------------------------------------ lookups


def test_symbol(cat):
    # exported name wins over the same-named submodule
    assert cat.symbol("mmcv.ops", "nms") == "mmcv.ops.nms"
    assert cat.symbol("mmcv.ops.nms", "nms") == "mmcv.ops.nms"
    assert cat.symbol("mmcv.ops", "RoIAlign") == "mmcv.ops.RoIAlign"
    assert cat.symbol("mmcv.ops.roi_align", "RoIAlign") == "mmcv.ops.RoIAlign"
    # submodule-only names
    assert cat.symbol("mmcv.ops.roi_align", "RoIAlignFunction") == "mmcv.ops.roi_align.RoIAlignFunction"
    assert cat.symbol("mmcv.ops.merge_cells", "ConcatCell") == "mmcv.ops.merge_cells.ConcatCell"
    assert (
        cat.symbol("mmcv.ops.multi_scale_deform_attn", "multi_scale_deformable_attn_pytorch")
        == "mmcv.ops.multi_scale_deform_attn.multi_scale_deformable_attn_pytorch"
    )
    # a submodule that mmcv.ops does not import
    assert cat.symbol("mmcv.ops", "merge_cells") == "mmcv.ops.merge_cells"
    assert cat.symbol("mmcv.ops", "sparse_ops") == "mmcv.ops.sparse_ops"
    # the deprecated wrappers are exported under aliases
    assert cat.symbol("mmcv.ops.deprecated_wrappers", "Conv2d_deprecated") == "mmcv.ops.Conv2d"
    assert cat.symbol("mmcv.ops", "Conv2d") == "mmcv.ops.Conv2d"
    # a name a submodule imports from a sibling
    assert cat.symbol("mmcv.ops.sparse_conv", "SparseConvTensor") == "mmcv.ops.SparseConvTensor"
    # deprecated re-export
    assert (
        cat.symbol("mmcv.cnn.bricks.transformer", "MultiScaleDeformableAttention")
        == "mmcv.ops.MultiScaleDeformableAttention"
    )
    # unknown
    assert cat.symbol("mmcv.ops", "no_such_op") is None
    assert cat.symbol("mmcv.ops", "DeformConv2dPack_MLU") is None
    assert cat.symbol("mmcv.ops.nms", "ext_module") is None
    assert cat.symbol("mmcv.ops.nms", "torch") is None
    assert cat.symbol("mmcv.ops.no_such_sub", "nms") is None
    assert cat.symbol("mmcv.cnn.bricks.transformer", "FFN") is None
    assert cat.symbol("torchvision.ops", "nms") is None


def test_submodule_of(cat):
    assert cat.submodule_of("mmcv.ops.nms") == "nms"
    assert cat.submodule_of("mmcv.ops.RoIAlign") == "roi_align"
    assert cat.submodule_of("mmcv.ops.Conv2d") == "deprecated_wrappers"
    assert cat.submodule_of("mmcv.ops.merge_cells.ConcatCell") == "merge_cells"
    assert cat.submodule_of("mmcv.ops.merge_cells") == "merge_cells"
    assert cat.submodule_of("mmcv._ext.nms") == "nms"
    assert cat.submodule_of("mmcv._ext.ms_deform_attn_forward") == "multi_scale_deform_attn"
    assert cat.submodule_of("mmcv.ops.sparse_pool.SparseConvTensor") == "sparse_structure"
    for unknown in ("mmcv.ops.nope", "mmcv._ext.nope", "mmcv.ops.nms.nope", "mmcv.ops", "torch.nn.Conv2d", ""):
        assert cat.submodule_of(unknown) is None, unknown


def test_every_export_and_name_resolves(cat):
    for name in cat.exports:
        sym = cat.symbol("mmcv.ops", name)
        assert sym == "mmcv.ops." + name
        assert cat.submodule_of(sym) == cat.exports[name]
    for sub in cat.submodules.values():
        assert cat.submodule_of(sub.symbol) is not None
        for name in sub.names:
            sym = cat.symbol("mmcv.ops." + sub.name, name)
            assert sym is not None
            assert cat.submodule_of(sym) == cat.exports.get(sym[len("mmcv.ops."):], sub.name)
    for fn in cat.ext_functions.values():
        assert cat.submodule_of(fn.symbol) == (fn.submodules[0] if fn.submodules else None)


def test_config_types(cat):
    ct = cat.config_types
    assert ct["DCN"] == "mmcv.ops.DeformConv2dPack"
    assert ct["DCNv2"] == "mmcv.ops.ModulatedDeformConv2dPack"
    assert ct["SAC"] == "mmcv.ops.SAConv2d"
    assert ct["carafe"] == "mmcv.ops.CARAFEPack"
    assert ct["MMSyncBN"] == "mmcv.ops.SyncBatchNorm"
    assert ct["RoIAlign"] == "mmcv.ops.RoIAlign"
    assert ct["CrissCrossAttention"] == "mmcv.ops.CrissCrossAttention"
    assert ct["MultiScaleDeformableAttention"] == "mmcv.ops.MultiScaleDeformableAttention"
    assert ct["SubMConv3d"] == "mmcv.ops.SubMConv3d"
    assert ct["SparseConv4d"] == "mmcv.ops.sparse_conv.SparseConv4d"  # registered, not exported
    assert ct["nms"] == "mmcv.ops.nms"
    assert ct["soft_nms"] == "mmcv.ops.soft_nms"
    assert ct["nms_rotated"] == "mmcv.ops.nms_rotated"
    assert ct["nms_quadri"] == "mmcv.ops.nms_quadri"
    for not_mmcv in ("Conv2d", "ConvTranspose2d", "Linear", "MaxPool2d", "SyncBatchNorm", "SyncBN", "batched_nms"):
        assert not_mmcv not in ct, not_mmcv
    for symbol in ct.values():
        assert cat.submodule_of(symbol) is not None, symbol


def test_deprecated_reexports(cat):
    assert cat.deprecated_reexports == {
        "mmcv.cnn.bricks.transformer.MultiScaleDeformableAttention":
            "mmcv.ops.multi_scale_deform_attn.MultiScaleDeformableAttention",
    }


# ------------------------------------------------------------------ file, digest, loader


def test_digest_stable(cat):
    data = JSON_PATH.read_bytes()
    assert catalogue_bytes() == data
    assert cat.digest == hashlib.sha256(data).hexdigest()
    assert parse_catalogue(data).digest == cat.digest
    assert load_catalogue() is cat  # cached


def test_json_is_deterministic_and_compact():
    data = JSON_PATH.read_bytes()
    assert data.endswith(b"\n") and not data.endswith(b"\n\n")
    assert len(data) < 128 * 1024
    raw = json.loads(data)
    assert gen.dumps(raw).encode() == data  # sorted keys, canonical layout


def test_read_only(cat):
    with pytest.raises(TypeError):
        cat.exports["x"] = "y"  # type: ignore[index]
    with pytest.raises(AttributeError):
        cat.digest = "x"  # type: ignore[misc]


def test_import_is_stdlib_only():
    code = (
        "import sys, mmcv_migrate.rewrites.catalogue as c; c.load_catalogue(); "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('libcst', 'click', 'rich', 'torch', 'mmcv', 'mmengine', 'numpy')); print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_generator_reproduces_committed_json():
    srcs = _sdists()
    assert gen.generate(srcs) == JSON_PATH.read_text(encoding="utf-8")


def test_generator_cli(tmp_path):
    srcs = _sdists()
    out = tmp_path / "catalogue.json"
    subprocess.run(
        [sys.executable, "-m", "mmcv_migrate.rewrites._generate_catalogue", *map(str, srcs), "-o", str(out)],
        check=True,
        capture_output=True,
    )
    assert out.read_bytes() == JSON_PATH.read_bytes()
