"""Register the PanDerm encoders with timm (``timm.create_model("panderm_large_patch16_224")``).

``register_with_timm()`` is cheap: when timm is not imported yet it only installs a
one-shot import hook, and the architectures are registered right after ``import timm``
finishes. Weights load with panderm's strict, pickle-free loader from
``pretrained_cfg_overlay={"file": PATH}`` (released layout, our safetensors export or
a timm-layout export), or from the tag's bundled file (``panderm_tiny_patch16_224.demo``).
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import warnings

_registered = False


def _arch_table() -> dict:
    from panderm.models.archs import ARCHS

    return ARCHS


def create_timm_model(arch: str, pretrained: bool = False, pretrained_cfg=None, pretrained_cfg_overlay=None,
                      cache_dir=None, **kwargs):
    """timm entrypoint body: a :class:`TimmPanDermViT` for ``arch``, loaded strictly when ``pretrained``.

    Raises:
        ConfigError: ``pretrained`` without a weights file for this tag.
    """
    from panderm.errors import ConfigError
    from panderm.models.checkpoint import load_encoder_state
    from panderm.models.factory import bundled_weights_path, get_encoder_entry
    from panderm.models.vit import TimmPanDermViT

    tag = pretrained_cfg if isinstance(pretrained_cfg, str) else None
    entry, cfg = get_encoder_entry(f"{arch}.{tag}" if tag else arch)
    kwargs.pop("pretrained_model_args", None)
    model = TimmPanDermViT(**{**_arch_table()[arch][0], **kwargs})
    if pretrained:
        path = (pretrained_cfg_overlay or {}).get("file")
        if not path and not cfg.bundled:
            raise ConfigError(f"timm model {arch}.{cfg.tag} has no bundled weights",
                              hint='pass pretrained_cfg_overlay={"file": "/path/to/weights"} '
                                   "(released .pth or a panderm export)")
        report = load_encoder_state(model, path or bundled_weights_path(cfg))
        model.weights_summary = report.summary()
    model.pretrained_cfg = model.default_cfg = cfg
    model.model_name = f"{entry.name}.{cfg.tag}"
    return model.eval()


def _entrypoint(arch: str):
    def entry(pretrained: bool = False, **kwargs):
        return create_timm_model(arch, pretrained, **kwargs)

    entry.__name__ = entry.__qualname__ = arch
    entry.__module__ = __name__
    entry.__doc__ = f"PanDerm encoder {arch} (registered by panderm)."
    return entry


def _register_now() -> None:
    global _registered
    if _registered:
        return
    from timm.models import is_model, register_model

    for arch in _arch_table():
        if not is_model(arch):
            register_model(_entrypoint(arch))
    _registered = True


class _AfterTimmImport(importlib.abc.MetaPathFinder):
    """Wraps timm's loader once so that the architectures are registered when ``import timm`` ends."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "timm":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("timm")
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            _safe_register()

        spec.loader.exec_module = exec_module
        return spec


def _safe_register() -> None:
    try:
        _register_now()
    except Exception as exc:  # noqa: BLE001 - never break ``import timm`` for a third party
        warnings.warn(f"panderm could not register its encoders with timm: {exc}", stacklevel=2)


def register_with_timm() -> None:
    """Make ``timm.create_model("panderm_*")`` work: now if timm is imported, else right after ``import timm``."""
    if "timm" in sys.modules:
        _safe_register()
    elif not any(isinstance(f, _AfterTimmImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterTimmImport())
