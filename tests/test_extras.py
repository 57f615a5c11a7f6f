"""A command whose optional extra is missing names the extra; ``panderm doctor`` reports every optional module."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from panderm.extras import OPTIONAL_MODULES, extra_for, missing_extra_error

REPO = Path(__file__).resolve().parents[1]

#: Runs the CLI with the listed modules unimportable (as on an install without their extra).
BLOCK = ("import sys\nfor m in sys.argv[1].split(','):\n    sys.modules[m] = None\n"
         "from panderm_cli.app import main\nmain(sys.argv[2:])\n")


def _run_without(modules: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK, modules, *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def _survival_inputs(root: Path) -> list[str]:
    rng = np.random.default_rng(0)
    ids = [f"P{i}" for i in range(60)]
    pd.DataFrame({"id": ids, "score": rng.normal(size=60)}).to_csv(root / "s.csv", index=False)
    pd.DataFrame({"id": ids, "t": rng.uniform(1, 10, 60), "e": rng.integers(0, 2, 60)}).to_csv(root / "c.csv",
                                                                                                  index=False)
    return ["survival", "--scores", str(root / "s.csv"), "--clinical", str(root / "c.csv"), "--time", "t",
            "--event", "e", "--years", "3,5", "--bootstrap", "0", "--out", str(root / "surv")]


@pytest.mark.parametrize("modules, extra", [
    ("fastapi,uvicorn", "serve"),
    ("lifelines,sksurv", "survival"),
    ("openslide", "slide"),
    ("open_clip", "train"),
])
def test_missing_extra_names_the_extra(modules, extra, tmp_path, shared_data):
    args = {
        "serve": ["serve", "--demo", "--port", "0"],
        "survival": _survival_inputs(tmp_path),
        "slide": ["slide", "tile", str(shared_data / "wsi" / "images" / "cmu-1-small-region.svs"),
                  "--out", str(tmp_path / "tiles")],
        "train": ["pretrain", "--model", "panderm_test_patch16_224", "--teacher", "openclip:ViT-B-16:/none/clip.bin",
                  "--data", str(shared_data / "ham10000_dermoscopy_cls" / "labels.csv"), "--max-steps", "1",
                  "--out", str(tmp_path / "pt")],
    }[extra]
    res = _run_without(modules, args, tmp_path)
    assert res.returncode == 2, res.stderr
    assert f"panderm[{extra}]" in res.stderr, res.stderr
    assert "Internal error" not in res.stderr and "Traceback" not in res.stderr
    if extra in ("serve", "survival"):  # translated centrally: names the command too
        assert f"`panderm {extra}` needs the {extra} extra" in res.stderr


def test_translation_names_nested_commands_and_leaves_other_errors():
    err = ModuleNotFoundError("No module named 'sksurv.metrics'", name="sksurv.metrics")
    translated = missing_extra_error(err, "slide mil")
    assert "`panderm slide mil` needs the survival extra" in translated.message
    assert "pip install 'panderm[survival]'" in translated.hint
    assert missing_extra_error(ModuleNotFoundError("x", name="not_optional_pkg")) is None
    assert missing_extra_error(ValueError("fastapi")) is None


def test_map_agrees_with_pyproject():
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    all_names = {req.split(">")[0].split("=")[0].split("<")[0].strip().lower() for reqs in extras.values() for req in reqs}
    for module, (dist, extra) in OPTIONAL_MODULES.items():
        if extra is None:  # reported by doctor, installed by no extra (e.g. xformers: nothing imports it)
            assert dist.lower() not in all_names, module
            assert extra_for(module) is None
            continue
        names = [req.split(">")[0].split("=")[0].split("<")[0].strip().lower() for req in extras[extra]]
        assert dist.lower() in names, (module, extra)
        assert extra_for(f"{module}.sub") == extra


def test_doctor_reports_every_optional_dependency(cli, monkeypatch):
    import panderm.doctor as doctor

    real = doctor._version
    monkeypatch.setattr(doctor, "_version", lambda d: None if d == "fastapi" else real(d))
    report = json.loads(cli(["doctor", "--json"]).output)
    for module in ("open_clip", "openslide", "lifelines", "sksurv", "fastapi", "playwright", "triton", "xformers"):
        assert module in report["extras"], module
        assert set(report["extras"][module]) >= {"version", "available", "extra"}
    assert report["extras"]["fastapi"]["version"] is None and report["extras"]["fastapi"]["extra"] == "serve"
    assert report["extras"]["lifelines"]["version"] == real("lifelines")
    text = cli(["doctor"]).output
    assert "fastapi          not installed (pip install 'panderm[serve]')" in text
    assert f"lifelines        {real('lifelines')}" in text
    for module in ("open_clip", "openslide", "sksurv", "playwright", "triton", "xformers"):
        assert f"  {module} " in text


def test_app_names_the_nested_command_that_needs_the_extra():
    import click
    from click.testing import CliRunner

    from panderm_cli.app import build_cli

    cli = build_cli()

    @click.group("zz")
    def group():
        pass

    @group.command("sub")
    def sub():
        raise ModuleNotFoundError("No module named 'lifelines'", name="lifelines")

    cli.add_command(group)
    res = CliRunner().invoke(cli, ["zz", "sub"], prog_name="panderm")
    assert res.exit_code == 2
    assert "`panderm zz sub` needs the survival extra" in res.output and "panderm[survival]" in res.output
    assert "Internal error" not in res.output
