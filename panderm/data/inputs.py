"""Find the images to process: a folder (recursive) or a CSV with an ``image`` column.

Order is deterministic: folders are sorted by relative POSIX path; CSVs keep
their row order (so ``index.csv`` lines up with the user's table), minus
rows naming a file an earlier row named. Missing CSV files are *not* an error here: they stay in the
list and are skipped at load time with reason "file not found".
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Iterable

from panderm.errors import InputError
from panderm.paths import normalise_path, resolve_under_root

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class InputList(list):
    """``list[tuple[str, Path]]`` of (relative name, absolute path) plus notes for the user.

    Attributes:
        source: The folder or CSV the list came from.
        kind: ``"folder"`` or ``"csv"``.
        notes: Non-fatal remarks (e.g. duplicate CSV rows dropped).
    """

    def __init__(self, items: Iterable[tuple[str, Path]] = (), source: Path | None = None,
                 kind: str = "folder", notes: list[str] | None = None):
        super().__init__(items)
        self.source = source
        self.kind = kind
        self.notes = notes or []


def collect_inputs(input: str | os.PathLike, root: str | os.PathLike | None = None,
                   extensions: Iterable[str] = IMAGE_EXTENSIONS) -> InputList:
    """List the images named by ``input``.

    Args:
        input: A folder (searched recursively; hidden files and folders are
            ignored; extensions matched case-insensitively) or a ``.csv`` file
            with an ``image`` column.
        root: Folder the CSV ``image`` paths are relative to (default: the CSV's folder).
            Ignored for folder input.
        extensions: Image file extensions for folder input.

    CSV paths follow :func:`panderm.paths.resolve_under_root`: backslashes and ``./``
    are normalised; with ``root`` a value that is absolute or climbs out of it with
    ``..`` is refused; without one, relative values are relative to the CSV's folder
    and absolute values are allowed. Rows naming the same file are listed once.

    Returns:
        An :class:`InputList` of ``(name, absolute_path)``; ``name`` is the path
        relative to the folder, or the CSV's ``image`` value normalised.

    Raises:
        InputError: missing path, no images, unreadable/empty CSV, no ``image`` column,
            a CSV path that leaves ``root`` (naming the row).
    """
    path = Path(input).expanduser()
    if not path.exists():
        raise InputError(f"input not found: {path}", hint="pass an image folder or a CSV with an 'image' column")
    path = Path(os.path.abspath(path))  # absolute, but symlinked data folders keep their name
    if path.is_dir():
        return _from_folder(path, extensions)
    if path.suffix.lower() == ".csv":
        return _from_csv(path, root)
    raise InputError(f"input {path} is neither a folder nor a .csv file",
                     hint="pass an image folder or a CSV with an 'image' column (and --root)")


def _from_folder(folder: Path, extensions: Iterable[str]) -> InputList:
    exts = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]  # prune hidden folders (.git, .shards, ...)
        rel_dir = Path(dirpath).relative_to(folder)
        for name in filenames:
            if name.startswith(".") or os.path.splitext(name)[1].lower() not in exts:
                continue
            found.append((rel_dir / name).as_posix())
    if not found:
        raise InputError(f"no images found in folder {folder}",
                         hint=f"looked recursively for {', '.join(sorted(exts))} (hidden files ignored)")
    found.sort()
    return InputList(((rel, folder / rel) for rel in found), source=folder, kind="folder")


def _from_csv(csv_path: Path, root: str | os.PathLike | None) -> InputList:
    if root is not None and not Path(root).expanduser().is_dir():
        raise InputError(f"--root folder not found: {Path(root).expanduser()}",
                         hint="--root is the folder the CSV's 'image' paths are relative to")
    rows = _read_image_column(csv_path)
    notes: list[str] = []
    blank = sum(1 for _, v in rows if not v)
    if blank:
        notes.append(f"{blank} CSV row(s) with an empty 'image' value ignored")
    first_row: dict[Path, int] = {}
    items: list[tuple[str, Path]] = []
    repeats: list[str] = []
    for line, value in rows:
        if not value:
            continue
        path = resolve_under_root(value, root, base=csv_path.parent, where=f"{csv_path} row {line}")
        if path in first_row:  # same file, however spelt (a.jpg, ./a.jpg, sub/../a.jpg)
            repeats.append(f"row {line} ({value})")
            continue
        first_row[path] = len(items)
        items.append((normalise_path(value), path))
    if repeats:
        shown = ", ".join(repeats[:5]) + (f", … ({len(repeats) - 5} more)" if len(repeats) > 5 else "")
        notes.append(f"warning: {len(repeats)} duplicate 'image' row(s) in {csv_path} name a file an earlier row "
                     f"already names; each file is extracted once: {shown}")
    if not items:
        raise InputError(f"CSV {csv_path} lists no images (all 'image' values are empty)")
    return InputList(items, source=csv_path, kind="csv", notes=notes)


def _read_image_column(csv_path: Path) -> list[tuple[int, str]]:
    """``(line number, stripped 'image' value)`` of every data row (the header is line 1)."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames
            if not columns:
                raise InputError(f"CSV {csv_path} is empty (no header row)",
                                 hint="the CSV needs a header with an 'image' column")
            if "image" not in columns:
                shown = ", ".join(repr(c) for c in columns[:20])
                raise InputError(f"CSV {csv_path} has no 'image' column (columns: {shown})",
                                 hint="rename the column holding image paths to 'image'")
            rows = [(reader.line_num, (row.get("image") or "").strip()) for row in reader]
    except UnicodeDecodeError as exc:
        raise InputError(f"CSV {csv_path} is not valid UTF-8 text ({exc.reason})") from None
    except csv.Error as exc:
        raise InputError(f"cannot parse CSV {csv_path}: {exc}") from None
    if not rows:
        raise InputError(f"CSV {csv_path} has a header but no rows")
    return rows
