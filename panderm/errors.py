"""One error hierarchy: every expected failure is a ``PandermError`` with a hint.

The CLI turns these into a one-paragraph message; anything else is a bug and
shows a traceback only with ``PANDERM_DEBUG=1``.
"""

from __future__ import annotations


def examples(items, n: int = 5) -> str:
    """The first ``n`` of ``items`` for a message: ``"a, b, c, … (12 more)"``."""
    items = list(items)
    more = f", … ({len(items) - n} more)" if len(items) > n else ""
    return ", ".join(map(str, items[:n])) + more


class PandermError(Exception):
    """An expected failure the user can act on.

    Args:
        message: What went wrong, naming the file or object involved.
        hint: What the user can do about it (optional).
    """

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\nHint: {self.hint}"


class InputError(PandermError):
    """Bad user input: a missing path, a malformed CSV, an unreadable image."""


class CheckpointError(PandermError):
    """A checkpoint that cannot be loaded exactly and safely."""


class ConfigError(PandermError):
    """Bad configuration: unknown model name, unknown weights, bad option value."""


class PluginError(PandermError):
    """A plugin registered something invalid or conflicting."""
