"""Where panderm keeps its state: ``PANDERM_HOME`` (default ``~/.panderm``)."""

from __future__ import annotations

import os
from pathlib import Path


def panderm_home() -> Path:
    """The config directory; created on first write, never on read."""
    return Path(os.environ.get("PANDERM_HOME") or Path.home() / ".panderm").expanduser()


def debug_enabled() -> bool:
    """``PANDERM_DEBUG=1`` shows tracebacks instead of clean messages."""
    return os.environ.get("PANDERM_DEBUG", "") not in ("", "0")
