"""``panderm ood eval``: how well an out-of-distribution gate separates two feature folders.

The gate comes from a classifier bundle (``run``: its stored gate, threshold included) or is
fitted here on the ``train`` rows of the in-distribution folder and calibrated on its ``val``
rows (``csv``), exactly as ``panderm classifier build`` does; the in-distribution images scored
are then the ``test`` rows only, never the rows the gate was fitted or calibrated on.

Outputs in ``out`` (atomic): ``ood_eval.json`` (AUROC with a bootstrap 95% CI, FPR at 95% TPR,
the shares refused at the gate's own threshold), ``scores.csv`` (one row per image) and
``histogram.png`` (both score distributions and the threshold).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from panderm.errors import ConfigError, InputError
from panderm.eval.ood import OODGate, fit_ood_gate


@dataclass
class OODEvalResult:
    """What ``evaluate_ood`` measured and wrote."""

    out: Path
    metrics: dict
    files: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def ood_metrics(in_scores: np.ndarray, ood_scores: np.ndarray, threshold: float | None = None, *,
                n_bootstrap: int = 1000, seed: int = 0) -> dict:
    """AUROC (out-of-distribution = positive, higher score = more unusual), FPR at 95% TPR, shares at ``threshold``.

    FPR at 95% TPR is the share of out-of-distribution images that still pass when the threshold
    lets 95% of the in-distribution images pass (lower is better). The AUROC's 95% CI resamples
    each set on its own (``n_bootstrap`` replicates; 0: no CI).
    """
    from sklearn.metrics import roc_auc_score

    a, b = np.asarray(in_scores, np.float64), np.asarray(ood_scores, np.float64)
    if not len(a) or not len(b):
        raise InputError(f"OOD evaluation needs images on both sides (in-distribution {len(a)}, "
                         f"out-of-distribution {len(b)})")

    def auroc(x, y):
        return float(roc_auc_score(np.r_[np.zeros(len(x)), np.ones(len(y))], np.r_[x, y]))

    rng = np.random.default_rng(seed)
    reps = [auroc(rng.choice(a, len(a)), rng.choice(b, len(b))) for _ in range(int(n_bootstrap))]
    cut95 = float(np.quantile(a, 0.95, method="higher"))
    out = {"n_in": int(len(a)), "n_ood": int(len(b)), "auroc": auroc(a, b),
           "auroc_ci_low": float(np.percentile(reps, 2.5)) if reps else None,
           "auroc_ci_high": float(np.percentile(reps, 97.5)) if reps else None,
           "fpr_at_95_tpr": float((b <= cut95).mean()), "threshold_at_95_tpr": cut95,
           "bootstrap": {"n": int(n_bootstrap), "seed": seed}}
    if threshold is not None:
        out.update(threshold=float(threshold), in_refused=float((a > threshold).mean()),
                   ood_refused=float((b > threshold).mean()))
    return out


def ood_histogram_png(path: str | Path, in_scores: np.ndarray, ood_scores: np.ndarray, threshold: float | None,
                      title: str) -> Path:
    """Both score histograms on shared bins, the gate's threshold as a line."""
    from panderm.eval.plots import new_figure, save_png

    fig = new_figure(7.0, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    both = np.r_[in_scores, ood_scores]
    bins = np.linspace(float(both.min()), float(np.quantile(both, 0.995)) + 1e-9, 50)
    ax.hist(np.clip(in_scores, None, bins[-1]), bins=bins, alpha=0.6, color="#2b8cbe", density=True,
            label=f"in distribution (n = {len(in_scores)})")
    ax.hist(np.clip(ood_scores, None, bins[-1]), bins=bins, alpha=0.6, color="#e34a33", density=True,
            label=f"out of distribution (n = {len(ood_scores)})")
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", linewidth=1.2, label=f"threshold {threshold:.3f}")
    clipped = "" if both.max() <= bins[-1] else f"; the last bin holds every score ≥ {bins[-2]:.2f}"
    ax.set_xlabel(f"out-of-distribution score (higher = less like the training images{clipped})")
    ax.set_ylabel("density")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    return save_png(fig, path)


def check_gate_features(owner: str, encoder: dict, feats) -> None:
    """Refuse features from another encoder than the one ``owner``'s gate was fitted on.

    Args:
        owner: Names the gate's bundle in messages.
        encoder: The bundle's encoder record (``name``, ``weights_sha256``, optional ``finetuned``).
        feats: A :class:`panderm.data.tables.FeatureTable`.
    """
    if not encoder:
        return
    if encoder.get("finetuned"):
        raise ConfigError(f"{owner} is fine-tuned: its gate scores the fine-tuned encoder's features, "
                          "which `panderm extract` does not produce", hint="fit a gate here with --csv instead")
    meta = feats.meta or {}
    made_by = meta.get("weights") or {}
    if meta.get("model") != encoder["name"] or made_by.get("sha256") != encoder["weights_sha256"]:
        raise ConfigError(f"{feats.folder} was extracted with {meta.get('model')} (weights "
                          f"{str(made_by.get('sha256'))[:12]}), but the gate of {owner} was fitted on "
                          f"{encoder['name']} (weights {str(encoder['weights_sha256'])[:12]})",
                          hint="extract both folders with the bundle's encoder")


#: An in-distribution row scoring below this matches a stored reference row: it is one of the gate's own
#: training images (held-out dermoscopy scores 0.15 or more with the demo gate).
SEEN_SCORE = 1e-2


def _unseen_rows(gate: OODGate, X: np.ndarray, owner: str, warnings: list[str]) -> np.ndarray:
    """Rows of ``X`` that are not the gate's own training images (those would flatter every figure)."""
    seen = gate.score(X) < SEEN_SCORE
    if seen.all():
        raise InputError(f"every in-distribution image is one of the training images of {owner}",
                         hint="evaluate on images the bundle was not built from")
    if seen.any():
        warnings.append(f"{int(seen.sum())} in-distribution image(s) are training images of {owner} (they match "
                        "a stored reference row) and were left out")
    return np.flatnonzero(~seen)


def _fitted_gate(csv: Path, feats, seed: int) -> tuple[OODGate, np.ndarray, str]:
    """A gate fitted on the ``train`` rows, calibrated on ``val``; and the ``test`` rows to score."""
    from panderm.data.tables import load_dataset, select_rows

    df, _ = load_dataset(csv, binary=False)
    rows, _ = select_rows(df, feats, csv, True, "features")
    part = {s: rows.loc[rows["split"] == s, "row"].to_numpy() for s in ("train", "val", "test")}
    if not len(part["test"]):
        raise InputError(f"{csv} has no test rows with features: the in-distribution images to score must be "
                         "ones the gate was not fitted or calibrated on")
    gate = fit_ood_gate(feats.X[part["train"]], feats.X[part["val"]] if len(part["val"]) else None, seed=seed,
                        reference=f"the {csv.name} training images")
    return gate, part["test"], f"a gate fitted on {len(part['train'])} train rows of {csv.name}"


def evaluate_ood(features: str | Path, features_ood: str | Path, out: str | Path, *, gate: OODGate | None = None,
                 encoder: dict | None = None, owner: str = "the bundle", csv: str | Path | None = None,
                 n_bootstrap: int = 1000, seed: int = 0) -> OODEvalResult:
    """Score in- and out-of-distribution feature folders with a gate; write metrics, scores and a histogram.

    Args:
        features: In-distribution feature folder (``panderm extract``).
        features_ood: Out-of-distribution feature folder, from the same encoder.
        out: Output folder.
        gate, encoder, owner: A bundle's stored gate, the encoder record it was fitted on and the
            bundle's name (``panderm.classifier.load_bundle_gate``); exclusive with ``csv``.
        csv: Dataset CSV (image, split, label) of ``features``: fit a gate on ``train``, calibrate
            on ``val``, score ``test``.
        n_bootstrap, seed: The AUROC's bootstrap CI.
    """
    from panderm.data.tables import load_features
    from panderm.io import atomic_path, atomic_write_json, make_out_dir

    if (gate is None) == (csv is None):
        raise ConfigError("give exactly one of --run (a classifier bundle's gate) or --csv (fit a gate on the "
                          "train rows of --features)")
    inside, outside = load_features(features), load_features(features_ood, role="--features-ood")
    if inside.X.shape[1] != outside.X.shape[1]:
        raise InputError(f"{inside.folder} has {inside.X.shape[1]}-d features but {outside.folder} "
                         f"{outside.X.shape[1]}-d", hint="extract both with the same encoder")
    warnings: list[str] = []
    if gate is not None:
        for table in (inside, outside):
            check_gate_features(owner, encoder or {}, table)
        in_rows, source = _unseen_rows(gate, inside.X, owner, warnings), f"the gate of {owner}"
    else:
        gate, in_rows, source = _fitted_gate(Path(csv), inside, seed)
    out = make_out_dir(out)
    s_in, s_out = gate.score(inside.X[in_rows]), gate.score(outside.X)
    metrics = ood_metrics(s_in, s_out, gate.threshold, n_bootstrap=n_bootstrap, seed=seed)
    metrics.update(gate=source, method=gate.info.get("method"), features=str(inside.folder),
                   features_ood=str(outside.folder), warnings=warnings)
    scores = pd.DataFrame({"image": [inside.keys[i] for i in in_rows] + list(outside.keys),
                           "set": ["in"] * len(in_rows) + ["ood"] * len(outside.keys),
                           "score": np.r_[s_in, s_out]})
    scores["passes_gate"] = scores["score"] <= gate.threshold
    with atomic_path(out / "scores.csv") as tmp:
        scores.to_csv(tmp, index=False, float_format="%.17g")  # exact: passes_gate must agree
    png = ood_histogram_png(out / "histogram.png", s_in, s_out, gate.threshold,
                            f"AUROC {metrics['auroc']:.3f}; FPR at 95% TPR {metrics['fpr_at_95_tpr']:.3f}")
    atomic_write_json(out / "ood_eval.json", metrics)
    return OODEvalResult(out, metrics, [out / "ood_eval.json", out / "scores.csv", png], warnings)


__all__ = ["OODEvalResult", "check_gate_features", "evaluate_ood", "ood_histogram_png", "ood_metrics"]
