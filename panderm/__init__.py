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

__all__ = [
    "__version__",
    "hookimpl",
    "PandermError",
    "InputError",
    "CheckpointError",
    "ConfigError",
    "PluginError",
]
