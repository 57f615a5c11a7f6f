"""The offline weights registry: name → local path and sha256, in ``PANDERM_HOME/weights.json``.

``--weights`` accepts a registered name, a path, or (opt-in, via the ``hfhub``
plugin) ``hf-hub:org/repo``. Nothing here touches the network.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from panderm.config import panderm_home
from panderm.errors import ConfigError, InputError
from panderm.io import atomic_write_json, sha256_file
from panderm.registry import did_you_mean

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


@dataclass(frozen=True)
class WeightsRecord:
    """One registered weights file."""

    name: str
    path: str
    sha256: str
    size: int
    added: str
    mtime_ns: int | None = None
    inode: int | None = None
    ctime_ns: int | None = None

    @property
    def exists(self) -> bool:
        return Path(self.path).is_file()


def _record(entry: dict) -> WeightsRecord:
    known = {f for f in WeightsRecord.__dataclass_fields__}
    return WeightsRecord(**{k: v for k, v in entry.items() if k in known})


def registry_file() -> Path:
    return panderm_home() / "weights.json"


def _read() -> dict[str, dict]:
    path = registry_file()
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read the weights registry {path}: {exc}",
                          hint="fix or delete the file; it only maps names to paths") from None
    return data.get("weights", {}) if isinstance(data, dict) else {}


def _write(entries: dict[str, dict]) -> None:
    atomic_write_json(registry_file(), {"version": 1, "weights": entries})


def add_weights(name: str, path: str | Path, *, overwrite: bool = False) -> WeightsRecord:
    """Register ``path`` under ``name`` after hashing it.

    Raises:
        InputError: the file does not exist.
        ConfigError: bad name, or name taken and ``overwrite`` is False.
    """
    if not _NAME.match(name) or name.startswith("hf-hub"):
        raise ConfigError(f"invalid weights name '{name}'", hint="use letters, digits, '.', '_' and '-'")
    file = Path(path).expanduser()
    if not file.is_file():
        raise InputError(f"weights file not found: {file}")
    entries = _read()
    if name in entries and not overwrite:
        raise ConfigError(f"weights name '{name}' is already registered ({entries[name]['path']})",
                          hint="remove it first with `panderm weights remove` or pass --overwrite")
    st = file.stat()
    record = WeightsRecord(name, str(file.resolve()), sha256_file(file), st.st_size,
                           datetime.now(timezone.utc).isoformat(timespec="seconds"), st.st_mtime_ns, st.st_ino,
                           st.st_ctime_ns)
    entries[name] = asdict(record)
    _write(entries)
    return record


def list_weights() -> list[WeightsRecord]:
    """All registered weights, sorted by name."""
    return [_record(v) for _, v in sorted(_read().items())]


def get_weights(name: str) -> WeightsRecord | None:
    """The record for ``name``, or None."""
    entry = _read().get(name)
    return _record(entry) if entry else None


def remove_weights(name: str) -> WeightsRecord:
    """Forget ``name`` (the file itself is left alone)."""
    entries = _read()
    if name not in entries:
        raise ConfigError(f"no weights registered as '{name}'",
                          hint=f"{did_you_mean(name, entries)}see `panderm weights list`")
    record = _record(entries.pop(name))
    _write(entries)
    return record


def resolve_weights_path(spec: str | Path) -> Path:
    """Turn a ``--weights`` value into an existing local file, asking plugins first.

    Raises:
        InputError: nothing resolves the spec to an existing file.
    """
    from panderm.plugins import resolve_weights

    spec = str(spec)
    path = resolve_weights(spec)
    if path is None:
        names = [r.name for r in list_weights()]
        raise InputError(f"weights '{spec}' is neither a registered name nor an existing file",
                         hint=f"{did_you_mean(spec, names)}registered names: {', '.join(names) or 'none registered'}; "
                              "add one with `panderm weights add NAME PATH`")
    if not path.is_file():
        raise InputError(f"weights file for '{spec}' does not exist: {path}",
                         hint="the registry entry points at a moved or deleted file; re-add it")
    return path


def _identity(st) -> tuple[int, int, int, int]:
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


def weights_sha256(path: Path, *, fresh: bool = False) -> str:
    """sha256 of a weights file.

    The registry's hash is reused only while the file's size, ``mtime_ns``, ``ctime_ns``
    and inode are all the ones recorded when it was hashed; any change (a copy over it,
    a move, a touch, an in-place rewrite with the old mtime restored) re-hashes the file
    and refreshes the record. ``fresh=True`` always re-hashes (used where a hash guards
    against a foreign encoder).
    """
    resolved = str(Path(path).resolve())
    st = Path(resolved).stat()
    entries = _read()
    matches = [n for n, e in entries.items() if e.get("path") == resolved]
    for name in matches:
        e = entries[name]
        if not fresh and (e.get("size"), e.get("mtime_ns"), e.get("ctime_ns"), e.get("inode")) == _identity(st):
            return e["sha256"]
    digest = sha256_file(resolved)
    if matches:
        for name in matches:
            entries[name].update(sha256=digest, size=st.st_size, mtime_ns=st.st_mtime_ns, ctime_ns=st.st_ctime_ns,
                                 inode=st.st_ino)
        try:
            _write(entries)
        except OSError:  # a read-only PANDERM_HOME: the fresh hash is still right, only not cached
            pass
    return digest
