"""The house of ``fer_utils``: the runtime modules (the recognizer, the API, the CLI and the app)
import nothing of the lab, anywhere in their code, import each other without circles and at the
top of their files, and load no TensorFlow, Keras, scikit-learn or Streamlit when imported."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

import pytest

from fer_utils.config import PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "fer_utils"
#: The product: what the base install runs (the app with its `app` extra).
RUNTIME = {"api", "cli", "app", "model_file", "media", "detection", "recognizer", "saliency", "samples", "extras"}
#: Shared by the runtime and the lab: constants, atomic files, progress bars.
SHARED = {"config", "files", "progress"}


def project_imports(module: str) -> list[tuple[str, bool]]:
    """The ``fer_utils`` modules that ``module`` imports, each with whether the import is at the
    top level of the file (not inside a function or class)."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").split(".")[0] == "fer_utils"):
            base = (node.module or "") if node.level else (node.module or "").removeprefix("fer_utils").lstrip(".")
            names = [base.split(".")[0]] if base else [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name.split(".")[1] for a in node.names if a.name.startswith("fer_utils.")]
        found += [(name, id(node) in top or _guarded_top(tree, node)) for name in names]
    return found


def _guarded_top(tree: ast.Module, node: ast.AST) -> bool:
    """Whether ``node`` sits in a top-level ``if``/``try`` block (still module level)."""
    return any(node in ast.walk(block) for block in tree.body if isinstance(block, (ast.If, ast.Try)))


@pytest.mark.parametrize("module", sorted(RUNTIME))
def test_a_runtime_module_imports_only_runtime_and_shared_modules_at_the_top(module):
    imports = project_imports(module)
    lab = sorted({name for name, _ in imports} - RUNTIME - SHARED)
    assert not lab, f"fer_utils/{module}.py imports the lab: {lab}"
    inside = sorted({name for name, at_top in imports if not at_top})
    assert not inside, f"fer_utils/{module}.py imports project modules inside functions: {inside}"


def test_the_runtime_has_no_import_circle():
    graph = {m: {name for name, _ in project_imports(m)} - {m} for m in RUNTIME | SHARED}
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for name in sorted(graph[module]):
            assert state.get(name) != "open", f"import circle: {' -> '.join(path + [module, name])}"
            if name not in state:
                visit(name, path + [module])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


def test_importing_the_runtime_loads_no_lab_and_no_heavy_package():
    script = """
import json, sys
import fer_utils.api, fer_utils.cli, fer_utils.saliency, fer_utils.samples
print(json.dumps(sorted(sys.modules)))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    heavy = {m.split(".")[0] for m in loaded} & {"tensorflow", "keras", "sklearn", "streamlit", "matplotlib", "skimage",
                                                  "lime", "mtcnn", "jax", "torch"}
    assert not heavy, f"importing the runtime loaded {sorted(heavy)}"
    ours = {m.split(".")[1] for m in loaded if m.startswith("fer_utils.")}
    assert ours <= RUNTIME | SHARED, f"importing the runtime loaded the lab: {sorted(ours - RUNTIME - SHARED)}"
