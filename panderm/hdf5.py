"""Read datasets from untrusted HDF5 files: only what the file itself holds, and only up to a size limit.

HDF5 can make one key read bytes from elsewhere: a soft or external link, a dataset whose raw
data lives in an external file (``external=``), a virtual dataset mapping other files. And a tiny
file can declare gigabytes (a chunked, compressed fill). :func:`read_dataset` refuses all of these
before any data is read, and turns every h5py/OS error into an :class:`~panderm.errors.InputError`
naming the file and key.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from panderm.errors import InputError

MiB = 1 << 20
GiB = 1 << 30
#: Limit for feature, coordinate and attention arrays (declared, uncompressed): 8 GiB is about
#: 2 million patches × 1024 float32 features; larger bags should be split.
MAX_ARRAY_BYTES = 8 * GiB
_H5_ERRORS = (KeyError, TypeError, RuntimeError, OSError, ValueError, AttributeError)


def open_file(path: str | os.PathLike, what: str = "HDF5 file"):
    """``h5py.File(path, "r")``; a missing, truncated or non-HDF5 file is an InputError naming it."""
    try:
        import h5py
    except ImportError:
        raise InputError(f"reading {path} needs h5py", hint="pip install h5py") from None
    try:
        return h5py.File(path, "r")
    except _H5_ERRORS as exc:
        raise InputError(f"cannot open {what} {path} as HDF5: {exc}",
                         hint="the file is missing, truncated or not HDF5") from None


def has_key(group, key: str) -> bool:
    """Whether ``group`` has a link named ``key`` (of any kind; nothing is followed)."""
    try:
        return group.get(key, getlink=True) is not None
    except _H5_ERRORS:
        return False


def open_dataset(group, key: str, *, max_bytes: int, what: str | None = None):
    """The ``h5py.Dataset`` at ``key``, after the checks of :func:`read_dataset` (no data read yet)."""
    where = _where(group, key, what)
    try:
        ds = _walk(group, key, where)
        _check_storage(ds, where)
        size = declared_bytes(ds, where, max_bytes)
    except InputError:
        raise
    except _H5_ERRORS as exc:
        raise InputError(f"cannot read {where}: {type(exc).__name__}: {exc}") from None
    if size > max_bytes:
        raise InputError(f"{where} declares {_human(size)}, more than the {_human(max_bytes)} limit; not read",
                         hint="a file that small on disk declaring that much is a decompression bomb, or the "
                              "dataset is not what this command expects")
    return ds


def read_dataset(group, key: str, *, max_bytes: int, what: str | None = None) -> Any:
    """``group[key][()]`` for a hard-linked, in-file dataset of at most ``max_bytes`` (uncompressed).

    Refused (InputError naming file and key): a missing key, a soft or external link (here or on
    the way), a group, external raw storage, a virtual dataset, a reference or nested
    variable-length type, and a declared size over ``max_bytes``, all before reading.
    """
    ds = open_dataset(group, key, max_bytes=max_bytes, what=what)
    try:
        return ds[()]
    except _H5_ERRORS as exc:
        raise InputError(f"cannot read {_where(group, key, what)}: {type(exc).__name__}: {exc}") from None


def declared_bytes(ds, where: str, max_bytes: int) -> int:
    """Bytes ``ds[()]`` would hold in memory, from the header (and, for variable length, the stored lengths)."""
    import h5py

    if ds.shape is None:
        raise InputError(f"{where} has a null dataspace (no data)")
    dt = ds.dtype
    if dt.kind != "O":
        if dt.hasobject:
            raise InputError(f"{where} has a compound type with variable-length or reference fields; not supported")
        return int(ds.size) * dt.itemsize
    string = h5py.check_string_dtype(dt)
    base = h5py.check_vlen_dtype(dt)
    if string is None and (base is None or not isinstance(base, np.dtype) or base.hasobject):
        raise InputError(f"{where} has type {dt} (references or nested variable-length data); not supported")
    itemsize = 1 if string is not None else base.itemsize
    return _vlen_count(ds, where, max_bytes) * itemsize


def _vlen_count(ds, where: str, max_bytes: int) -> int:
    """Sum of the stored sequence lengths of a contiguous variable-length dataset, read from its raw pointers."""
    n = int(ds.size)
    addr = ds.file.id.get_create_plist().get_sizes()[0]
    elem = 4 + addr + 4  # HDF5 disk format: uint32 length, global heap collection address, uint32 index
    if n * elem > max_bytes:
        raise InputError(f"{where} declares {n} variable-length items, more than the {_human(max_bytes)} limit")
    offset = ds.id.get_offset()  # absolute in the file (a user block is already counted)
    if offset is None:
        if ds.id.get_storage_size() == 0:
            return 0  # never written: reads as empty items
        raise InputError(f"{where} stores variable-length data chunked or compact; its size cannot be checked "
                         "before reading", hint="store images as fixed-length bytes or opaque (numpy.void) data")
    with open(ds.file.filename, "rb") as fh:
        fh.seek(offset)
        raw = fh.read(n * elem)
    if len(raw) != n * elem:
        raise InputError(f"{where}: the file ends inside the dataset (truncated)")
    lengths = np.frombuffer(raw, dtype=np.dtype([("n", "<u4"), ("heap", f"V{addr + 4}")]))["n"]
    return int(lengths.sum(dtype=np.uint64))


def _walk(group, key: str, where: str):
    """Follow ``key`` one hard link at a time; soft/external links, missing parts and groups are InputErrors."""
    import h5py

    parts = [p for p in key.split("/") if p]
    if not parts:
        raise InputError(f"{where}: empty key")
    node = group
    for i, part in enumerate(parts):
        if not isinstance(node, h5py.Group):
            raise InputError(f"{where}: '{'/'.join(parts[:i])}' is not a group")
        link = node.get(part, getlink=True)
        if link is None:
            raise InputError(f"{where} does not exist")
        if not isinstance(link, h5py.HardLink):
            kind = "an external link to another file" if isinstance(link, h5py.ExternalLink) else "a soft link"
            raise InputError(f"{where} is {kind}; refused (links can point outside the file)",
                             hint="store the data in the file itself")
        node = node[part]
    if not isinstance(node, h5py.Dataset):
        raise InputError(f"{where} is a {type(node).__name__.lower()}, not a dataset")
    return node


def _check_storage(ds, where: str) -> None:
    """Refuse raw data stored outside the file: external storage and virtual datasets."""
    if ds.external:
        files = ", ".join(str(e[0]) for e in ds.external[:3])
        raise InputError(f"{where} keeps its data in external file(s) ({files}); refused",
                         hint="store the data in the file itself")
    if ds.is_virtual:
        raise InputError(f"{where} is a virtual dataset mapping other files; refused",
                         hint="store the data in the file itself")


def _where(group, key: str, what: str | None) -> str:
    try:
        name = group.file.filename
    except _H5_ERRORS:
        name = "HDF5 file"
    return f"'{key}' in {what or name}"


def _human(n: int) -> str:
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"
