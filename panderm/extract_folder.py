"""The ``panderm extract`` output folder: resumable shards, and the guards that keep one folder to one run.

A folder holds the finished outputs of exactly one run (model, weights, preprocessing,
inputs). Unfinished shards under ``.shards/`` carry a manifest with the same
fingerprint; a resume reuses them only when it matches, and a run with other weights
is refused rather than mixed in.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from panderm.errors import InputError
from panderm.io import atomic_path, atomic_write_json

SHARD_DIR = ".shards"
OUTPUT_FILES = ("features.npy", "index.csv", "meta.json", "skipped.csv")


def save_shard(path: Path, ok: list[int], feats: np.ndarray, bad: list[tuple[int, str]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, ok_index=np.asarray(ok, dtype=np.int64), features=feats.astype(np.float32, copy=False),
                 skipped_index=np.asarray([i for i, _ in bad], dtype=np.int64),
                 skipped_reason=np.asarray([r for _, r in bad], dtype=str))


def read_shard(path: Path) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in ("ok_index", "features", "skipped_index", "skipped_reason")}
    except Exception:  # unreadable shard: recompute it
        return None


def shard_done(path: Path) -> bool:
    """Cheap completeness check (reads only the zip directory, not the arrays)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {"ok_index", "features", "skipped_index", "skipped_reason"} <= set(z.files)
    except Exception:
        return False


def prepare_shard_dir(shard_dir: Path, fp: dict, resume: bool, say) -> list[str]:
    """Validate or reset ``out/.shards`` (rank 0 only); return notes for the user."""
    notes = []
    manifest = shard_dir / "manifest.json"
    old = None
    if manifest.exists():
        try:
            old = json.loads(manifest.read_text())
        except (OSError, ValueError):
            old = None
    stale = sorted(shard_dir.glob("shard-*.npz")) if shard_dir.is_dir() else []
    if resume and old == fp:
        if stale:
            notes.append(f"resuming: found {len(stale)} finished shard(s) in {shard_dir}")
    else:
        if stale:
            if not resume:
                why = "resume disabled"
            elif old is None:
                why = "no valid manifest"
            else:
                changed = sorted(k for k in set(old) | set(fp) if old.get(k) != fp.get(k))
                why = f"settings or inputs changed: {', '.join(changed)}"
            notes.append(f"discarding {len(stale)} stale shard(s) in {shard_dir} ({why})")
        shutil.rmtree(shard_dir, ignore_errors=True)
        shard_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(manifest, fp)
    for n in notes:
        say(n)
    return notes


def finished_result(out: Path, fp_hash: str, resume: bool) -> dict | None:
    """meta.json of a finished run with the same fingerprint, if every output file is there."""
    if not resume or not all((out / f).is_file() for f in OUTPUT_FILES):
        return None
    try:
        meta = json.loads((out / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    return meta if meta.get("fingerprint") == fp_hash else None


def _short_hash(sha: str) -> str:
    """First 12 hex digits of a weights hash (``params:`` hashes keep their prefix)."""
    prefix, _, digest = sha.rpartition(":")
    return f"{prefix}:{digest[:12]}" if prefix else digest[:12]


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _earlier_weights(out: Path) -> list[tuple[str, str]]:
    """``(what, weights hash)`` of the finished outputs and unfinished shards already in ``out``."""
    found = []
    weights = _read_json(out / "meta.json").get("weights")
    if isinstance(weights, dict) and (weights.get("sha256") or weights.get("params")):
        found.append(("finished features", str(weights.get("sha256") or weights.get("params"))))
    shard_dir = out / SHARD_DIR
    if shard_dir.is_dir() and any(shard_dir.glob("shard-*.npz")):
        sha = _read_json(shard_dir / "manifest.json").get("weights_sha256")
        if sha:
            found.append(("unfinished shards of an interrupted run", str(sha)))
    return found


def refuse_other_weights(out: Path, wsha: str, spec: str | None) -> None:
    """Stop a rerun or resume into ``out`` with weights other than the ones its features came from.

    Mixing two models' rows in one ``features.npy``, or calling old features up to date
    after the weights file was replaced, would be silent and wrong. Two random
    initialisations (``params:`` hashes of unnamed weights) are not compared.
    """
    for what, old in _earlier_weights(out):
        if old == wsha or (old.startswith("params:") and wsha.startswith("params:")):
            continue
        given = f"--weights {spec}" if spec else "the weights given now"
        raise InputError(
            f"{out} holds {what} computed with other weights (sha256 {_short_hash(old)}) than "
            f"{given} (sha256 {_short_hash(wsha)})",
            hint="the weights file changed or another one was given; choose another --out, "
                 "or pass --overwrite to discard the old features and start over")


def refuse_foreign_outputs(out: Path, fp_hash: str) -> None:
    """Stop before deleting the finished outputs of a run with other settings or inputs."""
    meta = _read_json(out / "meta.json")
    if meta.get("fingerprint") not in (None, fp_hash):
        raise InputError(
            f"{out} already holds features of another run ({meta.get('model')}, {meta.get('n')} images, "
            f"precision {meta.get('precision')}, created {meta.get('created')})",
            hint="choose another --out, or pass --overwrite to replace them")
