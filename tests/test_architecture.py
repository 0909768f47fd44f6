"""The package's shape, checked: imports point one way (no cycles), and only textcl/data/ parses data files."""
from __future__ import annotations

import ast
from pathlib import Path

import textcl

ROOT = Path(textcl.__file__).parent


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every textcl module ``name`` imports, at the top or inside a function (a lazy import still runs)."""
    found = set()
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        found.update(t for t in targets if t in known and t != name)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    mods = _modules()
    graph = {name: _imports(name, path, set(mods)) for name, path in mods.items()}
    assert graph["textcl.models.encoder"] >= {"textcl.models.st_format"}  # the walk sees real imports
    assert _cycles(graph) == []


def _calls(tree: ast.AST) -> list[tuple[int, str, ast.Call]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name):
            out.append((node.lineno, f"{node.func.value.id}.{node.func.attr}", node))
    return out


def test_only_the_data_layer_parses_data_files():
    """Outside textcl/data/ (and _io.read_json for textcl's own JSON files) nothing parses a file: no CSV
    reader, no json.load / json.loads of a file's text; YAML is parsed by config.py alone. json.loads of a
    database column (the doc store's metadata) is not a file."""
    offenders = []
    for name, path in _modules().items():
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("data/") or rel == "_io.py":
            continue
        for line, call, node in _calls(ast.parse(path.read_text(encoding="utf-8"))):
            reads_file = any(isinstance(n, ast.Attribute) and n.attr in ("read_text", "read", "read_bytes")
                             for arg in node.args for n in ast.walk(arg))
            if (call in ("csv.reader", "csv.DictReader", "json.load")
                    or (call == "json.loads" and reads_file)
                    or (call in ("yaml.safe_load", "yaml.load") and rel != "config.py")):
                offenders.append(f"{rel}:{line}: {call}")
    assert offenders == []


# package -> the packages it must never import (ARCHITECTURE.md, "Which way imports point"); tune/ sits above
# train/ and drives it through its on_eval callback, so nothing below imports it
FORBIDDEN = {
    "data": {"models", "losses", "augment", "index", "eval", "train", "serve", "commands", "tune", "config"},
    "models": {"data", "losses", "augment", "index", "eval", "train", "serve", "commands", "tune"},
    "losses": {"data", "models", "augment", "index", "eval", "train", "serve", "commands", "tune"},
    "augment": {"models", "losses", "index", "eval", "train", "serve", "commands", "tune"},
    "index": {"losses", "augment", "eval", "train", "serve", "commands", "tune"},
    "eval": {"losses", "augment", "train", "serve", "commands", "tune"},
    "train": {"index", "serve", "commands", "tune"},
    "serve": {"train", "losses", "augment", "commands", "tune"},
    "encode": {"data", "models", "losses", "augment", "index", "eval", "train", "serve", "commands", "tune",
               "config"},
    "tune": {"serve", "commands"},
}


def test_imports_point_down_the_pipeline():
    mods = _modules()
    wrong = []
    for name, path in mods.items():
        parts = name.split(".")
        if len(parts) < 2 or parts[1] not in FORBIDDEN:
            continue
        for target in _imports(name, path, set(mods)):
            tparts = target.split(".")
            if len(tparts) > 1 and tparts[1] in FORBIDDEN[parts[1]]:
                wrong.append(f"{name} imports {target}")
    assert wrong == []
