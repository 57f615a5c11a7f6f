"""TBP screening metrics: partial AUROC, sensitivity thresholds and per-module tables.

Labels are 1 = malignant, 0 = benign (bool or int accepted). A lesion is flagged when any
module (risk head ``CLS``, ugly duckling ``UD``, measurement model ``ML``) is positive; the
per-head table follows PanDerm Extended Data Table 10. All returned scalars are plain
Python ``float``/``int``; undefined quantities are ``nan`` (see :func:`panderm.io.jsonable`).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_fscore_support

MODULES = ("UD", "CLS", "ML", "CMB", "CMB_ML")
TABLE_COLUMNS = (
    "module", "benign_precision", "benign_recall", "benign_f1", "malignant_precision",
    "malignant_recall", "malignant_f1", "n_flagged", "n_malignant_flagged", "n_benign_flagged",
)


def _labels(y) -> np.ndarray:
    """Return ``y`` as a 1-D int array of 0/1, raising ValueError on other values."""
    arr = np.asarray(y).astype(float).ravel()
    if not np.all((arr == 0) | (arr == 1)):
        raise ValueError("labels must be 0/1 (benign/malignant) or bool")
    return arr.astype(int)


def _pair(y, score) -> tuple[np.ndarray, np.ndarray]:
    y = _labels(y)
    s = np.asarray(score, dtype=float).ravel()
    if s.shape != y.shape:
        raise ValueError(f"y and score lengths differ: {y.size} vs {s.size}")
    if np.isnan(s).any():
        raise ValueError("score contains NaN")
    return y, s


def partial_auroc(y, score, min_tpr: float = 0.80) -> float:
    """ISIC 2024 partial AUROC: area under the ROC curve above ``TPR = min_tpr``, in ``[0, 1 − min_tpr]``.

    Computed as the challenge's official scoring does: labels and scores are flipped (so the
    high-TPR region becomes a low-FPR one), ``roc_auc_score(..., max_fpr=1 − min_tpr)`` gives the
    McClish-standardised partial AUC, and that is mapped back to the raw area::

        v_gt, v_pred = 1 − y, −score;  max_fpr = 1 − min_tpr
        scaled = roc_auc_score(v_gt, v_pred, max_fpr=max_fpr)
        pauc = 0.5·max_fpr² + (max_fpr − 0.5·max_fpr²) / (1 − 0.5) · (scaled − 0.5)

    Perfect ranking gives ``1 − min_tpr`` (0.2), a random one about ``(1 − min_tpr)² / 2`` (0.02).
    It equals ∫ max(TPR(FPR) − min_tpr, 0) dFPR over the linearly interpolated ROC curve.
    ``nan`` when only one class is present.
    """
    from sklearn.metrics import roc_auc_score

    y, s = _pair(y, score)
    if not 0.0 <= min_tpr < 1.0:
        raise ValueError("min_tpr must be in [0, 1)")
    if y.size == 0 or y.min() == y.max():
        return float("nan")
    max_fpr = 1.0 - min_tpr
    scaled = roc_auc_score(np.abs(y - 1), -s, max_fpr=max_fpr)
    return float(0.5 * max_fpr**2 + (max_fpr - 0.5 * max_fpr**2) / (1.0 - 0.5) * (scaled - 0.5))


def sensitivity_at(y, score, t: float) -> float:
    """Sensitivity (recall of malignant) of the rule ``score >= t``; ``nan`` without positives."""
    y, s = _pair(y, score)
    n_pos = int(y.sum())
    if n_pos == 0:
        return float("nan")
    return float(int(((s >= t) & (y == 1)).sum()) / n_pos)


def threshold_for_sensitivity(y, score, target: float = 0.90) -> float:
    """Largest threshold ``t`` whose rule ``score >= t`` reaches sensitivity ``>= target``.

    Candidates are the observed scores, so tied scores are always flagged together.

    Raises:
        ValueError: if ``y`` has no positives or ``target`` is not in (0, 1].
    """
    y, s = _pair(y, score)
    n_pos = int(y.sum())
    if n_pos == 0:
        raise ValueError("threshold_for_sensitivity needs at least one positive label")
    if not 0.0 < target <= 1.0:
        raise ValueError("target must be in (0, 1]")
    needed = math.ceil(target * n_pos - 1e-9)  # tolerate float noise in target * n_pos
    uniq = np.unique(s)[::-1]  # descending thresholds
    tp = np.array([int(((s >= t) & (y == 1)).sum()) for t in uniq])
    return float(uniq[int(np.argmax(tp >= needed))])


def combine_flags(flag_risk, flag_ud, flag_ml=None) -> dict[str, np.ndarray]:
    """Per-module boolean flags: ``CLS``, ``UD``, ``ML``, ``CMB = CLS|UD``, ``CMB_ML = CLS|UD|ML``.

    ``ML`` and ``CMB_ML`` are omitted when ``flag_ml`` is None.
    """
    risk = np.asarray(flag_risk, dtype=bool).ravel()
    ud = np.asarray(flag_ud, dtype=bool).ravel()
    if risk.shape != ud.shape:
        raise ValueError("flag arrays must have the same length")
    out = {"UD": ud, "CLS": risk, "CMB": risk | ud}
    if flag_ml is not None:
        ml = np.asarray(flag_ml, dtype=bool).ravel()
        if ml.shape != risk.shape:
            raise ValueError("flag arrays must have the same length")
        out["ML"] = ml
        out["CMB_ML"] = risk | ud | ml
    return {m: out[m] for m in MODULES if m in out}


def module_table(y, flags: dict) -> pd.DataFrame:
    """Benign/malignant precision, recall and F1 per prediction head (flagged = malignant).

    Rows follow :data:`MODULES` order (only heads present in ``flags``); see ``TABLE_COLUMNS``.
    """
    y = _labels(y)
    rows = []
    for m in MODULES:
        if m not in flags:
            continue
        f = np.asarray(flags[m], dtype=bool).ravel()
        if f.shape != y.shape:
            raise ValueError(f"flags[{m!r}] length {f.size} != {y.size}")
        p, r, f1, _ = precision_recall_fscore_support(
            y, f.astype(int), labels=[0, 1], zero_division=0)
        rows.append({
            "module": m,
            "benign_precision": float(p[0]), "benign_recall": float(r[0]),
            "benign_f1": float(f1[0]),
            "malignant_precision": float(p[1]), "malignant_recall": float(r[1]),
            "malignant_f1": float(f1[1]),
            "n_flagged": int(f.sum()), "n_malignant_flagged": int((f & (y == 1)).sum()),
            "n_benign_flagged": int((f & (y == 0)).sum()),
        })
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


def table_markdown(table: pd.DataFrame) -> str:
    """Markdown table in the paper's layout (Extended Data Table 10), 3 decimals."""
    lines = [
        "| Prediction head | Benign P | R | F1 | Malignant P | R | F1 | flagged |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    keys = ("benign_precision", "benign_recall", "benign_f1",
            "malignant_precision", "malignant_recall", "malignant_f1")
    for _, row in table.iterrows():
        vals = " | ".join(f"{float(row[k]):.3f}" for k in keys)
        lines.append(f"| {row['module']} | {vals} | {int(row['n_flagged'])} |")
    return "\n".join(lines) + "\n"


def _screen_frame(df: pd.DataFrame) -> pd.DataFrame:
    missing = {"patient_id", "label", "flagged"} - set(df.columns)
    if missing:
        raise ValueError(f"missing columns: {sorted(missing)}")
    out = df[["patient_id", "label", "flagged"]].copy()
    out["label"] = _labels(out["label"].to_numpy())
    out["flagged"] = out["flagged"].astype(bool)
    return out


def per_patient_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per patient: lesion, malignant, flagged and benign-flagged counts.

    ``malignant_detected`` is True/False, or None when the patient has no malignant lesion.
    """
    d = _screen_frame(df)
    d["mal_flag"] = (d["label"] == 1) & d["flagged"]
    d["ben_flag"] = (d["label"] == 0) & d["flagged"]
    g = d.groupby("patient_id", sort=True)
    t = pd.DataFrame({
        "n_lesions": g.size(), "n_malignant": g["label"].sum(),
        "n_flagged": g["flagged"].sum(), "n_benign_flagged": g["ben_flag"].sum(),
        "n_malignant_flagged": g["mal_flag"].sum(),
    }).astype(int)
    t["malignant_detected"] = [
        bool(k > 0) if n > 0 else None
        for n, k in zip(t["n_malignant"], t["n_malignant_flagged"])
    ]
    t["malignant_detected"] = t["malignant_detected"].astype(object)
    t = t.drop(columns="n_malignant_flagged").reset_index()
    return t[["patient_id", "n_lesions", "n_malignant", "n_flagged", "n_benign_flagged",
              "malignant_detected"]]


def screening_summary(df: pd.DataFrame) -> dict:
    """Lesion- and patient-level screening summary of a ``patient_id, label, flagged`` frame.

    ``patient_sensitivity`` is the fraction of patients with ≥1 malignant lesion in whom at
    least one malignant lesion is flagged. Undefined sensitivities are ``nan``.
    """
    d = _screen_frame(df)
    pp = per_patient_table(d)
    n_mal = int(d["label"].sum())
    mal_flagged = int(((d["label"] == 1) & d["flagged"]).sum())
    with_mal = pp[pp["n_malignant"] > 0]
    detected = int(sum(bool(v) for v in with_mal["malignant_detected"]))
    ben = pp["n_benign_flagged"].to_numpy(dtype=float)
    return {
        "n_lesions": len(d),
        "n_malignant": n_mal,
        "n_patients": len(pp),
        "n_patients_with_malignant": len(with_mal),
        "lesion_sensitivity": float(mal_flagged / n_mal) if n_mal else float("nan"),
        "patient_sensitivity": float(detected / len(with_mal)) if len(with_mal) else float("nan"),
        "patients_detected": detected,
        "benign_flagged_total": int(ben.sum()),
        "benign_flagged_per_patient_mean": float(ben.mean()) if ben.size else float("nan"),
        "benign_flagged_per_patient_median": float(np.median(ben)) if ben.size else float("nan"),
        "flagged_total": int(d["flagged"].sum()),
    }
