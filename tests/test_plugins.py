"""The plugin host: entry points, inline plugins, conflicts, broken plugins, lazy commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import click
import pytest

import panderm
from panderm.errors import PluginError
from panderm.plugins import plugin_context, registries
from panderm.registry import PretrainedCfg, ProbeHeadSpec


def _run_panderm(args, env_extra=None, cwd=None):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "panderm_cli", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=120)


class FakeTaskPlugin:
    """A third-party plugin defined inline: one command and one task."""

    @panderm.hookimpl
    def register_commands(self, cli):
        @cli.command("hello")
        @click.option("--name", default="world")
        def hello(name):
            """Say hello."""
            click.echo(f"hello {name}")

    @panderm.hookimpl
    def register_probe_heads(self, register):
        register(ProbeHeadSpec(name="nearest-centroid", summary="test task",
                          factory=lambda **kw: __import__("sklearn.neighbors").neighbors.NearestCentroid()))


def test_builtin_plugins_register_from_default_plugins():
    from panderm.plugins import DEFAULT_PLUGINS, get_plugin_manager

    regs = registries()
    assert {"panderm_large_patch16_224", "panderm_base_patch16_224", "panderm_test_patch16_224"} <= set(regs.encoders)
    assert regs.encoders.owner("panderm_large_patch16_224") == "encoders"
    loaded = dict(get_plugin_manager().list_name_plugin())
    for name, module in DEFAULT_PLUGINS:  # the same names PANDERM_DISABLE_PLUGINS takes
        assert loaded[name].__name__ == module


def test_inline_plugin_adds_command_and_task(cli):
    with plugin_context(FakeTaskPlugin(), "fake"):
        assert "nearest-centroid" in registries().probe_heads
        assert registries().probe_heads.get("nearest-centroid").plugin == "fake"
        result = cli(["hello", "--name", "derm"])
        assert result.exit_code == 0 and result.output.strip() == "hello derm"
        records = {r["name"]: r for r in json.loads(cli(["plugins"]).output)}
        assert records["fake"]["probe_heads"] == ["nearest-centroid"]
        assert records["fake"]["commands"] == ["hello"]
        as_json = cli(["plugins", "--json"])  # accepted like models --json / doctor --json: the same JSON
        assert as_json.exit_code == 0 and json.loads(as_json.output) == json.loads(cli(["plugins"]).output)
    assert "nearest-centroid" not in registries().probe_heads


def test_duplicate_name_is_an_error_naming_both_plugins():
    class Clash:
        @panderm.hookimpl
        def register_encoders(self, register):
            register("panderm_base_patch16_224", lambda **kw: None, pretrained_cfg=PretrainedCfg(tag="x"))

    with plugin_context(Clash(), "clashing"):
        with pytest.raises(PluginError) as err:
            registries()
    assert "'encoders'" in err.value.message and "'clashing'" in err.value.message


def test_duplicate_command_is_an_error_naming_both_plugins():
    class ClashCmd:
        @panderm.hookimpl
        def register_commands(self, cli):
            cli.add_lazy_command("models", "x:y", "clash")

    from panderm_cli.app import build_cli

    with plugin_context(ClashCmd(), "clashcmd"):
        with pytest.raises(PluginError) as err:
            build_cli()
        assert "command 'models' is registered twice" in err.value.message
        assert "'encoders'" in err.value.message and "'clashcmd'" in err.value.message


def test_broken_third_party_plugin_warns_once_and_cli_works(tmp_path):
    site = tmp_path / "site"
    (site / "broken_plugin").mkdir(parents=True)
    (site / "broken_plugin" / "__init__.py").write_text("raise RuntimeError('boom at import')\n")
    dist = site / "broken_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[panderm]\nbroken = broken_plugin\n")
    result = _run_panderm(["models", "--json"], {"PYTHONPATH": str(site)})
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "broken" in line]
    assert len(warnings) == 1
    assert "plugin 'broken' failed to load" in warnings[0] and "boom at import" in warnings[0]
    assert any(m["arch"] == "panderm_large_patch16_224" for m in json.loads(result.stdout))
    disabled = _run_panderm(["models", "--json"], {"PYTHONPATH": str(site), "PANDERM_DISABLE_PLUGINS": "broken"})
    assert "broken" not in disabled.stderr


def test_help_is_lazy_and_lists_every_command_with_examples():
    code = textwrap.dedent("""
        import sys
        from panderm_cli.app import main
        try:
            main(["--help"])
        except SystemExit:
            pass
        heavy = [m for m in ("torch", "sklearn", "matplotlib", "timm") if m in sys.modules]
        print("HEAVY=" + ",".join(heavy))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert "HEAVY=\n" in out or out.rstrip().endswith("HEAVY=")
    for command in ("models", "weights", "export", "plugins", "doctor", "extract", "probe"):
        assert f"  {command} " in out
    for command in ("models", "weights", "export", "plugins", "doctor", "extract", "probe"):
        sub = _run_panderm([command, "--help"])
        assert sub.returncode == 0 and "Examples:" in sub.stdout, command


def test_models_json_lists_presets_and_dims(cli):
    rows = {r["name"]: r for r in json.loads(cli(["models", "--json"]).output)}
    large = rows["panderm_large_patch16_224.official"]
    assert large["num_features"] == 1024 and large["input_size"] == [3, 224, 224]
    assert large["std"] == [0.228, 0.224, 0.225] and large["file_name"] == "panderm_ll_data6_checkpoint-499.pth"
    assert rows["panderm_base_patch16_224.official"]["num_features"] == 768


def test_unknown_model_is_a_clean_error(cli, tmp_path):
    res = cli(["export", "--model", "panderm_huge", "--out", str(tmp_path / "x.pth")])
    assert res.exit_code == 2 and "unknown encoder 'panderm_huge'" in res.output
    assert "panderm_large_patch16_224" in res.output


def test_doctor_reports_hardware_and_extras(cli):
    report = json.loads(cli(["doctor", "--json"]).output)
    assert report["packages"]["torch"]
    assert report["cpu"]["auto_precision"] in ("bf16", "fp32")
    assert "triton" in report["extras"] and "openslide" in report["extras"]


def test_debug_env_shows_traceback(tmp_path):
    args = ["export", "--model", "panderm_test_patch16_224", "--weights", str(tmp_path / "nope.pth"),
            "--out", str(tmp_path / "x.pth")]
    clean = _run_panderm(args)
    assert clean.returncode == 2 and "Traceback" not in clean.stderr
    debug = _run_panderm(args, {"PANDERM_DEBUG": "1"})
    assert "Traceback" in debug.stderr


def test_models_hides_test_architectures_unless_all(cli):
    names = {r["name"] for r in json.loads(cli(["models", "--json"]).output)}
    assert "panderm_tiny_patch16_224.demo" in names and not any("_test_" in n for n in names)
    names = {r["name"] for r in json.loads(cli(["models", "--json", "--all"]).output)}
    assert "panderm_test_patch16_224.untrained" in names
