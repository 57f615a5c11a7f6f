"""The plugin walk-through in docs/plugins.md must keep working: run its code blocks as a plugin."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import numpy as np

from panderm.plugins import plugin_context, registries

DOC = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


def _module_from_doc(name: str, index: int) -> types.ModuleType:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    module = types.ModuleType(name)
    exec(compile(blocks[index], f"docs/plugins.md[{index}]", "exec"), module.__dict__)
    sys.modules[name] = module
    return module


def test_doc_plugin_adds_probe_head_and_command(cli):
    plugin = _module_from_doc("panderm_knn", 0)
    commands = _module_from_doc("panderm_knn.commands", 1)
    plugin.commands = commands
    with plugin_context(plugin, "knn"):
        spec = registries().probe_heads.get("knn")
        assert spec.plugin == "knn"
        rng = np.random.default_rng(0)
        X = np.r_[rng.normal(0, 1, (30, 4)), rng.normal(4, 1, (30, 4))]
        y = np.r_[np.zeros(30), np.ones(30)]
        est = spec.factory(C=1.0, seed=0).fit(X, y)
        assert (est.predict_proba(X).argmax(1) == y).mean() > 0.95
        result = cli(["knn-info"])
        assert result.exit_code == 0 and "knn: k-nearest-neighbour probe" in result.output
    sys.modules.pop("panderm_knn", None)
    sys.modules.pop("panderm_knn.commands", None)
