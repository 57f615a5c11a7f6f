"""Read TBP lesions from a patient folder, a cohort folder, a lesions CSV or the ISIC 2024 layout.

Every reader returns a :class:`LesionTable`: one row per lesion with ``patient_id``,
``lesion_id``, ``image`` (as written by the user), ``path`` (absolute tile path, resolved with
:func:`panderm.paths.resolve_under_root`: ``./`` and backslashes normalised, a path leaving
``--root`` or the patient folder refused naming the row, so any working directory works),
optional ``label`` (1 = malignant), ``risk_label`` (1 = the lesion was sent to dermoscopy:
the risk head's training target) and ``split``, plus whatever measurement columns
the input has (ISIC 2024 ``tbp_lv_*`` names are renamed to the Vectra names).
Bad items never abort a batch: they become :attr:`LesionTable.skipped` rows.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from panderm.errors import InputError
from panderm.paths import normalise_path, resolve_under_root
from panderm.tbp.isic_tiles import safe_name_problem, unpack_cached

TILE_EXTENSIONS = (".jpg", ".jpeg", ".png")
MEASUREMENTS_FILE = "measurements.csv"
FORMATS = ("auto", "patient", "cohort", "isic2024")
#: Columns of a TBP run's ``skipped.csv`` (the keys of :attr:`LesionTable.skipped` rows).
SKIPPED_COLUMNS = ("patient_id", "lesion_id", "image", "reason")
_LABEL_WORDS = {"0": 0, "1": 1, "benign": 0, "malignant": 1, "false": 0, "true": 1, "0.0": 0, "1.0": 1}
#: The risk head's own target (paper: a lesion is high-risk "if subjected to dermoscopy examination").
RISK_LABEL = "risk_label"
RISK_LABEL_HINT = "risk_label: 1 = the lesion was sent to dermoscopy, 0 = it was not (every row needs a value)"
_RISK_WORDS = {"0": 0, "1": 1, "0.0": 0, "1.0": 1, "false": 0, "true": 1}


@dataclass
class LesionTable:
    """Lesions to screen or train on, and what was left out on the way."""

    df: pd.DataFrame
    fmt: str
    skipped: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    leaky_dropped: list[str] = field(default_factory=list)

    def skip(self, rows: pd.DataFrame, reason) -> None:
        """Move ``rows`` (a subset of :attr:`df`) to :attr:`skipped`; ``reason``: one string or one per row."""
        reasons = [reason] * len(rows) if isinstance(reason, str) else list(reason)
        for r, why in zip(rows.itertuples(index=False), reasons):
            self.skipped.append({"patient_id": getattr(r, "patient_id", ""), "lesion_id": getattr(r, "lesion_id", ""),
                                 "image": getattr(r, "image", ""), "reason": why})
        self.df = self.df.drop(index=rows.index).reset_index(drop=True)


def parse_labels(values: pd.Series, source: str) -> pd.Series:
    """0/1, benign/malignant or true/false → int; anything else is an InputError naming it."""
    text = values.astype(str).str.strip().str.lower()
    out = text.map(_LABEL_WORDS)
    if out.isna().any():
        bad = sorted(set(values[out.isna()].astype(str)))[:5]
        raise InputError(f"{source}: label value(s) {', '.join(map(repr, bad))} are not 0/1 or benign/malignant",
                         hint="label: 1 = malignant, 0 = benign")
    return out.astype(int)


def _row_names(df: pd.DataFrame, bad: pd.Series) -> str:
    """The CSV rows (or, without a row number, the images) of the ``bad`` rows, at most five."""
    rows = df["_row"] if "_row" in df.columns else pd.Series(np.nan, index=df.index)
    images = df["image"] if "image" in df.columns else pd.Series("", index=df.index)
    names = [f"row {int(r)}" if pd.notna(r) else f"image {img}" for r, img in zip(rows[bad], images[bad])]
    return ", ".join(names[:5]) + (f" … ({len(names)} in all)" if len(names) > 5 else "")


def parse_risk_labels(df: pd.DataFrame, source: str) -> pd.Series:
    """``risk_label`` → int 0/1; an empty cell or any other value is an InputError naming the rows."""
    values = df[RISK_LABEL]
    out = values.astype(str).str.strip().str.lower().map(_RISK_WORDS)
    missing, bad = values.isna(), out.isna() & values.notna()
    if missing.any():
        raise InputError(f"{source}: risk_label is empty in {_row_names(df, missing)}", hint=RISK_LABEL_HINT)
    if bad.any():
        shown = sorted(set(values[bad].astype(str)))[:5]
        raise InputError(f"{source}: risk_label value(s) {', '.join(map(repr, shown))} are not 0/1 "
                         f"({_row_names(df, bad)})", hint=RISK_LABEL_HINT)
    return out.astype(int)


def _risk_labels(table: LesionTable, source: str, strict: bool) -> pd.Series | None:
    """Parsed ``risk_label``, or None; like :func:`_labels`, ``strict=False`` drops a bad column with a warning."""
    if RISK_LABEL not in table.df.columns:
        return None
    try:
        return parse_risk_labels(table.df, source)
    except InputError as exc:
        if strict:
            raise
        table.warnings.append(f"{exc.message}; the {RISK_LABEL} column is ignored")
        table.df = table.df.drop(columns=[RISK_LABEL])
        return None


def _read_csv(path: Path) -> pd.DataFrame:
    """A table with its CSV line numbers in ``_row`` (the header is line 1), so errors can name the row."""
    try:
        df = pd.read_csv(path, dtype={"patient_id": str, "lesion_id": str, "image": str, "isic_id": str},
                         low_memory=False)
        df["_row"] = np.arange(len(df)) + 2
        return df
    except pd.errors.EmptyDataError:
        raise InputError(f"{path} is empty", hint="expected a header row with lesion_id,image,...") from None
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None


def _labels(table: LesionTable, source: str, strict: bool) -> pd.Series | None:
    """Parsed labels, or None. ISIC 2024's label is ``target``; elsewhere ``label``.

    With ``strict=False`` (screening never needs labels) unparseable labels are dropped with a warning.
    """
    df = table.df
    if table.fmt == "isic2024":
        df = table.df = df.drop(columns=[c for c in ("label", "binary_label") if c in df.columns])
    col = "target" if table.fmt == "isic2024" else "label"
    if col not in df.columns:
        return None
    try:
        return parse_labels(df[col], source)
    except InputError as exc:
        if strict:
            raise
        table.warnings.append(f"{exc.message}; the {col} column is ignored")
        return None


def _resolve_paths(df: pd.DataFrame, root: Path | None, base: Path | None, source: str,
                   column: str = "image") -> list[str]:
    """Absolute path per row of ``column`` ("" for an empty cell); one leaving ``root`` is an InputError naming its row."""
    rows = df["_row"] if "_row" in df.columns else pd.Series(np.nan, index=df.index)
    out = []
    for value, row in zip(df[column], rows):
        where = f"{source} row {int(row)}" if pd.notna(row) else f"{source} ({value})"
        out.append(str(resolve_under_root(value, root, base=base, where=where)) if value else "")
    return out


def _warn_shared_tiles(table: LesionTable) -> None:
    """Rows that name the same tile (however spelt) are kept; the tile is encoded once."""
    shared = table.df["path"].duplicated(keep="first") & table.df["path"].ne("")
    if shared.any():
        names = table.df.loc[shared, "image"].tolist()
        table.warnings.append(f"{int(shared.sum())} row(s) name a tile an earlier row already names; each tile is "
                              "encoded once: " + ", ".join(names[:5]) + (" …" if len(names) > 5 else ""))


def lesion_size_mm(df: pd.DataFrame) -> pd.Series:
    """The lesion's longest diameter in mm as the input gives it, for reports: ISIC 2024's
    ``clin_size_long_diam_mm``, else Vectra's ``majorAxisMM``, else NaN (never an image-derived value)."""
    for col in ("clin_size_long_diam_mm", "majorAxisMM"):
        if col in df.columns:
            return pd.to_numeric(df[col], errors="coerce").where(lambda v: v > 0)
    return pd.Series(np.nan, index=df.index)


def _finish(table: LesionTable, source: str, *, root: Path | None = None, base: Path | None = None,
            strict_labels: bool = True) -> LesionTable:
    """Common clean-up: ids as strings, paths made absolute, labels parsed, duplicates and missing files skipped.

    Args:
        root: The folder every ``image`` must stay in (``--root``, the patient folder), or None.
        base: Where relative ``image`` values resolve when there is no ``root`` (the CSV's folder).
    """
    from panderm.tbp.measurements import drop_leaky, normalize_columns

    label = _labels(table, source, strict_labels)
    risk = _risk_labels(table, source, strict_labels)
    df = table.df
    df, table.leaky_dropped = drop_leaky(df, "isic2024" if table.fmt == "isic2024" else "vectra")
    df = df.assign(size_mm=lesion_size_mm(df))  # before image measurements can replace majorAxisMM
    df, _ = normalize_columns(df)
    if table.fmt == "isic2024":  # its own lesion_id (biopsied lesions only) leaked the label and is gone
        df["lesion_id"] = df["isic_id"]
    if label is not None:
        df["label"] = label.to_numpy()
    if risk is not None:
        df[RISK_LABEL] = risk.to_numpy()
    for col in ("patient_id", "lesion_id", "image"):
        df[col] = df[col].fillna("").astype(str).str.strip()
    df["path"] = _resolve_paths(df, root, base, source)
    if "mask" in df.columns:  # --measure-from-image masks follow the same rules as the tiles
        df["mask"] = _resolve_paths(df.assign(mask=df["mask"].fillna("").astype(str).str.strip()), root, base,
                                    source, "mask")
    table.df = df.drop(columns=["_row"], errors="ignore").reset_index(drop=True)
    dup = table.df.duplicated(["patient_id", "lesion_id"], keep="first")
    if dup.any():
        ids = table.df.loc[dup, "lesion_id"].unique().tolist()
        table.warnings.append(f"{int(dup.sum())} duplicate lesion id row(s) skipped (first kept): "
                              + ", ".join(ids[:8]) + (" …" if len(ids) > 8 else ""))
        table.skip(table.df[dup], "duplicate lesion_id (an earlier row of this patient has it)")
    missing = ~table.df["path"].map(lambda p: bool(p) and Path(p).is_file())
    if missing.any():
        table.skip(table.df[missing], "image file not found")
    _warn_shared_tiles(table)
    return table


# --------------------------------------------------------------------------- layouts


def read_patient_folder(folder: str | Path, patient_id: str | None = None, strict_labels: bool = True) -> LesionTable:
    """One patient: tiles (jpg/png) plus an optional ``measurements.csv`` (``lesion_id,image,...``).

    Tiles without a measurement row are kept (measurements imputed later, with a warning);
    rows whose tile is missing are skipped.
    """
    folder = Path(os.path.abspath(Path(folder).expanduser()))
    pid = patient_id or folder.name
    tiles = sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in TILE_EXTENSIONS)
    csv = folder / MEASUREMENTS_FILE
    warnings = []
    if csv.is_file():
        rows = _read_csv(csv)
        if "image" not in rows.columns:
            raise InputError(f"{csv} has no 'image' column (columns: {', '.join(map(str, rows.columns))})",
                             hint="one row per tile: lesion_id,image,<measurements>")
        if "lesion_id" not in rows.columns:
            rows["lesion_id"] = rows["image"].map(_stem)
        listed = {normalise_path(v) for v in rows["image"].dropna().astype(str)}
        extra = [t for t in tiles if t not in listed]
        if extra:
            warnings.append(f"patient {pid}: {len(extra)} tile(s) have no row in {MEASUREMENTS_FILE} "
                            f"(measurements imputed): " + ", ".join(extra[:5]) + (" …" if len(extra) > 5 else ""))
            rows = pd.concat([rows, pd.DataFrame({"image": extra, "lesion_id": [Path(t).stem for t in extra]})],
                             ignore_index=True)
    else:
        rows = pd.DataFrame({"image": tiles, "lesion_id": [Path(t).stem for t in tiles]})
    rows["patient_id"] = pid
    return _finish(LesionTable(rows, "patient", warnings=warnings), str(csv), root=folder,
                   strict_labels=strict_labels)


def _stem(value) -> str:
    """The default lesion id of a tile path: its file stem (``./sub\\a.jpg`` → ``a``)."""
    return Path(normalise_path(str(value))).stem


def _is_patient_folder(folder: Path) -> bool:
    return (folder / MEASUREMENTS_FILE).is_file() or any(
        p.is_file() and p.suffix.lower() in TILE_EXTENSIONS for p in folder.iterdir())


def read_cohort(folder: str | Path, strict_labels: bool = True) -> LesionTable:
    """A patient folder, or a folder with one sub-folder per patient (named by patient id)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder", hint="pass a patient folder or a cohort folder")
    if _is_patient_folder(folder):
        return read_patient_folder(folder, strict_labels=strict_labels)
    subs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    patients, empty = [], []
    for sub in subs:
        table = read_patient_folder(sub, strict_labels=strict_labels) if _is_patient_folder(sub) else None
        if table is not None and (len(table.df) or table.skipped):
            patients.append(table)
        else:
            empty.append(sub.name)
    if not patients:
        raise InputError(f"no patients found in {folder}: no tiles, no {MEASUREMENTS_FILE} and no patient "
                         "sub-folders with either",
                         hint="a patient folder holds lesion tiles (jpg/png) and optionally measurements.csv")
    table = LesionTable(pd.concat([t.df for t in patients], ignore_index=True), "cohort")
    if empty:
        table.warnings.append(f"{len(empty)} sub-folder(s) without lesion tiles ignored: " + ", ".join(empty[:8])
                              + (" …" if len(empty) > 8 else ""))
    for t in patients:
        table.skipped += t.skipped
        table.warnings += t.warnings
    return table


def read_lesions_csv(csv: str | Path, root: str | Path | None = None, strict_labels: bool = True) -> LesionTable:
    """A lesions CSV (``image`` relative to ``root``; ``patient_id``; optional ``lesion_id``, ``label``, ``split``)."""
    csv = Path(csv)
    if not csv.is_file():
        raise InputError(f"lesions file not found: {csv}")
    df = _read_csv(csv)
    for col in ("image", "patient_id"):
        if col not in df.columns:
            raise InputError(f"{csv} has no '{col}' column (columns: {', '.join(map(str, df.columns))})",
                             hint="columns: patient_id,lesion_id,image,label,split,<measurements>")
    if "lesion_id" not in df.columns:
        df["lesion_id"] = df["image"].map(_stem)
    if root is not None and not Path(root).expanduser().is_dir():
        raise InputError(f"--root folder not found: {root}", hint="--root is the folder the CSV's image paths are "
                                                                  "relative to")
    return _finish(LesionTable(df, "patient"), str(csv), root=Path(root) if root is not None else None,
                   base=Path(os.path.abspath(csv.parent)), strict_labels=strict_labels)


def _find_metadata(folder: Path) -> Path:
    csvs = sorted(folder.glob("*.csv"))
    with_id = [c for c in csvs if "isic_id" in pd.read_csv(c, nrows=0).columns]
    if not with_id:
        raise InputError(f"no metadata CSV with an 'isic_id' column in {folder}",
                         hint="ISIC 2024 layout: train-metadata.csv (isic_id, patient_id, tbp_lv_*) + images")
    preferred = [c for c in with_id if "metadata" in c.name]
    return (preferred or with_id)[0]


def _find_images(folder: Path) -> Path | None:
    found = sorted(folder.glob("*.hdf5")) + sorted(folder.glob("*.h5"))
    if len(found) > 1:  # guessing would screen one file's tiles against another file's metadata
        raise InputError(f"{folder} holds {len(found)} HDF5 files ({', '.join(p.name for p in found[:4])}); "
                         "which one holds the images?", hint="name it with --images FILE.hdf5")
    if found:
        return found[0]
    for name in ("images", "image", "train-image/image", "test-image/image"):
        if (folder / name).is_dir():
            return folder / name
    return None


def _unsafe_ids(df: pd.DataFrame) -> tuple[pd.DataFrame, list[dict]]:
    """Rows whose ``isic_id`` may not become a file name, as skipped records; the rest of ``df``."""
    problems = df["isic_id"].map(lambda i: safe_name_problem(i, "isic_id"))
    bad = problems.notna()
    skipped = [{"patient_id": str(r.patient_id), "lesion_id": str(r.isic_id), "image": "", "reason": why}
               for r, why in zip(df[bad].itertuples(index=False), problems[bad])]
    return df[~bad].reset_index(drop=True), skipped


def _drop_unreadable(df: pd.DataFrame, problems: dict[str, str], skipped: list[dict]) -> tuple[pd.DataFrame, list]:
    """Rows whose HDF5 tile was refused, moved to ``skipped`` with the reason."""
    bad = df["isic_id"].isin(list(problems))
    skipped = skipped + [{"patient_id": str(r.patient_id), "lesion_id": str(r.isic_id), "image": "",
                          "reason": problems[r.isic_id]} for r in df[bad].itertuples(index=False)]
    return df[~bad].reset_index(drop=True), skipped


def read_isic2024(path: str | Path, images: str | Path | None = None, cache: str | Path | None = None,
                  strict_labels: bool = True) -> LesionTable:
    """ISIC 2024 (SLICE-3D): metadata CSV (``isic_id``, ``patient_id``, ``tbp_lv_*``) + image folder or HDF5.

    Args:
        path: The metadata CSV, or a folder holding it (and the images).
        images: Image folder (``<isic_id>.jpg``) or HDF5 file keyed by ``isic_id`` (default: found in the folder).
        cache: Where HDF5 tiles are unpacked (needed for HDF5 input).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist")
    meta = path if path.is_file() else _find_metadata(path)
    folder = meta.parent
    df = _read_csv(meta)
    for col in ("isic_id", "patient_id"):
        if col not in df.columns:
            raise InputError(f"{meta} has no '{col}' column", hint="ISIC 2024 metadata: isic_id, patient_id, tbp_lv_*")
    df["isic_id"] = df["isic_id"].fillna("").astype(str).str.strip()
    df, skipped = _unsafe_ids(df)
    src = Path(images) if images else _find_images(folder)
    if src is None:
        raise InputError(f"no images for {meta}: no *.hdf5 file and no images/ folder beside it",
                         hint="pass --images FOLDER_OR_HDF5")
    if src.is_file():
        if cache is None:
            raise InputError("HDF5 input needs a cache folder for the unpacked tiles")
        problems: dict[str, str] = {}
        paths = unpack_cached(src, df["isic_id"].tolist(), Path(cache), problems)
        df, skipped = _drop_unreadable(df, problems, skipped)
        df["image"] = df["isic_id"].map(lambda i: paths.get(i, ""))  # absolute paths inside the cache
        root = None
    else:
        if "image" not in df.columns:
            df["image"] = df["isic_id"] + ".jpg"
        root = src
    return _finish(LesionTable(df, "isic2024", skipped=skipped), str(meta), root=root, strict_labels=strict_labels)


def read_input(input: str | Path, fmt: str = "auto", *, root: str | Path | None = None,
               images: str | Path | None = None, cache: str | Path | None = None,
               strict_labels: bool = True) -> LesionTable:
    """Dispatch on ``fmt``: ``auto`` (CSV → lesions CSV, folder → patient/cohort), ``isic2024``, ...

    ``strict_labels=False`` (screening) ignores an unparseable label column with a warning.
    """
    if fmt not in FORMATS:
        raise InputError(f"unknown format '{fmt}'", hint=f"choose one of: {', '.join(FORMATS)}")
    path = Path(input)
    if not path.exists():
        raise InputError(f"{path} does not exist")
    if fmt == "isic2024":
        return read_isic2024(path, images=images, cache=cache, strict_labels=strict_labels)
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise InputError(f"{path} is neither a folder nor a CSV file")
        return read_lesions_csv(path, root, strict_labels)
    if fmt == "patient":
        return read_patient_folder(path, strict_labels=strict_labels)
    return read_cohort(path, strict_labels)
