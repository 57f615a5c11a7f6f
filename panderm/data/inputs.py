"""Find the images to process: a folder (recursive) or a CSV with an ``image`` column.

Order is deterministic: folders are sorted by relative POSIX path; CSVs keep
their row order (so ``index.csv`` lines up with the user's table), minus
duplicate rows. Missing CSV files are *not* an error here: they stay in the
list and are skipped at load time with reason "file not found".
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Iterable

from panderm.errors import InputError

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

    Returns:
        An :class:`InputList` of ``(name, absolute_path)``; ``name`` is the path
        relative to the folder, or the CSV's ``image`` value.

    Raises:
        InputError: missing path, no images, unreadable/empty CSV, no ``image`` column.
    """
    path = Path(input).expanduser()
    if not path.exists():
        raise InputError(f"input not found: {path}", hint="pass an image folder or a CSV with an 'image' column")
    if path.is_dir():
        return _from_folder(path.resolve(), extensions)
    if path.suffix.lower() == ".csv":
        return _from_csv(path.resolve(), root)
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
    base = Path(root).expanduser().resolve() if root is not None else csv_path.parent
    if root is not None and not base.is_dir():
        raise InputError(f"--root folder not found: {base}")
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
            values = [(row.get("image") or "").strip() for row in reader]
    except UnicodeDecodeError as exc:
        raise InputError(f"CSV {csv_path} is not valid UTF-8 text ({exc.reason})") from None
    except csv.Error as exc:
        raise InputError(f"cannot parse CSV {csv_path}: {exc}") from None
    if not values:
        raise InputError(f"CSV {csv_path} has a header but no rows")

    notes: list[str] = []
    blank = sum(1 for v in values if not v)
    if blank:
        notes.append(f"{blank} CSV row(s) with an empty 'image' value ignored")
    seen: set[str] = set()
    items: list[tuple[str, Path]] = []
    dups = 0
    for value in values:
        if not value:
            continue
        if value in seen:
            dups += 1
            continue
        seen.add(value)
        items.append((value, base / value))  # an absolute value stays absolute
    if dups:
        notes.append(f"{dups} duplicate 'image' row(s) dropped (first occurrence kept)")
    if not items:
        raise InputError(f"CSV {csv_path} lists no images (all 'image' values are empty)")
    return InputList(items, source=csv_path, kind="csv", notes=notes)
