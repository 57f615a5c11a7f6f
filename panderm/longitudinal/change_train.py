"""Training of the Siamese change detector (:func:`train_change`) with best-val-AUROC checkpoint selection."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from panderm.errors import InputError
from panderm.io import atomic_write_json
from panderm.longitudinal.change import (
    CONFIG_FILE,
    PairDataset,
    SiameseChangeModel,
    describe_change_inputs,
    read_pairs,
    resolve_pairs,
)


def _export(model: SiameseChangeModel) -> dict[str, torch.Tensor]:
    """Checkpoint tensors: ``encoder.*`` and ``head.*`` (everything needed for inference)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


#: The paper's recipe (Methods; Extended Data Tables 3-4, "Whole pipeline"): the whole
#: preprocessing pipeline, lr 5e-4 without batch scaling, 50 epochs with 10 warm-up epochs,
#: and the checkpoint of the best validation AUROC.
PAPER_RECIPE = {"steps": "whole", "epochs": 50, "warmup_epochs": 10}
#: ``quick=True``: a short CPU demo on raw images (the paper's "Default" input).
QUICK_RECIPE = {"steps": "default", "epochs": 3, "warmup_epochs": 1}
MONITOR = "val_auroc"


def change_recipe(quick: bool = False, **given) -> dict:
    """The preprocessing steps, epochs and warm-up epochs: the paper's (or ``quick``'s), with the ``given``
    values that are not None in their place."""
    recipe = dict(QUICK_RECIPE if quick else PAPER_RECIPE)
    recipe.update({k: v for k, v in given.items() if v is not None})
    return recipe


def _train_and_val_rows(pairs_csv, split: str) -> tuple[pd.DataFrame, pd.DataFrame, str | None]:
    """The ``split`` rows, the ``val`` rows (model selection) and why there are none, if so."""
    train = read_pairs(pairs_csv, split)
    everything = read_pairs(pairs_csv)
    val = everything[everything["split"] == "val"].reset_index(drop=True) if split != "val" else everything[:0]
    if split == "val":
        return train, val, f"training on the val rows of {pairs_csv} leaves none for validation"
    if (everything["split"] == "").all():
        return train, val, f"{pairs_csv} has no split column, so no val rows"
    if val.empty:
        return train, val, f"{pairs_csv} has no rows with split 'val'"
    return train, val, None


def _no_selection(val_set: PairDataset, pairs_csv, reason: str | None) -> str | None:
    """Why the best-val-AUROC selection cannot run (None: it can), with the fallback named."""
    labels = val_set.rows["label"] if not val_set.rows.empty else pd.Series([], dtype=int)
    if reason is None and labels.nunique() < 2:
        what = ("no readable pair" if labels.empty
                else ("only changed" if labels.iloc[0] else "only unchanged") + " pairs")
        reason = f"the val rows of {pairs_csv} have {what}, so val AUROC is undefined"
    return None if reason is None else f"{reason}: no model selection, the last epoch's checkpoint is used"


def val_auroc_fn(dataset: PairDataset, batch_size: int, num_workers: int = 0):
    """``eval_fn`` for the Trainer: ``{"val_auroc"}`` of the model on ``dataset`` (NaN with one class)."""
    from sklearn.metrics import roc_auc_score

    from panderm.data.sampling import skip_collate

    labels = dataset.rows["label"].to_numpy()

    def evaluate(net: SiameseChangeModel) -> dict[str, float]:
        dev = next(net.parameters()).device
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                             collate_fn=skip_collate())
        idx, probs = [], []
        for batch, _ in loader:
            if batch is not None:
                probs.append(net.predict_proba(batch["a"].to(dev), batch["b"].to(dev)).float().cpu().numpy())
                idx.append(batch["index"].numpy())
        y = labels[np.concatenate(idx)] if idx else labels[:0]
        if len(set(y.tolist())) < 2:
            return {MONITOR: float("nan")}
        return {MONITOR: float(roc_auc_score(y, np.concatenate(probs)))}

    return evaluate


def _selection(result, trainer, reason: str | None, n_val: int) -> dict:
    """Which checkpoint ``change eval`` uses and why (stored in ``change_config.json``)."""
    from panderm.train import run_state as ckpt

    best = result.best
    if best is None:
        return {"rule": "last epoch", "checkpoint": ckpt.LAST, "step": result.steps,
                "epoch": result.steps / trainer.spe, "val_auroc": None, "n_val": n_val,
                "reason": reason or "no evaluation ran"}
    return {"rule": "best val AUROC", "checkpoint": ckpt.BEST, "step": best["step"],
            "epoch": best["step"] / trainer.spe, "val_auroc": best["value"], "n_val": n_val,
            "finished": not result.interrupted}


def _preprocess(rows: pd.DataFrame, ablation: tuple, out: Path, pairs_csv, split: str, align_preset: str):
    """Apply the ablation to the train+val ``rows`` once: ``(dataset_rows, summary)``."""
    from panderm.longitudinal.ablation import apply_to_rows

    if not ablation:
        return rows, None
    # the paths are absolute
    _, ds_rows, _, summary = apply_to_rows(rows, "/", ablation, out / "preprocessed", align_preset)
    if not (ds_rows["split"] == split).any():
        raise InputError(f"no readable image pairs in split '{split}' of {pairs_csv} after preprocessing",
                         hint=f"see {summary['report']}")
    return ds_rows, summary


def train_change(pairs_csv: str | Path, root: str | Path, out: str | Path, model: str = "panderm_large_patch16_224",
                 weights: str | Path | None = None, steps=None, max_steps: int | None = None,
                 epochs: float | None = None, quick: bool = False,
                 batch_size: int = 16, lr: float = 5e-4, hidden: int = 256, margin: float = 1.0,
                 contrastive_weight: float = 1.0, preset: str | None = None, split: str = "train",
                 precision: str = "auto", device: str | None = None, num_workers: int | None = None, seed: int = 0,
                 warmup_epochs: float | None = None, progress: bool = True, resume: bool = False,
                 align_preset: str = "default", random_init: bool = False, **train_kwargs):
    """Train a :class:`SiameseChangeModel` with the shared Trainer; keep the checkpoint of the best val AUROC.

    Defaults and checkpoint selection: see "Training" in the module docstring.

    Args:
        pairs_csv, root: Pairs CSV and the folder its image paths are relative to (``--root``; rows may
            not leave it; None: the CSV's folder, absolute paths allowed).
        out: Run folder (checkpoints, log.jsonl, config.json, ``change_config.json``).
        model, weights, random_init: :func:`create_encoder` arguments (``random_init``: tests and ablations).
        steps: Preprocessing ablation (``--preprocess``): a preset (``default`` = raw images, ``warp``, ``mask``,
            ``whole``) or a comma list of align steps (:mod:`panderm.longitudinal.ablation`). Anything but
            ``default`` preprocesses each train and val pair once into ``out/preprocessed/`` (with
            ``preprocess.csv``). None: ``whole`` (``default`` with ``quick``).
        align_preset: Registration of the ``register`` step: ``align-pair``'s ``default`` (similarity;
            registers real follow-up pairs) or ``paper`` (the release's Euclidean).
        max_steps, epochs, warmup_epochs: Training length (``max_steps`` wins; None: 50 epochs, 10 of them
            warm-up; 3 and 1 with ``quick``, which uses :data:`QUICK_RECIPE` for what is not given).
        batch_size, lr: Per-step batch and learning rate (used as given, no batch scaling).
        hidden, margin, contrastive_weight: :class:`SiameseChangeModel` options; preset: image transform
            preset (default: the encoder's).
        split: Rows of the pairs CSV to train on (the ``val`` rows select the checkpoint).
        precision, device, num_workers, seed, progress: Trainer options (``precision`` ``auto``: bf16 on
            CUDA and bf16-capable CPUs, else fp32; ``num_workers`` None: min(2, CPUs)).
        resume: Continue the run in ``out``; refused when the pairs (images, label, split), the image
            files or the starting weights differ from the run's (``inputs.json``).
        **train_kwargs: Further :class:`~panderm.train.trainer.TrainConfig` fields.

    Returns:
        The Trainer's ``TrainResult`` plus ``preprocess`` (counts, None for ``default``), ``selection``
        (as in ``change_config.json``) and ``warnings``.
    """
    from panderm.longitudinal.ablation import parse_ablation
    from panderm.train.trainer import TrainConfig, Trainer

    num_workers = min(2, os.cpu_count() or 1) if num_workers is None else num_workers
    recipe = change_recipe(quick, steps=steps, epochs=epochs, warmup_epochs=warmup_epochs)
    ablation = parse_ablation(recipe["steps"])
    out = Path(out)
    inputs_rows, ds_rows, summary, n_val, no_val = _training_pairs(pairs_csv, root, split, ablation, out,
                                                                   align_preset)
    model_options = {"hidden": hidden, "margin": margin, "contrastive_weight": contrastive_weight}
    net, preset, dataset, val_set = _change_model_and_data(model, weights, random_init, preset, ds_rows, split,
                                                           **model_options)
    no_selection = _no_selection(val_set, pairs_csv, no_val)
    eval_fn = None if no_selection else val_auroc_fn(val_set, batch_size, num_workers)
    epochs = None if max_steps else recipe["epochs"]
    cfg = TrainConfig(steps=max_steps, epochs=epochs, batch_size=batch_size, lr=lr, lr_base_batch=0,
                      precision=precision, device=device, num_workers=num_workers, seed=seed,
                      warmup_epochs=recipe["warmup_epochs"], progress=progress, **train_kwargs)
    run_config = _change_run_config(pairs_csv, root, model, weights, model_options, preset, split, ablation,
                                    align_preset, monitored=eval_fn is not None, n_val=n_val)
    record = {**run_config, "preprocess": summary,
              "recipe": {"quick": quick, "epochs": epochs, "max_steps": max_steps, "batch_size": batch_size,
                         "warmup_epochs": recipe["warmup_epochs"], "lr": lr, "lr_batch_scaling": False}}
    inputs = _start_change_run(out, record, describe_change_inputs(inputs_rows, pairs_csv, net.encoder), resume)
    trainer = Trainer(net, dataset, cfg, out, export_fn=_export, run_config=run_config, resume=resume,
                      inputs=inputs, eval_fn=eval_fn, monitor=None if eval_fn is None else MONITOR)
    result = trainer.fit()
    result.preprocess, result.warnings = summary, [no_selection] if no_selection else []
    result.selection = _selection(result, trainer, no_selection, n_val)
    atomic_write_json(out / CONFIG_FILE, {**record, "selection": result.selection})
    return result


def _training_pairs(pairs_csv, root, split: str, ablation: tuple, out: Path, align_preset: str):
    """The training and ``val`` pairs, resolved and preprocessed once:
    ``(pairs, dataset rows, preprocessing summary, number of val rows, why there are none)``."""
    from panderm.longitudinal.align import resolve_preset

    train_rows, val_rows, no_val = _train_and_val_rows(pairs_csv, split)
    inputs_rows = resolve_pairs(pd.concat([train_rows, val_rows], ignore_index=True), root, pairs_csv)
    resolve_preset(align_preset)  # an unknown preset fails before any work
    ds_rows, summary = _preprocess(inputs_rows, ablation, out, pairs_csv, split, align_preset)
    return inputs_rows, ds_rows, summary, len(val_rows), no_val


def _change_model_and_data(model: str, weights, random_init: bool, preset: str | None, ds_rows: pd.DataFrame,
                           split: str, **model_options):
    """The Siamese model on a new encoder, its transform preset, and the training and ``val`` pair datasets."""
    from panderm.data.transforms import build_transform
    from panderm.models.factory import create_encoder

    encoder = create_encoder(model, weights, random_init=random_init)
    preset = preset or encoder.pretrained_cfg.preset
    net = SiameseChangeModel(encoder, **model_options)
    transform = build_transform(preset)
    return (net, preset, PairDataset(ds_rows, "/", transform, split=split),
            PairDataset(ds_rows, "/", transform, split="val"))


def _change_run_config(pairs_csv, root, model: str, weights, model_options: dict, preset: str, split: str,
                       ablation: tuple, align_preset: str, *, monitored: bool, n_val: int) -> dict:
    """The run's ``config.json`` fields: data, encoder, model options, preprocessing ablation, monitor."""
    from panderm.longitudinal.ablation import ablation_name

    return {"task": "change", "pairs_csv": str(pairs_csv), "root": None if root is None else str(root),
            "model": model, "weights": None if weights is None else str(weights), **model_options,
            "preset": preset, "split": split, "steps": list(ablation), "ablation": ablation_name(ablation),
            "align_preset": align_preset if "register" in ablation else None,
            "monitor": MONITOR if monitored else None, "n_val": n_val}


def _start_change_run(out: Path, record: dict, inputs: dict, resume: bool) -> dict:
    """Refuse a resume whose inputs changed, then write ``change_config.json`` (without ``selection``);
    returns ``inputs``."""
    if resume and (out / "train-state.pt").is_file():  # refuse before change_config.json is rewritten
        from panderm.provenance import check_resume_inputs

        check_resume_inputs(out, inputs)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / CONFIG_FILE, record)
    return inputs
