"""Generate ``catalogue.json``, the catalogue of mmcv's API, from mmcv's own sources.

Usage::

    python -m mmcv_migrate.rewrites._generate_catalogue SRC_2X SRC_1X [-o rewrites/catalogue.json]

``SRC_2X`` / ``SRC_1X`` are unpacked source distributions (any number of them may be given), e.g.
``~/.cache/mmcv-src/mmcv-2.2.0`` and ``~/.cache/mmcv-src/mmcv-full-1.7.2``. ``-o -`` writes to stdout;
without ``-o`` the ``catalogue.json`` next to this script is rewritten.

Getting the sources
-------------------
``pip download mmcv==2.2.0 --no-binary :all:`` does not work: pip builds the sdist's metadata, which runs
mmcv's ``setup.py`` and needs torch plus a compiler. Fetch the ``.tar.gz`` straight from PyPI's simple
index instead and untar it::

    mkdir -p ~/.cache/mmcv-src && cd ~/.cache/mmcv-src
    # the links (with their sha256 fragments) are listed on
    #   https://pypi.org/simple/mmcv/       -> mmcv-2.2.0.tar.gz
    #   https://pypi.org/simple/mmcv-full/  -> mmcv-full-1.7.2.tar.gz
    curl -sL https://pypi.org/simple/mmcv/ | grep -o 'https://[^"#]*mmcv-2.2.0.tar.gz' | head -1 | xargs curl -LO
    curl -sL https://pypi.org/simple/mmcv-full/ | grep -o 'https://[^"#]*mmcv-full-1.7.2.tar.gz' | head -1 | xargs curl -LO
    tar xzf mmcv-2.2.0.tar.gz && tar xzf mmcv-full-1.7.2.tar.gz

What is read (statically: ``ast`` for Python, ``re`` for C++; mmcv is never imported):

* ``mmcv/version.py``: the version;
* ``mmcv/ops/__init__.py``: ``__all__`` and the ``from .sub import name [as alias]`` lines, which give each
  export's submodule (imports guarded by ``if IS_MLU_AVAILABLE`` are not exports);
* ``mmcv/ops/*.py``: public top-level ``def``/``class``/assignments (also inside module-level
  ``if``/``try``), ``__all__``, imports from sibling submodules, ``load_ext('_ext', [...])`` lists and
  ``register_module(...)`` calls;
* ``mmcv/ops/csrc/pytorch/pybind.cpp``: every ``m.def("name", &fn, "doc", py::arg("a"), ...)`` and the
  C++ forward declaration of ``fn`` above ``PYBIND11_MODULE``;
* the rest of ``mmcv/`` (outside ``ops/``): module-level ``from mmcv.ops... import X`` re-exports kept
  for backward compatibility.

The output is deterministic (sorted keys, sorted lists except argument lists, one-space indent with
lists of scalars kept on one line, trailing newline), so a re-run on the same sources is
byte-identical; ``tests/test_catalogue.py`` checks that.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Set, Tuple

FORMAT = 1

# Domain knowledge, kept small on purpose.
#
# ``batched_nms`` resolves a string ``nms_cfg['type']`` with ``eval`` inside mmcv/ops/nms.py; these are
# the NMS functions of that module that accept ``(boxes, scores, **cfg)`` and return ``(dets, keep)``,
# i.e. the values a config may hold. Names missing from a version's nms.py are dropped.
NMS_CONFIG_TYPES = ("nms", "soft_nms", "nms_rotated", "nms_quadri")

# Exported classes that a config ``type`` must NOT be resolved to: 'SyncBN'/'SyncBatchNorm' in configs
# mean torch.nn.SyncBatchNorm (mmcv registers its own one only as 'MMSyncBN'). The deprecated torch
# wrappers (Conv2d, ...) are excluded without a list: they are exported under aliases of classes named
# ``*_deprecated``, and only exports whose submodule defines a class of the same name qualify.
NOT_CONFIG_TYPES = frozenset({"SyncBatchNorm"})


# --------------------------------------------------------------------------------------------------
# helpers


def _version_key(v: str) -> Tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"[.+-]", v))


def _sorted_versions(vs: Iterable[str]) -> List[str]:
    return sorted(set(vs), key=_version_key)


def _parse_py(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _module_level(body: List[ast.stmt], guarded: bool = False) -> Iterator[Tuple[ast.stmt, bool]]:
    """Yield module-level statements, descending into if/try/with blocks (not into def/class).

    The flag says whether the statement sits inside an ``if`` (a conditional definition)."""
    for node in body:
        yield node, guarded
        if isinstance(node, ast.If):
            yield from _module_level(node.body, True)
            yield from _module_level(node.orelse, True)
        elif isinstance(node, ast.Try) or type(node).__name__ == "TryStar":
            for block in (node.body, node.orelse, node.finalbody):  # type: ignore[attr-defined]
                yield from _module_level(block, guarded)
            for handler in node.handlers:  # type: ignore[attr-defined]
                yield from _module_level(handler.body, guarded)
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            yield from _module_level(node.body, guarded)


def _str_list(node: Optional[ast.expr]) -> Optional[List[str]]:
    if isinstance(node, (ast.List, ast.Tuple)) and all(
        isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts
    ):
        return [e.value for e in node.elts]  # type: ignore[attr-defined]
    return None


def _call_name(call: ast.Call) -> Optional[str]:
    f = call.func
    if isinstance(f, ast.Attribute):
        return f.attr
    if isinstance(f, ast.Name):
        return f.id
    return None


def _is_load_ext(node: Optional[ast.expr]) -> bool:
    return isinstance(node, ast.Call) and _call_name(node) == "load_ext"


# --------------------------------------------------------------------------------------------------
# Python side


def read_version(src: Path) -> str:
    tree = _parse_py(src / "mmcv" / "version.py")
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets
        ):
            value = ast.literal_eval(node.value)
            if isinstance(value, str):
                return value
    raise SystemExit(f"{src}: no __version__ in mmcv/version.py")


def read_ops_init(path: Path) -> Tuple[List[str], Dict[str, Tuple[str, str]]]:
    """``__all__`` of mmcv/ops/__init__.py and, for each name bound by an unconditional
    ``from .sub import name [as alias]``, alias -> (sub, name)."""
    tree = _parse_py(path)
    all_names: Optional[List[str]] = None
    origins: Dict[str, Tuple[str, str]] = {}
    for node in tree.body:  # top level only: MLU-guarded imports/extends are not exports
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            sub = node.module.split(".")[0]
            for alias in node.names:
                origins[alias.asname or alias.name] = (sub, alias.name)
        elif isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            all_names = _str_list(node.value)
    if all_names is None:
        raise SystemExit(f"{path}: no literal __all__")
    return all_names, origins


class SubmoduleInfo:
    """What one version's mmcv/ops/<sub>.py defines."""

    def __init__(self, name: str, tree: ast.Module, known_subs: Set[str]):
        self.name = name
        self.defined: Set[str] = set()
        self.imports: Dict[str, str] = {}  # public name -> "sibling_sub.name"
        self.ext_functions: Set[str] = set()
        self.classes: Set[str] = set()
        # (registered name, class name, guarded)
        self.registrations: List[Tuple[str, str, bool]] = []
        self.functions: Dict[str, ast.FunctionDef] = {}
        all_names: List[str] = []

        for node, guarded in _module_level(tree.body):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.defined.add(node.name)
                self.functions.setdefault(node.name, node)  # type: ignore[arg-type]
            elif isinstance(node, ast.ClassDef):
                self.defined.add(node.name)
                self.classes.add(node.name)
                for deco in node.decorator_list:
                    if isinstance(deco, ast.Call) and _call_name(deco) == "register_module":
                        for reg in self._registered_names(deco, node.name):
                            self.registrations.append((reg, node.name, guarded))
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names = [t.id for t in targets if isinstance(t, ast.Name)]
                if "__all__" in names:
                    all_names = _str_list(node.value) or []
                elif not _is_load_ext(node.value):  # ext_module = load_ext(...) is not API
                    self.defined.update(names)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                for alias in node.names:
                    bound = alias.asname or alias.name.split(".")[0]
                    if isinstance(node, ast.ImportFrom) and alias.name != "*":
                        origin = self._sibling(node, known_subs)
                        if origin is not None and not bound.startswith("_"):
                            self.imports[bound] = f"{origin}.{alias.name}"

        # load_ext lists and function-style register_module(name=..., module=Cls) calls, anywhere
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            if _call_name(node) == "load_ext" and len(node.args) >= 2:
                funcs = _str_list(node.args[1])
                if funcs is None:
                    raise SystemExit(f"ops/{name}.py: non-literal load_ext list")
                self.ext_functions.update(funcs)
            elif _call_name(node) == "register_module":
                module_kw = next((k.value for k in node.keywords if k.arg == "module"), None)
                if isinstance(module_kw, ast.Name):
                    for reg in self._registered_names(node, module_kw.id):
                        self.registrations.append((reg, module_kw.id, False))

        self.defined = {n for n in self.defined if not n.startswith("_")}
        self.defined.update(n for n in all_names if n not in self.imports)
        for n in self.defined:
            self.imports.pop(n, None)

    @staticmethod
    def _registered_names(call: ast.Call, default: str) -> List[str]:
        name_node: Optional[ast.expr] = call.args[0] if call.args else None
        for kw in call.keywords:
            if kw.arg == "name":
                name_node = kw.value
        if name_node is None or (isinstance(name_node, ast.Constant) and name_node.value is None):
            return [default]
        if isinstance(name_node, ast.Constant) and isinstance(name_node.value, str):
            return [name_node.value]
        names = _str_list(name_node)
        if names is None:
            raise SystemExit(f"non-literal register_module name: {ast.dump(name_node)}")
        return names

    @staticmethod
    def _sibling(node: ast.ImportFrom, known_subs: Set[str]) -> Optional[str]:
        """The mmcv.ops submodule a ``from ... import`` reads from, if any."""
        if node.level == 1 and node.module:
            mod = node.module
        elif node.level == 0 and node.module and node.module.startswith("mmcv.ops."):
            mod = node.module[len("mmcv.ops."):]
        else:
            return None
        return mod if mod in known_subs else None


def read_reexports(src: Path) -> Dict[str, str]:
    """Module-level ``from mmcv.ops[.sub] import X`` (absolute or relative) in mmcv outside ops/."""
    root = src / "mmcv"
    found: Dict[str, str] = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] == "ops":
            continue
        text = path.read_text(encoding="utf-8")
        if "ops" not in text:
            continue
        parts = ["mmcv", *rel.with_suffix("").parts]
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        module = ".".join(parts)
        package = parts if is_pkg else parts[:-1]
        for node, _ in _module_level(_parse_py(path).body):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if target != "mmcv.ops" and not target.startswith("mmcv.ops."):
                continue
            for alias in node.names:
                if alias.name != "*":
                    found[f"{module}.{alias.asname or alias.name}"] = f"{target}.{alias.name}"
    return found


# --------------------------------------------------------------------------------------------------
# C++ side: pybind.cpp


def _split_top(text: str, sep: str = ",") -> List[str]:
    """Split at ``sep`` outside (), <>, {}, [] and string literals."""
    out, depth, cur, i, quote = [], 0, [], 0, ""
    while i < len(text):
        c = text[i]
        if quote:
            cur.append(c)
            if c == "\\":
                cur.append(text[i + 1])
                i += 1
            elif c == quote:
                quote = ""
        elif c in "\"'":
            quote = c
            cur.append(c)
        elif c in "([{<":
            depth += 1
            cur.append(c)
        elif c in ")]}>":
            depth -= 1
            cur.append(c)
        elif c == sep and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    out.append("".join(cur))
    return [s.strip() for s in out]


def _strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def _matching_paren(text: str, open_idx: int) -> int:
    depth, i, quote = 0, open_idx, ""
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = ""
        elif c == '"':
            quote = c
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise SystemExit("unbalanced parentheses in pybind.cpp")


def read_pybind(path: Path) -> Dict[str, Dict[str, Any]]:
    """m.def name -> {"args": [...], "declaration": str, "overloads": [[...], ...]}."""
    text = _strip_comments(path.read_text(encoding="utf-8"))
    head, sep, body = text.partition("PYBIND11_MODULE")
    if not sep:
        raise SystemExit(f"{path}: no PYBIND11_MODULE")

    declarations: Dict[str, str] = {}
    for chunk in head.split(";"):
        lines = [ln for ln in chunk.splitlines() if not ln.lstrip().startswith("#")]
        decl = " ".join(" ".join(lines).split())
        m = re.search(r"(\w+)\s*\(", decl)
        if not decl or not m:
            continue
        decl = re.sub(r"\(\s+", "(", re.sub(r"\s+\)", ")", decl))
        declarations.setdefault(m.group(1), decl)

    functions: Dict[str, Dict[str, Any]] = {}
    n_defs = 0
    for m in re.finditer(r"\bm\.def\s*\(", body):
        n_defs += 1
        close = _matching_paren(body, m.end() - 1)
        parts = _split_top(body[m.end(): close])
        name = ast.literal_eval(parts[0])
        target = re.fullmatch(r"&\s*([\w:]+)\s*(?:<[^>]*>)?", parts[1])
        if target is None:
            raise SystemExit(f"{path}: cannot read the bound function of m.def({parts[0]}, ...)")
        cxx = target.group(1).split("::")[-1]
        args = [ast.literal_eval(a.group(1)) for p in parts[2:]
                for a in [re.match(r'py::arg\(\s*("[^"]*")\s*\)', p)] if a]
        if cxx not in declarations:
            raise SystemExit(f"{path}: no declaration of {cxx} (bound as {name})")
        if name in functions:  # pybind11 adds a second m.def of a name as an overload
            functions[name]["overloads"].append(args)
            continue
        functions[name] = {"args": args, "declaration": declarations[cxx], "overloads": []}
    if n_defs != len(re.findall(r'\bm\.def\s*\(\s*"', body)):
        raise SystemExit(f"{path}: unexpected m.def form")
    return functions


# --------------------------------------------------------------------------------------------------
# assembly


class Version:
    def __init__(self, src: Path):
        src = src.expanduser()
        ops = src / "mmcv" / "ops"
        if not (ops / "__init__.py").is_file():
            raise SystemExit(f"{src}: not an unpacked mmcv sdist (no mmcv/ops/__init__.py)")
        self.version = read_version(src)
        self.all, self.origins = read_ops_init(ops / "__init__.py")
        paths = sorted(p for p in ops.glob("*.py") if p.name != "__init__.py")
        known = {p.stem for p in paths}
        self.subs = {p.stem: SubmoduleInfo(p.stem, _parse_py(p), known) for p in paths}
        self.ext = read_pybind(ops / "csrc" / "pytorch" / "pybind.cpp")
        self.reexports = read_reexports(src)
        for name in self.all:
            if name not in self.origins:
                raise SystemExit(f"{src}: {name} in mmcv.ops.__all__ is not imported from a submodule")
            sub, orig = self.origins[name]
            if sub not in self.subs or orig not in self.subs[sub].defined:
                raise SystemExit(f"{src}: mmcv.ops.{name} comes from {sub}.{orig}, which is not defined")


def build(srcs: Iterable[Path]) -> Dict[str, Any]:
    vers = sorted((Version(Path(s)) for s in srcs), key=lambda v: _version_key(v.version))
    if len({v.version for v in vers}) != len(vers):
        raise SystemExit("the same mmcv version was given twice")
    newest_first = list(reversed(vers))

    # exports: name -> submodule (+ original name when exported under an alias)
    exports: Dict[str, Dict[str, Any]] = {}
    for v in newest_first:
        for name in v.all:
            sub, orig = v.origins[name]
            entry = exports.setdefault(name, {"submodule": sub, "versions": []})
            if entry["submodule"] != sub:
                raise SystemExit(f"mmcv.ops.{name} moves between submodules across versions")
            if orig != name:
                entry["name"] = orig
            entry["versions"].append(v.version)
    export_of = {(e["submodule"], e.get("name", n)): n for n, e in exports.items()}

    def canonical(sub: str, name: str) -> str:
        exported = export_of.get((sub, name))
        return f"mmcv.ops.{exported}" if exported else f"mmcv.ops.{sub}.{name}"

    # submodules
    submodules: Dict[str, Dict[str, Any]] = {}
    for v in vers:
        for sub, info in v.subs.items():
            s = submodules.setdefault(sub, {"versions": [], "names": {}, "ext_functions": set(), "imports": {}})
            s["versions"].append(v.version)
            for n in info.defined:
                s["names"].setdefault(n, []).append(v.version)
            s["ext_functions"].update(info.ext_functions)
    for v in newest_first:  # sibling imports, newest version wins; never shadow a definition
        for sub, info in v.subs.items():
            s = submodules[sub]
            for n, origin in info.imports.items():
                if n not in s["names"]:
                    s["imports"].setdefault(n, origin)
    for sub, s in submodules.items():
        s["ext_functions"] = sorted(s["ext_functions"])
        if not s["imports"]:
            del s["imports"]

    # ext functions
    ext: Dict[str, Dict[str, Any]] = {}
    for v in newest_first:
        for fn, info in v.ext.items():
            e = ext.get(fn)
            if e is None:
                e = ext[fn] = {"versions": [], "args": info["args"], "declaration": info["declaration"]}
                if info["overloads"]:
                    e["overloads"] = info["overloads"]
            elif e["args"] != info["args"] or e["declaration"] != info["declaration"]:
                e.setdefault("older", {})[v.version] = {"args": info["args"], "declaration": info["declaration"]}
            e["versions"].append(v.version)
    for fn, e in ext.items():
        e["versions"] = _sorted_versions(e["versions"])
        e["submodules"] = sorted(sub for sub, s in submodules.items() if fn in s["ext_functions"])

    # config types
    config_types: Dict[str, str] = {}

    def add_config(key: str, symbol: str, why: str) -> None:
        if config_types.setdefault(key, symbol) != symbol:
            raise SystemExit(f"config type {key!r}: {config_types[key]} vs {symbol} ({why})")

    for v in newest_first:
        regs = sorted(
            ((guarded, reg, sub, cls) for sub, info in v.subs.items() for reg, cls, guarded in info.registrations),
        )
        for guarded, reg, sub, cls in regs:
            # unconditional registrations first; an `if IS_MLU_AVAILABLE:` re-registration with
            # force=True (DCN, DCNv2) does not replace the default class
            if guarded and reg in config_types:
                continue
            add_config(reg, canonical(sub, cls), f"register_module in {v.version} {sub}.py")
    for name, e in sorted(exports.items()):
        sub, orig = e["submodule"], e.get("name", name)
        if orig == name and name[:1].isupper() and name not in NOT_CONFIG_TYPES and any(
            name in v.subs[sub].classes for v in vers if sub in v.subs
        ):
            add_config(name, f"mmcv.ops.{name}", "exported class")
    for name in NMS_CONFIG_TYPES:
        if any(name in v.subs["nms"].functions for v in vers if "nms" in v.subs):
            add_config(name, canonical("nms", name), "batched_nms type")

    # deprecated re-exports (keys: where users import from; values: where it really lives)
    reexports: Dict[str, str] = {}
    for v in newest_first:
        for k, origin in v.reexports.items():
            reexports.setdefault(k, origin)

    return {
        "format": FORMAT,
        "generator": "python -m mmcv_migrate.rewrites._generate_catalogue",
        "versions": [v.version for v in vers],
        "exports": exports,
        "submodules": submodules,
        "ext_functions": ext,
        "config_types": config_types,
        "deprecated_reexports": reexports,
    }


def dumps(catalogue: Dict[str, Any]) -> str:
    """Deterministic JSON text: sorted keys, one-space indent, lists of scalars on one line (that keeps
    the file compact and readable), ASCII only, trailing newline."""
    return _format(_normalise(catalogue), 0) + "\n"


def _format(obj: Any, level: int) -> str:
    pad = " " * (level + 1)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = (f"{pad}{json.dumps(k)}: {_format(obj[k], level + 1)}" for k in sorted(obj))
        return "{\n" + ",\n".join(items) + "\n" + " " * level + "}"
    if isinstance(obj, list) and any(isinstance(x, (dict, list)) for x in obj):
        return "[\n" + ",\n".join(pad + _format(x, level + 1) for x in obj) + "\n" + " " * level + "]"
    return json.dumps(obj, ensure_ascii=True)


def _normalise(obj: Any, key: str = "") -> Any:
    """Version lists in version order, every ``names`` value too; other lists keep their order
    (argument lists are ordered, the rest is built sorted)."""
    if isinstance(obj, dict):
        return {k: (_sorted_versions(v) if key == "names" else _normalise(v, k)) for k, v in obj.items()}
    if isinstance(obj, list):
        if key == "versions":
            return _sorted_versions(obj)
        return [_normalise(x, key) for x in obj]
    return obj


def generate(srcs: Iterable[Path]) -> str:
    return dumps(build(srcs))


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mmcv_migrate.rewrites._generate_catalogue",
        description="Generate catalogue.json from unpacked mmcv sdists (see the module docstring).",
    )
    parser.add_argument("src", nargs="+", type=Path, help="unpacked sdist directory (e.g. mmcv-2.2.0)")
    parser.add_argument("-o", "--output", default=str(Path(__file__).with_name("catalogue.json")),
                        help="output file, '-' for stdout (default: catalogue.json next to this script)")
    args = parser.parse_args(argv)
    text = generate(args.src)
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text, encoding="utf-8", newline="\n")
        print(f"wrote {args.output} ({len(text.encode())} bytes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
