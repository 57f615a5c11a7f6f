"""The plugin host: loads plugins lazily and builds the registries.

Built-in plugins are the modules of ``DEFAULT_PLUGINS`` (as llm does: a new built-in is one line
here, no reinstall); third-party plugins arrive through the ``panderm`` entry-point group. Both
use the same hooks. A plugin that fails to import or to register is reported in one warning line
naming it, and everything else keeps working.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from dataclasses import dataclass
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
    ProbeHeadSpec,
    Registry,
    FactoryEntry,
)

ENTRY_POINT_GROUP = "panderm"

#: The built-in plugins, ``(name, module)``; ``PANDERM_DISABLE_PLUGINS`` takes these names too.
DEFAULT_PLUGINS: tuple[tuple[str, str], ...] = (
    ("encoders", "panderm_encoders"),
    ("features", "panderm_features"),
    ("probe", "panderm_probe"),
    ("hfhub", "panderm_hfhub"),
    ("demo", "panderm_demo"),
    ("pretrain", "panderm_pretrain"),
    ("longitudinal", "panderm_longitudinal"),
    ("tbp", "panderm_tbp"),
    ("finetune", "panderm_finetune"),
    ("segment", "panderm_segment"),
    ("slide", "panderm_slide"),
    ("survival", "panderm_survival"),
    ("serve", "panderm_serve"),
    ("classifier", "panderm_classifier"),
    ("reproduce", "panderm_reproduce"),
)

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
        found = [(name, lambda m=module: importlib.import_module(m)) for name, module in DEFAULT_PLUGINS]
        found += [(ep.name, ep.load) for ep in entry_points(group=ENTRY_POINT_GROUP)]
        for name, load in found:
            if name in disabled or pm.has_plugin(name):
                continue
            try:
                pm.register(load(), name=name)
            except Exception as exc:  # a broken plugin must not break the CLI
                _failures[name] = f"{type(exc).__name__}: {exc}".splitlines()[0]
                _warn(f"plugin '{name}' failed to load and is skipped ({_failures[name]})")
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


def record_failure(plugin: str, where: str, exc: BaseException) -> None:
    """Note that ``plugin`` failed in ``where`` and print the one warning line; the plugin is skipped."""
    reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
    _failures.setdefault(plugin, reason)
    _warn(f"plugin '{plugin}' failed in {where} and is skipped ({reason})")


def _call_registering_hook(hook_name: str, make_register: Callable[[str], Callable[..., None]],
                           renamed_to: str | None = None) -> None:
    """Call each plugin's implementation with a ``register`` bound to that plugin."""
    pm = get_plugin_manager()
    for impl in getattr(pm.hook, hook_name).get_hookimpls():
        if renamed_to:
            _warn(f"plugin '{impl.plugin_name}' implements {hook_name}, deprecated: rename it {renamed_to}")
        register = make_register(impl.plugin_name)
        try:
            impl.function(*[{"register": register}[a] for a in impl.argnames])
        except PluginError:
            raise
        except Exception as exc:
            record_failure(impl.plugin_name, hook_name, exc)


@dataclass(frozen=True)
class RegistryHook:
    """One registering hook: the registry its entries go to and how its ``register`` callback is called.

    ``style`` is ``encoder`` (``register(name, factory, pretrained_cfg=...)``), ``spec``
    (``register(SpecObject)``, checked against ``spec_type``) or ``factory`` (``register(name, factory,
    summary="")``). Adding a hook is one row here, its hookspec, and its line in docs/plugins.md.
    """

    hook: str
    field: str
    kind: str
    style: str
    spec_type: str | None = None  # "module:Class", imported when the registries are built
    renamed_to: str | None = None  # a deprecated hook name: still honoured, with a warning


REGISTRY_HOOKS: tuple[RegistryHook, ...] = (
    RegistryHook("register_encoders", "encoders", "encoder", "encoder"),
    RegistryHook("register_probe_heads", "probe_heads", "probe head", "spec", "panderm.registry:ProbeHeadSpec"),
    RegistryHook("register_tasks", "probe_heads", "probe head", "spec", "panderm.registry:ProbeHeadSpec",
                 renamed_to="register_probe_heads"),
    RegistryHook("register_modalities", "modalities", "modality", "spec", "panderm.registry:ModalitySpec"),
    RegistryHook("register_teachers", "teachers", "teacher", "factory"),
    RegistryHook("register_data_sources", "data_sources", "data source", "factory"),
    RegistryHook("register_segmenters", "segmenters", "segmenter", "factory"),
    RegistryHook("register_benchmarks", "benchmarks", "benchmark", "spec", "panderm.reproduce.benchmarks:Benchmark"),
)


class Registries:
    """Everything registered by the loaded plugins: one :class:`Registry` per row of ``REGISTRY_HOOKS``."""

    encoders: Registry[EncoderEntry]
    probe_heads: Registry[ProbeHeadSpec]
    modalities: Registry[ModalitySpec]
    teachers: Registry[FactoryEntry]
    data_sources: Registry[FactoryEntry]
    segmenters: Registry[FactoryEntry]
    benchmarks: Registry[Any]

    def __init__(self) -> None:
        for row in REGISTRY_HOOKS:
            if not hasattr(self, row.field):  # a deprecated hook name shares its successor's registry
                setattr(self, row.field, Registry(row.kind))

    @property
    def tasks(self) -> Registry[ProbeHeadSpec]:
        """Deprecated name of :attr:`probe_heads`."""
        import warnings

        warnings.warn("registries().tasks is now registries().probe_heads", DeprecationWarning, stacklevel=2)
        return self.probe_heads


def _encoder_register(registry: Registry, plugin: str) -> Callable[..., None]:
    def register(name: str, factory: Callable[..., Any], pretrained_cfg: PretrainedCfg | None = None,
                 pretrained_cfgs: list[PretrainedCfg] | None = None, summary: str = "") -> None:
        cfgs = tuple(pretrained_cfgs or ([pretrained_cfg] if pretrained_cfg else [PretrainedCfg(tag="untrained")]))
        registry.add(name, EncoderEntry(name, factory, cfgs, plugin, summary), plugin)
    return register


def _spec_register(registry: Registry, plugin: str, spec_type: type) -> Callable[..., None]:
    def register(spec) -> None:
        if not isinstance(spec, spec_type):
            raise PluginError(f"plugin '{plugin}' registered {spec!r}, expected a {spec_type.__name__}")
        if not spec.plugin:
            spec = type(spec)(**{**spec.__dict__, "plugin": plugin})
        registry.add(spec.name, spec, plugin)
    return register


def _factory_register(registry: Registry, plugin: str) -> Callable[..., None]:
    def register(name: str, factory: Callable[..., Any], summary: str = "") -> None:
        registry.add(name, FactoryEntry(name, factory, summary, plugin), plugin)
    return register


def _register_maker(row: RegistryHook, registry: Registry) -> Callable[[str], Callable[..., None]]:
    if row.style == "spec":
        module, _, name = row.spec_type.partition(":")
        spec_type = getattr(importlib.import_module(module), name)
        return lambda plugin: _spec_register(registry, plugin, spec_type)
    make = {"encoder": _encoder_register, "factory": _factory_register}[row.style]
    return lambda plugin: make(registry, plugin)


def _build_registries() -> Registries:
    regs = Registries()
    for row in REGISTRY_HOOKS:
        _call_registering_hook(row.hook, _register_maker(row, getattr(regs, row.field)), row.renamed_to)
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
            **{row.field: [n for n in getattr(regs, row.field) if getattr(regs, row.field).owner(n) == name]
               for row in REGISTRY_HOOKS},
        })
    for name, reason in sorted(_failures.items()):
        if not pm.has_plugin(name):
            records.append({"name": name, "error": reason})
    return records
