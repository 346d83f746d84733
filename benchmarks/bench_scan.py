#!/usr/bin/env python
"""Benchmark ``mmcv-migrate scan`` against ``grep -rl`` (the floor) and a plain libcst pass.

Usage::

    python benchmarks/bench_scan.py [--files 5000] [--mmcv-ratio 0.02] [--repeat 5] [--keep DIR]
                                    [--libcst-sample N] [--libcst-repeat K] [--json OUT]
                                    [--no-profile] [--no-gitignore] [--seed S]

It generates a seeded, deterministic tree of realistic Python modules (a library package, mmdet-style
configs, tests, tools, an OpenMMLab-style .gitignore), of which ``--mmcv-ratio`` use mmcv the ways
OpenMMLab code does, and times:

``grep``            ``grep -rl --include='*.py' -e mmcv -e ext_loader TREE``: the floor.
``cold``            ``mmcv-migrate scan TREE --format json --no-cache``.
``cold+write``      the same with the cache on, into a fresh, empty ``MMCV_MIGRATE_CACHE_DIR``.
``warm json``       ``mmcv-migrate scan TREE --format json`` again on the same cache: nothing to parse.
``warm table``      the default ``--format table``, warm: adds rich's import and rendering.
``libcst pass``     for every file ``libcst.parse_module`` + ``MetadataWrapper(module).resolve(
                    QualifiedNameProvider)``, collecting names that start with ``mmcv``; in-process, one
                    core (``--libcst-sample N`` times N files and extrapolates linearly to the tree).

Each figure is the median of ``--repeat`` rounds; the variants are interleaved within a round (in a
rotating order), so drift of the machine hits them all alike. Subprocess variants are wall times of
the whole command, interpreter start-up included. The goals of the issue are then checked:
cold scan >= 20x faster than the libcst pass; warm json scan <= 3x grep.

With profiling on (the default) it also breaks the warm path down: interpreter start-up, imports
(``python -X importtime``: the heaviest top-level imports; libcst must not be imported on a fully warm
run), discovery, reading + prefilter, cache keys and reads, coverage, report rendering.

Stdlib + libcst only. Nothing is written outside the temporary directory (or ``--keep DIR``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

MARKER = ".bench_scan_tree"
GOAL_COLD_VS_LIBCST = 20.0  # cold scan at least this many times faster than the libcst pass
GOAL_WARM_VS_GREP = 3.0  # warm re-scan within this factor of grep

# What the engine's prefilter looks for (mmcv_migrate/engine.py: _TOKENS and _CONFIG_TYPE); used to
# check that the generated "clean" files really are clean. Kept here so the script stays standalone.
PREFILTER_TOKENS = (b"mmcv", b"ext_loader", b"load_ext", b"Extension", b"cpp_extension")
CONFIG_TYPE_RE = re.compile(rb"""type['"]?\s*[=:]\s*['"]([A-Za-z_][A-Za-z0-9_]*)['"]""")

# =============================================================================================
# Tree generation
# =============================================================================================

ADJECTIVES = (
    "base", "simple", "dense", "sparse", "multi_scale", "cascade", "dynamic", "light", "deep", "fast",
    "robust", "hybrid", "temporal", "spatial", "cross", "global", "local", "residual", "shared",
    "adaptive", "anchor_free", "two_stage", "single_stage", "lite", "efficient", "grouped", "dilated",
    "gated", "recurrent", "masked", "aligned", "rotated", "hierarchical", "semantic", "panoptic",
)
NOUNS = (
    "head", "neck", "encoder", "decoder", "block", "layer", "loss", "sampler", "assigner", "coder",
    "dataset", "pipeline", "transform", "hook", "metric", "runner", "optimizer", "scheduler",
    "backbone", "module", "attention", "embedding", "tracker", "matcher", "visualizer", "writer",
    "loader", "builder", "registry", "wrapper", "evaluator", "generator", "predictor", "refiner",
    "fuser", "aggregator", "selector", "converter", "normalizer", "projector",
)
VERBS = (
    "compute", "build", "merge", "filter", "resize", "normalize", "collect", "gather", "scatter",
    "encode", "decode", "flatten", "split", "pack", "unpack", "select", "assign", "match", "rescale",
    "project", "align", "pool", "sample", "accumulate", "reduce", "convert", "parse", "validate",
)
THINGS = (
    "boxes", "scores", "labels", "masks", "points", "anchors", "features", "targets", "weights",
    "images", "keypoints", "tokens", "queries", "proposals", "offsets", "heatmaps", "logits", "metas",
    "samples", "batches", "indices", "records", "annotations", "frames", "tracks", "voxels",
)
PACKAGES = (
    "models", "datasets", "structures", "evaluation", "engine", "apis", "visualization", "utils",
    "core", "layers", "losses", "heads", "necks", "backbones", "transforms", "samplers", "hooks",
    "metrics", "fileio", "runners", "trackers", "segmentors", "detectors", "classifiers",
)
SUBPACKAGES = (
    "common", "builder", "functional", "dense_heads", "roi_heads", "task_modules", "plugins",
    "data_preprocessors", "assigners", "coders", "prior_generators", "mot", "seg", "det", "cls",
    "pose", "three_d", "video", "text", "misc",
)
# Near-miss config types: realistic, match the config-type regex, none is an mmcv op.
NEAR_MISS_TYPES = (
    "Linear", "BN", "SyncBN", "GN", "LN", "ReLU", "GELU", "Conv2d", "Kaiming", "Xavier", "Normal",
    "Constant", "Pretrained", "SGD", "AdamW", "CosineAnnealingLR", "StepLR", "LinearLR",
    "CrossEntropyLoss", "L1Loss", "SmoothL1Loss", "LoadImageFromFile", "Resize", "RandomFlip",
    "Normalize", "Pad", "PackInputs", "ResNet", "FPN", "ImageClassifier", "EncoderDecoder",
    "GlobalAveragePooling", "LinearClsHead", "ASPPHead", "FCNHead", "Dropout", "Identity",
)


def snake(rng: random.Random) -> str:
    return f"{rng.choice(ADJECTIVES)}_{rng.choice(NOUNS)}"


def camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def _indent(text: str, prefix: str = "    ") -> str:
    return textwrap.indent(text, prefix)


class ModuleWriter:
    """Builds one plain library module from templates: imports, constants, classes, functions."""

    def __init__(self, rng: random.Random, relative: Sequence[Tuple[str, str]]) -> None:
        self.rng = rng
        self.relative = relative  # (module, name) pairs that `from ..module import name` may pull in
        self.imports: List[str] = []
        self.local_imports: List[str] = []
        self.public: List[str] = []
        self.used: set = set()

    # -- names ------------------------------------------------------------------------------

    def fresh(self, make) -> str:
        for _ in range(50):
            name = make()
            if name not in self.used:
                self.used.add(name)
                return name
        name = f"{make()}_{len(self.used)}"
        self.used.add(name)
        return name

    def func_name(self) -> str:
        rng = self.rng
        return self.fresh(lambda: f"{rng.choice(VERBS)}_{rng.choice(THINGS)}")

    def class_name(self) -> str:
        return self.fresh(lambda: camel(snake(self.rng)))

    # -- header -----------------------------------------------------------------------------

    def header(self, title: str) -> str:
        rng = self.rng
        lines = ["# Copyright (c) Example Vision Authors. All rights reserved.",
                 f'"""{title.replace("_", " ").capitalize()} components.', "",
                 textwrap.fill(
                     f"This module provides the {rng.choice(ADJECTIVES).replace('_', ' ')} "
                     f"{rng.choice(NOUNS)} used by the {rng.choice(PACKAGES)} package, together with "
                     f"helpers to {rng.choice(VERBS)} {rng.choice(THINGS)} and {rng.choice(THINGS)}.",
                     width=96),
                 '"""']
        return "\n".join(lines)

    def choose_imports(self) -> None:
        rng = self.rng
        std = ["import os", "import os.path as osp", "import math", "import warnings", "import copy",
               "import json", "import logging", "import itertools", "import functools", "import time",
               "from collections import OrderedDict, defaultdict", "from pathlib import Path",
               "from dataclasses import dataclass, field", "import re", "import tempfile"]
        needed = {"import os", "import os.path as osp", "import math", "import warnings", "import logging",
                  "import copy", "import json", "from dataclasses import dataclass, field",
                  "from collections import OrderedDict, defaultdict"}
        chosen = sorted(set(rng.sample(std, rng.randint(3, 7))) | needed, key=lambda line: line.split()[1])
        chosen.append("from typing import Any, Dict, List, Optional, Sequence, Tuple, Union")
        chosen.append("")
        chosen += ["import numpy as np", "import torch", "import torch.nn as nn",
                   "import torch.nn.functional as F", "from torch import Tensor"]
        self.imports = chosen
        self.local_imports = []
        if self.relative:
            for module, name in rng.sample(list(self.relative), min(len(self.relative), rng.randint(1, 3))):
                self.local_imports.append(f"from {rng.choice(('..', '.'))}{module} import {name}")

    # -- blocks -----------------------------------------------------------------------------

    def constants(self) -> str:
        rng = self.rng
        name = rng.choice(THINGS).upper()
        scales = ", ".join(str(round(rng.uniform(0.25, 4.0), 2)) for _ in range(rng.randint(2, 5)))
        lines = [f"DEFAULT_{name}_SCALES = ({scales})",
                 f"_EPS = {rng.choice(('1e-6', '1e-5', '1e-12', '1e-4'))}",
                 f"_MAX_{name} = {rng.choice((100, 300, 1000, 2000))}",
                 "logger = logging.getLogger(__name__)" if rng.random() < 0.5 else
                 f"_{name}_KEYS = ('{rng.choice(THINGS)}', '{rng.choice(THINGS)}', '{rng.choice(THINGS)}')"]
        return "\n".join(lines)

    def near_miss_config(self) -> str:
        rng = self.rng
        name = rng.choice(THINGS).upper()
        t1, t2, t3 = rng.sample(NEAR_MISS_TYPES, 3)
        if rng.random() < 0.5:
            return textwrap.dedent(f"""\
                DEFAULT_{name}_CFG = dict(
                    type='{t1}',
                    in_channels={rng.choice((64, 128, 256, 512))},
                    norm_cfg=dict(type='{t2}', requires_grad=True),
                    act_cfg=dict(type='{t3}'),
                    init_cfg=[dict(type='Kaiming', layer='Conv2d'), dict(type='Constant', val=1, layer='BatchNorm2d')],
                )""")
        return textwrap.dedent(f"""\
            _{name}_PRESETS: Dict[str, Dict[str, Any]] = {{
                'small': {{'type': '{t1}', 'depth': 18, 'widths': [64, 128, 256, 512]}},
                'base': {{'type': '{t2}', 'depth': 50, 'widths': [256, 512, 1024, 2048]}},
                'large': {{"type": "{t3}", "depth": 101, "widths": [256, 512, 1024, 2048]}},
            }}""")

    def func_numpy(self) -> str:
        rng = self.rng
        name = self.func_name()
        thing = name.split("_", 1)[1]
        return textwrap.dedent(f'''\
            def {name}({thing}: np.ndarray, axis: int = {rng.choice((0, -1))}, eps: float = _EPS) -> np.ndarray:
                """Normalise ``{thing}`` along ``axis``.

                Args:
                    {thing} (np.ndarray): Input array of shape (N, C).
                    axis (int): Axis to reduce over.
                    eps (float): Small value that avoids a division by zero.

                Returns:
                    np.ndarray: An array with the shape of the input.
                """
                {thing} = np.asarray({thing}, dtype=np.float32)
                if {thing}.size == 0:
                    return {thing}.copy()
                mean = {thing}.mean(axis=axis, keepdims=True)
                std = {thing}.std(axis=axis, keepdims=True)
                out = ({thing} - mean) / (std + eps)
                return np.clip(out, -{rng.choice((3, 5, 10))}.0, {rng.choice((3, 5, 10))}.0)''')

    def func_files(self) -> str:
        rng = self.rng
        name = self.fresh(lambda: f"list_{rng.choice(THINGS)}_files")
        suffix = rng.choice((".json", ".pkl", ".txt", ".png", ".jpg", ".npy"))
        return textwrap.dedent(f'''\
            def {name}(root: str, suffix: str = '{suffix}', recursive: bool = True) -> List[str]:
                """Return the sorted files under ``root`` whose name ends with ``suffix``."""
                if not osp.isdir(root):
                    raise FileNotFoundError(f'{{root}} is not a directory')
                results = []
                for dirpath, dirnames, filenames in os.walk(root):
                    dirnames[:] = [d for d in dirnames if not d.startswith('.')]
                    for filename in sorted(filenames):
                        if filename.endswith(suffix):
                            results.append(osp.join(dirpath, filename))
                    if not recursive:
                        break
                if not results:
                    warnings.warn(f'no {{suffix}} files found under {{root}}')
                return sorted(results)''')

    def func_torch(self) -> str:
        rng = self.rng
        name = self.func_name()
        mode = rng.choice(("bilinear", "nearest", "bicubic"))
        align = "align_corners=False" if mode != "nearest" else "recompute_scale_factor=False"
        return textwrap.dedent(f'''\
            def {name}(feats: Tensor, scale_factor: float = {rng.choice(("1.0", "2.0", "0.5"))}, dim: int = -1) -> Tensor:
                """Resize ``feats`` and reduce it over its spatial dimensions.

                Args:
                    feats (Tensor): Features of shape (N, C, H, W).
                    scale_factor (float): Resize factor.
                    dim (int): Dimension to reduce.

                Returns:
                    Tensor: Reduced features of shape (N, C).
                """
                if feats.dim() != 4:
                    raise ValueError(f'expected a 4D tensor, got {{feats.dim()}}D')
                n, c, h, w = feats.shape
                if scale_factor != 1.0:
                    feats = F.interpolate(feats, scale_factor=scale_factor, mode='{mode}', {align})
                flat = feats.reshape(n, c, -1)
                weights = flat.softmax(dim=dim)
                return (flat * weights).sum(dim=dim).to(dtype=feats.dtype)''')

    def func_dict(self) -> str:
        rng = self.rng
        name = self.fresh(lambda: f"merge_{rng.choice(THINGS)}_options")
        return textwrap.dedent(f'''\
            def {name}(base: Dict[str, Any], override: Optional[Dict[str, Any]] = None,
                    {' ' * len(name)}allow_new_keys: bool = True) -> Dict[str, Any]:
                """Merge ``override`` into a copy of ``base``, recursing into nested dicts."""
                merged = copy.deepcopy(base)
                for key, value in (override or {{}}).items():
                    if key not in merged and not allow_new_keys:
                        raise KeyError(f'unexpected option {{key!r}}')
                    if isinstance(value, dict) and isinstance(merged.get(key), dict):
                        merged[key] = {name}(merged[key], value, allow_new_keys)
                    else:
                        merged[key] = value
                return merged''')

    def func_metrics(self) -> str:
        rng = self.rng
        name = self.fresh(lambda: f"{rng.choice(('average', 'mean', 'weighted'))}_{rng.choice(THINGS)}_metric")
        return textwrap.dedent(f'''\
            def {name}(results: Sequence[Dict[str, float]], keys: Optional[Sequence[str]] = None,
                    {' ' * len(name)}prefix: str = '') -> Dict[str, float]:
                """Average each metric of ``results`` over the batches that report it."""
                totals: Dict[str, float] = defaultdict(float)
                counts: Dict[str, int] = defaultdict(int)
                for result in results:
                    for key, value in result.items():
                        if keys is not None and key not in keys:
                            continue
                        if value is None or (isinstance(value, float) and math.isnan(value)):
                            continue
                        totals[key] += float(value)
                        counts[key] += 1
                return {{f'{{prefix}}{{key}}': totals[key] / counts[key] for key in sorted(totals)}}''')

    def func_json(self) -> str:
        rng = self.rng
        thing = rng.choice(THINGS)
        name = self.fresh(lambda: f"load_{thing}_annotations")
        return textwrap.dedent(f'''\
            def {name}(ann_file: str, min_size: int = {rng.choice((0, 1, 8, 32))}) -> List[Dict[str, Any]]:
                """Read ``ann_file`` (JSON) and drop the entries smaller than ``min_size``."""
                with open(ann_file, 'r', encoding='utf-8') as handle:
                    data = json.load(handle)
                entries = data.get('{thing}', data) if isinstance(data, dict) else data
                kept = []
                for index, entry in enumerate(entries):
                    width, height = entry.get('width', 0), entry.get('height', 0)
                    if min(width, height) < min_size:
                        continue
                    entry = dict(entry, index=index)
                    kept.append(entry)
                return kept''')

    def class_module(self) -> str:
        rng = self.rng
        name = self.class_name()
        self.public.append(name)
        inc, outc = rng.choice((64, 128, 256, 512)), rng.choice((128, 256, 512))
        nconv = rng.choice((1, 2, 3, 4))
        extra = ""
        if rng.random() < 0.6:
            extra = textwrap.dedent(f'''\

                def _{rng.choice(VERBS)}_{rng.choice(THINGS)}(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
                    """Mask out invalid positions of ``x``."""
                    if mask is None:
                        return x
                    if mask.shape[-2:] != x.shape[-2:]:
                        mask = F.interpolate(mask[:, None].float(), size=x.shape[-2:]).to(torch.bool)[:, 0]
                    return x.masked_fill(~mask[:, None], 0.0)

                @property
                def with_dropout(self) -> bool:
                    return not isinstance(self.dropout, nn.Identity)''')
        return textwrap.dedent(f'''\
            class {name}(nn.Module):
                """{name}: stacked convolutions with an optional residual.

                Args:
                    in_channels (int): Number of input channels.
                    out_channels (int): Number of output channels. Defaults to {outc}.
                    num_convs (int): Number of stacked convolutions. Defaults to {nconv}.
                    dropout (float): Dropout ratio. Defaults to 0.
                    residual (bool): Whether to add a shortcut connection.
                """

                def __init__(self,
                             in_channels: int = {inc},
                             out_channels: int = {outc},
                             num_convs: int = {nconv},
                             dropout: float = 0.0,
                             residual: bool = {rng.choice(("True", "False"))}) -> None:
                    super().__init__()
                    self.in_channels = in_channels
                    self.out_channels = out_channels
                    self.residual = residual
                    layers: List[nn.Module] = []
                    for i in range(num_convs):
                        channels = in_channels if i == 0 else out_channels
                        layers.append(nn.Conv2d(channels, out_channels, 3, padding=1, bias=False))
                        layers.append(nn.BatchNorm2d(out_channels))
                        layers.append(nn.ReLU(inplace=True))
                    self.layers = nn.Sequential(*layers)
                    self.shortcut = (nn.Identity() if in_channels == out_channels else
                                     nn.Conv2d(in_channels, out_channels, 1, bias=False))
                    self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()

                def init_weights(self) -> None:
                    for m in self.modules():
                        if isinstance(m, nn.Conv2d):
                            nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
                            if m.bias is not None:
                                nn.init.constant_(m.bias, 0)
                        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                            nn.init.constant_(m.weight, 1)
                            nn.init.constant_(m.bias, 0)

                def forward(self, x: Tensor) -> Tensor:
                    """Forward function.

                    Args:
                        x (Tensor): Input of shape (N, C, H, W).

                    Returns:
                        Tensor: Output of shape (N, out_channels, H, W).
                    """
                    out = self.dropout(self.layers(x))
                    if self.residual:
                        out = out + self.shortcut(x)
                    return out
            ''').rstrip() + ("\n" + _indent(extra) if extra else "")

    def class_dataset(self) -> str:
        rng = self.rng
        name = self.class_name()
        self.public.append(name)
        classes = ", ".join(f"'{rng.choice(THINGS)[:-1]}'" for _ in range(rng.randint(3, 8)))
        return textwrap.dedent(f'''\
            class {name}:
                """A map-style dataset of annotated samples.

                Args:
                    ann_file (str): Path of the annotation file.
                    data_root (str): Root of the images.
                    pipeline (Sequence[callable]): Transforms applied to each sample.
                    test_mode (bool): Whether the dataset is used for testing.
                """

                CLASSES: Tuple[str, ...] = ({classes},)

                def __init__(self,
                             ann_file: str,
                             data_root: str = '',
                             pipeline: Sequence = (),
                             test_mode: bool = False,
                             max_refetch: int = {rng.choice((10, 100, 1000))}) -> None:
                    self.ann_file = ann_file
                    self.data_root = data_root
                    self.pipeline = list(pipeline)
                    self.test_mode = test_mode
                    self.max_refetch = max_refetch
                    self.data_list = self.load_data_list()
                    self._flags = np.zeros(len(self), dtype=np.uint8)

                def load_data_list(self) -> List[Dict[str, Any]]:
                    path = osp.join(self.data_root, self.ann_file) if self.data_root else self.ann_file
                    if not osp.exists(path):
                        warnings.warn(f'annotation file {{path}} does not exist')
                        return []
                    with open(path, 'r', encoding='utf-8') as handle:
                        raw = json.load(handle)
                    return [dict(item, img_path=osp.join(self.data_root, item['file_name'])) for item in raw]

                def __len__(self) -> int:
                    return len(self.data_list)

                def prepare_data(self, idx: int) -> Optional[Dict[str, Any]]:
                    results = copy.deepcopy(self.data_list[idx])
                    for transform in self.pipeline:
                        results = transform(results)
                        if results is None:
                            return None
                    return results

                def __getitem__(self, idx: int) -> Dict[str, Any]:
                    for _ in range(self.max_refetch + 1):
                        data = self.prepare_data(idx)
                        if data is not None or self.test_mode:
                            return data
                        idx = np.random.randint(0, len(self))
                    raise RuntimeError(f'cannot find a valid sample after {{self.max_refetch}} tries')

                @property
                def metainfo(self) -> Dict[str, Any]:
                    return {{'classes': self.CLASSES, 'ann_file': self.ann_file}}''')

    def class_dataclass(self) -> str:
        rng = self.rng
        suffix = rng.choice(("config", "settings", "options", "state"))
        name = self.fresh(lambda: camel(f"{rng.choice(NOUNS)}_{suffix}"))
        self.public.append(name)
        fields = []
        for _ in range(rng.randint(4, 9)):
            fname = self.fresh(lambda: f"{rng.choice(THINGS)}_{rng.choice(('size', 'ratio', 'count', 'thr', 'dir', 'mode'))}")
            kind = fname.rsplit("_", 1)[1]
            if kind in ("size", "count"):
                fields.append(f"    {fname}: int = {rng.choice((1, 4, 8, 16, 32, 100))}")
            elif kind in ("ratio", "thr"):
                fields.append(f"    {fname}: float = {round(rng.random(), 2)}")
            elif kind == "dir":
                fields.append(f"    {fname}: str = '{rng.choice(('data', 'work_dirs', 'cache', 'outputs'))}'")
            else:
                fields.append(f"    {fname}: Optional[str] = None")
        fields.append("    extra: Dict[str, Any] = field(default_factory=dict)")
        return "\n".join([
            "@dataclass",
            f"class {name}:",
            f'    """{suffix.capitalize()} of the {name[:-len(suffix)].lower()} stage."""',
            "",
            *fields,
            "",
            "    def to_dict(self) -> Dict[str, Any]:",
            "        return {k: getattr(self, k) for k in self.__dataclass_fields__}",
            "",
            "    @classmethod",
            f"    def from_dict(cls, data: Dict[str, Any]) -> '{name}':",
            "        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}",
            "        extra = {k: v for k, v in data.items() if k not in cls.__dataclass_fields__}",
            "        obj = cls(**known)",
            "        obj.extra.update(extra)",
            "        return obj",
        ])

    def render(self, target_lines: int, title: str, extra_imports: Sequence[str] = (),
               extra_blocks: Sequence[str] = ()) -> str:
        rng = self.rng
        self.choose_imports()
        makers = (self.func_numpy, self.func_files, self.func_torch, self.func_dict, self.func_metrics,
                  self.func_json, self.class_module, self.class_module, self.class_dataset,
                  self.class_dataclass)
        blocks = [self.constants()]
        if rng.random() < 0.15:
            blocks.append(self.near_miss_config())
        blocks.extend(extra_blocks)
        size = sum(b.count("\n") + 3 for b in blocks) + len(self.imports) + len(extra_imports) + 12
        misses = 0
        while size < target_lines and misses < 8:
            block = rng.choice(makers)()
            if size >= 100 and size + block.count("\n") + 3 > 400:
                misses += 1
                continue
            blocks.insert(rng.randint(1, len(blocks)), block)
            size += block.count("\n") + 3
        funcs = [b.split("(", 1)[0][4:] for b in blocks if b.startswith("def ") and not b.startswith("def _")]
        public = self.public + funcs
        local = [""] + self.local_imports if self.local_imports else []
        head = [self.header(title), "", *self.imports, *extra_imports, *local, "",
                "__all__ = [" + ", ".join(f"'{n}'" for n in public) + "]"]
        return "\n".join(head) + "\n\n\n" + "\n\n\n".join(blocks) + "\n"


# --- mmcv usage, in the forms OpenMMLab-based code has -------------------------------------------

def mmcv_usage(rng: random.Random, form: str) -> Tuple[List[str], List[str]]:
    """(import lines, code blocks) that use mmcv in the given form."""
    thr = rng.choice(("0.5", "0.6", "0.7"))
    if form == "from_ops":
        return (["from mmcv.ops import RoIAlign, batched_nms, nms as nms_op"], [textwrap.dedent(f'''\
            class SingleLevelRoIExtractor(nn.Module):
                """Extract RoI features from a single feature level."""

                def __init__(self, out_size: int = 7, spatial_scale: float = 1 / 16, sampling_ratio: int = 0) -> None:
                    super().__init__()
                    self.roi_layer = RoIAlign(out_size, spatial_scale, sampling_ratio, aligned=True)

                def forward(self, feats: Tensor, rois: Tensor) -> Tensor:
                    return self.roi_layer(feats, rois)


            def filter_proposals(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_thr: float = {thr}):
                """Class-aware NMS over ``boxes``."""
                if boxes.numel() == 0:
                    return boxes.new_zeros((0, 5)), boxes.new_zeros((0,), dtype=torch.long)
                dets, keep = batched_nms(boxes, scores, idxs, dict(type='nms', iou_threshold=iou_thr))
                return dets, keep


            def single_class_nms(boxes: Tensor, scores: Tensor, iou_thr: float = {thr}):
                return nms_op(boxes, scores, iou_thr)''')])
    if form == "from_submodule":
        return (["from mmcv.ops.multi_scale_deform_attn import (MultiScaleDeformableAttention,",
                 "                                              multi_scale_deformable_attn_pytorch)"],
                [textwrap.dedent('''\
            class DeformableEncoderLayer(nn.Module):
                def __init__(self, embed_dims: int = 256, num_levels: int = 4, num_points: int = 4) -> None:
                    super().__init__()
                    self.attn = MultiScaleDeformableAttention(embed_dims, num_levels=num_levels,
                                                              num_points=num_points, batch_first=True)
                    self.norm = nn.LayerNorm(embed_dims)

                def forward(self, query: Tensor, value: Tensor, reference_points: Tensor,
                            spatial_shapes: Tensor, level_start_index: Tensor) -> Tensor:
                    out = self.attn(query, value=value, reference_points=reference_points,
                                    spatial_shapes=spatial_shapes, level_start_index=level_start_index)
                    return self.norm(out)


            def reference_attention(value, shapes, locations, weights):
                return multi_scale_deformable_attn_pytorch(value, shapes, locations, weights)''')])
    if form == "import_mmcv":
        return (["import mmcv"], [textwrap.dedent(f'''\
            def postprocess_detections(img_path: str, boxes: Tensor, scores: Tensor, iou_thr: float = {thr}):
                """Read the image, run NMS and return the kept boxes with the image shape."""
                img = mmcv.imread(img_path)
                dets, keep = mmcv.ops.nms(boxes, scores, iou_thr)
                soft_dets, _ = mmcv.ops.soft_nms(boxes.cpu(), scores.cpu(), iou_thr, method='linear')
                return dets, soft_dets, img.shape[:2]''')])
    if form == "ext_loader":
        return (["from torch.autograd import Function", "", "from mmcv.utils import ext_loader", "",
                 "ext_module = ext_loader.load_ext('_ext', ['roi_align_forward', 'roi_align_backward'])"],
                [textwrap.dedent('''\
            class RoIAlignFunction(Function):

                @staticmethod
                def forward(ctx, input: Tensor, rois: Tensor, output_size: int, spatial_scale: float = 1.0,
                            sampling_ratio: int = 0, pool_mode: str = 'avg', aligned: bool = True) -> Tensor:
                    ctx.output_size = (output_size, output_size)
                    ctx.spatial_scale = spatial_scale
                    ctx.sampling_ratio = sampling_ratio
                    ctx.pool_mode = 0 if pool_mode == 'max' else 1
                    ctx.aligned = aligned
                    ctx.input_shape = input.size()
                    output_shape = (rois.size(0), input.size(1), output_size, output_size)
                    output = input.new_zeros(output_shape)
                    argmax_y = input.new_zeros(output_shape) if ctx.pool_mode == 0 else input.new_zeros(0)
                    argmax_x = input.new_zeros(output_shape) if ctx.pool_mode == 0 else input.new_zeros(0)
                    ext_module.roi_align_forward(
                        input, rois, output, argmax_y, argmax_x,
                        aligned_height=output_size, aligned_width=output_size,
                        spatial_scale=spatial_scale, sampling_ratio=sampling_ratio,
                        pool_mode=ctx.pool_mode, aligned=aligned)
                    ctx.save_for_backward(rois, argmax_y, argmax_x)
                    return output

                @staticmethod
                def backward(ctx, grad_output: Tensor):
                    rois, argmax_y, argmax_x = ctx.saved_tensors
                    grad_input = grad_output.new_zeros(ctx.input_shape)
                    ext_module.roi_align_backward(
                        grad_output.contiguous(), rois, argmax_y, argmax_x, grad_input,
                        aligned_height=ctx.output_size[0], aligned_width=ctx.output_size[1],
                        spatial_scale=ctx.spatial_scale, sampling_ratio=ctx.sampling_ratio,
                        pool_mode=ctx.pool_mode, aligned=ctx.aligned)
                    return grad_input, None, None, None, None, None, None


            roi_align = RoIAlignFunction.apply''')])
    if form == "try_import":
        return (["from mmcv.cnn import ConvModule, build_norm_layer", "",
                 "try:", "    from mmcv.ops import DeformConv2dPack, ModulatedDeformConv2dPack",
                 "except ImportError:", "    DeformConv2dPack = ModulatedDeformConv2dPack = None"],
                [textwrap.dedent('''\
            def build_deform_layer(in_channels: int, out_channels: int, modulated: bool = True) -> nn.Module:
                """A deformable 3x3 convolution when mmcv's ops are available, else a plain ConvModule."""
                if modulated and ModulatedDeformConv2dPack is not None:
                    return ModulatedDeformConv2dPack(in_channels, out_channels, 3, padding=1, deform_groups=1)
                if DeformConv2dPack is not None:
                    return DeformConv2dPack(in_channels, out_channels, 3, padding=1)
                return ConvModule(in_channels, out_channels, 3, padding=1, norm_cfg=dict(type='BN'))''')])
    if form == "from_mmcv_ops_getattr":
        return (["from mmcv import ops"], [textwrap.dedent('''\
            def build_roi_layers(layer_cfg: Dict[str, Any], featmap_strides: Sequence[int]) -> nn.ModuleList:
                """Build one RoI layer per stride from ``layer_cfg`` (e.g. ``dict(type='RoIAlign', output_size=7)``)."""
                cfg = layer_cfg.copy()
                layer_type = cfg.pop('type')
                layer_cls = getattr(ops, layer_type)
                return nn.ModuleList([layer_cls(spatial_scale=1 / s, **cfg) for s in featmap_strides])''')])
    if form == "mmcv_runner_only":  # mentions mmcv, no compiled op: a candidate with no finding
        return (["from mmcv.runner import BaseModule, auto_fp16"], [textwrap.dedent('''\
            class LegacyFusionModule(BaseModule):
                def __init__(self, channels: int = 256, init_cfg: Optional[dict] = None) -> None:
                    super().__init__(init_cfg)
                    self.fuse = nn.Conv2d(channels * 2, channels, 1)

                @auto_fp16()
                def forward(self, a: Tensor, b: Tensor) -> Tensor:
                    return self.fuse(torch.cat([a, b], dim=1))''')])
    raise ValueError(form)


MODULE_FORMS = (("from_ops", 5), ("from_submodule", 2), ("import_mmcv", 2), ("ext_loader", 2),
                ("try_import", 2), ("from_mmcv_ops_getattr", 1), ("mmcv_runner_only", 1))


# --- configs, tests, tools --------------------------------------------------------------------

def config_file(rng: random.Random, target_lines: int, detection: bool) -> str:
    """An mmdet/mmpretrain-style config; ``detection`` ones name mmcv ops (RoIAlign, nms) as types."""
    lines = ["# Generated benchmark config.",
             f"_base_ = ['../_base_/default_runtime.py', '../_base_/schedules/schedule_{rng.choice((1, 2, 3))}x.py']",
             ""]
    if detection:
        lines += textwrap.dedent(f"""\
            model = dict(
                type='FasterRCNN',
                backbone=dict(type='ResNet', depth=50, num_stages=4, out_indices=(0, 1, 2, 3), frozen_stages=1,
                              norm_cfg=dict(type='BN', requires_grad=True), norm_eval=True, style='pytorch'),
                neck=dict(type='FPN', in_channels=[256, 512, 1024, 2048], out_channels=256, num_outs=5),
                rpn_head=dict(type='RPNHead', in_channels=256, feat_channels=256,
                              anchor_generator=dict(type='AnchorGenerator', scales=[8], ratios=[0.5, 1.0, 2.0],
                                                    strides=[4, 8, 16, 32, 64]),
                              loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
                              loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
                roi_head=dict(
                    type='StandardRoIHead',
                    bbox_roi_extractor=dict(
                        type='SingleRoIExtractor',
                        roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0),
                        out_channels=256,
                        featmap_strides=[4, 8, 16, 32]),
                    bbox_head=dict(type='Shared2FCBBoxHead', in_channels=256, fc_out_channels=1024,
                                   roi_feat_size=7, num_classes={rng.choice((20, 80, 1203))})),
                train_cfg=dict(rpn_proposal=dict(nms_pre=2000, max_per_img=1000,
                                                 nms=dict(type='nms', iou_threshold=0.7), min_bbox_size=0)),
                test_cfg=dict(
                    rpn=dict(nms_pre=1000, max_per_img=1000, nms=dict(type='nms', iou_threshold=0.7), min_bbox_size=0),
                    rcnn=dict(score_thr=0.05, nms=dict(type='{rng.choice(("nms", "soft_nms"))}', iou_threshold=0.5),
                              max_per_img=100)))
            """).splitlines()
    elif rng.random() < 0.5:
        lines += textwrap.dedent(f"""\
            model = dict(
                type='ImageClassifier',
                backbone=dict(type='ResNet', depth={rng.choice((18, 34, 50, 101))}, num_stages=4,
                              out_indices=(3, ), style='pytorch'),
                neck=dict(type='GlobalAveragePooling'),
                head=dict(type='LinearClsHead', num_classes={rng.choice((10, 100, 1000))}, in_channels=2048,
                          loss=dict(type='CrossEntropyLoss', loss_weight=1.0), topk=(1, 5)))
            """).splitlines()
    else:
        lines += textwrap.dedent(f"""\
            norm_cfg = dict(type='SyncBN', requires_grad=True)
            model = dict(
                type='EncoderDecoder',
                backbone=dict(type='ResNetV1c', depth=50, num_stages=4, out_indices=(0, 1, 2, 3),
                              dilations=(1, 1, 2, 4), strides=(1, 2, 1, 1), norm_cfg=norm_cfg),
                decode_head=dict(type='ASPPHead', in_channels=2048, in_index=3, channels=512,
                                 dilations=(1, 12, 24, 36), dropout_ratio=0.1,
                                 num_classes={rng.choice((19, 21, 150))}, norm_cfg=norm_cfg,
                                 loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
                auxiliary_head=dict(type='FCNHead', in_channels=1024, in_index=2, channels=256, num_convs=1,
                                    norm_cfg=norm_cfg, num_classes=19,
                                    loss_decode=dict(type='CrossEntropyLoss', loss_weight=0.4)))
            """).splitlines()
    scale = rng.choice(((1333, 800), (1024, 512), (224, 224), (2048, 1024)))
    lines += [""] + textwrap.dedent(f"""\
        train_pipeline = [
            dict(type='LoadImageFromFile', backend_args=None),
            dict(type='LoadAnnotations', with_bbox=True),
            dict(type='Resize', scale={scale}, keep_ratio=True),
            dict(type='RandomFlip', prob={rng.choice((0.5, 0.0))}),
            dict(type='PhotoMetricDistortion'),
            dict(type='Normalize', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True),
            dict(type='Pad', size_divisor=32),
            dict(type='PackInputs'),
        ]
        test_pipeline = [
            dict(type='LoadImageFromFile', backend_args=None),
            dict(type='Resize', scale={scale}, keep_ratio=True),
            dict(type='PackInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
        ]
        """).splitlines()
    split = 0
    while len(lines) < target_lines - 12:
        split += 1
        name = rng.choice(("train", "val", "test"))
        lines += textwrap.dedent(f"""\

            {name}_dataloader_{split} = dict(
                batch_size={rng.choice((2, 4, 8, 16, 32))},
                num_workers={rng.choice((2, 4, 8))},
                persistent_workers=True,
                sampler=dict(type='DefaultSampler', shuffle={name == 'train'}),
                dataset=dict(
                    type='{rng.choice(("CocoDataset", "ADE20KDataset", "ImageNet", "CityscapesDataset", "LVISDataset"))}',
                    data_root='data/{rng.choice(("coco", "ade", "imagenet", "cityscapes", "lvis"))}/',
                    ann_file='annotations/{name}_{split}.json',
                    data_prefix=dict(img='{name}{rng.choice((2017, 2019, 2021))}/'),
                    filter_cfg=dict(filter_empty_gt=True, min_size={rng.choice((0, 16, 32))}),
                    pipeline={'train_pipeline' if name == 'train' else 'test_pipeline'}))
            """).splitlines()
        if rng.random() < 0.4:
            lines.append(f"{name}_evaluator_{split} = dict(type='{rng.choice(('CocoMetric', 'IoUMetric', 'Accuracy'))}', "
                         f"metric=['bbox'], format_only=False)")
    lines += textwrap.dedent(f"""\

        optim_wrapper = dict(
            type='OptimWrapper',
            optimizer=dict(type='{rng.choice(("SGD", "AdamW"))}', lr={rng.choice((0.02, 0.01, 0.0001))}, weight_decay=0.0001),
            clip_grad=dict(max_norm=35, norm_type=2))
        param_scheduler = [
            dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
            dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
        ]
        train_cfg = dict(type='EpochBasedTrainLoop', max_epochs={rng.choice((12, 24, 36, 100))}, val_interval=1)
        default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3))
        """).splitlines()
    return "\n".join(lines) + "\n"


def test_file(rng: random.Random, target_lines: int, package: str) -> str:
    lines = ["import os.path as osp", "import tempfile", "", "import numpy as np", "import pytest",
             "import torch", "", f"from visionkit.{package} import *  # noqa: F401,F403", ""]
    count = 0
    while len(lines) < target_lines - 8:
        count += 1
        thing = rng.choice(THINGS)
        shape = ", ".join(str(rng.choice((1, 2, 3, 4, 8, 16, 32))) for _ in range(rng.randint(2, 4)))
        lines += textwrap.dedent(f"""\


            @pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
            def test_{rng.choice(VERBS)}_{thing}_{count}(dtype):
                {thing} = torch.rand({shape}, dtype=dtype)
                expected = {thing}.clone()
                assert {thing}.shape == expected.shape
                assert {thing}.dtype == dtype
                np.testing.assert_allclose({thing}.numpy(), expected.numpy(), rtol=1e-5)
                with tempfile.TemporaryDirectory() as tmp:
                    path = osp.join(tmp, '{thing}.pth')
                    torch.save({thing}, path)
                    loaded = torch.load(path)
                assert torch.equal(loaded, {thing})
                with pytest.raises(ValueError):
                    raise ValueError('{thing} must be non-empty')
            """).splitlines()
    return "\n".join(lines) + "\n"


SETUP_PY = '''\
import os

from setuptools import find_packages, setup


def readme() -> str:
    with open('README.md', encoding='utf-8') as handle:
        return handle.read()


if __name__ == '__main__':
    setup(
        name='visionkit',
        version='0.4.0',
        description='Example vision toolbox (benchmark fixture)',
        long_description=readme(),
        packages=find_packages(exclude=('configs', 'tools', 'tests')),
        python_requires='>=3.8',
        zip_safe=False)
'''

# A project-local compiled extension (Sparse4D-style): counted among the mmcv-related files.
EXT_SETUP_PY = '''\
import os

from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CUDAExtension


def make_cuda_ext(name: str, module: str, sources, extra_args=None):
    return CUDAExtension(
        name=f'{module}.{name}',
        sources=[os.path.join(*module.split('.'), src) for src in sources],
        extra_compile_args={'cxx': [], 'nvcc': ['-D__CUDA_NO_HALF_OPERATORS__'] + (extra_args or [])})


if __name__ == '__main__':
    setup(
        name='deformable_aggregation_ext',
        ext_modules=[
            make_cuda_ext('deformable_aggregation_ext', module='visionkit.ops.deformable_aggregation',
                          sources=['src/deformable_aggregation.cpp', 'src/deformable_aggregation_cuda.cu']),
        ],
        cmdclass={'build_ext': BuildExtension})
'''


# The .gitignore of an OpenMMLab-style project: discovery honours it, so a realistic tree has one
# (matching every path against it is part of what a scan costs).
GITIGNORE = """\
# Byte-compiled / optimized / DLL files
__pycache__/
*.py[cod]
*$py.class

# C extensions
*.so

# Distribution / packaging
.Python
build/
develop-eggs/
dist/
downloads/
eggs/
.eggs/
lib/
lib64/
parts/
sdist/
var/
wheels/
*.egg-info/
.installed.cfg
*.egg
MANIFEST

# Unit test / coverage reports
htmlcov/
.tox/
.coverage
.coverage.*
.cache
nosetests.xml
coverage.xml
*.cover
.hypothesis/
.pytest_cache/

# Jupyter Notebook
.ipynb_checkpoints

# Environments
.env
.venv
env/
venv/
ENV/

# mypy
.mypy_cache/

# editors
.vscode
.idea
.DS_Store

# custom
data/
data
*.pkl
*.pkl.json
*.log.json
docs/modelzoo_statistics.md
visionkit/.mim
work_dirs/
*.pth
*.onnx
*.engine
*.log
outputs/
wandb/
"""


def generate_tree(root: Path, n_files: int, mmcv_ratio: float, seed: int,
                  gitignore: bool = True) -> Dict[str, object]:
    """Write the tree under ``root``; return its manifest (which files use mmcv, sizes)."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER).write_text(f"generated by benchmarks/bench_scan.py seed={seed}\n")
    if gitignore:
        (root / ".gitignore").write_text(GITIGNORE)
    files: List[Tuple[str, str]] = []  # (relative path, kind)

    n_configs = max(1, int(n_files * 0.10))
    n_tests = max(1, int(n_files * 0.07))
    n_tools = max(1, int(n_files * 0.01))
    n_lib = n_files - n_configs - n_tests - n_tools - 1  # - setup.py
    # Library layout: visionkit/<package>/<subpackage>/<module>.py, ~25 modules per subpackage.
    n_sub = max(1, round(n_lib / 26))
    packages = sorted(PACKAGES[:max(1, min(len(PACKAGES), -(-n_sub // 6)))])
    per_pkg = max(1, min(len(SUBPACKAGES), -(-n_sub // len(packages))))
    subdirs = []
    for pkg in packages:
        subdirs += [f"visionkit/{pkg}/{sub}" for sub in sorted(rng.sample(SUBPACKAGES, per_pkg))]
    inits = ["visionkit/__init__.py"] + [f"visionkit/{pkg}/__init__.py" for pkg in packages] + \
            [f"{d}/__init__.py" for d in subdirs]
    modules = []
    per_dir: Dict[str, set] = {}
    for index in range(n_lib - len(inits)):
        d = subdirs[index % len(subdirs)]
        used = per_dir.setdefault(d, set())
        name = snake(rng)
        while name in used:
            name = f"{snake(rng)}_{len(used)}" if len(used) > 200 else snake(rng)
        used.add(name)
        modules.append(f"{d}/{name}.py")
    files += [(p, "init") for p in inits] + [(p, "module") for p in modules]
    families = ("faster_rcnn", "mask_rcnn", "retinanet", "resnet", "deeplabv3", "pspnet", "swin", "vit",
                "convnext", "detr", "yolox", "centernet")
    for index in range(n_configs):
        family = families[index % len(families)]
        files.append((f"configs/{family}/{family}_r{rng.choice((18, 50, 101))}_{index}x_"
                      f"{rng.choice(('coco', 'voc', 'ade20k', 'in1k', 'cityscapes'))}.py", "config"))
    for index in range(n_tests):
        files.append((f"tests/test_{rng.choice(PACKAGES)}/test_{snake(rng)}_{index}.py", "test"))
    for index in range(n_tools):
        files.append((f"tools/{rng.choice(VERBS)}_{rng.choice(THINGS)}_{index}.py", "tool"))
    files.append(("setup.py", "setup"))

    # Which files use mmcv: ~mmcv_ratio of all files: library modules, detection configs, one setup.py.
    n_mmcv = max(1, round(n_files * mmcv_ratio)) if mmcv_ratio > 0 else 0
    n_ext_setup = 1 if n_mmcv >= 20 else 0
    if n_ext_setup:  # replaces the last tool, so the total stays n_files
        last_tool = max(i for i, (_, kind) in enumerate(files) if kind == "tool")
        files[last_tool] = ("visionkit/ops/deformable_aggregation/setup.py", "ext_setup")
    module_idx = [i for i, (_, kind) in enumerate(files) if kind == "module"]
    config_idx = [i for i, (_, kind) in enumerate(files) if kind == "config"]
    n_cfg_mmcv = min(len(config_idx), n_mmcv // 4)
    n_mod_mmcv = min(len(module_idx), n_mmcv - n_cfg_mmcv - n_ext_setup)
    mmcv_forms: Dict[int, str] = {}
    weighted = [form for form, weight in MODULE_FORMS for _ in range(weight)]
    for k, i in enumerate(sorted(rng.sample(module_idx, n_mod_mmcv))):
        mmcv_forms[i] = weighted[k % len(weighted)]
    for i in rng.sample(config_idx, n_cfg_mmcv):
        mmcv_forms[i] = "config_types"
    if n_ext_setup:
        mmcv_forms[last_tool] = "cpp_extension"

    relative = [("utils", "get_root_logger"), ("registry", "MODELS"), ("structures", "DetDataSample"),
                ("builder", "build_loss"), ("base", "BaseModule")]
    manifest_files = []
    total_bytes = 0
    for index, (rel, kind) in enumerate(files):
        form = mmcv_forms.get(index)
        frng = random.Random(f"{seed}:{rel}")
        target = int(frng.triangular(100, 400, 190))
        if kind == "init":
            names = [snake(frng) for _ in range(frng.randint(1, 4))]
            text = "# Copyright (c) Example Vision Authors. All rights reserved.\n" + "".join(
                f"from .{n} import {camel(n)}\n" for n in names) + \
                "\n__all__ = [" + ", ".join(f"'{camel(n)}'" for n in names) + "]\n"
        elif kind == "module":
            writer = ModuleWriter(frng, relative)
            if form:
                imports, blocks = mmcv_usage(frng, form)
                text = writer.render(target, Path(rel).stem, extra_imports=[""] + imports, extra_blocks=blocks)
            else:
                text = writer.render(target, Path(rel).stem)
        elif kind == "config":
            text = config_file(frng, target, detection=form == "config_types")
        elif kind == "test":
            text = test_file(frng, target, rel.split("/")[1][5:])
        elif kind == "tool":
            text = ModuleWriter(frng, ()).render(target - 5, Path(rel).stem)
            text += "\n\nif __name__ == '__main__':\n    import sys\n    sys.exit(0)\n"
        elif kind == "setup":
            text = SETUP_PY
        elif kind == "ext_setup":
            text = EXT_SETUP_PY
        else:  # pragma: no cover
            raise ValueError(kind)
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = text.encode("utf-8")
        path.write_bytes(data)
        total_bytes += len(data)
        manifest_files.append({"path": rel, "kind": kind, "mmcv": form, "lines": text.count("\n"),
                               "bytes": len(data)})
    return {"root": str(root), "seed": seed, "files": manifest_files, "bytes": total_bytes}


def check_tree(root: Path, manifest: Dict[str, object], config_types: Optional[set]) -> List[str]:
    """Problems with the generated tree: clean files the prefilter would take, and the reverse."""
    problems = []
    for entry in manifest["files"]:
        data = (root / entry["path"]).read_bytes()
        hit = [t.decode() for t in PREFILTER_TOKENS if t in data]
        types = {m.decode() for m in CONFIG_TYPE_RE.findall(data)}
        op_types = types & config_types if config_types is not None else set()
        if entry["mmcv"] is None and (hit or op_types):
            problems.append(f"{entry['path']}: clean file matches the prefilter ({hit or sorted(op_types)})")
        if entry["mmcv"] is not None and not hit and not op_types and config_types is not None:
            problems.append(f"{entry['path']}: mmcv file ({entry['mmcv']}) escapes the prefilter")
    return problems


# =============================================================================================
# Measurement
# =============================================================================================

def find_cli() -> List[str]:
    """The real ``mmcv-migrate`` console script (not a pyenv/asdf shim), else ``python -m``."""
    scripts = sysconfig.get_path("scripts")
    for name in ("mmcv-migrate", "mmcv-migrate.exe"):
        candidate = os.path.join(scripts, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return [candidate]
    found = shutil.which("mmcv-migrate")
    if found:
        return [found]
    return [sys.executable, "-m", "mmcv_migrate.cli"]


def timed(cmd: Sequence[str], env: Dict[str, str], ok=(0,)) -> Tuple[float, bytes]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if proc.returncode not in ok:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n"
                           f"{proc.stderr.decode(errors='replace')[-2000:]}")
    return elapsed, proc.stdout


def libcst_pass(paths: Sequence[Path]) -> Tuple[float, int, int]:
    """Plain libcst: parse + QualifiedNameProvider per file; (seconds, files with mmcv names, names)."""
    import libcst
    from libcst.metadata import MetadataWrapper, QualifiedNameProvider

    start = time.perf_counter()
    files_hit = names_found = 0
    for path in paths:
        module = libcst.parse_module(path.read_bytes())
        qualified = MetadataWrapper(module).resolve(QualifiedNameProvider)
        found = set()
        for value in qualified.values():  # libcst >= 1.0 hands out LazyValue: resolve each one
            for q in (value() if callable(value) else value):
                if q.name.startswith("mmcv"):
                    found.add(q.name)
        files_hit += bool(found)
        names_found += len(found)
    return time.perf_counter() - start, files_hit, names_found


def engine_config_types() -> Optional[set]:
    """The catalogue's config types (what the prefilter's regex accepts), if the package imports."""
    try:
        from mmcv_migrate.coverage import load_coverage

        return set(load_coverage().catalogue.config_types)
    except Exception:  # the script must still run if the package layout changes
        return None


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def machine_info() -> Dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu_count": str(os.cpu_count()), "cpu": cpu, "python": platform.python_version(),
            "implementation": platform.python_implementation(), "libcst": _dist_version("libcst"),
            "mmcv_migrate": _dist_version("mmcv-migrate"), "platform": platform.platform(),
            "grep": _grep_version()}


def _dist_version(name: str) -> str:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return "unknown"


def _grep_version() -> str:
    try:
        out = subprocess.run(["grep", "--version"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        return out.stdout.decode().splitlines()[0]
    except (OSError, IndexError):
        return "unknown"


# =============================================================================================
# Profile of the warm path
# =============================================================================================

# Runs in a fresh interpreter: times the stages of a warm `scan` by wrapping the engine's functions.
# Written defensively (getattr) so that a renamed helper gives a missing row instead of a crash.
STAGE_DRIVER = r'''
import io, json, sys, time
T0 = time.perf_counter()
tree, fmt = sys.argv[1], sys.argv[2]
timings = {}
def add(key, dt):
    timings[key] = timings.get(key, 0.0) + dt
def wrap(owner, name, key):
    fn = owner.__dict__.get(name) if isinstance(owner, type) else getattr(owner, name, None)
    if fn is None:
        return
    if isinstance(fn, (classmethod, staticmethod)):
        inner, kind = fn.__func__, type(fn)
    else:
        inner, kind = fn, None
    def wrapper(*a, **k):
        s = time.perf_counter()
        try:
            return inner(*a, **k)
        finally:
            add(key, time.perf_counter() - s)
    setattr(owner, name, kind(wrapper) if kind else wrapper)
s = time.perf_counter(); import click; add("import click", time.perf_counter() - s)
s = time.perf_counter(); import mmcv_migrate.cli as cli; add("import mmcv_migrate.cli", time.perf_counter() - s)
s = time.perf_counter(); import mmcv_migrate.engine as engine
add("import mmcv_migrate.engine (coverage, catalogue, discovery, pathspec, ...)", time.perf_counter() - s)
libcst_after_imports = "libcst" in sys.modules
import mmcv_migrate.cache as cache
import mmcv_migrate.coverage as coverage
s = time.perf_counter(); import mmcv_migrate.reports as reports; add("import mmcv_migrate.reports", time.perf_counter() - s)
wrap(engine, "run", "engine.run() total")
wrap(engine, "discover", "  discover()")
wrap(engine, "load_coverage", "  load_coverage() (catalogue + registry json)")
wrap(engine, "display_paths", "  display_paths()")
wrap(engine, "is_candidate", "  prefilter: is_candidate()")
wrap(engine, "module_name", "  module_name()")
wrap(cache, "key", "  cache key (blake2b)")
wrap(cache.Cache, "open", "  cache open (mkdir)")
wrap(cache.Cache, "get", "  cache get (read + json + Finding)")
wrap(cache.Cache, "put", "  cache put")
wrap(cache.Cache, "stat_index", "  stat index load")
StatIndex = getattr(cache, "StatIndex", None)
if StatIndex is not None:
    wrap(StatIndex, "stamp", "  stat index: os.stat per file")
    wrap(StatIndex, "lookup", "  stat index: lookup")
    wrap(StatIndex, "record", "  stat index: record")
    wrap(StatIndex, "save", "  stat index save")
wrap(engine, "_job", "  analyze (libcst parse + rules)")
wrap(coverage.Coverage, "rows", "coverage rows")
wrap(reports, "render", "render report (incl. rich import for table)")
out = io.StringIO()
real_stdout = sys.stdout
sys.stdout = out
s = time.perf_counter()
try:
    cli.main(["scan", tree, "--format", fmt], standalone_mode=False)
except SystemExit:
    pass
finally:
    sys.stdout = real_stdout
add("cli.main() total", time.perf_counter() - s)
meta = {"libcst_imported": "libcst" in sys.modules, "libcst_after_imports": libcst_after_imports,
        "rich_imported": "rich" in sys.modules, "torch_imported": "torch" in sys.modules,
        "output_chars": len(out.getvalue())}
timings["process total (after interpreter start)"] = time.perf_counter() - T0
print(json.dumps({"timings": timings, "meta": meta}))
'''

READ_LABEL = "engine.run() rest: open+read of files not in the index, loop, result assembly"


def _io_probe(paths: Sequence[Path], config_types: Optional[set]) -> Dict[str, float]:
    """In-process: reading every file, then the prefilter alone over the bytes in memory."""
    out: Dict[str, float] = {}
    start = time.perf_counter()
    blobs = [p.read_bytes() for p in paths]
    out["read all files (Path.read_bytes)"] = time.perf_counter() - start
    start = time.perf_counter()
    for p in paths:
        with open(p, "rb") as handle:
            handle.read()
    out["read all files (open + read, as the engine does)"] = time.perf_counter() - start
    start = time.perf_counter()
    for p in paths:
        os.stat(p)
    out["os.stat() every file (the per-file cost of a stat index)"] = time.perf_counter() - start
    try:
        from mmcv_migrate.engine import is_candidate
    except ImportError:
        return out
    types = frozenset(config_types or ())
    start = time.perf_counter()
    out["_candidates"] = sum(1 for b in blobs if is_candidate(b, types))
    out["engine.is_candidate() over bytes in memory"] = time.perf_counter() - start
    start = time.perf_counter()
    for b in blobs:
        any(token in b for token in PREFILTER_TOKENS)
    out["  of which the 5 token searches"] = time.perf_counter() - start
    start = time.perf_counter()
    for b in blobs:
        if b"type" in b:
            CONFIG_TYPE_RE.findall(b)
    out["  of which the config-type regex (files holding b'type')"] = time.perf_counter() - start
    out["_files_with_type"] = sum(1 for b in blobs if b"type" in b)
    return out


def parse_importtime(stderr: str) -> List[Tuple[str, int, int, int]]:
    """(module, self us, cumulative us, depth) for each line of ``-X importtime``."""
    rows = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "imported package" in line:
            continue
        parts = line[len("import time:"):].split("|")
        if len(parts) != 3:
            continue
        name = parts[2].rstrip()
        depth = (len(name) - len(name.lstrip(" "))) // 2
        rows.append((name.strip(), int(parts[0]), int(parts[1]), depth))
    return rows


def _importer_chain(rows: List[Tuple[str, int, int, int]], target: str) -> List[str]:
    """The import chain (outermost first) under which ``target`` was first imported."""
    # -X importtime prints a module after its children: walk forward to shallower depths.
    for index, (name, _self, _cum, depth) in enumerate(rows):
        if name == target:
            chain = [name]
            want = depth - 1
            for later in rows[index + 1:]:
                if want < 0:
                    break
                if later[3] == want:
                    chain.append(later[0])
                    want -= 1
            return list(reversed(chain))
    return []


def profile_warm(cli: List[str], tree: Path, env: Dict[str, str], repeat: int, paths: Sequence[Path],
                 config_types: Optional[set]) -> Dict[str, object]:
    python = sys.executable
    result: Dict[str, object] = {}
    ladder = [
        ("python -c pass (interpreter + site)", [python, "-c", "pass"]),
        ("python -S -c pass (no site)", [python, "-S", "-c", "pass"]),
        ("python -c 'import click'", [python, "-c", "import click"]),
        ("python -c 'import pathspec'", [python, "-c", "import pathspec"]),
        ("python -c 'import libcst'", [python, "-c", "import libcst"]),
        ("python -c 'import rich.console, rich.table'", [python, "-c", "import rich.console, rich.table"]),
        ("mmcv-migrate --version", cli + ["--version"]),
        ("python -c 'import mmcv_migrate.engine'", [python, "-c", "import mmcv_migrate.engine"]),
        ("mmcv-migrate scan TREE --format json (warm)", cli + ["scan", str(tree), "--format", "json"]),
    ]
    samples: Dict[str, List[float]] = {label: [] for label, _ in ladder}
    for _ in range(max(5, repeat)):
        for label, cmd in ladder:
            try:
                samples[label].append(timed(cmd, env, ok=(0, 2))[0])
            except (RuntimeError, OSError):
                pass
    result["startup"] = {label: median(v) for label, v in samples.items() if v}

    # -X importtime on the warm json scan
    cmd = [python, "-X", "importtime", "-c", "from mmcv_migrate.cli import main; main()",
           "scan", str(tree), "--format", "json"]
    proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    rows = parse_importtime(proc.stderr.decode(errors="replace"))
    top_level = sorted((r for r in rows if r[3] == 0), key=lambda r: -r[2])
    names = {r[0] for r in rows}
    packages: Dict[str, int] = {}
    for name, self_us, _cum, _depth in rows:
        packages[name.split(".")[0]] = packages.get(name.split(".")[0], 0) + self_us
    result["importtime"] = {
        "total_us": sum(r[2] for r in rows if r[3] == 0),
        "top_level": [{"module": r[0], "cumulative_us": r[2]} for r in top_level[:12]],
        "by_package_self_us": dict(sorted(packages.items(), key=lambda kv: -kv[1])[:12]),
        "libcst_imported": any(n == "libcst" or n.startswith("libcst.") for n in names),
        "rich_imported": any(n == "rich" or n.startswith("rich.") for n in names),
        "torch_imported": "torch" in names,
        "who_imports_libcst": _importer_chain(rows, "libcst"),
    }

    # Stage breakdown: fresh interpreter per run, median per stage
    stages: Dict[str, object] = {}
    for fmt in ("json", "table"):
        per: Dict[str, List[float]] = {}
        meta: Dict[str, object] = {}
        for _ in range(max(5, repeat)):
            proc = subprocess.run([python, "-c", STAGE_DRIVER, str(tree), fmt], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                data = json.loads(proc.stdout.decode().strip().splitlines()[-1])
            except (ValueError, IndexError):
                result.setdefault("stage_errors", []).append(proc.stderr.decode(errors="replace")[-1500:])
                continue
            meta = data["meta"]
            timings = data["timings"]
            if "engine.run() total" in timings:
                inner = sum(v for k, v in timings.items() if k.startswith("  "))
                timings[READ_LABEL] = max(0.0, timings["engine.run() total"] - inner)
            for key, seconds in timings.items():
                per.setdefault(key, []).append(seconds)
        stages[fmt] = {"median_s": {k: median(v) for k, v in per.items()}, "meta": meta}
    result["stages"] = stages
    result["io_probe"] = _io_probe(paths, config_types)
    return result


def _print_profile(profile: Dict[str, object]) -> None:
    print("\nStart-up ladder (median wall time of a fresh process):")
    for label, seconds in profile["startup"].items():
        print(f"  {seconds * 1000:7.1f} ms  {label}")
    imp = profile["importtime"]
    print(f"\n-X importtime of the warm json scan: {imp['total_us'] / 1000:.0f} ms in imports; "
          f"libcst imported: {'YES' if imp['libcst_imported'] else 'no'}"
          + (f" (via {' -> '.join(imp['who_imports_libcst'])})" if imp["libcst_imported"] else "")
          + f"; rich: {'yes' if imp['rich_imported'] else 'no'}; torch: {'YES' if imp['torch_imported'] else 'no'}")
    print("  top-level imports by cumulative time:")
    for row in imp["top_level"][:10]:
        print(f"  {row['cumulative_us'] / 1000:7.1f} ms  {row['module']}")
    print("  self time by top-level package:")
    for package, us in list(imp["by_package_self_us"].items())[:8]:
        print(f"  {us / 1000:7.1f} ms  {package}")
    for fmt, data in profile["stages"].items():
        meta = data["meta"]
        print(f"\nIn-process stages of a warm `scan --format {fmt}` (median; libcst loaded: "
              f"{meta.get('libcst_imported')}, rich loaded: {meta.get('rich_imported')}):")
        order = ["import click", "import mmcv_migrate.cli",
                 "import mmcv_migrate.engine (coverage, catalogue, discovery, pathspec, ...)",
                 "import mmcv_migrate.reports", "cli.main() total", "engine.run() total"]
        med = data["median_s"]
        keys = [k for k in order if k in med] + sorted(k for k in med if k.startswith("  ")) + \
               [k for k in med if k not in order and not k.startswith("  ")]
        for key in keys:
            print(f"  {med[key] * 1000:7.1f} ms  {key}")
    print("\nI/O probe (in-process, page cache warm):")
    probe = profile["io_probe"]
    for key, value in probe.items():
        if not key.startswith("_"):
            print(f"  {value * 1000:7.1f} ms  {key}")
    if "_candidates" in probe:
        print(f"  ({probe['_candidates']} candidates; {probe['_files_with_type']} files contain b'type' "
              f"and go through the regex)")
    for error in profile.get("stage_errors", [])[:1]:
        print("stage driver error:\n" + error)


# =============================================================================================
# Main
# =============================================================================================

def _prepare_tree(args, work: Path) -> Path:
    if not args.keep:
        return work / "tree"
    tree = Path(args.keep).resolve()
    if tree.exists() and any(tree.iterdir()):
        if not (tree / MARKER).exists():
            sys.exit(f"--keep {tree}: exists, is not empty and was not made by this script; not touching it")
        shutil.rmtree(tree)
    return tree


def _check_report(report: dict, warm_report: dict, mmcv_files: set, n_files: int) -> Dict[str, object]:
    messages = []
    with_findings = {f["path"] for f in report.get("findings", [])}
    scanned = report.get("files_scanned")
    if scanned != n_files:
        messages.append(f"WARNING: scan says files_scanned={scanned}, the tree has {n_files}")
    false_pos = sorted(with_findings - mmcv_files)
    missed = sorted(mmcv_files - with_findings)
    if false_pos:
        messages.append(f"WARNING: findings in {len(false_pos)} clean files, e.g. {false_pos[:3]}")
    if missed:
        messages.append(f"note: {len(missed)} mmcv files without findings (expected: the mmcv.runner-only "
                        f"ones), e.g. {missed[:3]}")
    if report.get("errors"):
        messages.append(f"WARNING: {len(report['errors'])} errors, e.g. {report['errors'][:2]}")

    def norm(r):
        return sorted(json.dumps(f, sort_keys=True) for f in r.get("findings", []))

    same = norm(report) == norm(warm_report)
    if not same:
        messages.append("WARNING: the warm (cached) scan's findings differ from the cold scan's")
    messages.insert(0, f"scan check: files_scanned={scanned}, {len(report.get('findings', []))} findings in "
                       f"{len(with_findings)} files, {len(report.get('errors', []))} errors; "
                       f"warm findings == cold findings: {same}")
    return {"messages": messages, "files_scanned": scanned, "findings": len(report.get("findings", [])),
            "files_with_findings": len(with_findings), "false_positive_files": len(false_pos),
            "mmcv_files_without_findings": len(missed), "warm_equals_cold": same}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=5000, help="number of .py files (default 5000)")
    parser.add_argument("--mmcv-ratio", type=float, default=0.02, help="share of files using mmcv (0.02)")
    parser.add_argument("--repeat", type=int, default=5, help="rounds; each figure is their median (5)")
    parser.add_argument("--seed", type=int, default=0, help="generator seed (0)")
    parser.add_argument("--keep", metavar="DIR", help="generate the tree in DIR and keep it")
    parser.add_argument("--libcst-sample", type=int, default=None, metavar="N",
                        help="time the libcst pass on N files and extrapolate linearly (default: all files)")
    parser.add_argument("--libcst-repeat", type=int, default=None, metavar="K",
                        help="rounds that include the libcst pass (default: 1 when it runs over the whole "
                             "tree, which takes ~0.2 s a file; every round with --libcst-sample)")
    parser.add_argument("--json", dest="json_out", metavar="OUT", help="write all numbers to OUT (JSON)")
    parser.add_argument("--no-profile", action="store_true", help="skip the warm-path profile")
    parser.add_argument("--no-gitignore", action="store_true",
                        help="leave out the tree's .gitignore (by default it has an OpenMMLab-style one, "
                             "which discovery matches every path against)")
    args = parser.parse_args(argv)
    if args.files < 50:
        parser.error("--files must be at least 50")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    work = Path(tempfile.mkdtemp(prefix="bench_scan_"))

    def _terminated(signum, _frame):  # clean up the temporary tree on SIGTERM too
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        return _main(args, work)
    finally:
        signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(work, ignore_errors=True)


def _main(args, work: Path) -> int:
    info = machine_info()
    cli = find_cli()
    tree = _prepare_tree(args, work)
    print(f"generating {args.files} files (mmcv ratio {args.mmcv_ratio}, seed {args.seed}) in {tree} ...",
          flush=True)
    start = time.perf_counter()
    manifest = generate_tree(tree, args.files, args.mmcv_ratio, args.seed, gitignore=not args.no_gitignore)
    gen_s = time.perf_counter() - start
    entries = manifest["files"]
    mmcv_files = {e["path"] for e in entries if e["mmcv"]}
    sizes = [e["lines"] for e in entries if e["kind"] in ("module", "config", "test", "tool")]
    print(f"  {len(entries)} files, {manifest['bytes'] / 1e6:.1f} MB, {sum(e['lines'] for e in entries)} lines "
          f"(modules, configs, tests: {min(sizes)}-{max(sizes)} lines, median {int(median(sizes))}); "
          f"{len(mmcv_files)} use mmcv; {'with' if not args.no_gitignore else 'without'} a .gitignore; "
          f"generated in {gen_s:.1f}s")
    config_types = engine_config_types()
    problems = check_tree(tree, manifest, config_types)
    for problem in problems[:20]:
        print("  TREE PROBLEM:", problem)
    if problems:
        print(f"{len(problems)} tree problems: the benchmark would not measure what it claims", file=sys.stderr)
        return 3
    near_miss = sum(1 for e in entries
                    if not e["mmcv"] and CONFIG_TYPE_RE.search((tree / e["path"]).read_bytes()))
    print(f"  prefilter check: clean files hold none of {', '.join(t.decode() for t in PREFILTER_TOKENS)}; "
          f"{near_miss} clean files hold near-miss config types (type='Linear', 'BN', ...)")

    env = dict(os.environ)
    env.pop("MMCV_MIGRATE_REGISTRY", None)
    env_nocache = dict(env, MMCV_MIGRATE_CACHE_DIR=str(work / "cache-unused"))
    env_warm = dict(env, MMCV_MIGRATE_CACHE_DIR=str(work / "cache-warm"))
    scan = cli + ["scan", str(tree)]
    grep = ["grep", "-rl", "--include=*.py", "-e", "mmcv", "-e", "ext_loader", str(tree)]

    # Warm-up (untimed): page cache, .pyc files, the warm result cache; and a correctness check.
    timed(grep, env, ok=(0, 1))
    _, cold_out = timed(scan + ["--format", "json", "--no-cache"], env_nocache, ok=(0, 2))
    timed(scan + ["--format", "json"], env_warm, ok=(0, 2))
    _, warm_out = timed(scan + ["--format", "json"], env_warm, ok=(0, 2))
    check = _check_report(json.loads(cold_out), json.loads(warm_out), mmcv_files, len(entries))
    for line in check["messages"]:
        print("  " + line)

    fresh = "fresh"
    variants = {
        "grep -rl (floor)": (grep, env),
        "scan json --no-cache (cold)": (scan + ["--format", "json", "--no-cache"], env_nocache),
        "scan json, empty cache (cold + cache write)": (scan + ["--format", "json"], fresh),
        "scan json, warm cache": (scan + ["--format", "json"], env_warm),
        "scan table, warm cache": (scan, env_warm),
    }
    all_paths = sorted(tree.rglob("*.py"))
    sample = all_paths
    if args.libcst_sample and args.libcst_sample < len(all_paths):
        sample = sorted(random.Random(args.seed).sample(all_paths, args.libcst_sample))
    extrapolated = len(sample) != len(all_paths)
    libcst_rounds = min(args.repeat, args.libcst_repeat or (args.repeat if extrapolated else 1))
    samples: Dict[str, List[float]] = {name: [] for name in variants}
    samples["libcst pass"] = []
    libcst_hits = (0, 0)
    print(f"timing {args.repeat} rounds; the libcst pass in {libcst_rounds} of them over "
          f"{len(sample)} files{' (sampled, extrapolated to the tree)' if extrapolated else ''} ...", flush=True)
    names = list(variants)
    for round_index in range(args.repeat):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            cmd, venv = variants[name]
            if venv is fresh:
                cache_dir = work / f"cache-fresh-{round_index}"
                seconds, _ = timed(cmd, dict(env, MMCV_MIGRATE_CACHE_DIR=str(cache_dir)), ok=(0, 2))
                shutil.rmtree(cache_dir, ignore_errors=True)
            else:
                seconds, _ = timed(cmd, venv, ok=(0, 1, 2))
            samples[name].append(seconds)
        if round_index < libcst_rounds:
            seconds, hit_files, hit_names = libcst_pass(sample)
            samples["libcst pass"].append(seconds * len(all_paths) / len(sample))
            libcst_hits = (hit_files, hit_names)
        print(f"  round {round_index + 1}: " + ", ".join(f"{n.split(' (')[0]} {samples[n][-1]:.3f}s"
                                                         for n in samples if samples[n]), flush=True)

    medians = {name: median(values) for name, values in samples.items()}
    t_grep = medians["grep -rl (floor)"]
    t_libcst = medians["libcst pass"]
    cold = medians["scan json --no-cache (cold)"]
    warm = medians["scan json, warm cache"]
    goals = {
        f"cold scan (--no-cache) >= {GOAL_COLD_VS_LIBCST:.0f}x faster than the libcst pass":
            (t_libcst / cold, GOAL_COLD_VS_LIBCST, t_libcst / cold >= GOAL_COLD_VS_LIBCST),
        f"warm json re-scan <= {GOAL_WARM_VS_GREP:.0f}x grep":
            (warm / t_grep, GOAL_WARM_VS_GREP, warm / t_grep <= GOAL_WARM_VS_GREP),
    }

    print()
    print(f"machine: {info['cpu_count']} CPUs ({info['cpu']}), {info['implementation']} {info['python']}, "
          f"libcst {info['libcst']}, mmcv-migrate {info['mmcv_migrate']}, {info['grep']}")
    print(f"tree: {len(entries)} files, {manifest['bytes'] / 1e6:.1f} MB, {len(mmcv_files)} use mmcv; "
          f"median of {args.repeat} rounds; CLI: {' '.join(cli)}")
    rows = []
    for name in list(variants) + ["libcst pass"]:
        label = name
        if name == "libcst pass":
            label = "libcst parse + QualifiedNameProvider, 1 core"
            if extrapolated:
                label += f" (EXTRAPOLATED from {len(sample)} files)"
            if len(samples[name]) != args.repeat:
                label += f" [median of {len(samples[name])}]"
        t = medians[name]
        rows.append((label, t, t / t_grep, t_libcst / t))
    width = max(len(r[0]) for r in rows)
    print(f"{'variant':<{width}}  {'median s':>9}  {'x grep':>7}  {'libcst / it':>11}")
    for label, t, vs_grep, speedup in rows:
        print(f"{label:<{width}}  {t:>9.3f}  {vs_grep:>7.2f}  {speedup:>10.1f}x")
    print("(x grep: time / grep's time; libcst / it: how many times faster than the libcst pass)")
    print()
    for goal, (value, target, passed) in goals.items():
        print(f"goal: {goal}: {value:.1f}x -> {'PASS' if passed else 'FAIL'}")
    print(f"(the libcst pass found mmcv names in {libcst_hits[0]} of {len(sample)} files; "
          f"the scan reported findings in {check['files_with_findings']} of {len(entries)})")

    profile = None
    if not args.no_profile:
        print("\nprofiling the warm path ...", flush=True)
        profile = profile_warm(cli, tree, env_warm, args.repeat, all_paths, config_types)
        _print_profile(profile)

    if args.json_out:
        out = {
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "machine": info,
            "params": {"files": len(entries), "mmcv_ratio": args.mmcv_ratio, "repeat": args.repeat,
                       "seed": args.seed, "libcst_sample": len(sample), "libcst_extrapolated": extrapolated,
                       "libcst_rounds": libcst_rounds, "cli": cli},
            "tree": {"files": len(entries), "bytes": manifest["bytes"], "mmcv_files": len(mmcv_files),
                     "lines": sum(e["lines"] for e in entries), "gitignore": not args.no_gitignore},
            "check": {k: v for k, v in check.items() if k != "messages"},
            "samples_s": samples,
            "median_s": medians,
            "ratio_vs_grep": {k: v / t_grep for k, v in medians.items()},
            "speedup_vs_libcst": {k: t_libcst / v for k, v in medians.items()},
            "goals": {k: {"value": v[0], "target": v[1], "pass": v[2]} for k, v in goals.items()},
            "profile": profile,
        }
        Path(args.json_out).write_text(json.dumps(out, indent=2) + "\n")
        print(f"\nwrote {args.json_out}")
    if args.keep:
        print(f"tree kept in {tree}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
