"""The folders are the layers: imports only go down, no cycles, core is pure torch, small files and functions.

The rules are those of docs/design.md ("The layers"); this test reads every module's imports (module
level and inside functions) with ``ast``, so a lazy import cannot hide an upward edge either.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "eqreg_hf")

# folder -> folders it may import from (itself included). The top-level eqreg_hf/__init__.py re-exports
# the public API lazily and may name any layer; eqreg_hf/__main__.py is `python -m eqreg_hf` (the CLI).
ALLOWED = {
    "core": {"core"},
    "data": {"data"},
    "train": {"core", "train"},
    "callbacks": {"core", "train", "callbacks"},
    "hub": {"core", "hub"},
    "tasks": {"core", "data", "train", "callbacks", "hub", "tasks"},
    "app": {"core", "data", "hub", "tasks", "app"},  # the web demo and its Space (gradio, optional)
    "cli": {"core", "data", "train", "callbacks", "hub", "tasks", "app", "cli"},
    "model_cards": set(),  # card templates (package data), no code
}
MAX_FILE_LINES = 450
MAX_FUNCTION_LINES = 80
# Functions allowed past MAX_FUNCTION_LINES, with the reason (docs/design.md repeats it).
LONG_FUNCTIONS = {
    ("train/loop.py", "train_loop"): "its signature and docstring (every argument documented) are most of it",
}


def _modules() -> dict[str, str]:
    """Dotted module name -> file path, for every .py file of the package."""
    out = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                out[rel[: -len(".__init__")] if rel.endswith(".__init__") else rel] = path
    return out


MODULES = _modules()


def _imports(path: str, module: str) -> set[str]:
    """eqreg_hf modules imported by the file (absolute or relative, anywhere in it)."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    is_pkg = path.endswith("__init__.py")
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")
                parts = parts if is_pkg else parts[:-1]
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            # the longest prefix that is a module of the package
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name.startswith("eqreg_hf") and name != module:
                found.add(name)
    return found


GRAPH = {m: _imports(p, m) for m, p in MODULES.items()}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ALLOWED else None


def test_every_module_is_in_a_layer():
    loose = [m for m in MODULES if m not in ("eqreg_hf", "eqreg_hf.__main__") and _layer(m) is None]
    assert not loose, f"modules outside the layer folders {sorted(ALLOWED)}: {loose}"


def test_imports_only_go_down():
    upward = [
        f"{m} -> {d}"
        for m, deps in GRAPH.items()
        if _layer(m)
        for d in deps
        if d == "eqreg_hf" or _layer(d) not in ALLOWED[_layer(m)]
    ]
    assert not upward, "imports that go up or sideways: " + ", ".join(sorted(upward))


def test_no_import_cycle():
    graph = {m: {d for d in deps if d != "eqreg_hf"} for m, deps in GRAPH.items() if m != "eqreg_hf"}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(d) :] + [d]))
            if d not in state:
                visit(d)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_core_needs_only_torch():
    code = (
        "import eqreg_hf.core, eqreg_hf, sys; eqreg_hf.EqReg; "
        "print([m for m in ('transformers', 'timm', 'datasets', 'accelerate') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node.end_lineno - node.lineno + 1


@pytest.mark.parametrize("module", sorted(MODULES))
def test_files_and_functions_are_small(module):
    path = MODULES[module]
    text = open(path, encoding="utf-8").read()
    assert text.count("\n") <= MAX_FILE_LINES, f"{path}: {text.count(chr(10))} lines > {MAX_FILE_LINES}"
    rel = os.path.relpath(path, PACKAGE).replace(os.sep, "/")
    long = [
        f"{name} ({n} lines)"
        for name, n in _functions(ast.parse(text))
        if n > MAX_FUNCTION_LINES and (rel, name) not in LONG_FUNCTIONS
    ]
    assert not long, f"{rel}: functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_code_points_only_inside_the_repository():
    """No module sends readers to a file that is not in the repository (e.g. a DESIGN.md kept elsewhere)."""
    bad = []
    for path in MODULES.values():
        text = open(path, encoding="utf-8").read()
        for token in ("DESIGN.md", "NOTES-HF.md", "STYLE.md", "../shared"):
            if token in text:
                bad.append(f"{os.path.relpath(path, ROOT)} mentions {token}")
        for ref in [w.strip("`'\"(),.:;") for w in text.split() if w.strip("`'\"(),.:;").startswith("docs/")]:
            if ref.endswith(".md") and not os.path.exists(os.path.join(ROOT, ref)):
                bad.append(f"{os.path.relpath(path, ROOT)} points to missing {ref}")
    assert not bad, bad
    assert os.path.isfile(os.path.join(ROOT, "docs", "design.md"))


def test_one_name_for_one_constant():
    """An exported upper-case name means one thing across the package (e.g. no two different LAYOUTS)."""
    values: dict[str, set[str]] = {}
    for path in MODULES.values():
        for node in ast.parse(open(path, encoding="utf-8").read()).body:
            # plain and annotated assignments alike (`TASKS: dict[...] = {...}` once hid a second TASKS)
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target, value = node.targets[0], node.value
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                target, value = node.target, node.value
            else:
                continue
            if isinstance(target, ast.Name) and target.id.isupper() and not target.id.startswith("_"):
                values.setdefault(target.id, set()).add(ast.unparse(value))
    clashes = {n: v for n, v in values.items() if len(v) > 1}
    assert not clashes, clashes
