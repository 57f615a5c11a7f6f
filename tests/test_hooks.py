"""Hooks are driven from one table: every hookspec is documented, tabled and exercised by a test plugin."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

import panderm
from panderm import hookspecs
from panderm.plugins import DEFAULT_PLUGINS, REGISTRY_HOOKS, describe_plugins, plugin_context, registries

DOCS = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"
HOOKSPECS = sorted(n for n in dir(hookspecs) if getattr(getattr(hookspecs, n), "panderm_spec", None) is not None)


def test_hookspecs_found():
    assert {"register_commands", "register_encoders", "resolve_weights"} <= set(HOOKSPECS)


def test_every_hookspec_is_documented_in_plugins_md():
    table = DOCS.read_text()
    undocumented = [h for h in HOOKSPECS if not re.search(rf"^\| `{h}\(", table, flags=re.M)]
    assert not undocumented, f"add these hooks to the hook reference in docs/plugins.md: {undocumented}"


def test_every_registering_hook_has_a_registry_row():
    registering = {h for h in HOOKSPECS if h.startswith("register_")} - {"register_commands"}
    assert {row.hook for row in REGISTRY_HOOKS} == registering
    current = [row for row in REGISTRY_HOOKS if not row.renamed_to]
    assert len({row.field for row in current}) == len(current)
    for old in (row for row in REGISTRY_HOOKS if row.renamed_to):  # a deprecated name feeds its successor's registry
        assert old.field == next(r.field for r in current if r.hook == old.renamed_to)


class EveryHook:
    """A test plugin implementing every hookspec, registering one thing through each."""

    @panderm.hookimpl
    def register_commands(self, cli):
        cli.add_command(click.Command("every-hook", callback=lambda: click.echo("hooked")))

    @panderm.hookimpl
    def register_encoders(self, register):
        from panderm.registry import PretrainedCfg

        register("every_hook_vit", lambda **kw: None, pretrained_cfg=PretrainedCfg(tag="x"))

    @panderm.hookimpl
    def register_probe_heads(self, register):
        from panderm.registry import ProbeHeadSpec

        register(ProbeHeadSpec(name="every-hook-head", summary="h", factory=lambda **kw: None))

    @panderm.hookimpl
    def register_tasks(self, register):  # the deprecated name of register_probe_heads
        from panderm.registry import ProbeHeadSpec

        register(ProbeHeadSpec(name="every-hook-task", summary="t", factory=lambda **kw: None))

    @panderm.hookimpl
    def register_modalities(self, register):
        from panderm.registry import ModalitySpec

        register(ModalitySpec(name="every-hook-modality", summary="m"))

    @panderm.hookimpl
    def register_teachers(self, register):
        register("every-hook-teacher", lambda spec: None, summary="t")

    @panderm.hookimpl
    def register_data_sources(self, register):
        register("every-hook-data", lambda spec, **kw: [], summary="d")

    @panderm.hookimpl
    def register_segmenters(self, register):
        register("every-hook-seg", lambda spec: None, summary="s")

    @panderm.hookimpl
    def register_benchmarks(self, register):
        from panderm.reproduce.benchmarks import Benchmark

        register(Benchmark(name="every-hook-bench", title="t", dataset="d", modality="dermoscopy", kind="listed",
                           binary=False, primary_metric="auroc", csv_layout="image,label,split", protocol="p",
                           results=()))

    @panderm.hookimpl
    def resolve_weights(self, spec):
        return Path("/every/hook.pth") if spec == "every-hook-weights" else None


EXPECTED = {"encoders": "every_hook_vit", "probe_heads": ["every-hook-head", "every-hook-task"],
            "modalities": "every-hook-modality",
            "teachers": "every-hook-teacher", "data_sources": "every-hook-data", "segmenters": "every-hook-seg",
            "benchmarks": "every-hook-bench"}


def test_the_test_plugin_implements_every_hookspec():
    implemented = {n for n in dir(EveryHook) if hasattr(getattr(EveryHook, n), "panderm_impl")}
    assert implemented == set(HOOKSPECS), "a new hookspec needs an implementation in EveryHook"
    assert set(EXPECTED) == {row.field for row in REGISTRY_HOOKS}


def test_the_deprecated_register_tasks_still_registers_with_a_warning(capsys):
    class Old:
        @panderm.hookimpl
        def register_tasks(self, register):
            from panderm.registry import ProbeHeadSpec

            register(ProbeHeadSpec(name="old-head", summary="o", factory=lambda **kw: None))

    with plugin_context(Old(), "old"):
        assert registries().probe_heads.get("old-head").plugin == "old"
        with pytest.warns(DeprecationWarning, match="probe_heads"):
            assert "old-head" in registries().tasks
    assert "plugin 'old' implements register_tasks, deprecated: rename it register_probe_heads" in capsys.readouterr().err
    with pytest.warns(DeprecationWarning, match="ProbeHeadSpec"):
        from panderm.registry import TaskSpec
    from panderm.registry import ProbeHeadSpec

    assert TaskSpec is ProbeHeadSpec


def test_every_hook_is_called_and_described():
    from panderm.plugins import resolve_weights
    from panderm_cli.app import build_cli

    with plugin_context(EveryHook(), "every-hook"):
        regs = registries()
        for field, names in EXPECTED.items():
            registry = getattr(regs, field)
            for name in [names] if isinstance(names, str) else names:
                assert name in registry and registry.owner(name) == "every-hook", field
        record = next(r for r in describe_plugins() if r["name"] == "every-hook")
        assert set(record["hooks"]) == set(HOOKSPECS)
        for field, names in EXPECTED.items():
            assert record[field] == ([names] if isinstance(names, str) else sorted(names)), field
        assert resolve_weights("every-hook-weights") == Path("/every/hook.pth")
        assert "every-hook" in build_cli().list_commands(click.Context(click.Group()))
    assert "every_hook_vit" not in registries().encoders


def test_a_plugin_registering_the_wrong_spec_type_is_a_plugin_error():
    from panderm.errors import PluginError

    class Wrong:
        @panderm.hookimpl
        def register_probe_heads(self, register):
            register("not a ProbeHeadSpec")

    with plugin_context(Wrong(), "wrong"), pytest.raises(PluginError, match="expected a ProbeHeadSpec"):
        registries()


def test_built_ins_load_from_default_plugins_without_entry_points(monkeypatch):
    import panderm.plugins as host

    monkeypatch.setattr(host, "entry_points", lambda group: [])  # as if not installed: no metadata at all
    monkeypatch.setattr(host, "_pm", None)
    try:
        names = {name for name, _ in host.get_plugin_manager().list_name_plugin()}
        assert {name for name, _ in DEFAULT_PLUGINS} <= names
        assert "panderm_large_patch16_224" in host.registries().encoders
    finally:
        host._pm = None
