"""``panderm tbp train``: risk head + ExtraTrees + thresholds → a screening bundle.

Protocol: patient-grouped train/validation split (the CSV's ``split`` column, else
StratifiedGroupKFold by patient, one fold held out); class imbalance handled by
balanced class weights (risk head, ExtraTrees) or a positive-class weight (fine-tuning);
each module's threshold is the largest one reaching ``target_sensitivity`` on validation.

Two targets, as in the paper (Methods, TBP screening): the risk head learns ``risk_label``
(1 = the lesion was sent to dermoscopy) and is thresholded on it; the measurement model
learns the pathology ``label``, which is also what every validation metric is computed on.
Without a ``risk_label`` column the risk head falls back to ``label``, with a warning that
the result, ``metrics.json`` and the bundle (``risk_head.target``, ``card.md``) carry.

The out-of-distribution gate (:mod:`panderm.eval.ood`) is fitted on the training rows' features
and calibrated on the validation rows', so that 95% of validation tiles pass; with too few
training rows the bundle has no gate (``"ood": null``), a warning says so and
``training.ood_missing`` records why.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from panderm.errors import ConfigError, InputError
from panderm.io import atomic_path, atomic_write_json, write_skipped_csv

HEADS = ("probe", "finetune")
FALLBACK_WARNING = ("{lesions} has no risk_label column: the risk head is trained and thresholded on the pathology "
                    "label instead of on whether a lesion was sent to dermoscopy (the paper's target); "
                    "add risk_label (1 = sent to dermoscopy, 0 = not) to train it as in the paper")


@dataclass
class TBPTrainResult:
    """Where the bundle went and its validation metrics."""

    bundle: Path
    metrics: dict
    n_train: int
    n_val: int
    skipped: int
    warnings: list


def grouped_split(y: np.ndarray, groups: np.ndarray, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Boolean validation mask: one fold of StratifiedGroupKFold (patients never straddle the split)."""
    from sklearn.model_selection import StratifiedGroupKFold

    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise InputError("a patient-grouped validation split needs at least 2 patients",
                         hint="add patients, or give a split column (train/val)")
    sgkf = StratifiedGroupKFold(n_splits=min(folds, n_groups), shuffle=True, random_state=seed)
    _, val_idx = next(sgkf.split(np.zeros(len(y)), y, groups))
    mask = np.zeros(len(y), bool)
    mask[val_idx] = True
    return mask


def _split(df: pd.DataFrame, folds: int, seed: int, target: str) -> tuple[np.ndarray, str]:
    if "split" in df.columns and {"train", "val"} <= set(df["split"].astype(str)):
        keep = df["split"].isin(["train", "val"]).to_numpy()
        return np.where(keep, df["split"].eq("val").to_numpy(), False), "the CSV's split column (train/val)"
    # stratify on both targets, so that each side has both classes of the pathology and of the risk target
    strata = df["label"].to_numpy() * 2 + df[target].to_numpy()
    return grouped_split(strata, df["patient_id"].to_numpy(), folds, seed), \
        f"StratifiedGroupKFold by patient ({folds} folds, seed {seed}), fold 0 held out"


def risk_target(df: pd.DataFrame, lesions, warnings: list) -> str:
    """The column the risk head learns: ``risk_label`` when present, else ``label`` (a warning is appended)."""
    from panderm.tbp.inputs import RISK_LABEL

    if RISK_LABEL in df.columns:
        return RISK_LABEL
    warnings.append(FALLBACK_WARNING.format(lesions=lesions))
    return "label"


def _check_classes(y: np.ndarray, where: str, column: str = "label") -> None:
    if y.sum() == 0 or y.sum() == len(y):
        from panderm.tbp.bundle import RISK_TARGETS

        meaning = RISK_TARGETS[column]
        raise InputError(f"the {where} lesions are all of one class in {column} ({int(y.sum())} {meaning} of "
                         f"{len(y)})", hint=f"training needs both classes of {column} in both train and validation")


def _probe_head(X: np.ndarray, y: np.ndarray, seed: int) -> tuple[np.ndarray, float]:
    from sklearn.linear_model import LogisticRegression

    from panderm.eval.linear import default_C

    clf = LogisticRegression(C=default_C(X.shape[1], 2), class_weight="balanced", max_iter=1000, random_state=seed)
    clf.fit(X.astype(np.float64), y)
    return clf.coef_[0].astype(np.float64), float(clf.intercept_[0])


def _fit_ml(Xm: np.ndarray, y: np.ndarray, n_estimators: int, seed: int):
    from sklearn.ensemble import ExtraTreesClassifier

    et = ExtraTreesClassifier(n_estimators=n_estimators, min_samples_leaf=2, class_weight="balanced_subsample",
                              random_state=seed, n_jobs=-1)
    et.fit(Xm, y)
    et.n_jobs = 1  # fit in parallel; predict serially, so that scores do not depend on thread timing
    return et


def _importance(et, X: np.ndarray, y: np.ndarray, columns: list[str], seed: int) -> pd.DataFrame:
    """Permutation importance (AUROC drop) on validation; impurity importance when AUROC is undefined."""
    from sklearn.inspection import permutation_importance

    if 0 < y.sum() < len(y):
        r = permutation_importance(et, X, y, scoring="roc_auc", n_repeats=5, random_state=seed, n_jobs=1)
        imp = pd.DataFrame({"feature": columns, "importance": r.importances_mean, "std": r.importances_std})
        imp["method"] = "permutation (validation AUROC drop)"
    else:
        imp = pd.DataFrame({"feature": columns, "importance": et.feature_importances_, "std": np.nan,
                            "method": "impurity"})
    return imp.sort_values("importance", ascending=False).reset_index(drop=True)


def train_tbp(lesions: str | Path, out: str | Path, *, root: str | Path | None = None, fmt: str = "auto",
              images: str | Path | None = None, model: str = "panderm_large_patch16_224",
              weights: str | Path | None = None, head: str = "probe", measure_from_image: bool = False,
              no_ml: bool = False, lesion_filter: bool = False, target_sensitivity: float = 0.8,
              ud_k: float = 1.5, ud_min_lesions: int = 4, ud_metric: str = "euclidean", folds: int = 5,
              seed: int = 0, n_estimators: int = 300, epochs: float = 10, max_steps: int | None = None,
              batch_size: int = 32, lr: float = 5e-4, precision: str = "auto", device: str | None = None,
              on_missing: str = "impute", demo: bool = False, data_note: str = "", progress: bool = True,
              resume: bool = False, keep_work: bool = False, random_init: bool = False,
              dataset_name: str | None = None) -> TBPTrainResult:
    """Train a TBP screening bundle (see the module docstring for the protocol).

    Args:
        lesions: Lesions CSV (``patient_id,lesion_id,image,label[,risk_label][,split],<measurements>``) or
            ISIC 2024 input. ``risk_label`` (1 = sent to dermoscopy) trains and thresholds the risk head;
            ``label`` (1 = malignant) trains the measurement model and is what validation measures.
        out: Bundle folder; the working files go to ``out/.work`` (features, fine-tuning checkpoints).
        head: ``probe`` (logistic regression on frozen features) or ``finetune`` (encoder + head, Trainer).
        measure_from_image: Train the measurement model on image-derived substitutes.
        no_ml: Train no measurement model.
        target_sensitivity: Validation sensitivity each module's threshold must reach.
        demo: Mark the bundle as a demo (banner in reports, card says not for clinical use).
        data_note: A sentence about the training data for ``card.md``.
        resume: Continue an interrupted fine-tuning run from ``out/.work``.
        keep_work: Keep ``out/.work`` (features, fine-tuning checkpoints) after success; by default
            it is removed so that the bundle folder is small enough to copy.
        dataset_name: What the training tiles are, for the OOD gate's reasons ("does not resemble
            the <dataset_name> training tiles"); default: from the lesions file's name.
    """
    from panderm.models.factory import create_encoder
    from panderm.tbp import pipeline

    _check_train_options(head, target_sensitivity)
    out = Path(out)
    work = out / ".work"
    table, target, split_how = _read_training_table(lesions, work, fmt=fmt, root=root, images=images,
                                                    lesion_filter=lesion_filter, folds=folds, seed=seed)
    encoder = create_encoder(model, weights, random_init=random_init)
    base_sha, base_spec = encoder.weights_info.sha256, encoder.weights_info.spec
    if head == "finetune":
        tr = table.df[~table.df["_val"]]
        _check_classes(tr[target].to_numpy(), "training", target)
        encoder, w, b = finetune_encoder(encoder, tr, work, epochs, max_steps, batch_size, lr, precision, device,
                                         seed, progress, resume, training_inputs(tr, lesions, base_sha), target)
        encoder.weights_info = None  # features must be fingerprinted by the new parameters
    X = pipeline.encode_lesions(table, encoder, work / ("finetuned" if head == "finetune" else "frozen"),
                                precision=precision, device=device, progress=progress)
    y, val = table.df["label"].to_numpy().astype(int), table.df["_val"].to_numpy()
    y_risk = table.df[target].to_numpy().astype(int)  # the risk head's target; y (pathology) is everything else's
    _check_training_classes(y, y_risk, val, target)
    if head == "probe":
        w, b = _probe_head(X[~val], y_risk[~val], seed)
    ml = _fit_measurement_model(table, lesions, work, y, val, measure_from_image=measure_from_image,
                                on_missing=on_missing, n_estimators=n_estimators, seed=seed,
                                progress=progress) if not no_ml else _MeasurementModel()
    ud = {"k": ud_k, "min_lesions": ud_min_lesions, "metric": ud_metric}
    training = {"lesions": str(lesions), "format": table.fmt, "lesion_filter": lesion_filter, "seed": seed,
                "epochs": epochs if head == "finetune" else None, "data_note": data_note}
    from panderm.hardware import default_device, resolve_precision

    gate = fit_gate(X[~val], X[val], dataset_name or _dataset_name(lesions, table.fmt), seed, table.warnings,
                    training, resolve_precision(precision, device or default_device()))
    df, thresholds = _score_and_flag(table.df, X, w, b, ml, y, y_risk, val, target_sensitivity, ud)
    metrics = _training_metrics(df, table, y, y_risk, val, target, split_how, ml.warnings)
    meta = _bundle_meta(encoder, model, base_spec, base_sha, dim=int(X.shape[1]), head=head, target=target,
                        ud=ud, ml_meta=ml.meta,
                        thresholds=thresholds, demo=demo, metrics=metrics, training=training)
    meta["ood"] = None if gate is None else gate.info
    # A fine-tuned or randomly initialised encoder cannot be re-created from a weights file: ship it.
    state = encoder.state_dict() if (head == "finetune" or base_sha is None) else None
    _write_training_outputs(out, meta, metrics, w, b, ml, state, df[val], table.skipped, gate)
    if not keep_work:
        shutil.rmtree(work, ignore_errors=True)
    return TBPTrainResult(out, json.loads(json.dumps(metrics)), int((~val).sum()), int(val.sum()),
                          len(table.skipped), table.warnings + ml.warnings)


def _dataset_name(lesions, fmt: str) -> str:
    """A short name for the training tiles: ISIC 2024, the CSV's name, or its folder's when the name is generic."""
    if fmt == "isic2024":
        return "ISIC 2024"
    path = Path(str(lesions))
    generic = ("labels", "data", "dataset", "metadata", "lesions", "train", "training", "measurements")
    return path.parent.resolve().name if path.stem.lower() in generic else path.stem


def fit_gate(fit: np.ndarray, calibration: np.ndarray, dataset: str, seed: int, warnings: list, training: dict,
             precision: str | None = None):
    """The bundle's OOD gate, or ``None`` with the reason in ``training["ood_missing"]`` (too few tiles).

    The reason is also appended to ``warnings`` (the run's warnings, printed by the CLI and kept in metrics.json).
    """
    from panderm.eval.ood import fit_gate_or_reason

    gate, why = fit_gate_or_reason(fit, calibration, reference=f"the {dataset} training tiles", seed=seed,
                                   precision=precision)
    if why:
        training["ood_missing"] = why
        warnings.append(f"no out-of-distribution gate: {why}; screening will check image quality only")
    return gate


def _check_train_options(head: str, target_sensitivity: float) -> None:
    """A known risk head and a target sensitivity in (0, 1], else a ConfigError."""
    if head not in HEADS:
        raise ConfigError(f"unknown head '{head}'", hint=f"choose one of: {', '.join(HEADS)}")
    if not 0 < target_sensitivity <= 1:
        raise ConfigError("target sensitivity must be in (0, 1]")


def _read_training_table(lesions, work: Path, *, fmt, root, images, lesion_filter: bool, folds: int, seed: int):
    """Read the lesions, apply the lesion filter and split: ``(table, risk target column, split description)``.

    ``table.df`` keeps only the train and validation rows, with a boolean ``_val`` column.
    """
    from panderm.tbp.inputs import read_input
    from panderm.tbp.measurements import lesion_filter as filt

    table = read_input(lesions, fmt, root=root, images=images, cache=work / "tiles")
    if "label" not in table.df.columns:
        raise InputError(f"{lesions} has no label column", hint="label: 1 = malignant, 0 = benign")
    target = risk_target(table.df, lesions, table.warnings)
    if lesion_filter:
        keep, _ = filt(table.df)
        table.skip(table.df[~keep], "removed by the lesion filter")
        table.warnings.append(f"lesion filter kept {int(keep.sum())} of {len(keep)} lesions")
    val_mask, split_how = _split(table.df, folds, seed, target)
    in_use = table.df["split"].isin(["train", "val"]) if "split" in table.df.columns and "split" in split_how \
        else pd.Series(True, index=table.df.index)
    table.df = table.df[in_use.to_numpy()].reset_index(drop=True)
    table.df["_val"] = val_mask[in_use.to_numpy()]
    return table, target, split_how


def _check_training_classes(y: np.ndarray, y_risk: np.ndarray, val: np.ndarray, target: str) -> None:
    """Both classes of ``label`` and of the risk target in the training and the validation rows."""
    _check_classes(y[~val], "training")
    _check_classes(y[val], "validation")
    _check_classes(y_risk[~val], "training", target)
    _check_classes(y_risk[val], "validation", target)


@dataclass
class _MeasurementModel:
    """The measurement model (ExtraTrees) with its bundle metadata, or all None with ``--no-ml``."""

    model: object = None
    matrix: np.ndarray | None = None
    meta: dict | None = None
    importance: pd.DataFrame | None = None
    warnings: list = field(default_factory=list)


def _fit_measurement_model(table, lesions, work: Path, y: np.ndarray, val: np.ndarray, *, measure_from_image: bool,
                           on_missing: str, n_estimators: int, seed: int, progress: bool) -> _MeasurementModel:
    """Fit ExtraTrees on the Vectra measurements (or image-derived substitutes) of the training rows."""
    from panderm.tbp import pipeline
    from panderm.tbp.measurements import VECTRA_MEASUREMENTS, fit_fill_values, measurement_matrix

    if measure_from_image:
        pipeline.attach_image_measurements(table, work, progress)
        from panderm.tbp.image_measures import IMAGE_MEASUREMENTS as columns
    else:
        columns = [c for c in VECTRA_MEASUREMENTS if c in table.df.columns]
        if not columns:
            raise InputError(f"{lesions} has none of the 32 measurement columns",
                             hint="use --measure-from-image to compute substitutes, or --no-ml")
    df = table.df
    fill = fit_fill_values(df[~val], list(columns))
    Xm, rep = measurement_matrix(df, list(columns), fill_values=fill, on_missing=on_missing)
    ml = _fit_ml(Xm[~val], y[~val], n_estimators, seed)
    meta = {"columns": list(columns), "fill_values": fill, "n_estimators": n_estimators,
            "measurement_source": "image" if measure_from_image else "vectra",
            "missing_in_training": [c for c in VECTRA_MEASUREMENTS if c not in columns]}
    return _MeasurementModel(ml, Xm, meta, _importance(ml, Xm[val], y[val], list(columns), seed), rep.warnings())


def _score_and_flag(df: pd.DataFrame, X: np.ndarray, w, b, ml: _MeasurementModel, y: np.ndarray,
                    y_risk: np.ndarray, val: np.ndarray, target_sensitivity: float, ud: dict):
    """Risk and measurement scores, validation thresholds, ugly-duckling columns, flags: ``(df, thresholds)``."""
    from panderm.tbp import pipeline
    from panderm.tbp.bundle import linear_risk
    from panderm.tbp.metrics import threshold_for_sensitivity

    df = df.assign(risk_score=linear_risk(X, w, b))
    df["ml_score"] = ml.model.predict_proba(ml.matrix)[:, 1] if ml.model is not None else np.nan
    thresholds = {"risk": threshold_for_sensitivity(y_risk[val], df["risk_score"].to_numpy()[val],
                                                    target_sensitivity),
                  "ml": None if ml.model is None else threshold_for_sensitivity(
                      y[val], df["ml_score"].to_numpy()[val], target_sensitivity),
                  "target_sensitivity": target_sensitivity}
    d, o, f = pipeline.ugly_duckling_columns(df["patient_id"], X, k=ud["k"], min_lesions=ud["min_lesions"],
                                             metric=ud["metric"])
    return pipeline.flag_and_rank(df.assign(ud_distance=d, ud_outlier=o, ud_fence=f), thresholds), thresholds


def _training_metrics(df: pd.DataFrame, table, y: np.ndarray, y_risk: np.ndarray, val: np.ndarray, target: str,
                      split_how: str, measurement_warnings: list) -> dict:
    """``metrics.json``: validation metrics, split sizes, the risk target's AUROC, skipped rows, warnings."""
    from panderm.tbp.evaluate import validation_metrics

    return {"validation": validation_metrics(df[val]), "split": split_how, "n_train": int((~val).sum()),
            "n_val": int(val.sum()), "n_train_malignant": int(y[~val].sum()),
            "n_val_malignant": int(y[val].sum()), "n_patients": int(df["patient_id"].nunique()),
            "risk_target": risk_target_metrics(target, y_risk, df["risk_score"].to_numpy(), val),
            "skipped": len(table.skipped), "measurement_warnings": measurement_warnings, "warnings": table.warnings}


def _bundle_meta(encoder, model: str, base_spec, base_sha: str | None, *, dim: int, head: str, target: str,
                 ud: dict, ml_meta: dict | None, thresholds: dict, demo: bool, metrics: dict, training: dict) -> dict:
    """The bundle's ``meta``: encoder (portable weights spec), heads, thresholds, metrics, training settings."""
    import panderm
    from panderm.models.factory import portable_weights_spec

    name = getattr(encoder, "model_name", model)
    return {"encoder": {"name": name, "weights_spec": portable_weights_spec(name, base_spec, base_sha),
                        "weights_sha256": base_sha, "preset": encoder.pretrained_cfg.preset,
                        "dim": dim, "finetuned": head == "finetune"},
            "risk_head": {"mode": head, "target": target}, "ud": ud,
            "ml": ml_meta, "thresholds": thresholds, "demo": demo, "metrics": metrics, "training": training,
            "created": datetime.now(UTC).isoformat(timespec="seconds"), "panderm_version": panderm.__version__}


def _write_training_outputs(out: Path, meta: dict, metrics: dict, w, b, ml: _MeasurementModel, encoder_state,
                            validation_rows: pd.DataFrame, skipped: list, gate=None) -> None:
    """Save the bundle (with ``card.md``), ``metrics.json``, ``validation_lesions.csv`` and ``skipped.csv``."""
    from panderm.tbp.bundle import save_bundle
    from panderm.tbp.card import render_card
    from panderm.tbp.inputs import SKIPPED_COLUMNS

    save_bundle(out, meta=meta, risk_weight=w, risk_bias=b, ml=ml.model, importance=ml.importance,
                encoder_state=encoder_state, card=render_card(meta), ood_gate=gate)
    atomic_write_json(out / "metrics.json", metrics)
    with atomic_path(out / "validation_lesions.csv") as tmp:
        validation_rows.drop(columns=["_val"]).to_csv(tmp, index=False)
    write_skipped_csv(out, skipped, SKIPPED_COLUMNS, write_empty=False)


def risk_target_metrics(target: str, y_risk: np.ndarray, score: np.ndarray, val: np.ndarray) -> dict:
    """Which column the risk head learnt, its positives, and its validation AUROC against that column."""
    from panderm.tbp.evaluate import auroc_or_none

    return {"column": target, "n_train_positive": int(y_risk[~val].sum()), "n_val_positive": int(y_risk[val].sum()),
            "val_auroc": auroc_or_none(y_risk[val], np.asarray(score, float)[val])}


def training_inputs(rows: pd.DataFrame, lesions, weights_sha256: str | None) -> dict:
    """Provenance record of the fine-tuning rows (image, patient, lesion, labels, split; tile size and mtime)."""
    from panderm.provenance import describe_records

    # split and risk_label are optional; risk_label is the fine-tuning target when present
    columns = [c for c in ("patient_id", "lesion_id", "label", "risk_label", "split") if c in rows.columns]
    values = rows[columns].astype(str).itertuples(index=False, name=None)
    records = ((image, list(v), {"image": path}) for image, v, path in zip(rows["image"].astype(str), values,
                                                                             rows["path"]))
    return describe_records(records, source=lesions, weights_sha256=weights_sha256)


def finetune_encoder(encoder, train_rows: pd.DataFrame, work: Path, epochs, max_steps, batch_size, lr, precision,
                     device, seed, progress, resume, inputs: dict | None = None, target: str = "label"):
    """Fine-tune on the training rows' ``target`` column; returns (encoder, head weight, head bias).

    ``inputs``: see finetune_risk.
    """
    from panderm.tbp.finetune import finetune_risk

    # the Trainer resolves "auto" on the device it picks (and refuses fp16 off CUDA)
    return finetune_risk(encoder, train_rows["path"].tolist(), train_rows[target].to_numpy(), work / "finetune",
                         epochs=epochs, max_steps=max_steps, batch_size=batch_size, lr=lr, precision=precision,
                         device=device, seed=seed, progress=progress, resume=resume, inputs=inputs)
