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

import copy
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from panderm.errors import ConfigError, InputError, examples
from panderm.eval.metrics import ALL_METRICS, bootstrap_ci, classification_metrics, paired_t_tests
from panderm.io import atomic_path, atomic_write_json

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
class _Bag:
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
    torch = _torch()
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


def _fit_fold(train, val, in_dim, n_classes, cfg, device, seed, log_path: Path):
    torch = _torch()
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


def _write_attention(path: Path, bag: _Bag, attn: np.ndarray, fold: int, pred) -> None:
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
    data = _load_data(features, csv)
    fold_of, folds, explicit = _fold_assignment(data, features, csv, folds, seed, _fold_of_slide)
    if compare is not None:
        _check_compare_slides(csv, Path(compare), list(data.rows["slide"]))
    if device is None:
        device = "cuda" if _torch().cuda.is_available() else "cpu"
    cfg = {"epochs": int(epochs), "lr": lr, "weight_decay": weight_decay, "patience": int(patience),
           "hidden": int(hidden), "embed": int(embed), "dropout_in": dropout_in, "dropout_attn": dropout_attn}
    _start_out(out)
    proba, pred_fold, fold_info = _cross_validate(data, fold_of, folds, cfg, device, seed, out, progress)
    predictions, metrics = _pooled_predictions(data, proba, pred_fold, n_bootstrap, seed)
    summary = _summary(data, cfg, folds, seed, device, n_bootstrap, fold_info, explicit, features, csv, metrics)
    comparison = None
    (out / "comparison.json").unlink(missing_ok=True)
    if compare is not None:
        kwargs = dict(epochs=epochs, lr=lr, weight_decay=weight_decay, patience=patience, hidden=hidden, embed=embed,
                      dropout_in=dropout_in, dropout_attn=dropout_attn, seed=seed, device=device,
                      n_bootstrap=n_bootstrap, progress=progress)
        comparison = _compare_run(Path(compare), csv, out / "compare",
                                  dict(zip(data.rows["slide"], fold_of.tolist())), fold_info, kwargs)
        summary["compare"] = {k: v for k, v in comparison.items() if k != "metrics"}
    files = _write_run(out, data.skipped, predictions, data.classes, metrics, fold_info, summary, comparison)
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


@dataclass
class _Data:
    """The usable slides of a run: CSV rows, bags, classes, feature width and what was skipped."""

    rows: pd.DataFrame
    bags: list[_Bag]
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


def _load_data(features: Path, csv: Path) -> _Data:
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
    bags = [_Bag(r["slide"], r["case_id"], r["_label"], cidx[r["_label"]], *bag)
            for r, bag in zip(rows.to_dict("records"), read)]
    dims = {b.features.shape[1] for b in bags}
    if len(dims) > 1:
        raise InputError(f"{features}: the slides' features have different widths {sorted(dims)}",
                         hint="extract all slides with the same encoder")
    return _Data(rows, bags, classes, dims.pop(), skipped, warn)


def _fold_assignment(data: _Data, features: Path, csv: Path, folds: int, seed: int,
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
    if out.exists() and not out.is_dir():
        raise InputError(f"output path {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").unlink(missing_ok=True)
    (out / "attention").mkdir(exist_ok=True)


def _cross_validate(data: _Data, fold_of: np.ndarray, folds: int, cfg: dict, device, seed: int, out: Path,
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


def _run_fold(data: _Data, k: int, test_i: np.ndarray, train_i: np.ndarray, cfg: dict, device, seed: int,
              out: Path) -> tuple[np.ndarray, dict]:
    """Fit fold ``k``, save its model and attention files: its test probabilities and its record."""
    torch = _torch()
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


def _pooled_predictions(data: _Data, proba: np.ndarray, pred_fold: np.ndarray, n_bootstrap: int,
                        seed: int) -> tuple[pd.DataFrame, dict]:
    """The out-of-fold predictions table and its metrics with bootstrap CIs."""
    classes = data.classes
    labels = np.array([b.label for b in data.bags], dtype=object)
    metrics = bootstrap_ci(labels, proba, classes, n=n_bootstrap, seed=seed, metrics=ALL_METRICS)
    pred = np.asarray(classes, dtype=object)[proba.argmax(axis=1)]
    predictions = pd.DataFrame({"slide": [b.slide for b in data.bags], "case_id": [b.case for b in data.bags],
                                "fold": pred_fold, "true_label": labels, "predicted_label": pred})
    for j, c in enumerate(classes):
        predictions[f"prob_{c}"] = proba[:, j]
    return predictions, metrics


def _summary(data: _Data, cfg: dict, folds: int, seed: int, device, n_bootstrap: int, fold_info: list[dict],
             explicit: bool, features: Path, csv: Path, metrics: dict) -> dict:
    """``mil.json``: the configuration, classes, folds, counts and pooled metrics of the run."""
    bags, classes, y = data.bags, data.classes, data.y
    patch = next((b.attrs["patch_size_level0"] for b in bags if "patch_size_level0" in b.attrs), None)
    return {
        "model": "gated-abmil", "config": {**cfg, "folds": folds, "seed": seed, "device": str(device),
                                           "in_dim": data.in_dim, "n_classes": len(classes),
                                           "patch_size_level0": patch, "n_bootstrap": n_bootstrap},
        "classes": classes, "folds": [{k: f[k] for k in ("fold", "n_train", "n_val", "n_test", "best_epoch",
                                                         "epochs_run", "stopped_early", "val_slides",
                                                         "test_slides")} for f in fold_info],
        "explicit_folds": explicit, "n_slides": len(bags), "n_cases": int(data.rows["case_id"].nunique()),
        "n_skipped": len(data.skipped),
        "class_counts": {str(c): int((y == i).sum()) for i, c in enumerate(classes)},
        "features": str(features), "csv": str(csv), "metrics": metrics, "warnings": data.warnings,
    }


def _folds_json(fold_info: list[dict]) -> dict:
    """``folds.json``: every fold's record (without slide lists) and the mean/SD of each metric over folds."""
    per_fold = {}
    for n in ALL_METRICS:
        vals = np.array([f["metrics"][n] for f in fold_info], dtype=float)
        vals = vals[np.isfinite(vals)]
        per_fold[n] = {"mean": float(vals.mean()) if len(vals) else None,
                       "sd": float(vals.std(ddof=1)) if len(vals) > 1 else None, "n_folds": len(vals)}
    return {"folds": [{k: v for k, v in f.items() if k not in ("val_slides", "test_slides")} for f in fold_info],
            "mean_sd": per_fold}


def _write_run(out: Path, skipped: pd.DataFrame, predictions: pd.DataFrame, classes: list, metrics: dict,
               fold_info: list[dict], summary: dict, comparison: dict | None) -> list[Path]:
    """Write comparison.json, skipped.csv, oof.csv and the evaluation outputs (``metrics.json`` last)."""
    from panderm.eval.probe import write_eval_outputs

    if comparison is not None:
        from panderm.io import jsonable

        atomic_write_json(out / "comparison.json", jsonable(comparison))
    with atomic_path(out / "skipped.csv") as tmp:
        skipped.to_csv(tmp, index=False)
    with atomic_path(out / "oof.csv") as tmp:
        predictions.to_csv(tmp, index=False)
    files = write_eval_outputs(out, predictions, classes, metrics,
                               {"folds.json": _folds_json(fold_info), "mil.json": summary})
    extra = [out / "comparison.json"] if comparison is not None else []
    return [out / "oof.csv", out / "skipped.csv", *extra, *files]


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
