"""What a training run was made from, so that a resume on other inputs is refused.

A run folder keeps ``inputs.json``: a digest of the training table (each row's image,
label, split and any other columns that change the numbers, plus the image file's size
and mtime) and the sha256 of the starting weights. ``--resume`` recomputes it and
refuses when anything differs, listing what (``"table: 24 rows changed"``).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from panderm.errors import PandermError, examples
from panderm.io import atomic_write_json, file_stamp

INPUTS_FILE = "inputs.json"
#: Per-row detail (for messages like "24 rows changed") is kept up to this many rows; above it only digests.
ROW_DETAIL_LIMIT = 200_000


def _short(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, default=str, sort_keys=True).encode()).hexdigest()[:16]


def describe_inputs(rows: Iterable[tuple[str, Sequence[Any], str | os.PathLike | None]], *, source: str,
                    weights_sha256: str | None) -> dict:
    """The record of a run's inputs.

    Args:
        rows: ``(key, values, path)`` per training row: a stable key (the image name), the
            values that change the numbers (label, split, ...), and the file to stamp (or None).
        source: What the table is (a CSV path, a folder), for messages.
        weights_sha256: The starting weights' hash (None: random initialisation).
    """
    detail: dict[str, list[str]] = {}
    table, files = hashlib.sha256(), hashlib.sha256()
    n = 0
    for key, values, path in rows:
        key = str(key)
        if key in detail:  # a repeated key keeps both rows apart
            key = f"{key}#{n}"
        value_hash, stamp = _short(list(values)), file_stamp(path) if path is not None else ""
        table.update(f"{key}\t{value_hash}\n".encode())
        files.update(f"{key}\t{stamp}\n".encode())
        detail[key] = [value_hash, stamp]
        n += 1
    record = {"source": source, "n_rows": n, "table_sha256": table.hexdigest(), "files_sha256": files.hexdigest(),
              "weights_sha256": weights_sha256}
    if n <= ROW_DETAIL_LIMIT:
        record["rows"] = detail
    return record


#: One training row: a stable key, the values that change the numbers, and the files it reads by role.
Record = tuple[str, Sequence[Any], Mapping[str, "str | os.PathLike | None"]]


def _record_rows(records: Iterable[Record]):
    for key, values, files in records:
        roles = list(files.items())
        yield str(key), list(values), roles[0][1] if roles else None
        for role, path in roles[1:]:  # a second file (mask, image_b) is stamped on an entry of its own
            yield f"{key} ({role})", [], path


def describe_records(records: Iterable[Record], *, source: str | os.PathLike, weights_sha256: str | None) -> dict:
    """:func:`describe_inputs` for rows given as ``(key, values, {role: path})``.

    The first file is stamped on the row itself; any further file gets its own entry
    ``"<key> (<role>)"``, so a changed label reads "1 row(s) changed" and a replaced
    mask "1 file(s) changed".
    """
    return describe_inputs(_record_rows(records), source=str(source), weights_sha256=weights_sha256)


def encoder_weights_sha256(encoder) -> str | None:
    """sha256 of the weights an encoder from ``create_encoder`` started from (None: random init)."""
    return getattr(getattr(encoder, "weights_info", None), "sha256", None)


def weights_file_sha256(path: str | os.PathLike | None) -> str | None:
    """sha256 of a weights file (registry-cached while unchanged on disk); None for no file."""
    if path is None:
        return None
    from panderm.weights import weights_sha256

    return weights_sha256(Path(path))


def input_changes(old: dict, new: dict) -> list[str]:
    """Human-readable differences between two input records (empty when they match)."""
    out = []
    if old.get("weights_sha256") != new.get("weights_sha256"):
        out.append(f"weights: sha256 {str(old.get('weights_sha256'))[:12]}… then, "
                   f"{str(new.get('weights_sha256'))[:12]}… now")
    same_table = old.get("table_sha256") == new.get("table_sha256")
    same_files = old.get("files_sha256") == new.get("files_sha256")
    if same_table and same_files:
        return out
    a, b = old.get("rows"), new.get("rows")
    if a is None or b is None:  # too large for per-row detail
        if not same_table:
            out.append(f"table: {old.get('n_rows')} rows then, {new.get('n_rows')} now, contents differ "
                       f"(sha256 {str(old.get('table_sha256'))[:12]}… vs {str(new.get('table_sha256'))[:12]}…)")
        if not same_files:
            out.append("images: some files changed on disk (size or modification time)")
        return out
    added = [k for k in b if k not in a]
    removed = [k for k in a if k not in b]
    both = [k for k in b if k in a]
    changed = [k for k in both if a[k][0] != b[k][0]]
    touched = [k for k in both if a[k][1] != b[k][1]]
    parts = []
    if changed:
        parts.append(f"{len(changed)} row(s) changed ({examples(changed)})")
    if added:
        parts.append(f"{len(added)} row(s) added ({examples(added)})")
    if removed:
        parts.append(f"{len(removed)} row(s) removed ({examples(removed)})")
    if not parts and not same_table:
        parts.append("rows reordered")
    if parts:
        out.append(f"table {new.get('source')}: " + "; ".join(parts))
    if touched:
        out.append(f"images: {len(touched)} file(s) changed on disk since the run started ({examples(touched)})")
    return out


def save_inputs(out: str | os.PathLike, record: dict) -> None:
    """Write ``inputs.json`` into a run folder (atomically)."""
    atomic_write_json(Path(out) / INPUTS_FILE, record)


def check_resume_inputs(out: str | os.PathLike, record: dict) -> list[str]:
    """Refuse to resume ``out`` on other inputs; returns notes (e.g. an older run without a record).

    Raises:
        PandermError: the table, the image files or the weights differ from the saved run's.
    """
    path = Path(out) / INPUTS_FILE
    if not path.is_file():
        return [f"{out} was started before panderm recorded training inputs; they cannot be checked on resume"]
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PandermError(f"cannot read {path}: {exc}", hint="restore the run folder, or start a new run") from None
    diffs = input_changes(old if isinstance(old, dict) else {}, record)
    if diffs:
        raise PandermError(f"cannot resume {out}: its training inputs differ from the saved run's:\n  "
                           + "\n  ".join(diffs),
                           hint="resume with the original table, images and weights, or start a new run in "
                                "another folder")
    return []
