"""Train and load lesion segmenters (UPerNet on a PanDerm encoder) with the shared Trainer.

Recipe (docs/reference/segmentation.md, with stated differences): 224×224 input, mean = std =
0.5, AdamW lr 5e-4 (not batch-scaled), weight decay 0.01, cosine schedule (no
warm-up by default), optional drop path, BCE + Dice loss on one lesion logit,
augmentation: colour jitter, flips and rotation (geometric transforms applied to
image and mask together). The best checkpoint is chosen by the val split's mean
per-image Jaccard (``checkpoint-best.pth``, ``best.json``) when the CSV has val rows.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from panderm.errors import InputError, PandermError
from panderm.io import atomic_write_json, write_skipped_csv
from panderm.models.checkpoint import load_module_weights
from panderm.segmentation.data import (
    INPUT_SIZE,
    MEAN,
    STD,
    SegmentationDataset,
    read_segmentation_csv,
    resolve_rows,
    scan_rows,
)
from panderm.segmentation.model import (
    SegmentationModel,
    dice_from_counts,
    jaccard_from_counts,
)

CONFIG_FILE = "segment_config.json"


def build_model(model: str, weights=None, channels: int = 256, drop_path: float = 0.0, taps=None, *,
                random_init: bool = False) -> SegmentationModel:
    """Encoder ``model`` (with ``weights``, or ``random_init``) + neck + UPerHead."""
    from panderm.models.factory import create_encoder

    encoder = create_encoder(model, weights, random_init=random_init, drop_path_rate=drop_path)
    net = SegmentationModel(encoder, channels=channels, taps=taps)
    net.model_name = encoder.model_name
    return net


def _export(model: SegmentationModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def make_eval_fn(rows: pd.DataFrame, batch_size: int = 16):
    """An ``eval_fn`` for the Trainer: mean per-image Dice/Jaccard on ``rows`` at 224×224 (threshold 0.5)."""
    ds = SegmentationDataset(rows, augment=False)
    cache: dict = {}

    def eval_fn(model: SegmentationModel) -> dict[str, float]:
        if "items" not in cache:  # decode the val images once
            cache["items"] = [it for it in (ds[i] for i in range(len(ds))) if not it.get("skip")]
        items = cache["items"]
        dev = next(model.parameters()).device
        counts = []
        for s in range(0, len(items), batch_size):
            chunk = items[s:s + batch_size]
            x = torch.stack([it["image"] for it in chunk]).to(dev)
            pred = (model.logits(x).float() > 0).cpu().numpy()[:, 0]
            truth = torch.stack([it["mask"] for it in chunk]).numpy()[:, 0] > 0.5
            inter = np.logical_and(pred, truth).sum((1, 2))
            counts.append(np.stack([inter, pred.sum((1, 2)), truth.sum((1, 2))], 1))
        c = np.concatenate(counts) if counts else np.zeros((0, 3))
        return {"dice": float(np.mean(dice_from_counts(*c.T))) if len(c) else float("nan"),
                "jaccard": float(np.mean(jaccard_from_counts(*c.T))) if len(c) else float("nan")}

    return eval_fn


def _merge_skipped_csv(out: Path, extra: list[tuple[str, str]]) -> None:
    """Merge the rows skipped before training into the Trainer's ``skipped.csv``."""
    path = out / "skipped.csv"
    rows = []
    if path.is_file():
        rows = [tuple(r) for r in pd.read_csv(path, dtype=str, keep_default_na=False)[["path", "reason"]].values]
    write_skipped_csv(path, dict.fromkeys([*extra, *rows]), write_empty=False)


def describe_segmentation_inputs(table: pd.DataFrame, csv, net: SegmentationModel) -> dict:
    """What a segmentation run is made from (checked on ``--resume``): every CSV row's image, mask
    and split, the image and mask files' size and mtime, and the encoder's starting weights' sha256."""
    from panderm.provenance import describe_records, encoder_weights_sha256

    split = table["split"] if "split" in table.columns else [""] * len(table)
    records = ((img, [mask, s], {"image": ip, "mask": mp}) for img, mask, s, ip, mp in
               zip(table["image"], table["mask"], split, table["image_path"], table["mask_path"]))
    return describe_records(records, source=csv, weights_sha256=encoder_weights_sha256(net.encoder))


def train_segmentation(csv, root, out, *, model: str = "panderm_large_patch16_224", weights=None,
                       epochs: float | None = None, max_steps: int | None = None, batch_size: int = 16,
                       lr: float = 5e-4, weight_decay: float = 0.01, channels: int = 256, drop_path: float = 0.0,
                       precision: str = "auto", device: str | None = None, num_workers: int | None = None,
                       seed: int = 0, resume: bool = False, progress: bool = True, split: str = "train",
                       val_split: str = "val",
                       rotation: float = 30.0, random_init: bool = False, **train_kwargs):
    """Train a UPerNet lesion segmenter on a PanDerm encoder.

    Args:
        csv, root: Segmentation CSV (``image``, ``mask``, ``split``) and the folder its
            paths are relative to (``--root``; rows may not leave it; None: the CSV's folder,
            absolute paths allowed; path rule: :mod:`panderm.segmentation.data`).
        out: Run folder: ``checkpoint-last.pth``, ``checkpoint-best.pth`` + ``best.json``
            (best val Jaccard), ``log.jsonl``, ``config.json``, ``segment_config.json``,
            ``train-state.pt`` (for ``resume``), ``skipped.csv``.
        model, weights: Encoder name and weights (:func:`panderm.models.factory.create_encoder`).
        random_init: Allow a randomly initialised encoder that ships no weights (tests and ablations).
        epochs, max_steps: Training length (one of them; default 100 epochs as in docs/reference/segmentation.md).
        batch_size, lr, weight_decay: AdamW settings (lr is not batch-scaled).
        channels: UPerHead width (official ViT-L: 1024).
        drop_path: Stochastic depth rate of the encoder.
        precision, device, num_workers, seed, progress: Trainer options (``precision`` ``auto``:
            bf16 on CUDA and bf16-capable CPUs, else fp32; ``num_workers`` None: min(2, CPUs)).
        resume: Continue the run in ``out``; refused when the CSV rows (image, mask, split), the
            image/mask files or the starting weights differ from the run's (``inputs.json``).
        split, val_split: CSV splits to train on and to pick the best checkpoint on.
        rotation: Maximum augmentation rotation in degrees.
        **train_kwargs: Further :class:`~panderm.train.trainer.TrainConfig` fields.

    Returns:
        The Trainer's ``TrainResult``.
    """
    from panderm.train.trainer import TrainConfig, Trainer

    if num_workers is None:
        num_workers = min(2, os.cpu_count() or 1)
    out = Path(out)
    _check_resume_model(out, model, resume)
    inputs_table, rows, skipped = _training_rows(csv, root, split)
    eval_fn = _validation_fn(csv, root, val_split)
    net = build_model(model, weights, channels, drop_path, random_init=random_init)
    if max_steps is None and epochs is None:
        epochs = 100
    train_kwargs.setdefault("warmup_epochs", 0)
    train_kwargs.setdefault("min_lr", 0.0)
    tcfg = TrainConfig(steps=max_steps, epochs=epochs, batch_size=batch_size, lr=lr, lr_base_batch=0,
                       weight_decay=weight_decay, precision=precision, device=device, num_workers=num_workers,
                       seed=seed, progress=progress, **train_kwargs)
    seg_cfg = _segment_config(net, model, weights, channels, drop_path, csv, root, split,
                              val_split if eval_fn else None, rotation)
    run_config = {k: seg_cfg[k] for k in ("task", "model", "weights", "taps", "channels", "drop_path", "split",
                                          "rotation")}
    inputs = describe_segmentation_inputs(inputs_table, csv, net)
    _start_run(out, seg_cfg, inputs, resume)
    dataset = SegmentationDataset(rows, augment=True, rotation=rotation)
    result = Trainer(net, dataset, tcfg, out, export_fn=_export, run_config=run_config, resume=resume,
                     eval_fn=eval_fn, monitor="jaccard" if eval_fn else None,
                     inputs=inputs).fit()
    _merge_skipped_csv(out, skipped)
    result.n_train, result.n_skipped_rows = len(rows), len(skipped)
    return result


def _check_resume_model(out: Path, model: str, resume: bool) -> None:
    """Refuse to resume a run that was trained with another encoder."""
    cfg_path = out / CONFIG_FILE
    if resume and cfg_path.is_file():
        old = json.loads(cfg_path.read_text())
        if old.get("model") != model:
            raise PandermError(f"cannot resume {out}: it was trained with model '{old.get('model')}', "
                               f"not '{model}'", hint=f"resume with --model {old.get('model')}, or use a new --out")


def _training_rows(csv, root, split: str):
    """``(every CSV row resolved, the readable rows of split, the skipped (path, reason) rows)``."""
    base, source = Path(csv).parent, str(csv)
    inputs_table = resolve_rows(read_segmentation_csv(csv), root, base=base, source=source)
    rows, skipped = scan_rows(read_segmentation_csv(csv, split), root, base=base, source=source)
    if rows.empty:
        raise InputError(f"no readable image/mask pairs in split '{split}' of {csv}",
                         hint="check the paths against --root (see docs/segmentation.md, path rule)")
    return inputs_table, rows, skipped


def _validation_fn(csv, root, val_split: str):
    """The Trainer's ``eval_fn`` on the ``val_split`` rows, or None (with a warning) when there are none."""
    eval_fn = None
    try:
        val_rows, _ = scan_rows(read_segmentation_csv(csv, val_split), root, warn=False, base=Path(csv).parent,
                                source=str(csv))
        eval_fn = make_eval_fn(val_rows) if not val_rows.empty else None
    except InputError:
        pass
    if eval_fn is None:
        print(f"panderm: warning: no '{val_split}' rows in {csv}: the best checkpoint is not tracked",
              flush=True, file=sys.stderr)
    return eval_fn


def _segment_config(net: SegmentationModel, model: str, weights, channels: int, drop_path: float, csv, root,
                    split: str, val_split: str | None, rotation: float) -> dict:
    """``segment_config.json``: the model, its input preprocessing, loss and threshold, and the data."""
    return {"task": "segmentation", "model": model, "encoder": net.model_name,
            "weights": None if weights is None else str(weights), "taps": list(net.taps), "channels": channels,
            "drop_path": drop_path, "input_size": INPUT_SIZE, "mean": list(MEAN), "std": list(STD),
            "preset": "segment (resize to 224x224, mean = std = 0.5)", "num_classes": 1,
            "loss": "bce+dice", "threshold": 0.5, "csv": str(csv), "root": None if root is None else str(root),
            "split": split, "val_split": val_split, "rotation": rotation}


def _start_run(out: Path, seg_cfg: dict, inputs: dict, resume: bool) -> None:
    """Refuse a resume whose inputs changed, then write ``segment_config.json``."""
    if resume and (out / "train-state.pt").is_file():  # refuse before segment_config.json is rewritten
        from panderm.provenance import check_resume_inputs

        check_resume_inputs(out, inputs)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / CONFIG_FILE, seg_cfg)


def load_segmentation_model(run_dir, which: str = "best") -> tuple[SegmentationModel, dict]:
    """Rebuild a trained segmenter from ``segment_config.json`` and its checkpoint.

    ``which="best"`` uses ``checkpoint-best.pth`` when it exists, else ``checkpoint-last.pth``.
    """
    from panderm.train import run_state as ckpt

    run_dir = Path(run_dir)
    cfg_path = run_dir / CONFIG_FILE
    weights = run_dir / ckpt.BEST if which == "best" and (run_dir / ckpt.BEST).is_file() else run_dir / ckpt.LAST
    for p in (cfg_path, weights):
        if not p.is_file():
            raise InputError(f"{run_dir} is not a finished segmentation run: {p.name} is missing",
                             hint="train one with `panderm segment train`")
    cfg = json.loads(cfg_path.read_text())
    from panderm.models.factory import create_encoder

    encoder = create_encoder(cfg["model"], random_init=True)  # weights come from the run checkpoint below
    net = SegmentationModel(encoder, channels=cfg["channels"], taps=cfg["taps"])
    load_module_weights(net, weights, "segmentation model")
    cfg["checkpoint"] = str(weights)
    return net.eval(), cfg


@torch.no_grad()
def predict_probability(net: SegmentationModel, images: list[np.ndarray], device=None,
                        dtype: torch.dtype | None = None) -> list[np.ndarray]:
    """Lesion probability maps at each image's own resolution (RGB uint8 ``H×W×3`` in, float32 ``H×W`` out)."""
    import torch.nn.functional as F

    from panderm.segmentation.data import normalize, resize_rgb

    if not images:
        return []
    dev = torch.device(device) if device is not None else next(net.parameters()).device
    x = torch.stack([normalize(resize_rgb(im)) for im in images]).to(dev)
    ctx = torch.autocast(dev.type, dtype=dtype) if dtype is not None else torch.autocast(dev.type, enabled=False)
    with ctx:
        logits = net.logits(x).float()
    out = []
    for im, lg in zip(images, logits):
        up = F.interpolate(lg[None], size=im.shape[:2], mode="bilinear", align_corners=False)[0, 0]
        out.append(torch.sigmoid(up).cpu().numpy())
    return out
