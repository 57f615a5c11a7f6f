"""Weakly supervised slide classification: gated attention MIL (ABMIL) with cross-validation.

Model (paper, Methods "Weakly supervised slide classification"; Ilse et al. 2018 as
CLAM's ``Attn_Net_Gated``): dropout 0.10 on the patch features, Linear(D→512)+ReLU,
gated attention a = tanh(W_a h), b = sigmoid(W_b h) (384 hidden units, dropout 0.25),
attention logits W_c (a ⊙ b), softmax over the slide's patches, slide embedding
Σ attnᵢ hᵢ and a Linear(512→K) classifier. Cross-entropy, AdamW (lr 1e-4, weight decay
1e-5), cosine schedule over the steps, at most 20 epochs, one slide per step.

Protocol: ``folds`` StratifiedGroupKFold splits stratified by label and grouped by
``case_id`` (a case's slides never straddle train and test). In each training fold a
stratified-grouped validation part (about 1/5 of the cases) is held out for early
stopping on the validation loss: training stops after ``patience`` epochs without a
lower validation loss and the best-validation-loss weights are kept (and saved).
Every slide is predicted once, by the model of the fold that held it out; the pooled
out-of-fold predictions give ``metrics.json`` (95% bootstrap CIs as ``panderm probe``).

Inputs: a features folder of ``<slide>.h5`` files (``features`` (N, D), ``coords``
(N, 2) level-0 x, y) and a CSV with ``slide`` (or ``slide_id``), ``label``, optional
``case_id`` and an optional explicit fold assignment (``fold``, or a numeric
``split``). CSV slides without an ``.h5`` are skipped, listed in ``skipped.csv`` and
warned about. A case id with two labels, or one split over two explicit folds, is refused.

Comparison (``compare``): a second features folder of the same slides is trained and
evaluated on exactly the same folds (same seeds), its run written to ``out/compare/``,
and every per-fold metric is compared by the paper's two-sided paired t-test over the
folds (``comparison.json``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from panderm.errors import InputError, examples

_SLIDE_EXTS = (".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide",
               ".png", ".jpg", ".jpeg", ".h5")


def _torch():
    import torch

    return torch


def build_model(in_dim: int, n_classes: int, *, embed: int = 512, hidden: int = 384,
                dropout_in: float = 0.10, dropout_attn: float = 0.25):
    """The gated ABMIL network (a ``torch.nn.Module``); ``forward(x (N, D)) -> (logits (K,), attn (N,))``."""
    torch = _torch()
    nn = torch.nn

    class GatedABMIL(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Sequential(nn.Dropout(dropout_in), nn.Linear(in_dim, embed), nn.ReLU())
            self.attention_a = nn.Sequential(nn.Linear(embed, hidden), nn.Tanh(), nn.Dropout(dropout_attn))
            self.attention_b = nn.Sequential(nn.Linear(embed, hidden), nn.Sigmoid(), nn.Dropout(dropout_attn))
            self.attention_c = nn.Linear(hidden, 1)
            self.classifier = nn.Linear(embed, n_classes)

        def forward(self, x):
            h = self.fc(x)                                                     # (N, embed)
            logits_attn = self.attention_c(self.attention_a(h) * self.attention_b(h)).squeeze(-1)
            attn = torch.softmax(logits_attn, dim=0)                           # (N,)
            return self.classifier(attn @ h), attn

    return GatedABMIL()


@dataclass
class MILResult:
    """What ``train_mil`` computed and wrote."""

    metrics: dict[str, dict[str, float]]
    classes: list
    predictions: pd.DataFrame
    folds: list[dict]
    summary: dict[str, Any]
    skipped: pd.DataFrame
    warnings: list[str] = field(default_factory=list)
    out: Path | None = None
    files: list[Path] = field(default_factory=list)
    #: With ``compare``: ``{"features", "folds", "test", "metrics": {metric: paired t-test over folds}}``.
    comparison: dict[str, Any] | None = None


@dataclass
class SlideBag:
    """One slide's bag: names, label (and its class index), patch features, coordinates and file attributes."""

    slide: str
    case: str
    label: Any
    y: int
    features: np.ndarray
    coords: np.ndarray
    attrs: dict


_NAME_COLUMNS = ("slide", "slide_id", "case_id")
#: pandas' default missing-value strings, still applied to the label/fold columns.
_NA_STRINGS = ("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>",
               "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null")


def _read_csv(csv: Path) -> pd.DataFrame:
    if not csv.is_file():
        raise InputError(f"slides CSV {csv} does not exist")
    try:
        cols = pd.read_csv(csv, nrows=0).columns
        df = pd.read_csv(csv, dtype={c: str for c in _NAME_COLUMNS}, keep_default_na=False,
                         na_values={c: list(_NA_STRINGS) for c in cols if c not in _NAME_COLUMNS})
    except Exception as exc:  # noqa: BLE001 - any parse failure is the user's CSV
        raise InputError(f"cannot read {csv} as CSV: {exc}") from None
    for c in _NAME_COLUMNS:  # names are strings ("nan", "NA", "None" are slide names); only blanks are missing
        if c in df.columns:
            df[c] = df[c].where(df[c].str.strip() != "")
    return df


def _slide_stem(name: str, folder: Path) -> str:
    name = str(name).strip().replace("\\", "/").rsplit("/", 1)[-1]
    if (folder / f"{name}.h5").is_file() or (folder / f"{name}.pt").is_file():
        return name
    p = Path(name)
    return p.stem if p.suffix.lower() in _SLIDE_EXTS else name


def _labels(series: pd.Series) -> pd.Series:
    if pd.api.types.is_integer_dtype(series) or pd.api.types.is_bool_dtype(series):
        return series.astype(int)
    if pd.api.types.is_float_dtype(series) and (series == series.round()).all():
        return series.astype(int)
    return series.astype(str).str.strip()


def load_slides(csv: str | Path, features: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Validate the slides CSV against the features folder.

    Returns ``(rows, skipped, notes)``: rows with ``slide``, ``case_id``, ``_label``,
    ``_fold`` (explicit fold or −1) and ``path``; skipped slides (no ``.h5``) with a reason.
    """
    from panderm.pathology.layouts import feature_file, resolve_features_dir

    csv, features = Path(csv), Path(features)
    if not features.is_dir():
        raise InputError(f"features folder {features} does not exist",
                         hint="write it with `panderm slide extract`")
    features = resolve_features_dir(features)
    df = _read_csv(csv)
    col = "slide" if "slide" in df.columns else "slide_id" if "slide_id" in df.columns else None
    missing = [c for c, ok in (("slide", col), ("label", "label" in df.columns)) if not ok]
    if missing:
        raise InputError(f"{csv} lacks column(s) {', '.join(missing)} (has: {', '.join(map(str, df.columns))})",
                         hint="the slides CSV needs slide (or slide_id) and label; case_id is optional")
    if df[col].isna().any() or df["label"].isna().any():
        raise InputError(f"{csv} has {int(df[col].isna().sum())} row(s) without a slide and "
                         f"{int(df['label'].isna().sum())} without a label")
    notes: list[str] = []
    out = pd.DataFrame({"slide": [_slide_stem(s, features) for s in df[col]]})
    dup = out["slide"][out["slide"].duplicated()].unique().tolist()
    if dup:
        raise InputError(f"{csv} lists {len(dup)} slide(s) more than once: {examples(dup)}")
    out["case_id"] = (df["case_id"].fillna(out["slide"]).astype(str).str.strip()
                      if "case_id" in df.columns else out["slide"])
    out["_label"] = _labels(df["label"])
    # A case must have one label.
    n_labels = out.groupby("case_id")["_label"].nunique()
    mixed = n_labels[n_labels > 1].index.tolist()
    if mixed:
        case = mixed[0]
        labs = sorted(out.loc[out["case_id"] == case, "_label"].astype(str).unique())
        raise InputError(f"{csv}: case id {case!r} has slides with different labels ({', '.join(labs)}); "
                         f"{len(mixed)} such case(s): {examples(mixed)}",
                         hint="a case must have one label: fix the labels or the case_id column")
    fold_col = "fold" if "fold" in df.columns else None
    if fold_col is None and "split" in df.columns:
        if pd.to_numeric(df["split"], errors="coerce").notna().all():
            fold_col = "split"
        else:
            notes.append(f"{csv}: the non-numeric 'split' column is ignored: cross-validation assigns the folds")
    out["_fold"] = -1
    if fold_col:
        f = pd.to_numeric(df[fold_col], errors="coerce")
        if f.isna().any() or (f != f.round()).any() or (f < 0).any():
            raise InputError(f"{csv}: '{fold_col}' must hold fold numbers 0, 1, … for every row")
        out["_fold"] = f.astype(int).to_numpy()
        n_folds = out.groupby("case_id")["_fold"].nunique()
        straddle = n_folds[n_folds > 1].index.tolist()
        if straddle:
            case = straddle[0]
            fs = sorted(out.loc[out["case_id"] == case, "_fold"].unique().tolist())
            raise InputError(f"{csv}: case id {case!r} is assigned to more than one fold ({fs}) in '{fold_col}'; "
                             f"{len(straddle)} such case(s): {examples(straddle)}",
                             hint="all slides of a case must be in the same fold (case-level cross-validation)")
    out["path"] = [feature_file(features, s) for s in out["slide"]]
    present = np.array([p.is_file() for p in out["path"]])
    skipped = pd.DataFrame({"slide": out.loc[~present, "slide"],
                            "case_id": out.loc[~present, "case_id"],
                            "reason": f"no features file in {features}"})
    return out[present].reset_index(drop=True), skipped.reset_index(drop=True), notes


def _read_bag(path: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """``features`` (N, D), ``coords`` (N, 2) and attributes of a feature file, read with the
    :mod:`panderm.hdf5` checks (no links or external data; at most :data:`panderm.hdf5.MAX_ARRAY_BYTES`).

    Attributes: those of the ``coords`` dataset (TRIDENT and CLAM keep the patch size there),
    overridden by the file's. A CLAM ``.pt`` (a plain (N, D) tensor, ``torch.load(weights_only=True)``)
    has no coordinates: zeros.
    """
    if Path(path).suffix == ".pt":
        X, coords, attrs = _read_pt_bag(Path(path))
    else:
        X, coords, attrs = _read_h5_bag(Path(path))
    if X.ndim != 2 or len(X) == 0 or not np.isfinite(X).all():
        raise InputError(f"{path}: 'features' must be a finite, non-empty N×D matrix, got shape {X.shape}")
    if coords.shape != (len(X), 2):
        raise InputError(f"{path}: 'coords' has shape {coords.shape} but 'features' has {len(X)} rows: "
                         f"row i of both must be patch i")
    return X, coords, attrs


def _read_h5_bag(path: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    from panderm.hdf5 import MAX_ARRAY_BYTES, has_key, open_dataset, open_file, read_dataset
    from panderm.pathology.patches import as_coords

    try:
        with open_file(path, "features file") as f:
            X = _real(read_dataset(f, "features", max_bytes=MAX_ARRAY_BYTES), path)
            attrs: dict = {}
            coords = np.zeros((len(X), 2), np.int64)
            if has_key(f, "coords"):
                ds = open_dataset(f, "coords", max_bytes=MAX_ARRAY_BYTES)
                coords = as_coords(np.asarray(ds[()]))
                attrs.update({k: _attr(v) for k, v in ds.attrs.items()})
            attrs.update({k: _attr(v) for k, v in f.attrs.items()})
    except InputError as exc:
        msg = exc.message if str(path) in exc.message else f"{path}: {exc.message}"
        raise InputError(msg, hint=exc.hint or "the file needs a 'features' (N, D) dataset") from None
    except (OSError, KeyError, ValueError, TypeError, AttributeError, RuntimeError) as exc:  # e.g. strings
        raise InputError(f"cannot read features from {path}: {type(exc).__name__}: {exc}",
                         hint="the file needs a 'features' (N, D) dataset") from None
    return X, coords, attrs


def _real(a, path: Path) -> np.ndarray:
    """``a`` as float32; InputError for non-real dtypes (complex, strings, objects) instead of a silent cast."""
    a = np.asarray(a)
    if a.dtype.kind not in "biuf":
        raise InputError(f"{path}: 'features' has dtype {a.dtype}, not real numbers")
    return a.astype(np.float32)


def _attr(v):
    return v.item() if hasattr(v, "item") and getattr(v, "size", 1) == 1 else v


def _read_pt_bag(path: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    from panderm.pathology.layouts import load_pt

    t = load_pt(path).detach()
    if t.is_complex():
        raise InputError(f"{path}: the tensor has dtype {t.dtype}, not real numbers")
    X = t.float().numpy()
    return X, np.zeros((len(X), 2), np.int64), {}


def _read_bags(rows: pd.DataFrame) -> tuple[pd.DataFrame, list, pd.DataFrame]:
    """Read every slide's bag; unreadable ones leave ``rows`` for a skipped table with the reason."""
    read, bad = [], []
    for i, r in enumerate(rows.to_dict("records")):
        try:
            read.append(_read_bag(r["path"]))
        except InputError as exc:
            bad.append((i, exc.message))
    drop = [i for i, _ in bad]
    unreadable = pd.DataFrame({"slide": rows["slide"].iloc[drop].to_numpy(),
                               "case_id": rows["case_id"].iloc[drop].to_numpy(),
                               "reason": [m for _, m in bad]})
    return rows.drop(index=rows.index[drop]).reset_index(drop=True), read, unreadable


@dataclass
class MILData:
    """The usable slides of a run: CSV rows, bags, classes, feature width and what was skipped."""

    rows: pd.DataFrame
    bags: list[SlideBag]
    classes: list
    in_dim: int
    skipped: pd.DataFrame
    warnings: list[str]

    @property
    def y(self) -> np.ndarray:
        return np.array([b.y for b in self.bags])

    @property
    def groups(self) -> np.ndarray:
        return self.rows["case_id"].to_numpy()


def load_mil_data(features: Path, csv: Path) -> MILData:
    """Validate the CSV against the features folder and read every bag (skipped slides warned about)."""
    rows, skipped, notes = load_slides(csv, features)
    warn = list(notes)
    if len(skipped):
        warn.append(f"{len(skipped)} slide(s) in {csv} have no features in {features} and were skipped "
                    f"(listed in skipped.csv): {examples(skipped['slide'])}")
    rows, read, unreadable = _read_bags(rows)
    if len(unreadable):
        warn.append(f"{len(unreadable)} features file(s) could not be read and were skipped (listed in "
                    f"skipped.csv): {examples(unreadable['slide'])}")
        skipped = pd.concat([skipped, unreadable], ignore_index=True)
    if rows.empty:
        raise InputError(f"none of the {len(skipped)} slides in {csv} has a readable features file in {features}",
                         hint="the CSV 'slide' values must match the .h5 file names (without .h5); "
                              "reasons are in skipped.csv")
    classes = sorted(rows["_label"].unique().tolist(), key=lambda c: (str(type(c)), c))
    if len(classes) < 2:
        raise InputError(f"{csv}: the slides with features have only one class ({classes[0]!r})")
    cidx = {c: i for i, c in enumerate(classes)}
    bags = [SlideBag(r["slide"], r["case_id"], r["_label"], cidx[r["_label"]], *bag)
            for r, bag in zip(rows.to_dict("records"), read)]
    dims = {b.features.shape[1] for b in bags}
    if len(dims) > 1:
        raise InputError(f"{features}: the slides' features have different widths {sorted(dims)}",
                         hint="extract all slides with the same encoder")
    return MILData(rows, bags, classes, dims.pop(), skipped, warn)


def predict_bags(model, bags, device) -> tuple[np.ndarray, list[np.ndarray]]:
    """Class probabilities (n, K) and attention scores (one (N,) array per bag), eval mode."""
    torch = _torch()
    model.eval()
    probs, attns = [], []
    with torch.no_grad():
        for b in bags:
            logits, attn = model(torch.from_numpy(b.features).to(device))
            probs.append(torch.softmax(logits.float(), -1).cpu().numpy())
            attns.append(attn.float().cpu().numpy())
    return np.asarray(probs, dtype=np.float64), attns


def load_fold_model(run: str | Path, fold: int, device: str = "cpu"):
    """Rebuild fold ``fold``'s model from ``run/mil.json`` and ``run/fold<k>/model.pt`` (weights only)."""
    run = Path(run)
    try:
        cfg = json.loads((run / "mil.json").read_text(encoding="utf-8"))["config"]
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"{run} is not a `panderm slide mil` run ({exc})") from None
    model = build_model(cfg["in_dim"], cfg["n_classes"], embed=cfg["embed"], hidden=cfg["hidden"],
                        dropout_in=cfg["dropout_in"], dropout_attn=cfg["dropout_attn"])
    from panderm.models.checkpoint import load_module_weights

    load_module_weights(model, run / f"fold{fold}" / "model.pt", "MIL model")
    return model.to(device).eval()
