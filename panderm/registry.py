"""Registries of named things contributed by plugins (timm-style names).

Encoder names follow timm: ``arch`` or ``arch.tag``, where the tag picks one
:class:`PretrainedCfg` of the architecture (the first registered is the default).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterable, Iterator, TypeVar

from panderm.errors import ConfigError, PluginError

T = TypeVar("T")

#: Architectures for unit tests only: a ``test`` word in the name (``panderm_test_patch16_224``).
_TEST_ARCH = re.compile(r"(^|_)test(_|$)")


def suggest(name: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """The names in ``choices`` closest to ``name`` (difflib), best first; ``[]`` when none is close."""
    choices = [str(c) for c in choices]
    close = difflib.get_close_matches(str(name), choices, n=n, cutoff=0.6)
    if not close:  # ``panderm_large`` → ``panderm_large_patch16_224``: a prefix is a match too
        close = [c for c in choices if c.startswith(str(name))][:n] if name else []
    return close


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """``"did you mean 'x' or 'y'? "`` for a hint, or ``""`` when nothing is close."""
    close = suggest(name, choices)
    return f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""


def is_test_arch(name: str) -> bool:
    """True for architectures meant for unit tests only (hidden by ``panderm models`` without ``--all``)."""
    return bool(_TEST_ARCH.search(split_model_name(name)[0]))


@dataclass(frozen=True)
class PretrainedCfg:
    """What a user needs to feed an encoder correctly, like timm's pretrained cfg.

    Also a read-only mapping in timm's pretrained-cfg vocabulary (``cfg["crop_pct"]``,
    ``cfg.get("interpolation")``), derived from the preprocessing preset, so that
    ``timm.data.resolve_data_config(model=model)`` gives PanDerm's preprocessing.

    Attributes:
        tag: Name of this weight set (``arch.tag``).
        input_size: (channels, height, width) the encoder accepts.
        preset: Preprocessing preset name (see :mod:`panderm.data.transforms`).
        mean: Normalisation mean.
        std: Normalisation std.
        num_features: Dimension of ``forward_features`` output.
        license: Licence of the weights.
        file_name: Name of the released checkpoint file, if any.
        hf_hub_id: Optional hub id for the opt-in ``hf-hub:`` loader.
        bundled: File name under ``panderm/bundled_weights/`` of weights shipped in the
            package; such a tag loads them when no ``--weights`` is given.
        notes: Free text shown by ``panderm models``.
    """

    tag: str
    input_size: tuple[int, int, int] = (3, 224, 224)
    preset: str = "panderm"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.228, 0.224, 0.225)
    num_features: int = 0
    license: str = "unknown"
    file_name: str | None = None
    hf_hub_id: str | None = None
    bundled: str | None = None
    notes: str = ""

    def timm_dict(self) -> dict[str, Any]:
        """This cfg as timm's pretrained-cfg dict: the preset's geometry and normalisation, no classes."""
        from dataclasses import fields

        from panderm.data.transforms import get_preset

        p = get_preset(self.preset)
        ours = {f.name: getattr(self, f.name) for f in fields(self)}
        # the preset decides, except where this cfg was given its own values (a pretrained_cfg_overlay)
        own = {f.name for f in fields(self) if getattr(self, f.name) != f.default}
        return {**ours, "input_size": tuple(self.input_size) if "input_size" in own else (3, p.crop, p.crop),
                "mean": tuple(self.mean if "mean" in own else p.mean),
                "std": tuple(self.std if "std" in own else p.std), "interpolation": p.interpolation,
                "crop_pct": p.crop / p.resize, "crop_mode": "center", "num_classes": 0,
                "fixed_input_size": True, "first_conv": "patch_embed.proj", "classifier": "head"}

    def __getitem__(self, key: str) -> Any:
        return self.timm_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.timm_dict())

    def __len__(self) -> int:
        return len(self.timm_dict())

    def __contains__(self, key: object) -> bool:
        return key in self.timm_dict()

    def get(self, key: str, default: Any = None) -> Any:
        return self.timm_dict().get(key, default)

    def keys(self):
        return self.timm_dict().keys()

    def values(self):
        return self.timm_dict().values()

    def items(self):
        return self.timm_dict().items()


@dataclass(frozen=True)
class EncoderEntry:
    """A registered encoder architecture."""

    name: str
    factory: Callable[..., Any]
    pretrained_cfgs: tuple[PretrainedCfg, ...]
    plugin: str
    summary: str = ""

    def cfg(self, tag: str | None = None) -> PretrainedCfg:
        """Return the pretrained cfg for ``tag`` (default: the first one)."""
        if tag is None:
            return self.pretrained_cfgs[0]
        for cfg in self.pretrained_cfgs:
            if cfg.tag == tag:
                return cfg
        tags = [c.tag for c in self.pretrained_cfgs]
        raise ConfigError(f"encoder '{self.name}' has no tag '{tag}'",
                          hint=f"{did_you_mean(tag, tags)}known tags: {', '.join(tags)}")


@dataclass(frozen=True)
class ProbeHeadSpec:
    """A probe head: an estimator fitted on frozen feature matrices (``panderm probe --head NAME``).

    ``factory(**options)`` returns an estimator with ``fit(X, y)`` and
    ``predict_proba(X)`` (scikit-learn style); ``options`` come from the CLI.
    """

    name: str
    summary: str
    factory: Callable[..., Any]
    kind: str = "classification"
    plugin: str = ""


@dataclass(frozen=True)
class ModalitySpec:
    """An image modality and how its images are prepared by default."""

    name: str
    summary: str
    preset: str = "panderm"
    extensions: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
    plugin: str = ""


@dataclass(frozen=True)
class FactoryEntry:
    """A named factory: a pretraining teacher (``factory(spec_rest)``) or a data source."""

    name: str
    factory: Callable[..., Any]
    summary: str = ""
    plugin: str = ""



@dataclass
class Registry(Generic[T]):
    """Name → entry map that remembers which plugin registered each name."""

    kind: str
    _items: dict[str, T] = field(default_factory=dict)
    _owners: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, item: T, plugin: str) -> None:
        """Add ``item``; a name registered twice is an error naming both plugins."""
        if not name or not isinstance(name, str):
            raise PluginError(f"plugin '{plugin}' registered a {self.kind} with an invalid name {name!r}")
        if name in self._items:
            raise PluginError(
                f"{self.kind} '{name}' is registered twice: by plugin '{self._owners[name]}' "
                f"and by plugin '{plugin}'",
                hint="uninstall or disable one of the two plugins (PANDERM_DISABLE_PLUGINS=name)",
            )
        self._items[name] = item
        self._owners[name] = plugin

    def get(self, name: str) -> T:
        """Return the entry called ``name`` or raise a ConfigError listing known names."""
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "(none)"
            raise ConfigError(f"unknown {self.kind} '{name}'",
                              hint=f"{did_you_mean(name, self._items)}known {self.kind}s: {known}") from None

    def owner(self, name: str) -> str:
        return self._owners[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def entries(self) -> list[T]:
        """The entries in registration order (plugins' order, then each plugin's own)."""
        return list(self._items.values())

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)


def split_model_name(name: str) -> tuple[str, str | None]:
    """Split ``arch.tag`` into ``(arch, tag)``; tag is ``None`` when absent."""
    arch, _, tag = name.partition(".")
    return arch, (tag or None)


def __getattr__(name: str):
    if name == "TaskSpec":  # renamed in 0.1: a "task" was a probe head; kept one release
        import warnings

        warnings.warn("panderm.registry.TaskSpec is now ProbeHeadSpec", DeprecationWarning, stacklevel=2)
        return ProbeHeadSpec
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
