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

Training (:func:`train_change` in :mod:`panderm.longitudinal.change_train`) follows the paper by default
(:data:`PAPER_RECIPE`): the whole
preprocessing pipeline, lr 5e-4 (not scaled by the batch size), 50 epochs of which 10 warm up,
evaluation on the ``val`` rows after every epoch and ``checkpoint-best.pth`` = the epoch of the best
val AUROC (what ``change eval`` loads). Without val rows (or with one class only there) the last epoch
is used and ``result.warnings`` says so. ``change_config.json`` records the choice under ``selection``
(``checkpoint``, ``step``, ``epoch``, ``val_auroc``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from panderm.errors import InputError

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
