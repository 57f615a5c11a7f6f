"""Bundle manifests: the sha256 of every member file, and a JSON schema for the bundle's own JSON.

A bundle folder (TBP screening bundle, classifier) names its member files in its JSON
with their sha256 (``"files": {"head.safetensors": "ab12…"}``). Loading checks the JSON
against a schema first (a missing or mistyped key is an error that names it) and then
every member's hash (a changed, missing or extra member file is an error that names it).
A bundle is sealed: a visible file in the folder that the record does not list is refused
too, unless the caller names it as a side file it never reads (e.g. ``metrics.json``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from panderm.errors import CheckpointError
from panderm.io import sha256_file

FILES_KEY = "files"


#: Bundle JSON larger than this is refused before parsing (a real one is a few hundred KB).
MAX_JSON_BYTES = 64 << 20


def _no_constants(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):  # e.g. 1e400: valid JSON, but Python reads it as infinity
        raise ValueError(f"{text[:40]} is too large for a number")
    return value


def read_bundle_json(path: str | Path):
    """Parse a bundle's JSON file strictly: UTF-8, at most :data:`MAX_JSON_BYTES`, no ``NaN``/``Infinity``
    (nor numbers like ``1e400`` that only read as infinity).

    Python's ``json`` accepts ``NaN`` and recurses without bound on deep nesting;
    both reach code that expects plain finite numbers, so both are refused here.

    Raises:
        CheckpointError: unreadable, too large, not strict JSON, or nested too deeply.
    """
    import json

    path = Path(path)
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            raise CheckpointError(f"{path} is larger than {MAX_JSON_BYTES >> 20} MiB; not a panderm bundle file")
        return json.loads(path.read_text(encoding="utf-8"), parse_constant=_no_constants, parse_float=_finite_float)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from None
    except RecursionError:
        raise CheckpointError(f"cannot read {path}: nested too deeply to be a panderm bundle file") from None


def hash_members(folder: str | Path, names: Iterable[str]) -> dict[str, str]:
    """``{name: sha256}`` for the member files ``names`` of ``folder`` (sorted by name)."""
    folder = Path(folder)
    return {n: sha256_file(folder / n) for n in sorted(set(names))}


def verify_members(folder: str | Path, meta: dict, *, owner: str, meta_file: str, required: Iterable[str] = (),
                   side_files: Iterable[str] = ()) -> None:
    """Check each member file listed in ``meta["files"]`` against its recorded sha256.

    Args:
        folder: The bundle folder.
        meta: The bundle's JSON (already schema-checked).
        owner: How errors name the bundle (``"bundle PATH"``).
        meta_file: The bundle's own JSON file name.
        required: Member names that must be listed (e.g. the head file).
        side_files: Files that may sit beside the members unlisted (outputs the loader never reads).

    Raises:
        CheckpointError: no ``files`` record, an unsafe member name, a required member not
            listed, a member that is missing or whose bytes changed, or an unlisted file.
    """
    folder = Path(folder)
    files = meta.get(FILES_KEY)
    if not isinstance(files, dict):
        raise CheckpointError(f"{owner} records no sha256 for its files (made by an older panderm)",
                              hint="rebuild it with this version of panderm")
    for name in required:
        if name not in files:
            raise CheckpointError(f"{owner} does not list its member file {name} with a sha256")
    for name, want in files.items():
        if not isinstance(name, str) or "/" in name or "\\" in name or name in ("", ".", "..") or name.startswith("."):
            raise CheckpointError(f"{owner} lists an unsafe member name {name!r}")
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{owner}: member file {name} is missing")
        got = sha256_file(path)
        if got != want:
            raise CheckpointError(f"{owner}: {name} has changed since the bundle was written "
                                  f"(sha256 {got[:12]}…, recorded {str(want)[:12]}…)",
                                  hint="restore the original file, or rebuild the bundle")
    _refuse_unlisted(folder, set(files) | {meta_file} | set(side_files), owner)


def _refuse_unlisted(folder: Path, known: set[str], owner: str) -> None:
    # Hidden entries (.work/, .DS_Store) are never read; any other file the record does not cover is refused,
    # so a bundle is exactly what its JSON says it is.
    extra = sorted(p.name for p in folder.iterdir() if not p.name.startswith(".") and p.name not in known
                   and not p.is_dir())
    if extra:
        raise CheckpointError(f"{owner} holds file(s) its sha256 record does not list: {', '.join(extra[:5])}",
                              hint="a bundle is sealed by that record: remove the file(s), or rebuild the bundle")


def validate_json(obj, schema: dict, *, where: str) -> None:
    """Validate ``obj`` against a JSON ``schema``; the first error names the key and the file.

    Raises:
        CheckpointError: ``obj`` does not match.
    """
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(obj), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if not errors:
        return
    err = errors[0]
    key = "/".join(str(p) for p in err.absolute_path) or "(top level)"
    if err.validator == "required":
        missing = [k for k in err.validator_value if not isinstance(err.instance, dict) or k not in err.instance]
        parent = key if err.absolute_path else ""
        names = ", ".join(f"{parent + '/' if parent else ''}{m}" for m in missing)
        raise CheckpointError(f"{where} is missing the key {names}",
                              hint="the file is damaged or was not written by panderm; rebuild it")
    raise CheckpointError(f"{where}: key {key} is invalid: {err.message[:200]}",
                          hint="the file is damaged or was not written by panderm; rebuild it")
