"""Outputs of a MIL run: pooled out-of-fold predictions, ``mil.json``/``folds.json`` and the written files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from panderm.eval.metrics import ALL_METRICS, bootstrap_ci
from panderm.io import atomic_path, atomic_write_json
from panderm.pathology.mil import MILData


def pooled_predictions(data: MILData, proba: np.ndarray, pred_fold: np.ndarray, n_bootstrap: int,
                        seed: int) -> tuple[pd.DataFrame, dict]:
    """The out-of-fold predictions table and its metrics with bootstrap CIs."""
    classes = data.classes
    labels = np.array([b.label for b in data.bags], dtype=object)
    metrics = bootstrap_ci(labels, proba, classes, n=n_bootstrap, seed=seed, metrics=ALL_METRICS)
    pred = np.asarray(classes, dtype=object)[proba.argmax(axis=1)]
    predictions = pd.DataFrame({"slide": [b.slide for b in data.bags], "case_id": [b.case for b in data.bags],
                                "fold": pred_fold, "true_label": labels, "predicted_label": pred})
    for j, c in enumerate(classes):
        predictions[f"prob_{c}"] = proba[:, j]
    return predictions, metrics


def run_summary(data: MILData, cfg: dict, folds: int, seed: int, device, n_bootstrap: int, fold_info: list[dict],
             explicit: bool, features: Path, csv: Path, metrics: dict) -> dict:
    """``mil.json``: the configuration, classes, folds, counts and pooled metrics of the run."""
    bags, classes, y = data.bags, data.classes, data.y
    patch = next((b.attrs["patch_size_level0"] for b in bags if "patch_size_level0" in b.attrs), None)
    return {
        "model": "gated-abmil", "config": {**cfg, "folds": folds, "seed": seed, "device": str(device),
                                           "in_dim": data.in_dim, "n_classes": len(classes),
                                           "patch_size_level0": patch, "n_bootstrap": n_bootstrap},
        "classes": classes, "folds": [{k: f[k] for k in ("fold", "n_train", "n_val", "n_test", "best_epoch",
                                                         "epochs_run", "stopped_early", "val_slides",
                                                         "test_slides")} for f in fold_info],
        "explicit_folds": explicit, "n_slides": len(bags), "n_cases": int(data.rows["case_id"].nunique()),
        "n_skipped": len(data.skipped),
        "class_counts": {str(c): int((y == i).sum()) for i, c in enumerate(classes)},
        "features": str(features), "csv": str(csv), "metrics": metrics, "warnings": data.warnings,
    }


def _folds_json(fold_info: list[dict]) -> dict:
    """``folds.json``: every fold's record (without slide lists) and the mean/SD of each metric over folds."""
    per_fold = {}
    for n in ALL_METRICS:
        vals = np.array([f["metrics"][n] for f in fold_info], dtype=float)
        vals = vals[np.isfinite(vals)]
        per_fold[n] = {"mean": float(vals.mean()) if len(vals) else None,
                       "sd": float(vals.std(ddof=1)) if len(vals) > 1 else None, "n_folds": len(vals)}
    return {"folds": [{k: v for k, v in f.items() if k not in ("val_slides", "test_slides")} for f in fold_info],
            "mean_sd": per_fold}


def write_run(out: Path, skipped: pd.DataFrame, predictions: pd.DataFrame, classes: list, metrics: dict,
               fold_info: list[dict], summary: dict, comparison: dict | None) -> list[Path]:
    """Write comparison.json, skipped.csv, oof.csv and the evaluation outputs (``metrics.json`` last)."""
    from panderm.eval.probe import write_eval_outputs

    if comparison is not None:
        from panderm.io import jsonable

        atomic_write_json(out / "comparison.json", jsonable(comparison))
    with atomic_path(out / "skipped.csv") as tmp:
        skipped.to_csv(tmp, index=False)
    with atomic_path(out / "oof.csv") as tmp:
        predictions.to_csv(tmp, index=False)
    files = write_eval_outputs(out, predictions, classes, metrics,
                               {"folds.json": _folds_json(fold_info), "mil.json": summary})
    extra = [out / "comparison.json"] if comparison is not None else []
    return [out / "oof.csv", out / "skipped.csv", *extra, *files]
