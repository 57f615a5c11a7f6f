"""The plugin host: loads entry points lazily and builds the registries.

Built-in plugins and third-party plugins both arrive through the ``panderm``
entry-point group. A plugin that fails to import or to register is reported in
one warning line naming it, and everything else keeps working.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable, Iterator

import pluggy

from panderm import hookspecs
from panderm.errors import PluginError
from panderm.registry import (
    EncoderEntry,
    ModalitySpec,
    PretrainedCfg,
    Registry,
    TaskSpec,
    FactoryEntry,
)

ENTRY_POINT_GROUP = "panderm"

_pm: pluggy.PluginManager | None = None
_failures: dict[str, str] = {}
_registries_cache: tuple[tuple, "Registries"] | None = None


def _warn(message: str) -> None:
    sys.stderr.write(f"panderm: warning: {message}\n")


def _disabled() -> set[str]:
    return {n.strip() for n in os.environ.get("PANDERM_DISABLE_PLUGINS", "").split(",") if n.strip()}


def get_plugin_manager() -> pluggy.PluginManager:
    """Return the process-wide plugin manager, loading entry points on first use."""
    global _pm
    if _pm is None:
        pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
        pm.add_hookspecs(hookspecs)
        disabled = _disabled()
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in disabled or pm.has_plugin(ep.name):
                continue
            try:
                module = ep.load()
                pm.register(module, name=ep.name)
            except Exception as exc:  # a broken third-party plugin must not break the CLI
                _failures[ep.name] = f"{type(exc).__name__}: {exc}".splitlines()[0]
                _warn(f"plugin '{ep.name}' failed to load and is skipped ({_failures[ep.name]})")
        _pm = pm
    return _pm


def load_failures() -> dict[str, str]:
    """Plugins that failed to load or register, with a one-line reason."""
    get_plugin_manager()
    return dict(_failures)


def register_plugin(plugin: Any, name: str | None = None) -> str:
    """Register a plugin object or module at run time (tests, notebooks)."""
    return get_plugin_manager().register(plugin, name=name)


def unregister_plugin(name: str) -> None:
    """Remove a plugin registered under ``name``."""
    pm = get_plugin_manager()
    plugin = pm.get_plugin(name)
    if plugin is not None:
        pm.unregister(plugin, name=name)


@contextlib.contextmanager
def plugin_context(plugin: Any, name: str) -> Iterator[str]:
    """Register ``plugin`` for the duration of a ``with`` block (handy in tests)."""
    register_plugin(plugin, name=name)
    try:
        yield name
    finally:
        unregister_plugin(name)


def _call_registering_hook(hook_name: str, make_register: Callable[[str], Callable[..., None]]) -> None:
    """Call each plugin's implementation with a ``register`` bound to that plugin."""
    pm = get_plugin_manager()
    for impl in getattr(pm.hook, hook_name).get_hookimpls():
        register = make_register(impl.plugin_name)
        try:
            impl.function(*[{"register": register}[a] for a in impl.argnames])
        except PluginError:
            raise
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
            _failures.setdefault(impl.plugin_name, reason)
            _warn(f"plugin '{impl.plugin_name}' failed in {hook_name} and is skipped ({reason})")


@dataclass
class Registries:
    """Everything registered by the loaded plugins."""

    encoders: Registry[EncoderEntry] = field(default_factory=lambda: Registry("encoder"))
    tasks: Registry[TaskSpec] = field(default_factory=lambda: Registry("task"))
    modalities: Registry[ModalitySpec] = field(default_factory=lambda: Registry("modality"))
    teachers: Registry[FactoryEntry] = field(default_factory=lambda: Registry("teacher"))
    data_sources: Registry[FactoryEntry] = field(default_factory=lambda: Registry("data source"))
    segmenters: Registry[FactoryEntry] = field(default_factory=lambda: Registry("segmenter"))
    benchmarks: Registry[Any] = field(default_factory=lambda: Registry("benchmark"))


def _build_registries() -> Registries:
    regs = Registries()

    def encoder_register(plugin: str):
        def register(name: str, factory: Callable[..., Any], pretrained_cfg: PretrainedCfg | None = None,
                     pretrained_cfgs: list[PretrainedCfg] | None = None, summary: str = "") -> None:
            cfgs = tuple(pretrained_cfgs or ([pretrained_cfg] if pretrained_cfg else [PretrainedCfg(tag="untrained")]))
            regs.encoders.add(name, EncoderEntry(name, factory, cfgs, plugin, summary), plugin)
        return register

    def spec_register(registry: Registry, spec_type: type):
        def make(plugin: str):
            def register(spec) -> None:
                if not isinstance(spec, spec_type):
                    raise PluginError(f"plugin '{plugin}' registered {spec!r}, expected a {spec_type.__name__}")
                if not spec.plugin:
                    spec = type(spec)(**{**spec.__dict__, "plugin": plugin})
                registry.add(spec.name, spec, plugin)
            return register
        return make

    def factory_register(registry: Registry):
        def make(plugin: str):
            def register(name: str, factory: Callable[..., Any], summary: str = "") -> None:
                registry.add(name, FactoryEntry(name, factory, summary, plugin), plugin)
            return register
        return make

    _call_registering_hook("register_encoders", encoder_register)
    _call_registering_hook("register_tasks", spec_register(regs.tasks, TaskSpec))
    _call_registering_hook("register_modalities", spec_register(regs.modalities, ModalitySpec))
    _call_registering_hook("register_teachers", factory_register(regs.teachers))
    _call_registering_hook("register_data_sources", factory_register(regs.data_sources))
    _call_registering_hook("register_segmenters", factory_register(regs.segmenters))
    from panderm.reproduce.benchmarks import Benchmark

    _call_registering_hook("register_benchmarks", spec_register(regs.benchmarks, Benchmark))
    return regs


def registries() -> Registries:
    """Return the registries, rebuilt whenever the set of plugins changes."""
    global _registries_cache
    pm = get_plugin_manager()
    key = tuple((name, id(p)) for name, p in pm.list_name_plugin())
    if _registries_cache is None or _registries_cache[0] != key:
        _registries_cache = (key, _build_registries())
    return _registries_cache[1]


def resolve_weights(spec: str) -> Path | None:
    """Ask plugins to turn a ``--weights`` spec into a local path (first answer wins)."""
    result = get_plugin_manager().hook.resolve_weights(spec=spec)
    return Path(result) if result is not None else None


def describe_plugins() -> list[dict[str, Any]]:
    """One record per plugin: its name, hooks and what it registered (for ``panderm plugins``)."""
    pm = get_plugin_manager()
    regs = registries()
    records = []
    for name, plugin in pm.list_name_plugin():
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        records.append({
            "name": name,
            "module": getattr(plugin, "__name__", type(plugin).__name__),
            "hooks": hooks,
            "encoders": [n for n in regs.encoders if regs.encoders.owner(n) == name],
            "tasks": [n for n in regs.tasks if regs.tasks.owner(n) == name],
            "modalities": [n for n in regs.modalities if regs.modalities.owner(n) == name],
            "teachers": [n for n in regs.teachers if regs.teachers.owner(n) == name],
            "data_sources": [n for n in regs.data_sources if regs.data_sources.owner(n) == name],
            "segmenters": [n for n in regs.segmenters if regs.segmenters.owner(n) == name],
            "benchmarks": [n for n in regs.benchmarks if regs.benchmarks.owner(n) == name],
        })
    for name, reason in sorted(_failures.items()):
        if not pm.has_plugin(name):
            records.append({"name": name, "error": reason})
    return records
