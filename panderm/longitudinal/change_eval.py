"""Evaluation of a trained Siamese change detector: :func:`load_change_model` and :func:`evaluate_change`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from panderm.errors import InputError
from panderm.io import atomic_path, atomic_write_json, write_skipped_csv
from panderm.longitudinal.change import (
    CONFIG_FILE,
    PairDataset,
    SiameseChangeModel,
    read_pairs,
    resolve_pairs,
)
from panderm.models.checkpoint import load_module_weights


def load_change_model(run_dir: str | Path) -> tuple[SiameseChangeModel, dict]:
    """Rebuild the trained model of ``run_dir`` from ``change_config.json`` and its selected checkpoint
    (``selection.checkpoint``: the best val AUROC's, else ``checkpoint-last.pth``)."""
    from panderm.models.factory import create_encoder
    from panderm.train import run_state as ckpt

    run_dir = Path(run_dir)
    cfg_path = run_dir / CONFIG_FILE
    if not cfg_path.is_file():
        raise InputError(f"{run_dir} is not a finished change-detection run: {cfg_path.name} is missing",
                         hint="train one with `panderm change train`")
    cfg = json.loads(cfg_path.read_text())
    weights = run_dir / (cfg.get("selection") or {}).get("checkpoint", ckpt.LAST)
    if not weights.is_file():
        raise InputError(f"{run_dir} is not a finished change-detection run: {weights.name} is missing",
                         hint="train one with `panderm change train`")
    net = SiameseChangeModel(create_encoder(cfg["model"], random_init=True), hidden=cfg["hidden"], margin=cfg["margin"],
                             contrastive_weight=cfg["contrastive_weight"])
    load_module_weights(net, weights, "change-detection model")
    return net.eval(), cfg


def evaluate_change(run_dir: str | Path, pairs_csv: str | Path, root: str | Path, out: str | Path,
                    split: str = "test", threshold: float = 0.5, batch_size: int = 32, device: str | None = None,
                    n_bootstrap: int = 1000, seed: int = 0, progress: bool = False) -> dict:
    """Evaluate a trained change detector on one split of a pairs CSV.

    Writes ``metrics.json`` (AUROC, sensitivity, specificity and balanced accuracy,
    each ``{"value", "ci_low", "ci_high"}`` with a 95% percentile bootstrap CI;
    threshold metrics call ``changed`` when P(changed) ≥ ``threshold``) and
    ``predictions.csv`` (one row per evaluated pair with ``prob_changed``).
    Pairs with an unreadable image are left out and listed in ``skipped.csv``.
    The run's preprocessing ablation (``steps`` in ``change_config.json``) is applied
    to the evaluated pairs too, cached in ``out/preprocessed/``; ``metrics.json``
    records it (``steps``, ``ablation``, ``preprocess`` counts) and the checkpoint used
    (``checkpoint``, ``selection``: the run's best val AUROC epoch, else its last).
    ``progress`` shows a progress bar over the batches (stderr; hidden when it is not a terminal).

    Returns:
        The ``metrics.json`` content.
    """
    from panderm.data.transforms import build_transform
    from panderm.longitudinal.ablation import ablation_name

    net, cfg = load_change_model(run_dir)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    net.to(dev)
    ablation = tuple(cfg.get("steps") or ())
    out = Path(out)
    rows, ds_rows, skipped, summary = _evaluation_pairs(pairs_csv, split, root, ablation, cfg, out)
    dataset = PairDataset(ds_rows, "/", build_transform(cfg["preset"]))  # the paths are absolute
    idx, prob = _predict_pairs(net, dataset, batch_size, dev, progress, skipped)
    if not len(idx):
        raise InputError(f"no readable image pairs in split '{split}' of {pairs_csv}")
    y = rows["label"].to_numpy()[idx]
    result = {"metrics": _change_metrics(y, prob, threshold, n_bootstrap, seed), "n_pairs": len(y),
              "n_changed": int(y.sum()), "n_unchanged": int(len(y) - y.sum()), "n_skipped": len(skipped),
              "threshold": threshold, "split": split, "ci": f"95% percentile bootstrap, {n_bootstrap} replicates",
              "run_dir": str(run_dir), "pairs_csv": str(pairs_csv), "label_convention": "1 = changed, 0 = unchanged",
              "steps": list(ablation), "ablation": ablation_name(ablation), "preprocess": summary,
              "checkpoint": (cfg.get("selection") or {}).get("checkpoint", "checkpoint-last.pth"),
              "selection": cfg.get("selection")}
    _write_change_evaluation(out, rows.iloc[idx], prob, threshold, skipped, result)
    return result


def _evaluation_pairs(pairs_csv, split: str, root, ablation: tuple, cfg: dict, out: Path):
    """The split's pairs, preprocessed by the run's ablation: ``(rows, dataset rows, skipped, summary)``."""
    from panderm.longitudinal.ablation import apply_to_rows

    rows = resolve_pairs(read_pairs(pairs_csv, split), root, pairs_csv)
    if not ablation:
        return rows, rows, [], None
    # runs from before align presets registered as the release does
    align_preset = cfg.get("align_preset") or "paper"
    return apply_to_rows(rows, "/", ablation, out / "preprocessed", align_preset)


def _predict_pairs(net, dataset, batch_size: int, dev, progress: bool, skipped: list):
    """P(changed) of every readable pair: ``(dataset indices, probabilities)``; unreadable pairs go to ``skipped``."""
    from panderm.data.sampling import skip_collate
    from panderm.progress import progress_bar

    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=skip_collate())
    idx, probs = [], []
    for batch, skip in progress_bar(loader, enabled=progress, desc="evaluate", unit="batch"):
        skipped.extend(skip)
        if batch is None:
            continue
        probs.append(net.predict_proba(batch["a"].to(dev), batch["b"].to(dev)).cpu().numpy())
        idx.append(batch["index"].numpy())
    if not probs:
        return np.zeros(0, int), np.zeros(0)
    return np.concatenate(idx), np.concatenate(probs).astype(np.float64)


def _change_metrics(y: np.ndarray, prob: np.ndarray, threshold: float, n_bootstrap: int, seed: int) -> dict:
    """AUROC and the threshold metrics, each with a percentile bootstrap CI."""
    from panderm.eval.metrics import bootstrap_ci, threshold_metrics_ci

    metrics = {"auroc": bootstrap_ci(y, np.stack([1 - prob, prob], 1), [0, 1], n=n_bootstrap, seed=seed,
                                     metrics=("auroc",))["auroc"]}
    metrics.update(threshold_metrics_ci(y, prob, threshold, n=n_bootstrap, seed=seed))
    return metrics


def _write_change_evaluation(out: Path, rows: pd.DataFrame, prob: np.ndarray, threshold: float, skipped: list,
                             result: dict) -> None:
    """Write ``predictions.csv``, ``skipped.csv`` (when any) and ``metrics.json`` (last)."""
    out.mkdir(parents=True, exist_ok=True)
    preds = rows.assign(prob_changed=prob, pred=(prob >= threshold).astype(int))
    preds = preds.assign(image_a=preds["_image_a"], image_b=preds["_image_b"]).drop(
        columns=["_image_a", "_image_b", "_line"], errors="ignore")
    with atomic_path(out / "predictions.csv") as tmp:
        preds.to_csv(tmp, index=False)
    write_skipped_csv(out, skipped, write_empty=False)
    atomic_write_json(out / "metrics.json", json.loads(json.dumps(result, default=float).replace("NaN", "null")))
