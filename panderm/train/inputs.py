"""Training-input records for the training commands (see :mod:`panderm.provenance`).

Each command describes its table as ``(key, values, files)`` records: a stable row
key, the values that change the numbers (label, split, mask, ...), and the files the
row reads by role (``{"image": path, "mask": path}``). The first file is stamped on
the row itself; any further file gets its own entry ``"<key> (<role>)"``, so a
changed label reads "1 row(s) changed" and a replaced mask "1 file(s) changed".
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from panderm.provenance import describe_inputs

Record = tuple[str, Sequence[Any], Mapping[str, "str | os.PathLike | None"]]


def _rows(records: Iterable[Record]):
    for key, values, files in records:
        roles = list(files.items())
        first = roles[0][1] if roles else None
        yield str(key), list(values), first
        for role, path in roles[1:]:
            yield f"{key} ({role})", [], path


def describe_records(records: Iterable[Record], *, source: str | os.PathLike,
                     weights_sha256: str | None) -> dict:
    """The :mod:`panderm.provenance` record of a training table given as ``(key, values, files)``."""
    return describe_inputs(_rows(records), source=str(source), weights_sha256=weights_sha256)


def encoder_weights_sha256(encoder) -> str | None:
    """sha256 of the weights an encoder from ``create_encoder`` started from (None: random init)."""
    info = getattr(encoder, "weights_info", None)
    return getattr(info, "sha256", None)


def weights_file_sha256(path: str | os.PathLike | None) -> str | None:
    """sha256 of a weights file (registry-cached while unchanged on disk); None for no file."""
    if path is None:
        return None
    from panderm.weights import weights_sha256

    return weights_sha256(Path(path))


def relative_key(path: str | os.PathLike, folder: str | os.PathLike | None) -> str:
    """``path`` relative to ``folder`` (forward slashes) when inside it, else the absolute path."""
    p = Path(os.path.abspath(path))
    if folder is not None:
        base = Path(os.path.abspath(folder))
        if p == base or base in p.parents:
            return p.relative_to(base).as_posix()
    return p.as_posix()
