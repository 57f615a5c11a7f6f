"""Per-lesion sequence evaluation: when is a melanoma first called correctly?

Implements the evaluation of the paper's early melanoma detection study (reader
study 1, Fig. 2e): out-of-fold predictions are made for every image of each
lesion's sequence of dermoscopic images; for each melanoma the first time point
whose call is correct is recorded, and a melanoma never called correctly counts
as a failed detection.

Input CSV columns:

* ``lesion_id``: lesion identifier (any string).
* ``timepoint``: orders the images of a lesion: integers (visit numbers) or
  ISO dates (``2021-03-14``). Must be unique within a lesion.
* ``prob_malignant``: predicted probability of melanoma / malignancy in [0, 1].
* ``label``: 1 = melanoma (malignant lesion), 0 = benign; constant per lesion.

A call is positive when ``prob_malignant >= threshold``. Time points are
reported as 1-based positions in the lesion's sequence (``1`` = first image),
alongside the original ``timepoint`` value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from panderm.errors import InputError
from panderm.io import atomic_path, atomic_write_json

REQUIRED_COLUMNS = ("lesion_id", "timepoint", "prob_malignant", "label")


@dataclass
class SequenceResult:
    """Outcome of :func:`evaluate_sequences`.

    Attributes:
        per_lesion: One row per lesion (see ``per_lesion.csv``).
        summary: Overall numbers (see ``summary.json``); undefined values are None.
        out: Output folder, or None when nothing was written.
        files: Paths of the written files.
    """

    per_lesion: pd.DataFrame
    summary: dict
    out: Path | None = None
    files: list[Path] = field(default_factory=list)


# --------------------------------------------------------------------------- reading


def _parse_timepoints(values: pd.Series, path: Path) -> pd.Series:
    """One lesion's time points: all numbers, else all ISO dates; anything else is an error."""
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().all():
        return numeric
    try:
        dates = pd.to_datetime(values.astype(str), format="ISO8601", errors="raise")
    except (ValueError, TypeError):
        bad = values[numeric.isna()].astype(str).iloc[0]
        raise InputError(f"{path}: column 'timepoint' has value {bad!r} that is neither a number nor an ISO date",
                         hint="use visit numbers (1, 2, 3, ...) or dates like 2021-03-14") from None
    return dates


def read_predictions(path: str | Path, threshold: float = 0.5) -> pd.DataFrame:
    """Read and validate a per-image predictions CSV.

    Args:
        path: CSV with the columns of :data:`REQUIRED_COLUMNS`.
        threshold: Only used to validate the range (must lie in [0, 1]).

    Returns:
        The rows sorted by lesion and time, with ``timepoint_key`` (sortable
        parsed time point) and an int ``label``.

    Raises:
        InputError: Missing file or columns, empty file, non-numeric or
            out-of-range probabilities, labels other than 0/1 or varying within a
            lesion, duplicate time points within a lesion.
    """
    path = Path(path)
    if not (0.0 <= threshold <= 1.0):
        raise InputError(f"threshold {threshold} is outside [0, 1]")
    df = _read_predictions_csv(path)
    df = df.assign(prob_malignant=_probabilities(df, path), label=_lesion_labels(df, path))
    # Time points are parsed per lesion (one lesion may use visit numbers, another dates);
    # the key is the position within the lesion's time-ordered sequence.
    df["timepoint_key"] = 0.0
    for idx in df.groupby("lesion_id", sort=False).groups.values():
        parsed = _parse_timepoints(df.loc[idx, "timepoint"], path)
        df.loc[idx, "timepoint_key"] = parsed.rank(method="dense").to_numpy(dtype=float)
    dup = df.duplicated(["lesion_id", "timepoint_key"])
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise InputError(f"{path}: lesion {df['lesion_id'].iloc[i]!r} has time point {df['timepoint'].iloc[i]!r} "
                         f"twice (line {i + 2})", hint="each lesion needs one prediction per time point")
    return df.sort_values(["lesion_id", "timepoint_key"], kind="stable").reset_index(drop=True)


def _read_predictions_csv(path: Path) -> pd.DataFrame:
    """The CSV as read, with every required column and a lesion id and time point on each row."""
    if not path.is_file():
        raise InputError(f"predictions file not found: {path}")
    try:
        df = pd.read_csv(path, dtype={"lesion_id": str, "timepoint": str})
    except pd.errors.EmptyDataError:
        raise InputError(f"{path} is empty", hint=f"expected a CSV with columns {', '.join(REQUIRED_COLUMNS)}") \
            from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is not a readable CSV: {str(exc).splitlines()[0]}") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"{path} lacks column(s) {', '.join(missing)} (has: {', '.join(map(str, df.columns))})",
                         hint=f"expected columns {', '.join(REQUIRED_COLUMNS)}")
    if df.empty:
        raise InputError(f"{path} has a header but no rows")
    for col in ("lesion_id", "timepoint"):
        if df[col].isna().any():
            row = int(df.index[df[col].isna()][0]) + 2
            raise InputError(f"{path}: column '{col}' is empty on line {row}")
    return df


def _probabilities(df: pd.DataFrame, path: Path) -> pd.Series:
    """``prob_malignant`` as floats, all in [0, 1]."""
    prob = pd.to_numeric(df["prob_malignant"], errors="coerce")
    if prob.isna().any():
        i = int(np.flatnonzero(prob.isna().to_numpy())[0])
        raise InputError(f"{path}: column 'prob_malignant' has non-numeric value {df['prob_malignant'].iloc[i]!r} "
                         f"on line {i + 2}", hint="probabilities must be numbers in [0, 1]")
    if ((prob < 0) | (prob > 1)).any():
        i = int(np.flatnonzero(((prob < 0) | (prob > 1)).to_numpy())[0])
        raise InputError(f"{path}: prob_malignant {prob.iloc[i]} on line {i + 2} is outside [0, 1]")
    return prob.astype(float)


def _lesion_labels(df: pd.DataFrame, path: Path) -> pd.Series:
    """``label`` as ints, each 0 or 1 and the same at every time point of a lesion."""
    label = pd.to_numeric(df["label"], errors="coerce")
    bad = label.isna() | ~label.isin([0, 1])
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(f"{path}: label {df['label'].iloc[i]!r} on line {i + 2} is not 0 or 1",
                         hint="label: 1 = melanoma / malignant lesion, 0 = benign")
    label = label.astype(int)
    varying = label.groupby(df["lesion_id"]).nunique()
    if (varying > 1).any():
        names = ", ".join(map(str, varying.index[varying > 1][:5]))
        raise InputError(f"{path}: label varies within lesion(s) {names}",
                         hint="the label is the lesion's diagnosis and must be the same at every time point")
    return label


# --------------------------------------------------------------------------- evaluation


def _first(mask: np.ndarray) -> int | None:
    hits = np.flatnonzero(mask)
    return int(hits[0]) if hits.size else None


def _lesion_rows(df: pd.DataFrame, threshold: float) -> pd.DataFrame:
    rows = []
    for lesion, g in df.groupby("lesion_id", sort=True):
        label = int(g["label"].iloc[0])
        calls = g["prob_malignant"].to_numpy() >= threshold
        tps = g["timepoint"].tolist()
        first = _first(calls)  # first positive call: detection for melanoma, false alarm for benign
        melanoma = label == 1
        rows.append({
            "lesion_id": lesion,
            "label": label,
            "n_timepoints": len(g),
            "first_timepoint": tps[0],
            "last_timepoint": tps[-1],
            "max_prob": float(g["prob_malignant"].max()),
            "detected": bool(first is not None) if melanoma else None,
            "first_detection_index": (first + 1 if first is not None else None) if melanoma else None,
            "first_detection_timepoint": (tps[first] if first is not None else None) if melanoma else None,
            "false_alarm": bool(first is not None) if not melanoma else None,
            "first_false_alarm_index": (first + 1 if first is not None else None) if not melanoma else None,
            "first_false_alarm_timepoint": (tps[first] if first is not None else None) if not melanoma else None,
            "n_correct_images": int((calls == melanoma).sum()),
        })
    out = pd.DataFrame(rows)
    for col in ("first_detection_index", "first_false_alarm_index"):
        out[col] = out[col].astype("Int64")
    return out


def _num(x) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x


def summarize(per_lesion: pd.DataFrame, n_images: int, n_correct_images: int, threshold: float) -> dict:
    """Overall numbers from the per-lesion table.

    Returns:
        Dict with counts, ``detected_at_first_timepoint`` (fraction of melanomas
        called at their first image), ``sensitivity`` (fraction called at any
        time point), mean/median 1-based index of first detection (over detected
        melanomas), ``specificity`` (fraction of benign lesions with no false
        alarm) and per-image ``accuracy``. Undefined values are None.
    """
    mel = per_lesion[per_lesion["label"] == 1]
    ben = per_lesion[per_lesion["label"] == 0]
    det = mel[mel["detected"].astype(bool)] if len(mel) else mel
    first_idx = det["first_detection_index"].astype(float) if len(det) else pd.Series(dtype=float)
    n_mel = len(mel)
    return {
        "threshold": threshold,
        "n_lesions": len(per_lesion),
        "n_images": int(n_images),
        "n_melanomas": int(n_mel),
        "n_benign": len(ben),
        "n_detected": len(det),
        "n_detected_at_first_timepoint": int((first_idx == 1).sum()),
        "detected_at_first_timepoint": _num((first_idx == 1).sum() / n_mel) if n_mel else None,
        "sensitivity": _num(len(det) / n_mel) if n_mel else None,
        "mean_first_detection_index": _num(first_idx.mean()) if len(det) else None,
        "median_first_detection_index": _num(first_idx.median()) if len(det) else None,
        "n_false_alarm_lesions": int(ben["false_alarm"].astype(bool).sum()) if len(ben) else 0,
        "specificity": _num(1 - ben["false_alarm"].astype(bool).mean()) if len(ben) else None,
        "accuracy_per_image": _num(n_correct_images / n_images) if n_images else None,
        "time_index": "1-based position in the lesion's time-ordered sequence",
    }


def sequence_plot_png(path: str | Path, per_lesion: pd.DataFrame, title: str | None = None) -> Path:
    """Fig. 2e-style plot of melanoma sequences.

    x = melanoma lesions sorted by sequence length; bar = number of time points;
    a dot at the first correctly detected time point; lesions never detected get
    a red cross below ``y = 0``.
    """
    from panderm.eval.plots import new_figure, save_png

    mel = per_lesion[per_lesion["label"] == 1].copy()
    mel = mel.sort_values(["n_timepoints", "lesion_id"], kind="stable").reset_index(drop=True)
    n = len(mel)
    fig = new_figure(min(max(6.0, 0.22 * n + 2.0), 24.0), 4.2)
    ax = fig.add_subplot()
    if n == 0:
        ax.text(0.5, 0.5, "no melanoma lesions in the input", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return save_png(fig, path)
    x = np.arange(n)
    lengths = mel["n_timepoints"].to_numpy()
    ax.bar(x, lengths, width=0.8, color="#c9d6e8", edgecolor="#7a8fa8", linewidth=0.5, label="sequence length")
    detected = mel["detected"].astype(bool).to_numpy()
    idx = mel["first_detection_index"].astype(float).to_numpy()
    ax.scatter(x[detected], idx[detected], s=28, color="#1f5fa8", zorder=3, label="first correct melanoma call")
    if (~detected).any():
        ax.scatter(x[~detected], np.full((~detected).sum(), -0.5), s=30, marker="x", color="#c0392b", zorder=3,
                   label="never detected")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xlim(-0.7, n - 0.3)
    ax.set_ylim(-1.1, lengths.max() + 0.8)
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_xticks(x)
    ax.set_xticklabels(mel["lesion_id"].astype(str), rotation=90, fontsize=7 if n <= 40 else 5)
    ax.set_xlabel("melanoma lesion (sorted by sequence length)")
    ax.set_ylabel("time point (sequence length)")
    n_det = int(detected.sum())
    ax.set_title(title or f"Earliest correct melanoma call: {n_det}/{n} detected, "
                 f"{int((idx == 1).sum())} at the first time point", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", frameon=False)
    return save_png(fig, path)


def evaluate_sequences(predictions_csv: str | Path, out: str | Path | None = None,
                       threshold: float = 0.5) -> SequenceResult:
    """Evaluate per-lesion image sequences: the earliest correct melanoma call.

    Args:
        predictions_csv: Per-image predictions (see the module docstring).
        out: Folder for ``per_lesion.csv``, ``summary.json`` and
            ``sequence_plot.png`` (written atomically); None writes nothing.
        threshold: A call is malignant when ``prob_malignant >= threshold``.

    Returns:
        A :class:`SequenceResult`.

    Raises:
        InputError: A malformed predictions file (see :func:`read_predictions`).
    """
    df = read_predictions(predictions_csv, threshold)
    per_lesion = _lesion_rows(df, threshold)
    correct = int(((df["prob_malignant"] >= threshold).astype(int) == df["label"]).sum())
    summary = summarize(per_lesion, len(df), correct, threshold)
    summary["predictions"] = str(predictions_csv)
    result = SequenceResult(per_lesion=per_lesion, summary=summary)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(out / "per_lesion.csv") as tmp:
            per_lesion.to_csv(tmp, index=False)
        atomic_write_json(out / "summary.json", summary)
        sequence_plot_png(out / "sequence_plot.png", per_lesion)
        result.out = out
        result.files = [out / "per_lesion.csv", out / "summary.json", out / "sequence_plot.png"]
    return result
