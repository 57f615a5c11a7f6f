"""panderm: the PanDerm dermatology foundation-model toolkit.

Import is light on purpose: heavy modules (torch, models) load on first use.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version as _version

import pluggy

from panderm.errors import CheckpointError, ConfigError, InputError, PandermError, PluginError

try:
    __version__ = _version("panderm")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"

#: Marker for plugin hook implementations: ``@panderm.hookimpl``.
hookimpl = pluggy.HookimplMarker("panderm")

#: Names of the notebook API (:mod:`panderm.api`), loaded on first use (PEP 562) so that
#: ``import panderm`` stays free of torch.
_API = ("create_model", "create_model_and_transforms", "get_preprocess", "list_models", "extract_features",
        "linear_probe", "read_features", "Features")


def __getattr__(name: str):
    if name in _API:
        from panderm import api

        return getattr(api, name)
    raise AttributeError(f"module 'panderm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))


__all__ = [
    *_API,
    "__version__",
    "hookimpl",
    "PandermError",
    "InputError",
    "CheckpointError",
    "ConfigError",
    "PluginError",
]

# Our architectures become timm architectures once timm is imported (cheap: no torch or timm import here).
from panderm.models.timm_compat import register_with_timm as _register_with_timm  # noqa: E402

_register_with_timm()
