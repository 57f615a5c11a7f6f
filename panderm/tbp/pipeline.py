"""Steps shared by ``tbp train``, ``screen-tbp`` and ``tbp eval``: encode tiles, measurements, UD, flags."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from panderm.errors import InputError
from panderm.io import atomic_path, file_stamp
from panderm.tbp.inputs import LesionTable

IMAGE_MEASURES_CACHE = "image_measures.csv"


def encode_lesions(table: LesionTable, encoder, work: Path, *, precision: str = "auto", batch_size: int = 32,
                   device: str | None = None, progress: bool = True) -> np.ndarray:
    """Encoder features for every row of ``table.df``; unreadable tiles move to ``table.skipped``.

    Uses :func:`panderm.extract.extract_features` (resumable shards, bf16 where fast) on a
    CSV of absolute tile paths in ``work``; rows naming the same tile share its features.

    Returns:
        float32 (N, D), row i belongs to ``table.df`` row i (after the skips).
    """
    from panderm.extract import extract_features

    work.mkdir(parents=True, exist_ok=True)
    if table.df.empty:
        raise InputError("no lesion tiles left to encode", hint="see skipped.csv for why each was left out")
    paths = table.df["path"].drop_duplicates()
    listing = work / "tiles.csv"
    with atomic_path(listing) as tmp:
        pd.DataFrame({"image": paths}).to_csv(tmp, index=False)
    # Paths are absolute (LesionTable resolves them), so no --root: any working directory works.
    res = extract_features(listing, work / "features", model=encoder, root=None, precision=precision,
                           batch_size=batch_size, device=device, progress=progress, overwrite=True)
    X = np.load(res.features_path)
    index = pd.read_csv(res.index_path, dtype=str)["image"].tolist()
    row_of = {p: i for i, p in enumerate(index)}
    reasons = {}
    if res.skipped_path and res.skipped_path.is_file():
        sk = pd.read_csv(res.skipped_path, dtype=str)
        reasons = dict(zip(sk["image"], sk["reason"])) if len(sk) else {}
    bad = ~table.df["path"].map(lambda p: p in row_of)
    if bad.any():
        rows = table.df[bad]
        table.skip(rows, [_encode_skip_reason(reasons.get(p)) for p in rows["path"]])
    return X[[row_of[p] for p in table.df["path"]]].astype(np.float32)


def _encode_skip_reason(reason: str | None) -> str:
    """``skipped.csv``'s reason for a tile the encoder left out (a strip or tiny image is readable, just not usable)."""
    if reason is None:
        return "unreadable image: not encoded"
    usable = reason.startswith(("unusual shape", "image too small"))
    return f"{'not usable' if usable else 'unreadable image'}: {reason}"


def image_measurements(table: LesionTable, work: Path, progress: bool = True) -> pd.DataFrame:
    """``--measure-from-image`` columns for every row of ``table.df`` (cached in ``work``)."""
    from panderm.tbp.image_measures import IMAGE_MEASUREMENTS, measure_images

    cache = work / IMAGE_MEASURES_CACHE
    known = pd.DataFrame()
    if cache.is_file():
        known = pd.read_csv(cache, dtype={"image": str, "stamp": str}, float_precision="round_trip")
        known = known.drop_duplicates("image").set_index("image")
    paths = table.df["path"].unique()
    stamps = {p: file_stamp(p) for p in paths}
    # A tile replaced under the same name (other size/mtime) is measured again.
    todo = [p for p in paths if p not in known.index or known.at[p, "stamp"] != stamps[p]]
    masks = None
    if "mask" in table.df.columns:
        mask_of = dict(zip(table.df["path"], table.df["mask"]))
        masks = [mask_of.get(p) if isinstance(mask_of.get(p), str) and mask_of.get(p) else None for p in todo]
    if todo:
        new = measure_images(todo, masks=masks, progress=progress).set_index("image")
        new["stamp"] = [stamps[p] for p in new.index]
        known = pd.concat([known.drop(index=[p for p in todo if p in known.index]), new]) if len(known) else new
        work.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache) as tmp:
            known.reset_index().to_csv(tmp, index=False, float_format="%.17g")  # exact round trip
    return known.loc[table.df["path"], list(IMAGE_MEASUREMENTS) + ["measure_status"]].reset_index(drop=True)


def attach_image_measurements(table: LesionTable, work: Path, progress: bool = True) -> None:
    """Replace the measurement columns of ``table.df`` by image-derived ones (warns about failures)."""
    from panderm.tbp.image_measures import IMAGE_MEASUREMENTS

    m = image_measurements(table, work, progress)
    for col in IMAGE_MEASUREMENTS:
        table.df[col] = m[col].to_numpy()
    bad = m["measure_status"] != "ok"
    if bad.any():
        table.warnings.append(f"{int(bad.sum())} tile(s) could not be measured (e.g. "
                              f"{table.df.loc[bad, 'image'].iloc[0]}: {m.loc[bad, 'measure_status'].iloc[0]}); "
                              "their measurements are imputed")


def patient_offsets(patient_ids: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Stable order grouping rows by patient, and the ragged offsets of that order."""
    codes, uniques = pd.factorize(patient_ids, sort=True)
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes, minlength=len(uniques))
    return order, np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def ugly_duckling_columns(patient_ids: pd.Series, X: np.ndarray, *, k: float = 1.5, min_lesions: int = 4,
                          metric: str = "euclidean",
                          include: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """UD distance, outlier flag and the patient's fence, per row (in the rows' own order).

    For a patient with fewer than ``min_lesions`` lesions the test does not run: distance and
    fence are NaN (an empty cell, "n/a" in reports) and no lesion is an outlier. ``include``
    (boolean per row) limits the comparison to those rows, e.g. the assessable tiles: the others
    get NaN and count towards no patient's lesions.
    """
    import panderm_kernels

    if include is not None and not np.asarray(include, bool).all():
        keep = np.asarray(include, bool)
        d, o, f = np.full(len(X), np.nan), np.zeros(len(X), bool), np.full(len(X), np.nan)
        if keep.any():
            d[keep], o[keep], f[keep] = ugly_duckling_columns(pd.Series(np.asarray(patient_ids)[keep]), X[keep],
                                                              k=k, min_lesions=min_lesions, metric=metric)
        return d, o, f

    order, offsets = patient_offsets(patient_ids)
    dist, out, fence = panderm_kernels.ugly_duckling(X[order], offsets, k=k, min_lesions=min_lesions,
                                                     metric=metric, return_fence=True)
    patient_of_sorted = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    d, o, f = np.empty_like(dist), np.empty_like(out), np.empty(len(order))
    d[order], o[order], f[order] = dist, out, fence[patient_of_sorted]
    too_few = np.diff(offsets)[patient_of_sorted] < min_lesions
    not_run = np.empty(len(order), bool)
    not_run[order] = too_few
    d[not_run], o[not_run], f[not_run] = np.nan, False, np.nan
    return d, o, f


#: How ``rank`` orders a patient's lesions (shown on every report, documented in docs/tbp.md).
RANKING_SENTENCE = (
    "Lesions are ranked by the risk head's probability, highest first (rank 1 = highest risk); ties are "
    "broken by the measurement model's score, then by the ugly-duckling distance relative to the patient's fence.")


NOTE_SEPARATOR = " | "  # between modules in ``not_run_reason``


#: The ugly-duckling note of a tile that failed a gate (it is left out of its patient's comparison).
UD_NOT_ASSESSABLE = "ugly duckling: left out of the comparison, the tile is not assessable"


def module_notes(df: pd.DataFrame, thresholds: dict, min_lesions: int, ml_reason: str | None = None) -> pd.Series:
    """Why a module did not run for each lesion ("" when every module ran), e.g. the UD lesion count.

    One ``"<module>: <reason>"`` per module that did not run, joined by :data:`NOTE_SEPARATOR`.
    With an ``assessable`` column, lesion counts are of assessable tiles only.

    Args:
        df: Scored lesions (``patient_id``, ``ud_distance``, ``ml_score``).
        thresholds: The bundle's thresholds (``ml`` None: no measurement model).
        min_lesions: The ugly-duckling test's minimum lesion count per patient.
        ml_reason: Why the measurement model is off for this run, when it is.
    """
    ok = df["assessable"].astype(bool) if "assessable" in df.columns else pd.Series(True, index=df.index)
    counts = ok.groupby(df["patient_id"]).transform("sum")
    refused = (~ok).groupby(df["patient_id"]).transform("sum")
    notes = []
    for n, r, d, m, a in zip(counts, refused, df["ud_distance"], df["ml_score"], ok):
        parts = []
        if not a:
            parts.append(UD_NOT_ASSESSABLE)
        elif pd.isna(d):
            has = f"{int(n)} assessable lesions ({int(r)} not assessable)" if r else str(int(n))
            parts.append(f"ugly duckling: needs >= {min_lesions} lesions per patient; this patient has {has}")
        if pd.isna(m):
            parts.append("measurement model: " + (ml_reason or ("no measurement model" if thresholds.get("ml") is None
                                                                else "no measurements for this lesion")))
        notes.append(NOTE_SEPARATOR.join(parts))
    return pd.Series(notes, index=df.index, dtype=object)


def flag_and_rank(df: pd.DataFrame, thresholds: dict) -> pd.DataFrame:
    """Add ``flag_*``, ``flagged``, ``suspicion`` and ``rank`` (see :data:`RANKING_SENTENCE`).

    A lesion is flagged when any module passes its threshold (UD: distance above the patient's
    fence). ``rank`` (1 = highest risk within the patient) orders by the risk head's probability,
    then the measurement model's score, then ``ud_distance / ud_fence``; a module that did not
    run sorts last on its key. ``suspicion`` (the largest score-to-threshold ratio) is kept for the
    metrics only; it does not order anything.

    With an ``assessable`` column, a not-assessable lesion is never flagged and has no rank and no
    suspicion (empty cells; ``rank`` is then a nullable integer); ranks count assessable lesions only.
    """
    if "assessable" in df.columns and not df["assessable"].astype(bool).all():
        ok = df["assessable"].astype(bool).to_numpy()
        out = df.copy()
        part = flag_and_rank(df[ok], thresholds) if ok.any() else None
        for col in ("flag_risk", "flag_ud", "flag_ml", "flagged"):
            out[col] = False
            if part is not None:
                out.loc[ok, col] = part[col].to_numpy()
            out[col] = out[col].astype(bool)
        out["suspicion"] = np.nan
        out["rank"] = pd.array([pd.NA] * len(out), dtype="Int64")
        if part is not None:
            out.loc[ok, "suspicion"] = part["suspicion"].to_numpy()
            out.loc[ok, "rank"] = part["rank"].to_numpy()
        return out
    df = df.copy()
    df["flag_risk"] = df["risk_score"] >= thresholds["risk"]
    df["flag_ud"] = df["ud_outlier"].astype(bool)
    ml_thr = thresholds.get("ml")
    df["flag_ml"] = (df["ml_score"] >= ml_thr) if ml_thr is not None else False
    df["flag_ml"] = df["flag_ml"].fillna(False).astype(bool)
    df["flagged"] = df["flag_risk"] | df["flag_ud"] | df["flag_ml"]
    ud_ratio = (df["ud_distance"] / df["ud_fence"]).replace([np.inf, -np.inf], np.nan)
    ratios = [df["risk_score"] / max(thresholds["risk"], 1e-12), ud_ratio]
    if ml_thr is not None:
        ratios.append(df["ml_score"] / max(ml_thr, 1e-12))
    df["suspicion"] = pd.concat(ratios, axis=1).replace([np.inf, -np.inf], np.nan).max(axis=1, skipna=True)
    key = pd.DataFrame({"p": df["patient_id"], "r": -df["risk_score"].fillna(-np.inf),
                        "m": -df["ml_score"].fillna(-np.inf), "u": -ud_ratio.fillna(-np.inf)})
    order = key.sort_values(["p", "r", "m", "u"], kind="stable").index
    df.loc[order, "rank"] = df.loc[order].groupby("patient_id").cumcount().to_numpy() + 1
    df["rank"] = df["rank"].astype(int)
    return df
