"""Paths taken from user data: normalise them, keep them under ``--root``, keep outputs under ``--out``.

Every name that comes from a file we read (a CSV cell, an HDF5 key, an ISIC id, an
upload's name) is untrusted. Input paths in a table are relative to a root and may
not leave it lexically; names that become output files must match a safe pattern
and land inside the output folder. Symlinked data folders stay allowed: the check
is on the *written* path, not on where the root's links point.
"""

from __future__ import annotations

import os
import posixpath
import re
from pathlib import Path, PureWindowsPath

from panderm.errors import InputError

#: Names that may become a file or folder name: letters, digits, ``._-`` (no leading dot), ≤ 128 chars.
SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")  # used with fullmatch: no trailing newline


def normalise_path(path: str) -> str:
    """Canonical relative path: forward slashes, no ``./`` or duplicate separators."""
    p = posixpath.normpath(str(path).strip().replace("\\", "/"))
    return "" if p == "." else p.removeprefix("./")


def is_absolute_path(value: str) -> bool:
    """True for POSIX absolute paths and Windows drive or UNC paths (``C:\\x``, ``\\\\host\\share``)."""
    v = str(value).strip()
    return v.startswith(("/", "\\")) or bool(PureWindowsPath(v).drive)


def resolve_under_root(value: str, root: str | os.PathLike | None, *, base: str | os.PathLike | None = None,
                       where: str = "") -> Path:
    """The absolute path a table cell names, refusing one that leaves ``root``.

    ``value`` is normalised first (backslashes, ``./``). With a ``root`` (the user's
    ``--root``), an absolute value or one whose ``..`` climbs out of the root is refused.
    Without one, absolute values are allowed and relative ones resolve against ``base``
    (e.g. the CSV's folder; default: the working directory).

    Args:
        value: The cell, e.g. ``"./imgs\\a.jpg"``.
        root: The folder the table's paths must stay in (``--root``), or None.
        base: Where relative values resolve when there is no ``root``.
        where: How to name the row in errors (``"data.csv row 12"``).

    Raises:
        InputError: an empty value, or a path that leaves ``root``.
    """
    raw = str(value).strip()
    if not raw:
        raise InputError(f"{where or 'a row'}: empty path")
    if any(ord(c) < 32 for c in raw):  # a NUL or a control character names no file we should open
        raise InputError(f"{where or 'a row'}: path {raw!r} contains a control character")
    rel = normalise_path(raw)
    if root is None:
        if is_absolute_path(raw):
            return Path(os.path.abspath(raw))
        return Path(os.path.abspath(Path(base or ".").expanduser() / rel))
    if is_absolute_path(raw) or rel == ".." or rel.startswith("../"):
        raise InputError(f"{where or 'a row'}: path {raw!r} leaves --root {root}",
                         hint="paths in the table must be relative to --root and stay inside it; "
                              "drop --root to use absolute paths")
    return Path(os.path.abspath(Path(root).expanduser())) / rel


def check_safe_name(name: str, *, what: str = "name", source: str = "") -> str:
    """``name`` if it may become a file name (see :data:`SAFE_NAME`); else an InputError naming it."""
    name = str(name)
    if not SAFE_NAME.fullmatch(name) or name in (".", ".."):
        origin = f" in {source}" if source else ""
        raise InputError(f"unsafe {what} {name!r}{origin}: it would become a file name",
                         hint="names may hold letters, digits, '.', '_' and '-' (at most 128, no leading dot)")
    return name


def relative_key(path: str | os.PathLike, folder: str | os.PathLike | None) -> str:
    """``path`` relative to ``folder`` (forward slashes) when inside it, else the absolute path."""
    p = Path(os.path.abspath(path))
    if folder is not None:
        base = Path(os.path.abspath(folder))
        if p == base or base in p.parents:
            return p.relative_to(base).as_posix()
    return p.as_posix()


def safe_stem(name: str, fallback: str = "item") -> str:
    """A file-name stem for a display name (a patient id, say): runs of other characters become ``_``.

    For names that are shown, not trusted as paths: ``"Patient 1"`` → ``Patient_1``,
    ``"../../x"`` → ``x``. The result always matches :data:`SAFE_NAME`.
    """
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._-")[:100]
    return stem if stem and SAFE_NAME.fullmatch(stem) else fallback


def inside_out(out: str | os.PathLike, *parts: str) -> Path:
    """``out/parts...``, checked to stay inside ``out`` after normalisation.

    Raises:
        InputError: the joined path would leave ``out``.
    """
    base = Path(os.path.abspath(Path(out).expanduser()))
    target = Path(os.path.abspath(base.joinpath(*parts)))
    if target != base and base not in target.parents:
        raise InputError(f"refusing to write {target}: it is outside the output folder {base}")
    return target
