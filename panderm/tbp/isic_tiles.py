"""ISIC 2024 HDF5 tiles: safe tile names, unpacking into a folder, and the source-checked tile cache."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from panderm.errors import InputError
from panderm.hdf5 import MiB
from panderm.paths import check_safe_name, inside_out

#: Largest ISIC 2024 tile read from an HDF5 file (its declared, uncompressed size); real tiles are < 1 MiB.
MAX_TILE_BYTES = 32 * MiB
#: In an HDF5 tile cache: which file the tiles came from (see :func:`unpack_cached`).
CACHE_RECORD = ".source.json"


def safe_name_problem(name: str, what: str) -> str | None:
    """Why ``name`` may not become a file name (see :data:`panderm.paths.SAFE_NAME`), or None when it may."""
    try:
        check_safe_name(name, what=what)
    except InputError as exc:
        return exc.message
    return None


def unpack_hdf5(h5_path: Path, ids, dest: Path, problems: dict[str, str] | None = None,
                reuse: set[str] | None = None) -> dict[str, str]:
    """Write the JPEG bytes of each ``isic_id`` in ``h5_path`` to ``dest/<id>.jpg``; returns id → path.

    Only ids that are safe file names (:data:`panderm.paths.SAFE_NAME`) are unpacked, and only inside ``dest``.
    Each id is read with :func:`panderm.hdf5.read_dataset` (hard-linked, in-file, at most
    :data:`MAX_TILE_BYTES`); one it refuses goes to ``problems`` (id → reason) and the rest go on.
    Ids the file lacks are left out of both. An existing tile is kept for ids in ``reuse`` (None:
    any existing tile); others are rewritten, or removed when the file lacks or refuses the id.
    """
    from panderm.hdf5 import open_file

    dest = Path(os.path.abspath(Path(dest).expanduser()))
    dest.mkdir(parents=True, exist_ok=True)
    problems = {} if problems is None else problems
    out = {}
    with open_file(h5_path, "ISIC 2024 image file") as f:
        for i in ids:
            if safe_name_problem(i, "isic_id") is not None:
                continue
            target = inside_out(dest, f"{i}.jpg")
            if not (target.is_file() and (reuse is None or i in reuse)):
                why = _write_tile(f, i, target, h5_path)
                if why is not None:
                    if why:
                        problems[i] = why
                    continue
            out[i] = str(target)
    return out


def _write_tile(f, key: str, target: Path, h5_path: Path) -> str | None:
    """Check and read one tile, write it atomically to ``target``: None, or why not ("" = no such key)."""
    from panderm.hdf5 import has_key, read_dataset

    if not has_key(f, key):
        target.unlink(missing_ok=True)  # never leave an earlier file's tile under this id
        return ""
    try:
        data = read_dataset(f, key, max_bytes=MAX_TILE_BYTES, what=str(h5_path))
        raw = _tile_bytes(data, key, h5_path)
    except InputError as exc:
        target.unlink(missing_ok=True)  # never leave an earlier file's tile under this id
        return exc.message
    tmp = target.with_suffix(".part")
    tmp.write_bytes(raw)
    tmp.replace(target)
    return None


def _tile_bytes(data, key: str, h5_path: Path) -> bytes:
    """The bytes of a tile value (bytes, opaque or integer data); anything else is an InputError."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, (np.ndarray, np.generic)) and data.dtype.kind in "uiSV":
        return np.ascontiguousarray(data).tobytes()
    raise InputError(f"'{key}' in {h5_path} is not image bytes (type {type(data).__name__})",
                     hint="each isic_id should hold the JPEG file's bytes")


def _source_id(h5_path: Path) -> str:
    """Identity of an HDF5 file: its absolute path, size, mtime and ctime (any rewrite changes it)."""
    src = Path(os.path.abspath(Path(h5_path).expanduser()))
    try:
        st = src.stat()
    except OSError as exc:
        raise InputError(f"cannot read {src}: {exc}") from None
    return f"{src}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}"


def _cached_ids(record: Path, source: str) -> set[str]:
    """Ids whose tiles in the cache were unpacked from ``source`` (empty when the record names another file)."""
    import json

    try:
        meta = json.loads(record.read_text(encoding="utf-8"))
        return set(meta["ids"]) if meta.get("source") == source else set()
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return set()


def _write_record(record: Path, source: str, ids) -> None:
    import json

    tmp = record.with_suffix(".part")
    tmp.write_text(json.dumps({"source": source, "ids": sorted(ids)}), encoding="utf-8")
    tmp.replace(record)


def unpack_cached(h5_path: Path, ids, cache: Path, problems: dict[str, str] | None = None) -> dict[str, str]:
    """:func:`unpack_hdf5` into ``cache``, reusing only tiles unpacked earlier from this same file.

    ``cache/`` :data:`CACHE_RECORD` names the source file (:func:`_source_id`) and the ids unpacked
    from it; it is reset before any tile is rewritten, so another HDF5 file (or this one rewritten)
    with the same ``isic_id`` never gets the earlier file's tile, even after an interrupted run.
    """
    cache = Path(os.path.abspath(Path(cache).expanduser()))
    cache.mkdir(parents=True, exist_ok=True)
    record, source = cache / CACHE_RECORD, _source_id(h5_path)
    done = _cached_ids(record, source)
    _write_record(record, source, done)
    paths = unpack_hdf5(h5_path, ids, cache, problems, reuse=done)
    _write_record(record, source, done | set(paths))
    return paths
