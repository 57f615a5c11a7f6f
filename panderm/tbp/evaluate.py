"""``panderm tbp eval``: screening metrics of a bundle on labelled lesions (paper: Extended Data Table 10).

Every metric is computed against the pathology ``label`` (1 = malignant), whatever the risk head learnt.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from panderm.errors import InputError
from panderm.io import atomic_path, atomic_write_json, atomic_write_text


def auroc_or_none(y, s) -> float | None:
    """AUROC over the non-NaN scores; None when it is undefined (no scores, or one class)."""
    from sklearn.metrics import roc_auc_score

    ok = ~np.isnan(s)
    if not ok.any() or len(set(y[ok])) < 2:
        return None
    return float(roc_auc_score(y[ok], s[ok]))


def validation_metrics(df: pd.DataFrame) -> dict:
    """Module table, screening summary, AUROC and partial AUROC of a scored, flagged lesion table."""
    from panderm.io import jsonable
    from panderm.tbp.metrics import (
        combine_flags,
        module_table,
        partial_auroc,
        screening_summary,
        table_markdown,
    )

    y = df["label"].to_numpy().astype(int)
    has_ml = df["ml_score"].notna().any()
    flags = combine_flags(df["flag_risk"].to_numpy(), df["flag_ud"].to_numpy(),
                          df["flag_ml"].to_numpy() if has_ml else None)
    table = module_table(y, flags)
    scores = {"risk_score": df["risk_score"].to_numpy(float), "ud_distance": df["ud_distance"].to_numpy(float),
              "suspicion": df["suspicion"].to_numpy(float)}
    if has_ml:
        scores["ml_score"] = df["ml_score"].to_numpy(float)
    out = {"summary": screening_summary(df[["patient_id", "label", "flagged"]]),
           "modules": table.to_dict(orient="records"), "table_markdown": table_markdown(table),
           "auroc": {k: auroc_or_none(y, v) for k, v in scores.items()},
           "partial_auroc_tpr80": {k: partial_auroc(y, np.nan_to_num(v, nan=-1.0)) for k, v in scores.items()}}
    out["isic2024_pauc"] = out["partial_auroc_tpr80"]["risk_score"]  # the challenge metric of the submitted target
    return jsonable(out)


def risk_target_auroc(df: pd.DataFrame, target: str) -> dict:
    """The column the risk head learnt, and the risk score's AUROC against it (None when the table lacks it).

    The module table still scores the risk head against the pathology ``label``; this is the head's own task.
    """
    auroc = auroc_or_none(df[target].to_numpy().astype(int), df["risk_score"].to_numpy(float)) \
        if target in df.columns else None
    return {"column": target, "auroc": auroc}


def evaluate_tbp(bundle: str | Path | None, lesions: str | Path, out: str | Path, *, root: str | Path | None = None,
                 fmt: str = "auto", images: str | Path | None = None, split: str | None = None,
                 model: str | None = None, weights: str | Path | None = None, on_missing: str = "impute",
                 batch_size: int = 32, precision: str = "auto", device: str | None = None,
                 progress: bool = True) -> dict:
    """Screen labelled lesions and write ``metrics.json``, ``table10.csv/.md``, ``per_patient.csv``, ``lesions.csv``.

    Args:
        split: Evaluate only rows of this split (default: ``test`` when the CSV has a split column
            with test rows, else every row).

    Returns:
        The ``metrics.json`` content.
    """
    from panderm.tbp.bundle import load_bundle
    from panderm.tbp.inputs import read_input
    from panderm.tbp.metrics import per_patient_table
    from panderm.io import write_skipped_csv
    from panderm.tbp.inputs import SKIPPED_COLUMNS
    from panderm.tbp.screen import lesion_columns, score_lesions

    b = load_bundle(bundle)
    out = Path(out)
    table = read_input(lesions, fmt, root=root, images=images, cache=out / ".work" / "tiles")
    if "label" not in table.df.columns:
        raise InputError(f"{lesions} has no label column", hint="label: 1 = malignant, 0 = benign")
    if split is None and "split" in table.df.columns and (table.df["split"] == "test").any():
        split = "test"
    if split is not None:
        if "split" not in table.df.columns:
            raise InputError(f"{lesions} has no split column, so --split {split} cannot be applied")
        table.df = table.df[table.df["split"] == split].reset_index(drop=True)
        if table.df.empty:
            raise InputError(f"{lesions} has no readable rows with split '{split}'")
    df, _, warnings = score_lesions(table, b, out / ".work", model=model, weights=weights, on_missing=on_missing,
                                    batch_size=batch_size, precision=precision, device=device, progress=progress)
    metrics = validation_metrics(df)
    refused = ~df["assessable"].astype(bool)
    warnings = table.warnings + warnings
    if refused.any():  # they count as missed lesions above: say how many, and how many were malignant
        warnings.append(f"{int(refused.sum())} lesion(s) were not assessable (image gates) and count as not "
                        f"flagged, {int(df.loc[refused, 'label'].astype(int).sum())} of them malignant")
    metrics.update({"bundle": str(b.path), "lesions": str(lesions), "split": split, "n_skipped": len(table.skipped),
                    "n_not_assessable": int(refused.sum()),
                    "n_not_assessable_malignant": int(df.loc[refused, "label"].astype(int).sum()),
                    "ood_gate": None if b.ood_gate is None else b.ood_gate.info,
                    "thresholds": b.thresholds, "risk_target": risk_target_auroc(df, b.risk_target),
                    "warnings": warnings})
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "table10.csv") as tmp:
        pd.DataFrame(metrics["modules"]).to_csv(tmp, index=False)
    atomic_write_text(out / "table10.md", metrics["table_markdown"] + "\n")
    with atomic_path(out / "per_patient.csv") as tmp:
        per_patient_table(df[["patient_id", "label", "flagged"]]).to_csv(tmp, index=False)
    with atomic_path(out / "lesions.csv") as tmp:
        df.sort_values(["patient_id", "rank"])[lesion_columns(df)].to_csv(tmp, index=False)
    write_skipped_csv(out, table.skipped, SKIPPED_COLUMNS)
    atomic_write_json(out / "metrics.json", metrics)
    return metrics
