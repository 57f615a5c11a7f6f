"""Cross-validated ABMIL training (:func:`train_mil`): case-level folds, early stopping and feature-set comparison."""

from __future__ import annotations

import copy
import json
import math
import warnings
from pathlib import Path

import numpy as np

from panderm.errors import ConfigError, InputError, examples
from panderm.eval.metrics import ALL_METRICS, classification_metrics, paired_t_tests
from panderm.io import atomic_path, make_out_dir
from panderm.pathology.mil import MILData, MILResult, SlideBag, build_model, load_mil_data, load_slides, predict_bags
from panderm.pathology.mil_outputs import pooled_predictions, run_summary, write_run


def _assign_folds(y: np.ndarray, groups: np.ndarray, n_splits: int, seed: int) -> np.ndarray:
    from sklearn.model_selection import StratifiedGroupKFold

    fold = np.full(len(y), -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class has only n members"
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        for k, (_, test) in enumerate(splitter.split(np.zeros(len(y)), y, groups)):
            fold[test] = k
    return fold


def _run_epoch(model, bags, device, optimizer=None, scheduler=None, order=None):
    import torch

    loss_sum = 0.0
    model.train(optimizer is not None)
    for i in (order if order is not None else range(len(bags))):
        b = bags[i]
        x = torch.from_numpy(b.features).to(device)
        target = torch.tensor([b.y], device=device)
        with torch.set_grad_enabled(optimizer is not None):
            logits, _ = model(x)
            loss = torch.nn.functional.cross_entropy(logits[None], target)
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        loss_sum += float(loss.detach())
    return loss_sum / max(len(bags), 1)


def _fit_fold(train, val, in_dim, n_classes, cfg, device, seed, log_path: Path):
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_model(in_dim, n_classes, embed=cfg["embed"], hidden=cfg["hidden"],
                        dropout_in=cfg["dropout_in"], dropout_attn=cfg["dropout_attn"]).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, cfg["epochs"] * len(train)))
    best, best_epoch, best_state, bad, stopped = math.inf, 0, None, 0, False
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(log_path) as tmp, open(tmp, "w", encoding="utf-8") as log:
        for epoch in range(1, cfg["epochs"] + 1):
            lr = opt.param_groups[0]["lr"]
            train_loss = _run_epoch(model, train, device, opt, sched, rng.permutation(len(train)))
            val_loss = _run_epoch(model, val, device) if val else train_loss
            improved = val_loss < best - 1e-6
            if improved:
                best, best_epoch, bad = val_loss, epoch, 0
                best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
            else:
                bad += 1
            log.write(json.dumps({"epoch": epoch, "lr": lr, "train_loss": train_loss, "val_loss": val_loss,
                                  "best_val_loss": best, "best": improved}) + "\n")
            if bad >= cfg["patience"] and epoch < cfg["epochs"]:
                stopped = True
                break
    model.load_state_dict(best_state)
    return model, {"best_epoch": best_epoch, "best_val_loss": best, "epochs_run": epoch, "stopped_early": stopped}


def _write_attention(path: Path, bag: SlideBag, attn: np.ndarray, fold: int, pred) -> None:
    import h5py

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("attention", data=attn.astype(np.float32))
        f.create_dataset("coords", data=bag.coords.astype(np.int64))
        for k in ("patch_size_level0", "patch_size", "patch_level", "magnification", "mpp"):
            if k in bag.attrs:
                f.attrs[k] = bag.attrs[k]
        f.attrs.update({"slide": bag.slide, "case_id": bag.case, "fold": fold,
                        "true_label": str(bag.label), "predicted_label": str(pred)})


def train_mil(features: str | Path, csv: str | Path, out: str | Path, *, folds: int = 5, epochs: int = 20,
              lr: float = 1e-4, weight_decay: float = 1e-5, patience: int = 5, hidden: int = 384,
              embed: int = 512, dropout_in: float = 0.10, dropout_attn: float = 0.25, seed: int = 0,
              device: str | None = None, n_bootstrap: int = 1000, progress: bool = True,
              compare: str | Path | None = None, _fold_of_slide: dict[str, int] | None = None) -> MILResult:
    """Cross-validated gated ABMIL on per-slide patch features (see the module doc for the protocol).

    Args:
        features: Folder of ``<slide>.h5`` (``features`` (N, D), ``coords`` (N, 2)).
        csv: Slides CSV: ``slide`` (or ``slide_id``), ``label``, optional ``case_id``, ``fold``.
        out: Run folder (``metrics.json`` is written last and marks a complete run).
        folds: Number of case-level cross-validation folds (ignored with an explicit ``fold`` column).
        epochs, lr, weight_decay, patience: Training schedule (paper: 20, 1e-4, 1e-5; early stopping).
        hidden, embed, dropout_in, dropout_attn: Model sizes (paper: 384, 512, 0.10, 0.25).
        seed: Seed of the folds, the initialisation, the slide order and the bootstrap.
        device: ``cpu``, ``cuda`` or ``cuda:N`` (default: CUDA when available).
        n_bootstrap: Bootstrap replicates for the 95% CIs.
        progress: Show a progress bar over the folds' epochs.
        compare: A second features folder of the same slides: trained on the same folds
            (run in ``out/compare/``) and compared per metric by a paired t-test over folds.

    Raises:
        InputError: Unusable CSV/features, a case with two labels or in two folds, too few cases.
        ConfigError: Bad option values.
    """
    _check_options(folds, epochs, patience, hidden, embed, dropout_in, dropout_attn, lr, weight_decay)
    features, csv, out = Path(features), Path(csv), Path(out)
    data = load_mil_data(features, csv)
    fold_of, folds, explicit = _fold_assignment(data, features, csv, folds, seed, _fold_of_slide)
    if compare is not None:
        _check_compare_slides(csv, Path(compare), list(data.rows["slide"]))
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = {"epochs": int(epochs), "lr": lr, "weight_decay": weight_decay, "patience": int(patience),
           "hidden": int(hidden), "embed": int(embed), "dropout_in": dropout_in, "dropout_attn": dropout_attn}
    _start_out(out)
    proba, pred_fold, fold_info = _cross_validate(data, fold_of, folds, cfg, device, seed, out, progress)
    predictions, metrics = pooled_predictions(data, proba, pred_fold, n_bootstrap, seed)
    summary = run_summary(data, cfg, folds, seed, device, n_bootstrap, fold_info, explicit, features, csv, metrics)
    comparison = None
    (out / "comparison.json").unlink(missing_ok=True)
    if compare is not None:
        kwargs = dict(epochs=epochs, lr=lr, weight_decay=weight_decay, patience=patience, hidden=hidden, embed=embed,
                      dropout_in=dropout_in, dropout_attn=dropout_attn, seed=seed, device=device,
                      n_bootstrap=n_bootstrap, progress=progress)
        comparison = _compare_run(Path(compare), csv, out / "compare",
                                  dict(zip(data.rows["slide"], fold_of.tolist())), fold_info, kwargs)
        summary["compare"] = {k: v for k, v in comparison.items() if k != "metrics"}
    files = write_run(out, data.skipped, predictions, data.classes, metrics, fold_info, summary, comparison)
    return MILResult(metrics=metrics, classes=data.classes, predictions=predictions, folds=fold_info,
                     summary=summary, skipped=data.skipped, warnings=data.warnings, out=out, files=files,
                     comparison=comparison)


def _check_options(folds, epochs, patience, hidden, embed, dropout_in, dropout_attn, lr, weight_decay) -> None:
    """ConfigError for out-of-range training options (before anything is read)."""
    for name, v, lo in (("folds", folds, 2), ("epochs", epochs, 1), ("patience", patience, 1),
                        ("hidden", hidden, 1), ("embed", embed, 1)):
        if int(v) < lo:
            raise ConfigError(f"{name} must be ≥ {lo}, got {v}")
    if not (0 <= dropout_in < 1 and 0 <= dropout_attn < 1) or lr <= 0 or weight_decay < 0:
        raise ConfigError("dropouts must be in [0, 1), lr > 0 and weight decay ≥ 0")


def _fold_assignment(data: MILData, features: Path, csv: Path, folds: int, seed: int,
                     fold_of_slide: dict[str, int] | None) -> tuple[np.ndarray, int, bool]:
    """``(fold of each slide, number of folds, explicit?)``: a first run's folds, the CSV's, or case-level CV."""
    rows = data.rows
    explicit = bool((rows["_fold"] >= 0).any())
    if fold_of_slide is not None:  # a comparison run reuses the first run's folds
        extra = [s for s in rows["slide"] if s not in fold_of_slide]
        if extra:
            raise InputError(f"compare features {features} hold {len(extra)} slide(s) the first run did not use: "
                             f"{examples(extra)}", hint="compare feature sets on exactly the same slides and folds")
        fold_of = np.array([fold_of_slide[s] for s in rows["slide"]])
        return fold_of, int(fold_of.max()) + 1, explicit
    if explicit:
        uniq = sorted(rows["_fold"].unique().tolist())
        if len(uniq) < 2:
            raise InputError(f"{csv}: the explicit fold column has a single fold ({uniq[0]})")
        return np.searchsorted(uniq, rows["_fold"].to_numpy()), len(uniq), explicit
    n_cases = rows["case_id"].nunique()
    if n_cases < folds:
        raise InputError(f"{csv}: {n_cases} case(s) with features cannot fill {folds} folds", hint="lower --folds")
    return _assign_folds(data.y, data.groups, folds, seed), folds, explicit


def _start_out(out: Path) -> None:
    """Create the run folder; drop ``metrics.json`` (the completion mark) until this run writes it."""
    make_out_dir(out)
    (out / "metrics.json").unlink(missing_ok=True)
    (out / "attention").mkdir(exist_ok=True)


def _cross_validate(data: MILData, fold_of: np.ndarray, folds: int, cfg: dict, device, seed: int, out: Path,
                    progress: bool) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Train and test every fold: out-of-fold probabilities, each slide's fold, and the per-fold records."""
    from panderm.progress import progress_bar

    proba = np.zeros((len(data.bags), len(data.classes)))
    pred_fold = np.full(len(data.bags), -1)
    fold_info = []
    bar = progress_bar(total=folds, unit="fold", enabled=progress, desc="mil")
    for k in range(folds):
        test_i = np.flatnonzero(fold_of == k)
        p, info = _run_fold(data, k, test_i, np.flatnonzero(fold_of != k), cfg, device, seed, out)
        proba[test_i], pred_fold[test_i] = p, k
        fold_info.append(info)
        bar.update(1)
        bar.set_postfix(best_epoch=info["best_epoch"], val_loss=f"{info['best_val_loss']:.3f}")
    bar.close()
    return proba, pred_fold, fold_info


def _inner_split(y: np.ndarray, groups: np.ndarray, train_i: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(validation, fit)`` indices: about 1/5 of the training cases held out for early stopping."""
    tr_groups = groups[train_i]
    # StratifiedGroupKFold refuses more folds than the largest class has slides (a tiny or skipped-down set)
    n_inner = min(5, len(np.unique(tr_groups)), int(np.bincount(y[train_i]).max()))
    if n_inner < 2:
        return train_i[:0], train_i
    inner = _assign_folds(y[train_i], tr_groups, n_inner, seed)
    return train_i[inner == 0], train_i[inner != 0]


def _run_fold(data: MILData, k: int, test_i: np.ndarray, train_i: np.ndarray, cfg: dict, device, seed: int,
              out: Path) -> tuple[np.ndarray, dict]:
    """Fit fold ``k``, save its model and attention files: its test probabilities and its record."""
    import torch

    bags, classes, y = data.bags, data.classes, data.y
    val_i, fit_i = _inner_split(y, data.groups, train_i, seed + 1000 + k)
    fit, val, test = [bags[i] for i in fit_i], [bags[i] for i in val_i], [bags[i] for i in test_i]
    model, info = _fit_fold(fit, val, data.in_dim, len(classes), cfg, device, seed + k,
                            out / f"fold{k}" / "log.jsonl")
    with atomic_path(out / f"fold{k}" / "model.pt") as tmp:  # a killed run never leaves a torn model.pt
        torch.save(model.state_dict(), tmp)
    p, attns = predict_bags(model, test, device)
    for b, a, pi in zip(test, attns, p):
        _write_attention(out / "attention" / f"{b.slide}.h5", b, a, k, classes[int(pi.argmax())])
    m = classification_metrics(y[test_i], p, list(range(len(classes)))) if len(test_i) else {}
    return p, {"fold": k, "n_train": len(fit), "n_val": len(val), "n_test": len(test),
               "val_slides": [b.slide for b in val], "test_slides": [b.slide for b in test],
               **info, "metrics": {n: m.get(n) for n in ALL_METRICS}}


def _check_compare_slides(csv: Path, compare: Path, slides: list[str]) -> None:
    """The comparison features must hold every slide of the first run (checked before any training)."""
    rows_b, _, _ = load_slides(csv, compare)
    lost = sorted(set(slides) - set(rows_b["slide"]))
    if lost:
        raise InputError(f"compare features {compare} lack {len(lost)} of the {len(slides)} slides used: "
                         f"{examples(lost)}", hint="compare feature sets on exactly the same slides and folds")


def _compare_run(compare: Path, csv: Path, out: Path, fold_of_slide: dict[str, int], fold_info: list[dict],
                 kwargs: dict) -> dict:
    """Train on ``compare`` with the same folds; paired t-test of each per-fold metric (A − B)."""
    res = train_mil(compare, csv, out, _fold_of_slide=fold_of_slide, **kwargs)
    extra = sorted(set(res.predictions["slide"]) - set(fold_of_slide))
    lost = sorted(set(fold_of_slide) - set(res.predictions["slide"]))
    if extra or lost:
        raise InputError(f"compare features {compare} cover other slides: {len(lost)} missing, "
                         f"{len(extra)} extra ({examples(lost or extra)})",
                         hint="compare feature sets on exactly the same slides and folds")
    per_a = [f["metrics"] for f in fold_info]
    per_b = [f["metrics"] for f in res.folds]
    return {"features": str(compare), "run": str(out), "folds": len(per_a),
            "test": "two-sided paired t-test over folds (A = --features, B = --compare; difference A − B)",
            "metrics": paired_t_tests(per_a, per_b, ALL_METRICS)}
