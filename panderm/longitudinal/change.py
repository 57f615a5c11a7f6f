"""Siamese change detection on (registered) pairs of sequential lesion images.

As in the paper's Methods ("Siamese network for change detection"): one
encoder with shared weights embeds both images, the two feature vectors are
concatenated and passed through two fully connected layers and a softmax; the
network is trained with a contrastive loss (here added to cross-entropy).

Label convention (everywhere in this module): ``1 = changed``, ``0 = unchanged``.
The contrastive term pulls the embeddings of unchanged pairs together (loss
``d²``) and pushes those of changed pairs apart until their distance exceeds
``margin`` (loss ``max(0, margin - d)²``), where ``d`` is the L2 distance between
the L2-normalised encoder features (so ``margin`` is on the unit sphere's scale,
0 ≤ d ≤ 2, whatever the encoder).

Pairs CSV columns: ``image_a``, ``image_b`` (paths relative to ``root``, which they
may not leave; without a root, relative to the CSV's folder or absolute), ``label`` (``0``/``1``, or the strings ``unchanged``/``changed``), ``split``
(``train``/``val``/``test``; the ``val`` rows select the checkpoint, see :func:`train_change`)
and optionally ``patient``.

Training (:func:`train_change`) follows the paper by default (:data:`PAPER_RECIPE`): the whole
preprocessing pipeline, lr 5e-4 (not scaled by the batch size), 50 epochs of which 10 warm up,
evaluation on the ``val`` rows after every epoch and ``checkpoint-best.pth`` = the epoch of the best
val AUROC (what ``change eval`` loads). Without val rows (or with one class only there) the last epoch
is used and ``result.warnings`` says so. ``change_config.json`` records the choice under ``selection``
(``checkpoint``, ``step``, ``epoch``, ``val_auroc``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from panderm.errors import InputError
from panderm.io import atomic_path, atomic_write_json, write_skipped_csv
from panderm.models.checkpoint import load_module_weights

PAIR_COLUMNS = ("image_a", "image_b", "label")  # + optional split (absent: every row is used), patient
_LABEL_NAMES = {"unchanged": 0, "changed": 1, "0": 0, "1": 1}
CONFIG_FILE = "change_config.json"


# --------------------------------------------------------------------------- model


def contrastive_loss(za: torch.Tensor, zb: torch.Tensor, label: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Contrastive loss (Hadsell et al. 2006) on L2-normalised embeddings.

    Args:
        za, zb: ``[B, D]`` embeddings of the two images.
        label: ``[B]``, 1 = changed (pushed apart beyond ``margin``), 0 = unchanged (pulled together).
        margin: Distance beyond which changed pairs cost nothing.

    Returns:
        Mean over the batch of ``(1 - y) d² + y max(0, margin - d)²``.
    """
    d = (F.normalize(za.float(), dim=-1) - F.normalize(zb.float(), dim=-1)).norm(dim=-1)
    y = label.float()
    return ((1 - y) * d.pow(2) + y * F.relu(margin - d).pow(2)).mean()


class SiameseChangeModel(nn.Module):
    """Shared-weight Siamese encoder + two-layer classification head.

    Args:
        encoder: Module with ``forward_features(x) -> [B, D]`` and ``num_features``
            (e.g. from :func:`panderm.models.factory.create_encoder`); it is applied
            to both images (one parameter set).
        hidden: Width of the hidden fully connected layer.
        margin: Contrastive margin (see the module docstring).
        contrastive_weight: Weight of the contrastive term in ``loss``.
    """

    def __init__(self, encoder: nn.Module, hidden: int = 256, margin: float = 1.0, contrastive_weight: float = 1.0):
        super().__init__()
        self.encoder = encoder
        dim = int(getattr(encoder, "num_features", 0) or encoder.embed_dim)
        self.head = nn.Sequential(nn.Linear(2 * dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 2))
        self.margin, self.contrastive_weight = float(margin), float(contrastive_weight)

    def embed(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features of both images from the one shared encoder (a single batched pass)."""
        z = self.encoder.forward_features(torch.cat([a, b], dim=0))
        return z[: a.shape[0]], z[a.shape[0]:]

    def logits(self, za: torch.Tensor, zb: torch.Tensor) -> torch.Tensor:
        """``[B, 2]`` logits (column 1 = changed) from the concatenated features."""
        return self.head(torch.cat([za, zb], dim=-1))

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Training step for the shared :class:`~panderm.train.trainer.Trainer`.

        Args:
            batch: ``{"a": [B,3,H,W], "b": [B,3,H,W], "label": [B] long}``.

        Returns:
            ``{"loss", "loss_ce", "loss_contrastive"}`` (scalars).
        """
        za, zb = self.embed(batch["a"], batch["b"])
        label = batch["label"].long()
        ce = F.cross_entropy(self.logits(za, zb).float(), label)
        con = contrastive_loss(za, zb, label, self.margin)
        return {"loss": ce + self.contrastive_weight * con, "loss_ce": ce, "loss_contrastive": con}

    @torch.no_grad()
    def predict_proba(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``[B]`` probability that the pair changed (softmax column 1)."""
        za, zb = self.embed(a, b)
        return self.logits(za, zb).float().softmax(dim=-1)[:, 1]


# --------------------------------------------------------------------------- data


def read_pairs(pairs_csv: str | Path, split: str | None = None) -> pd.DataFrame:
    """Read and validate a pairs CSV; labels become ints (1 = changed).

    Args:
        pairs_csv: CSV with :data:`PAIR_COLUMNS` (and optionally ``patient``).
        split: Keep only this split (None: all rows).

    Raises:
        InputError: Missing file/columns, bad labels, or no rows in ``split``.
    """
    path = Path(pairs_csv)
    if not path.is_file():
        raise InputError(f"pairs file not found: {path}")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise InputError(f"{path} is empty", hint=f"expected columns {', '.join(PAIR_COLUMNS)}") from None
    missing = [c for c in PAIR_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"{path} lacks column(s) {', '.join(missing)} (has: {', '.join(df.columns)})",
                         hint=f"expected columns {', '.join(PAIR_COLUMNS)} (+ optional patient)")
    labels = df["label"].str.strip().str.lower().map(_LABEL_NAMES)
    if labels.isna().any():
        i = int(np.flatnonzero(labels.isna().to_numpy())[0])
        raise InputError(f"{path}: label {df['label'].iloc[i]!r} on line {i + 2} is not 0/1 or unchanged/changed",
                         hint="label: 1 (changed) or 0 (unchanged)")
    df["label"] = labels.astype(int)
    df["_line"] = range(2, len(df) + 2)  # the CSV line, for messages
    if "split" not in df.columns:  # a CSV of one split only (e.g. test.csv): use every row
        df["split"] = split or ""
    if split is not None:
        df = df[df["split"] == split].reset_index(drop=True)
        if df.empty:
            raise InputError(f"{path} has no rows with split '{split}'")
    return df


def resolve_pairs(rows: pd.DataFrame, root: str | Path | None, pairs_csv: str | Path) -> pd.DataFrame:
    """``rows`` with ``image_a``/``image_b`` made absolute (``./`` and backslashes accepted).

    With a ``root`` (``--root``) a path leaving it is refused, naming the row; without one,
    paths are relative to the CSV's folder and may be absolute. The original cells are kept
    in ``_image_a``/``_image_b``.

    Raises:
        InputError: a path that leaves ``root``.
    """
    from panderm.paths import resolve_under_root

    base, out = Path(pairs_csv).parent, rows.copy()
    lines = out["_line"] if "_line" in out.columns else pd.Series(range(2, len(out) + 2))
    for col in ("image_a", "image_b"):
        out[f"_{col}"] = out[col]
        out[col] = [str(resolve_under_root(str(v), root, base=base, where=f"{pairs_csv} line {n} ({col})"))
                    for v, n in zip(rows[col], lines)]
    return out


def describe_change_inputs(rows: pd.DataFrame, pairs_csv, encoder) -> dict:
    """What a change-detection run is made from (checked on ``--resume``): each pair's two images,
    label and split, both files' size and mtime, and the encoder's starting weights' sha256.

    ``rows`` come from :func:`resolve_pairs` (absolute paths plus the original cells).
    """
    from panderm.provenance import describe_records, encoder_weights_sha256

    records = ((f"{a} | {b}", [label, split], {"image_a": pa, "image_b": pb}) for a, b, label, split, pa, pb in
               zip(rows["_image_a"], rows["_image_b"], rows["label"], rows["split"], rows["image_a"],
                   rows["image_b"]))
    return describe_records(records, source=pairs_csv, weights_sha256=encoder_weights_sha256(encoder))


class PairDataset(torch.utils.data.Dataset):
    """Image pairs as ``{"a", "b", "label", "index"}``; an unreadable image gives a skip record.

    Args:
        rows: A DataFrame (or list of dicts) with ``image_a``, ``image_b``, ``label``
            (int, 1 = changed) and ``split``; e.g. from :func:`read_pairs`.
        root: Folder the image paths are relative to.
        transform: ``PIL.Image -> [3, H, W]`` tensor, e.g. ``build_transform("panderm")``.
        split: Keep only rows of this split (None: all rows).
    """

    def __init__(self, rows, root: str | Path, transform, split: str | None = None):
        df = pd.DataFrame(rows)
        if split is not None:
            df = df[df["split"] == split]
        self.rows = df.reset_index(drop=True)
        self.root, self.transform = Path(root), transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from panderm.data.images import ImageReadError, load_rgb

        r = self.rows.iloc[int(index)]
        images = []
        for col in ("image_a", "image_b"):
            path = self.root / str(r[col])
            try:
                images.append(self.transform(load_rgb(path)))
            except ImageReadError as exc:
                return {"skip": True, "path": str(path), "reason": exc.reason}
        return {"a": images[0], "b": images[1], "label": torch.tensor(int(r["label"]), dtype=torch.long),
                "index": torch.tensor(int(index), dtype=torch.long)}


# --------------------------------------------------------------------------- train / eval


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
