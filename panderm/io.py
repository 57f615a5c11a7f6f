"""Small I/O helpers: atomic writes and file hashing."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: mkstemp creates 0600 files; outputs should get the usual permissions instead.
_FILE_MODE = 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it into place only on success.

    Readers never see a half-written file, and an interrupted job leaves the
    previous version (or nothing) rather than a truncated output.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, _FILE_MODE)
    try:
        yield tmp_path
        _fsync_file(tmp_path)  # the data is on disk before the name points at it
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)  # and the rename itself survives a power cut
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open a folder; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_csv_rows(path: str | os.PathLike, what: str = "CSV") -> list[tuple[int, dict[str, str]]]:
    """``(line number, row)`` for every data row of a UTF-8 CSV (a BOM is fine), for errors that name the row.

    Raises:
        InputError: the file is not UTF-8 text or not parseable CSV.
    """
    import csv

    from panderm.errors import InputError

    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            return [(reader.line_num, row) for row in reader]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read {what} {path}: {exc}", hint="save it as UTF-8 CSV text") from None


def make_out_dir(out: str | os.PathLike) -> Path:
    """Create the output folder ``out`` (and its parents); an InputError when it is a file or cannot be made."""
    from panderm.errors import InputError

    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise InputError(f"output path {out} exists and is not a folder", hint="choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the output folder {out}: {exc.strerror or exc}",
                         hint="choose a folder you can write to") from None
    return out


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def file_stamp(path: str | os.PathLike) -> str:
    """``"size:mtime_ns:ctime_ns"`` of a file (``"missing"`` if it cannot be stat'ed), to notice replaced inputs.

    The change time is part of it because nobody can set it back: a file rewritten in
    place with its old size and ``touch -r``-restored mtime still gets a new stamp.
    """
    try:
        st = os.stat(path)
    except (OSError, ValueError):  # ValueError: a NUL byte in a name taken from data
        return "missing"
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def jsonable(obj: Any) -> Any:
    """JSON-safe copy: NaN and infinities → null, numpy arrays and scalars → Python, paths → str.

    The one sanitiser for everything we write or print as JSON (files, ``--json``, the web API).
    """
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    return str(obj)


def read_csv_frame(path: str | os.PathLike):
    """A CSV as a pandas DataFrame (empty when the file is empty), or an InputError naming the file."""
    import pandas as pd

    from panderm.errors import InputError

    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except Exception as exc:
        raise InputError(f"cannot read {path} as CSV: {exc}") from None


def write_skipped_csv(path_or_folder: str | os.PathLike, rows, columns=("path", "reason"), *,
                      write_empty: bool = True) -> Path | None:
    """Write ``skipped.csv``: one row per item left out of a run, with the reason, atomically.

    Args:
        path_or_folder: The CSV file (a name ending in ``.csv``) or the output folder
            (then ``<folder>/skipped.csv``; the folder is created).
        rows: Tuples in ``columns`` order, or dicts keyed by column (missing keys → empty cells,
            other keys ignored).
        columns: Header of the file (``path, reason`` for images; TBP lesions add their ids).
        write_empty: Write a header-only file when ``rows`` is empty; ``False``: write nothing.

    Returns:
        The file written, or ``None`` when nothing was written.
    """
    import pandas as pd

    path = Path(path_or_folder)
    if path.suffix.lower() != ".csv":
        path = path / "skipped.csv"
    rows = list(rows)
    if not rows and not write_empty:
        return None
    with atomic_path(path) as tmp:
        pd.DataFrame(rows, columns=list(columns)).to_csv(tmp, index=False)
    return path
