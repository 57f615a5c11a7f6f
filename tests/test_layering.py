"""The house's layering, checked on the source: lower layers never import feature packages or the CLI."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FEATURES = ("tbp", "longitudinal", "pathology", "serve", "finetune", "segmentation", "classifier", "survival",
            "reproduce")
LOWER = ("eval", "data", "models", "train")
CODE_ROOTS = ("panderm", "panderm_cli", "plugins", "kernels")


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """``(line, module, names)`` of every absolute import in ``path``, lazy ones inside functions included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module, [a.name for a in node.names]))
    return found


def _modules(folder: Path):
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("layer", LOWER)
def test_lower_layers_never_import_a_feature_package(layer):
    bad = []
    for path in _modules(REPO / "panderm" / layer):
        for line, module, names in _imports(path):
            parts = module.split(".")
            targets = [parts[1]] if parts[0] == "panderm" and len(parts) > 1 else []
            if module == "panderm":
                targets = names
            bad += [f"{path.relative_to(REPO)}:{line} imports panderm.{t}" for t in targets if t in FEATURES]
    assert not bad, "\n".join(bad)


def test_the_library_never_imports_the_cli_or_a_plugin():
    plugins = {p.name for p in (REPO / "plugins").iterdir() if p.is_dir()}
    bad = [f"{path.relative_to(REPO)}:{line} imports {module}" for path in _modules(REPO / "panderm")
           for line, module, _ in _imports(path)
           if module.split(".")[0] in {"panderm_cli", "click", *plugins}]
    assert not bad, "\n".join(bad)


def test_no_private_name_is_imported_across_modules():
    bad = [f"{path.relative_to(REPO)}:{line} from {module} import {name}"
           for root in CODE_ROOTS for path in _modules(REPO / root)
           for line, module, names in _imports(path)
           for name in names if name.startswith("_") and not name.startswith("__")]
    assert not bad, "\n".join(bad)


def test_no_function_runs_over_100_lines():
    """Long procedures are split into named steps (validate, load, run, write); docstrings count."""
    long = [f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for root in CODE_ROOTS for path in _modules(REPO / root)
            for node in ast.walk(ast.parse(path.read_text(), str(path)))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 100]
    assert not long, "\n".join(long)
