"""Progress bars: one place decides when they show."""

from __future__ import annotations

from typing import Any


def progress_bar(iterable: Any = None, *, enabled: bool = True, **kwargs):
    """A tqdm bar on stderr; ``enabled=False`` (``--quiet``) hides it, and so does a stderr that is not a terminal.

    tqdm's ``disable=None`` is what hides it off a terminal: logs and pipes get no carriage-return noise.
    """
    from tqdm import tqdm

    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, disable=None if enabled else True, **kwargs)


def note(msg: str, enabled: bool = True) -> None:
    """One line ``panderm: msg`` on stderr (flushed) when ``enabled``; ``--quiet`` passes ``enabled=False``."""
    if enabled:
        import sys

        print(f"panderm: {msg}", file=sys.stderr, flush=True)
