"""Tables the probes and classifiers read: feature folders from ``panderm extract`` and dataset CSVs.

``load_features`` reads a feature folder, ``load_dataset`` a CSV (image, split, label), and
``select_rows`` joins them by normalised image path (exact, then a unique path suffix), applying
the missing-features policy (images ``extract`` skipped are excluded and reported; others are
an error naming them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from panderm.errors import InputError, examples
from panderm.io import read_csv_frame
from panderm.paths import normalise_path

SPLITS = ("train", "val", "test")


@dataclass
class FeatureTable:
    """A feature folder from ``panderm extract``: matrix, row keys, meta and the images it skipped."""

    folder: Path
    X: np.ndarray
    keys: list[str]
    meta: dict
    skipped: set[str]


def drop_repeated_keys(df: pd.DataFrame, csv: Path, same: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """Keep the first row of each ``key`` (normalised image path); return it and the warnings.

    Rows spelling one file differently (``a.jpg``, ``./a.jpg``, ``sub/../a.jpg``) are
    the same image, as ``extract`` treats them: a repeat that agrees on the ``same``
    columns (e.g. split and label) is dropped with a warning; one that disagrees is
    an error naming both rows, because one image cannot have two splits or labels.
    """
    later = df[df["key"].duplicated()]
    if later.empty:
        return df, []
    first = df.drop_duplicates("key").set_index("key")
    conflicts = []
    for _, row in later.iterrows():
        kept = first.loc[row["key"]]
        if any(str(kept[c]) != str(row[c]) for c in same):
            conflicts.append(f"{kept['image']} / {row['image']}")
    if conflicts:
        raise InputError(f"{csv} names {len(conflicts)} image(s) twice with a different {' or '.join(same)}: "
                         f"{examples(conflicts)}",
                         hint="paths are compared after removing './', '..' and backslashes; keep one row per image")
    warning = (f"{len(later)} row(s) of {csv} repeat an image already listed (same {', '.join(same) or 'row'}); "
               f"the first is used: {examples(later['image'].astype(str))}")
    return df.drop_duplicates("key").copy(), [warning]


def load_features(folder: str | Path, role: str = "features") -> FeatureTable:
    """Read ``features.npy``, ``index.csv`` and optional ``meta.json``/``skipped.csv``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{role} folder {folder} does not exist",
                         hint="create it with: panderm extract IMAGES --out DIR")
    npy, index = folder / "features.npy", folder / "index.csv"
    for f in (npy, index):
        if not f.is_file():
            raise InputError(f"{role} folder {folder} has no {f.name}",
                             hint="point --features at a folder written by `panderm extract`")
    try:
        X = np.load(npy, allow_pickle=False)
    except Exception as exc:
        raise InputError(f"cannot read {npy}: {exc}") from None
    if X.ndim != 2 or not np.issubdtype(X.dtype, np.number):
        raise InputError(f"{npy} must be a numeric N×D matrix, got shape {X.shape} ({X.dtype})")
    idx = read_csv_frame(index)
    if "image" not in idx.columns:
        raise InputError(f"{index} has no 'image' column (columns: {', '.join(map(str, idx.columns))})")
    if len(idx) != len(X):
        raise InputError(f"{index} lists {len(idx)} images but {npy} has {len(X)} feature rows",
                         hint="the folder is inconsistent; re-run `panderm extract`")
    if not np.isfinite(X).all():
        bad = idx["image"][~np.isfinite(X).all(axis=1)].astype(str).tolist()
        raise InputError(f"{npy} has non-finite values in {len(bad)} rows: {examples(bad)}")
    keys = [normalise_path(p) for p in idx["image"].astype(str)]
    dup = pd.Series(keys)[pd.Series(keys).duplicated()].unique().tolist()
    if dup:
        raise InputError(f"{index} lists {len(dup)} images more than once: {examples(dup)}")
    meta = {}
    if (folder / "meta.json").is_file():
        try:
            meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read {folder / 'meta.json'}: {exc}") from None
    skipped: set[str] = set()
    if (folder / "skipped.csv").is_file():
        sk = read_csv_frame(folder / "skipped.csv")
        if len(sk.columns):
            col = "image" if "image" in sk.columns else sk.columns[0]
            skipped = {normalise_path(p) for p in sk[col].dropna().astype(str)}
    return FeatureTable(folder, X, keys, meta, skipped)


def load_dataset(csv: str | Path, binary: bool, use_split: bool = True) -> tuple[pd.DataFrame, str]:
    """Read and validate the dataset CSV; returns it with a ``key`` column and the label column name.

    Rows naming one image twice are merged (see :func:`drop_repeated_keys`); the
    warnings are in ``df.attrs["warnings"]``.

    ``use_split=False`` (out-of-fold probing) ignores any ``split`` column: every row
    gets ``split == "train"`` and the column is not required.
    """
    csv = Path(csv)
    if not csv.is_file():
        raise InputError(f"dataset CSV {csv} does not exist")
    df = read_csv_frame(csv)
    label_col = "binary_label" if binary else "label"
    if not use_split:
        df = df.assign(split="train")
    missing = [c for c in ("image", "split", label_col) if c not in df.columns]
    if missing:
        hint = "binary mode reads 'binary_label' (0/1)" if binary else "the CSV needs image, split and label"
        raise InputError(f"{csv} lacks column(s) {', '.join(missing)} "
                         f"(has: {', '.join(map(str, df.columns))})", hint=hint)
    df = df.copy()
    df["split"] = df["split"].astype(str).str.strip()
    unknown = sorted(set(df["split"]) - set(SPLITS))
    if unknown:
        raise InputError(f"{csv} has unknown split value(s) {examples(unknown)}",
                         hint="split must be one of train, val, test")
    if df["image"].isna().any():
        raise InputError(f"{csv} has {int(df['image'].isna().sum())} rows without an image path")
    df["key"] = [normalise_path(p) for p in df["image"].astype(str)]
    df, notes = drop_repeated_keys(df, csv, ["split", label_col] if use_split else [label_col])
    df.attrs["warnings"] = notes
    labels = df[label_col]
    if labels.isna().any():
        rows = df.loc[labels.isna(), "image"].tolist()
        raise InputError(f"{csv} has {len(rows)} rows without '{label_col}': {examples(rows)}")
    if binary:
        values = pd.to_numeric(labels, errors="coerce")
        if values.isna().any() or not set(values.unique()) <= {0, 1}:
            bad = sorted(set(labels.astype(str)) - {"0", "1", "0.0", "1.0"})
            raise InputError(f"{csv}: 'binary_label' must be 0 or 1, found {examples(bad)}")
        df["_label"] = values.astype(int)
    elif pd.api.types.is_integer_dtype(labels) or pd.api.types.is_bool_dtype(labels):
        df["_label"] = labels.astype(int)
    elif pd.api.types.is_float_dtype(labels) and (labels == labels.round()).all():
        df["_label"] = labels.astype(int)  # ints that pandas read as floats
    else:
        df["_label"] = labels.astype(str).str.strip()
    return df, label_col


def _suffixes(path: str) -> list[str]:
    """``a/b/c.jpg`` → ``[a/b/c.jpg, b/c.jpg, c.jpg]``."""
    parts = path.split("/")
    return ["/".join(parts[j:]) for j in range(len(parts))]


def _match(keys: pd.Series, feats: FeatureTable) -> np.ndarray:
    """Feature row of each CSV key, −1 where none: exact path first, then unique path suffix."""
    exact = {k: i for i, k in enumerate(feats.keys)}
    rows = np.array([exact.get(k, -1) for k in keys], dtype=np.int64)
    if (rows < 0).any():
        suffix: dict[str, int] = {}
        for i, k in enumerate(feats.keys):
            for s in _suffixes(k)[1:]:
                suffix[s] = -1 if s in suffix else i  # an ambiguous suffix matches nothing
        for r in np.flatnonzero(rows < 0):
            rows[r] = suffix.get(keys.iloc[r], -1)
    return rows


def _skipped(keys: pd.Series, feats: FeatureTable) -> np.ndarray:
    """Which CSV keys ``extract`` reported in ``skipped.csv`` (same path matching as features)."""
    known = {s for p in feats.skipped for s in _suffixes(p)}
    return np.array([k in known for k in keys], dtype=bool)


def subsample(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted row indices of a stratified ``fraction`` of ``labels`` (≥ 1 per class)."""
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        keep.append(rng.permutation(rows)[:max(1, int(round(fraction * len(rows))))])
    return np.sort(np.concatenate(keep))


def select_rows(df: pd.DataFrame, feats: FeatureTable, csv: Path, use_val: bool, role: str) -> tuple[pd.DataFrame, dict]:
    """Rows of the used splits with their feature row; applies the missing-features policy."""
    used = df[df["split"].isin(("train", "val", "test") if use_val else ("train", "test"))].copy()
    used["row"] = _match(used["key"], feats)
    if (used["row"] < 0).all() and len(used):
        raise InputError(f"none of the {len(used)} images in {csv} is in {feats.folder / 'index.csv'} "
                         f"(CSV: {examples(used['image'].head(3))}; features: {examples(feats.keys[:3])})",
                         hint="the CSV 'image' paths must be relative to the folder given to `panderm extract`")
    missing = used["row"] < 0
    skipped = missing & _skipped(used["key"], feats)
    absent = used[missing & ~skipped]
    if len(absent):
        raise InputError(f"{len(absent)} of {len(used)} images in {csv} have no features in {feats.folder} "
                         f"({role}; by split: {({k: int(v) for k, v in absent['split'].value_counts().items()})}): "
                         f"{examples(absent['image'])}",
                         hint="extract features for all images in the CSV, or remove those rows")
    excluded = {"count": int(skipped.sum()), "by_split": {k: int(v) for k, v in
                                                           used.loc[skipped, "split"].value_counts().items()},
                "images": used.loc[skipped, "image"].astype(str).tolist()}
    return used[~skipped], excluded
