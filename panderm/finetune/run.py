"""``finetune`` / ``evaluate_run``: the official PanDerm fine-tuning recipe on the shared Trainer.

Recipe values: docs/reference/finetuning.md (see ``docs/finetune.md``). The run folder
holds the Trainer's files (``checkpoint-last.pth``, ``checkpoint-best.pth``,
``best.json``, ``log.jsonl``, ``config.json``, ``train-state.pt``) and the test
evaluation with the same files as ``panderm probe`` (``metrics.json``,
``predictions.csv``, ``confusion_matrix.png``, ``roc.png``) plus ``finetune.json``.
Checkpoints hold the whole classifier (encoder, ``fc_norm``, head) as a flat
state dict.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from panderm.errors import CheckpointError, ConfigError, InputError, PandermError, examples
from panderm.hardware import torch_dtype
from panderm.models.checkpoint import load_module_weights

MONITORS = ("auto", "acc", "recall", "auroc")
#: run_config keys that may differ on resume (paths may be spelled differently; evaluation-only options).
_RESUME_IGNORE = ("csv", "root", "tta", "n_bootstrap", "max_steps")


@dataclass
class FinetuneResult:
    """What ``finetune`` / ``evaluate_run`` produced (``metrics`` empty on non-zero DDP ranks)."""

    out: Path
    metrics: dict
    classes: list
    best: dict | None
    n_train: int
    n_test: int
    warnings: list[str] = field(default_factory=list)


def read_run_config(run: Path) -> dict:
    path = Path(run) / "config.json"
    if not path.is_file():
        raise InputError(f"{run} is not a finetune run folder ({path.name} not found)",
                         hint="point at the --out folder of a `panderm finetune` run")
    try:
        rc = json.loads(path.read_text(encoding="utf-8")).get("run_config", {})
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    if rc.get("task") != "finetune":
        raise InputError(f"{run} holds a '{rc.get('task', 'unknown')}' run, not a finetune run")
    return rc


def _val_metrics(y: np.ndarray, proba: np.ndarray, k: int) -> dict[str, float]:
    """Model-selection metrics of the release: acc, macro recall, AUROC (binary: P(1); else OvR macro)."""
    from sklearn import metrics as skm

    pred = proba.argmax(axis=1)
    out = {"acc": float(skm.accuracy_score(y, pred)),
           "recall": float(skm.recall_score(y, pred, average="macro", labels=np.arange(k), zero_division=0))}
    try:
        if k == 2:
            out["auroc"] = float(skm.roc_auc_score(y, proba[:, 1]))
        else:
            out["auroc"] = float(skm.roc_auc_score(np.eye(k)[y], proba, multi_class="ovr", average="macro"))
    except ValueError:
        out["auroc"] = float("nan")
    return out


def _infer(net, paths, labels, preset: str, *, tta: bool, batch_size: int, num_workers: int, device,
           precision: str) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
    """Probabilities of the readable images (eval transform), their row indices and the skipped ones."""
    import contextlib

    from panderm.data.sampling import skip_collate
    from panderm.data.transforms import build_transform
    from panderm.finetune.model import ImageLabelDataset, predict_proba

    ds = ImageLabelDataset(paths, labels, build_transform(preset))
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                         collate_fn=skip_collate())
    device = torch.device(device)
    dtype = torch_dtype(precision)
    amp = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype is not None else contextlib.nullcontext
    probs, rows, skipped = [], [], []
    was_training = net.training
    net.eval()
    try:
        for batch, sk in loader:
            skipped.extend(sk)
            if batch is None:
                continue
            with amp():
                probs.append(predict_proba(net, batch["x"].to(device), tta=tta).cpu().numpy())
            rows.append(batch["index"].numpy())
    finally:
        net.train(was_training)
    k = net.head.out_features
    return (np.concatenate(probs).astype(np.float64) if probs else np.zeros((0, k)),
            np.concatenate(rows) if rows else np.zeros(0, np.int64), skipped)


def _test_outputs(net, test: pd.DataFrame, classes: list, out: Path, summary: dict, *, tta: bool,
                  n_bootstrap: int, seed: int, batch_size: int, num_workers: int, device, precision: str,
                  warnings: list[str]) -> dict:
    """Evaluate ``test`` rows, write the probe-style outputs + ``finetune.json``; returns the metrics."""
    from panderm.eval.metrics import ALL_METRICS, bootstrap_ci
    from panderm.eval.probe import write_eval_outputs
    from panderm.finetune.model import TTA_VIEWS

    y_idx = test["_y"].to_numpy()
    proba, rows, skipped = _infer(net, test["_path"].tolist(), y_idx, net.pretrained_cfg.preset,
                                  tta=tta, batch_size=batch_size, num_workers=num_workers, device=device,
                                  precision=precision)
    if skipped:
        warnings.append(f"{len(skipped)} unreadable test image(s) were skipped: {examples(p for p, _ in skipped)}")
    if not len(rows):
        raise InputError(f"none of the {len(test)} test images could be read", hint="check --root")
    kept = test.iloc[rows]
    y_true = np.asarray(classes, dtype=object)[kept["_y"].to_numpy()]
    absent = [c for c in classes if c not in set(y_true.tolist())]
    if absent:
        warnings.append(f"class(es) {examples(absent)} have no test rows: AUROC/AUPR are undefined (null)")
    metrics = bootstrap_ci(y_true.tolist(), proba, classes, n=n_bootstrap, seed=seed, metrics=ALL_METRICS)
    pred = pd.DataFrame({"image": kept["image"].to_numpy(), "split": kept["split"].to_numpy(), "true_label": y_true,
                         "predicted_label": np.asarray(classes, dtype=object)[proba.argmax(axis=1)]})
    for j, c in enumerate(classes):
        pred[f"prob_{c}"] = proba[:, j]
    summary.update({"n_test": len(kept), "tta": tta,
                    "tta_views": list(TTA_VIEWS) if tta else ["identity"],
                    "test_class_counts": {str(c): int((y_true == c).sum()) for c in classes},
                    "skipped_test": [{"path": p, "reason": r} for p, r in skipped],
                    "bootstrap": {"n": n_bootstrap, "stratified": False, "ci": 0.95, "seed": seed},
                    "metrics": metrics, "warnings": warnings})
    write_eval_outputs(out, pred, classes, metrics, {"finetune.json": summary})
    return metrics


def _image_paths(df: pd.DataFrame, csv: Path, root: Path | None) -> list[str]:
    """Each row's image file: under ``root`` (``--root``; a path leaving it is refused, naming the row),
    else relative to the CSV's folder (absolute paths allowed)."""
    from panderm.paths import resolve_under_root

    return [str(resolve_under_root(p, root, base=csv.parent, where=f"{csv} line {int(i) + 2}"))
            for i, p in zip(df.index, df["image"].astype(str))]


def read_splits(csv, binary: bool, classes: list | None = None, root: Path | None = None):
    """The probe-format table with each row's resolved image (``_path``) and class index (``_y``; -1: unknown).

    Returns ``(df, label_column, classes)``; ``classes`` defaults to the sorted train labels.
    """
    from panderm.data.tables import load_dataset

    df, label_col = load_dataset(csv, binary)
    df["_path"] = _image_paths(df, Path(csv), root)
    if classes is None:
        classes = sorted(df.loc[df["split"] == "train", "_label"].unique().tolist())
    index = {c: i for i, c in enumerate(classes)}
    df["_y"] = [index.get(v, -1) for v in df["_label"].tolist()]
    return df, label_col, classes


def finetune(csv, root, out, *, model="panderm_large_patch16_224", weights=None, epochs=50, max_steps=None,
             batch_size=128, lr=5e-4, weight_decay=0.05, layer_decay=0.65, drop_path=0.2, warmup_epochs=10,
             min_lr=1e-6, mixup=0.8, cutmix=1.0, smoothing=0.1, rel_pos_bias=False, weighted_sampler=True,
             monitor="auto", percent_data=1.0, binary=False, tta=False, seed=0, precision="auto", device=None,
             num_workers=None, resume=False, progress=True, n_bootstrap=1000, random_init=False) -> FinetuneResult:
    """Fine-tune ``model`` end to end on the CSV's train rows, select on val, test on test.

    Args:
        csv: Probe-format dataset CSV (``image``, ``label``, ``split``, optional ``binary_label``).
        root: Folder the ``image`` paths are relative to (``--root``; rows may not leave it).
            None: relative to the CSV's folder, absolute paths allowed.
        out: Run folder (Trainer files + test outputs).
        max_steps: Optimizer steps instead of ``epochs``.
        monitor: ``auto`` (AUROC for two classes, else acc), ``acc``, ``recall`` (macro) or ``auroc``.
        percent_data: Stratified, seeded fraction of the train rows (as ``panderm probe``).
        binary: Use ``binary_label``.
        weighted_sampler: Class-balanced sampling with replacement (weights N/(K·n_c) of the rows
            trained on), on by default as in the release (``--weights``); False: shuffled epochs.
        tta: Test with the 5 :data:`~panderm.finetune.model.TTA_VIEWS` (probabilities averaged).
        num_workers: DataLoader workers; None: ``min(2, os.cpu_count())``.
        precision: ``auto`` (bf16 on CUDA and capable CPUs, else fp32), ``bf16``, ``fp16`` or ``fp32``.
        resume: Continue the run in ``out`` (same options; more ``epochs``/``max_steps`` allowed).
            Refused when the CSV's rows (image, label, split), the image files or the
            starting weights differ from the run's (``inputs.json``).
        Other arguments: the release's recipe values (docs/reference/finetuning.md); ``docs/finetune.md``
            lists where they differ from the paper's Extended Data Table 32.

    Raises:
        InputError: unusable CSV/labels/images. ConfigError: bad options, an undefined monitor on val.
        PandermError: resuming with another model or configuration.
    """
    from panderm.finetune.model import build_classifier
    from panderm.hardware import resolve_precision
    from panderm.train import run_state as ckpt
    from panderm import distributed as D

    csv, root, out = Path(csv), None if root is None else Path(root), Path(out)
    num_workers = min(2, os.cpu_count() or 1) if num_workers is None else max(0, int(num_workers))
    _check_finetune_options(out, model, monitor=monitor, percent_data=percent_data, mixup=mixup, cutmix=cutmix,
                            batch_size=batch_size, root=root, resume=resume)
    df, label_col, classes, (train, val, test), n_full = _finetune_splits(csv, binary, root, percent_data, seed)
    k = len(classes)
    monitor, warnings = _val_monitor(val, monitor, classes)
    precision = resolve_precision(precision, D.resolve_device(device))
    net = build_classifier(model, weights, k, drop_path=drop_path, rel_pos_bias=rel_pos_bias, random_init=random_init)
    recipe = {"epochs": epochs, "max_steps": max_steps, "batch_size": batch_size, "lr": lr,
              "weight_decay": weight_decay, "layer_decay": layer_decay, "drop_path": drop_path,
              "warmup_epochs": warmup_epochs, "min_lr": min_lr, "mixup": mixup, "cutmix": cutmix,
              "smoothing": smoothing, "rel_pos_bias": rel_pos_bias, "weighted_sampler": weighted_sampler,
              "monitor": monitor, "percent_data": percent_data, "seed": seed, "precision": precision,
              "optimizer": "AdamW(betas 0.9/0.999, eps 1e-8), no lr batch scaling, no grad clipping"}
    run_config = {"task": "finetune", "model": model, "weights": None if weights is None else str(weights),
                  "classes": classes, "binary": binary, "label_column": label_col, "n_train": len(train),
                  "csv": str(csv.resolve()), "root": None if root is None else str(root.resolve()), **recipe}
    eval_bs = max(8, min(batch_size, 64))
    trainer = _make_trainer(net, k, train, val, out, recipe, run_config,
                            describe_finetune_inputs(df, csv, label_col, net), eval_bs=eval_bs, resume=resume,
                            num_workers=num_workers, device=device, progress=progress)
    res = trainer.fit()
    if int(os.environ.get("RANK", "0")) != 0 or res.interrupted:
        return FinetuneResult(out, {}, classes, res.best, len(train), len(test), warnings)
    if res.best is not None:
        load_module_weights(net, out / ckpt.BEST, "fine-tuned classifier")
    summary = _finetune_summary(run_config, recipe, res, trainer.spe, csv=csv, root=root, n_full=n_full,
                                n_val=len(val), y_train=train["_y"].to_numpy())
    metrics = _test_outputs(net, test, classes, out, summary, tta=tta, n_bootstrap=n_bootstrap, seed=seed,
                            batch_size=eval_bs, num_workers=num_workers, device=trainer.device,
                            precision=precision, warnings=warnings)
    return FinetuneResult(out, metrics, classes, summary["best"], len(train), summary["n_test"], warnings)


def _check_finetune_options(out: Path, model: str, *, monitor: str, percent_data: float, mixup: float,
                            cutmix: float, batch_size: int, root: Path | None, resume: bool) -> None:
    """Refuse bad options, a missing image root, and resuming a run of another model."""
    if monitor not in MONITORS:
        raise ConfigError(f"unknown monitor '{monitor}'", hint=f"choose one of {', '.join(MONITORS)}")
    if not 0 < percent_data <= 1:
        raise ConfigError(f"percent_data must be in (0, 1], got {percent_data}")
    if (mixup > 0 or cutmix > 0) and batch_size % 2:
        raise ConfigError(f"Mixup/CutMix needs an even batch size, got {batch_size}",
                          hint="use an even --batch-size, or --mixup 0 --cutmix 0")
    if root is not None and not root.is_dir():
        raise InputError(f"image root {root} is not a folder")
    if resume:
        old = read_run_config(out).get("model")
        if old and old != model:
            raise PandermError(f"cannot resume {out}: it was trained with model '{old}', not '{model}'",
                               hint=f"resume with --model {old}, or start a new run in another folder")


def _finetune_splits(csv: Path, binary: bool, root: Path | None, percent_data: float, seed: int):
    """``(df, label_column, classes, (train, val, test), n_train_full)``, refusing unusable splits and unseen
    labels; ``train`` is the stratified, seeded ``percent_data`` subsample of the train rows."""
    from panderm.data.tables import subsample

    df, label_col, classes = read_splits(csv, binary, root=root)
    train, val, test = (df[df["split"] == s] for s in ("train", "val", "test"))
    if train.empty or test.empty:
        raise InputError(f"{csv} needs train and test rows (has {len(train)} train, {len(test)} test)")
    if len(classes) < 2:
        raise InputError(f"{csv}: the training rows have only one class ({classes[0]!r}) in '{label_col}'")
    for name, part in (("val", val), ("test", test)):
        unseen = sorted(set(part.loc[part["_y"] < 0, "_label"].tolist()), key=str)
        if unseen:
            raise InputError(f"{csv}: {name} label(s) {examples(unseen)} never occur in the training rows")
    n_full = len(train)
    if percent_data < 1:
        train = train.iloc[subsample(train["_y"].to_numpy(), percent_data, seed)]
    return df, label_col, classes, (train, val, test), n_full


def _val_monitor(val: pd.DataFrame, monitor: str, classes: list) -> tuple[str, list[str]]:
    """The monitor (``auto``: AUROC for two classes, else acc) and the run's first warnings (no val rows: no
    model selection); AUROC on a val split missing a class is refused."""
    monitor = ("auroc" if len(classes) == 2 else "acc") if monitor == "auto" else monitor
    warnings: list[str] = []
    if val.empty:
        warnings.append("no val rows: no model selection, the last checkpoint is tested")
    elif monitor == "auroc" and val["_y"].nunique() < len(classes):
        present = sorted(set(val["_label"].tolist()), key=str)
        raise ConfigError(f"--monitor auroc is undefined on the val split: it has only class(es) "
                          f"{examples(present)} of {examples(classes)}",
                          hint="use --monitor acc or --monitor recall, or add val rows of every class")
    return monitor, warnings


def _make_trainer(net, k: int, train: pd.DataFrame, val: pd.DataFrame, out: Path, recipe: dict, run_config: dict,
                  inputs: dict, *, eval_bs: int, resume: bool, num_workers: int, device, progress: bool):
    """The shared Trainer set up with the recipe: Mixup/CutMix wrapper, layer decay, sampler, val selection."""
    from panderm.finetune.model import (
        FinetuneModel,
        ImageLabelDataset,
        param_groups_fn,
        train_transform,
        weighted_sampler_factory,
    )
    from panderm.train import run_state as ckpt
    from panderm.train.trainer import DEFAULT_RESUME_IGNORE, TrainConfig, Trainer

    r = recipe
    preset = net.pretrained_cfg.preset
    wrapper = FinetuneModel(net, k, mixup=r["mixup"], cutmix=r["cutmix"], smoothing=r["smoothing"])
    y_train = train["_y"].to_numpy()
    ds = ImageLabelDataset(train["_path"].tolist(), y_train, train_transform(preset))
    eval_fn = _val_eval_fn(val, preset, k, eval_bs=eval_bs, num_workers=num_workers, precision=r["precision"])
    spe_guess = max(1, len(train) // int(os.environ.get("WORLD_SIZE", "1")) // r["batch_size"])  # one checkpoint/epoch
    cfg = TrainConfig(steps=r["max_steps"], epochs=None if r["max_steps"] else r["epochs"],
                      batch_size=r["batch_size"], lr=r["lr"], lr_base_batch=0, min_lr=r["min_lr"],
                      warmup_epochs=r["warmup_epochs"], weight_decay=r["weight_decay"], clip_grad=None,
                      precision=r["precision"], seed=r["seed"], num_workers=num_workers, progress=progress,
                      device=device, checkpoint_every=spe_guess, keep_last=1, log_every=max(1, min(10, spe_guess)))
    return Trainer(
        wrapper, ds, cfg, out, param_groups=param_groups_fn(r["layer_decay"]),
        export_fn=lambda m: ckpt.tensor_dict(m.net.state_dict()), run_config=run_config, resume=resume,
        resume_ignore=DEFAULT_RESUME_IGNORE + _RESUME_IGNORE,
        sampler_factory=weighted_sampler_factory(y_train) if r["weighted_sampler"] else None,
        eval_fn=eval_fn if not val.empty else None, monitor=r["monitor"] if not val.empty else None,
        inputs=inputs)


def _val_eval_fn(val: pd.DataFrame, preset: str, k: int, *, eval_bs: int, num_workers: int, precision: str):
    """The Trainer's model-selection function: the release's val metrics (NaN when no val image is readable)."""

    def eval_fn(m):
        proba, rows, _ = _infer(m.net, val["_path"].tolist(), val["_y"].to_numpy(), preset,
                                tta=False, batch_size=eval_bs, num_workers=num_workers,
                                device=next(m.parameters()).device, precision=precision)
        return _val_metrics(val["_y"].to_numpy()[rows], proba, k) if len(rows) else {
            "acc": math.nan, "recall": math.nan, "auroc": math.nan}

    return eval_fn


def _finetune_summary(run_config: dict, recipe: dict, res, spe: int, *, csv: Path, root: Path | None,
                      n_full: int, n_val: int, y_train: np.ndarray) -> dict:
    """``finetune.json`` before the test evaluation: model, recipe, data sizes, steps and the selected checkpoint."""
    from panderm.train import run_state as ckpt

    best, classes = res.best, run_config["classes"]
    return {"model": run_config["model"], "weights": run_config["weights"], "recipe": recipe, "classes": classes,
            "binary": run_config["binary"], "label_column": run_config["label_column"], "csv": str(csv),
            "root": None if root is None else str(root), "n_train": run_config["n_train"], "n_train_full": n_full,
            "n_val": n_val,
            "train_class_counts": {str(c): int((y_train == i).sum()) for i, c in enumerate(classes)},
            "steps": res.steps, "skipped_train_loads": res.skipped,
            "best": None if best is None else {"step": best["step"], "epoch": best["step"] / spe,
                                               "monitor": best["monitor"], "value": best["value"],
                                               "val_metrics": best["metrics"]},
            "checkpoint": ckpt.BEST if best is not None else ckpt.LAST}

def describe_finetune_inputs(df: pd.DataFrame, csv: Path, label_col: str, net) -> dict:
    """What a fine-tuning run is made from (checked on ``--resume``): every CSV row's image,
    label and split with the image file's size and mtime, and the starting weights' sha256."""
    from panderm.provenance import describe_records, encoder_weights_sha256

    records = ((key, [label, split], {"image": path})
               for key, label, split, path in zip(df["key"], df[label_col].astype(str), df["split"], df["_path"]))
    return describe_records(records, source=csv, weights_sha256=encoder_weights_sha256(net))


def evaluate_run(run, csv=None, root=None, out=None, *, split="test", tta=False, n_bootstrap=1000,
                 device=None, precision="auto") -> FinetuneResult:
    """Evaluate a finetune run's best (else last) checkpoint on ``split`` of the CSV.

    Args:
        run: The run folder of :func:`finetune`.
        csv, root: Dataset CSV and image root (default: the run's).
        out: Output folder (default ``run/eval-<split>[-tta]``).
        split: ``test`` (or ``val``/``train``) rows to evaluate.
        tta: Average the probabilities of the 5 TTA views.
    """
    from panderm.hardware import resolve_precision
    from panderm.train import run_state as ckpt
    from panderm import distributed as D

    run = Path(run)
    rc = read_run_config(run)
    csv = Path(csv or rc["csv"])
    root = root or (rc.get("root") if csv == Path(rc["csv"]) else None)
    root = None if root is None else Path(root)
    out = Path(out) if out is not None else run / f"eval-{split}{'-tta' if tta else ''}"
    weights = next((run / n for n in (ckpt.BEST, ckpt.LAST) if (run / n).is_file()), None)
    if weights is None:
        raise CheckpointError(f"{run} has no {ckpt.BEST} or {ckpt.LAST}", hint="the run never finished a step")
    classes = rc["classes"]
    df, label_col, _ = read_splits(csv, bool(rc["binary"]), classes, root=root)
    rows = df[df["split"] == split]
    if rows.empty:
        raise InputError(f"{csv} has no '{split}' rows")
    unseen = sorted(set(rows.loc[rows["_y"] < 0, "_label"].tolist()), key=str)
    if unseen:
        raise InputError(f"{csv}: {split} label(s) {examples(unseen)} are not among the run's classes "
                         f"{examples(classes)}")
    net = load_run_network(rc, weights, len(classes))
    dev = D.resolve_device(device)
    net.to(dev)
    summary = {"run": str(run), "checkpoint": weights.name, "split": split, "model": rc["model"],
               "classes": classes, "binary": rc["binary"], "label_column": label_col, "csv": str(csv),
               "root": None if root is None else str(root), "recipe": {k: rc.get(k) for k in ("epochs", "max_steps", "batch_size", "lr",
                                                                     "layer_decay", "monitor", "seed")}}
    best_file = run / "best.json"
    best = json.loads(best_file.read_text(encoding="utf-8")) if best_file.is_file() else None
    warnings: list[str] = []
    metrics = _test_outputs(net, rows, classes, out, summary, tta=tta, n_bootstrap=n_bootstrap,
                            seed=int(rc.get("seed", 0)), batch_size=32, num_workers=0, device=dev,
                            precision=resolve_precision(precision, dev), warnings=warnings)
    return FinetuneResult(out, metrics, classes, best, int(rc.get("n_train", 0)), summary["n_test"], warnings)


def load_run_network(rc: dict, weights: Path, n_classes: int):
    """The fine-tuned classifier of a run (its ``config.json`` run_config ``rc``) with ``weights`` loaded strictly."""
    from panderm.finetune.model import build_classifier

    net = build_classifier(rc["model"], None, n_classes, drop_path=0.0,
                           rel_pos_bias=bool(rc.get("rel_pos_bias")), load=False)
    try:
        load_module_weights(net, weights, "fine-tuned classifier")
    except (RuntimeError, OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"cannot load {weights} into {rc['model']}: {exc}".splitlines()[0]) from None
    return net
