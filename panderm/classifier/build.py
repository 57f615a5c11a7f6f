"""``build_classifier``: a classifier bundle from a features folder + CSV (linear probe) or a finetune run.

Probe heads are fitted exactly as ``panderm probe`` does (same estimator,
C = D·K/100, ``sklearn`` penalty) on the ``train`` rows; the temperature is
fitted on the ``val`` rows' logits (NLL; T = 1 with a warning when there are
none); test metrics (95% bootstrap CIs) use the calibrated probabilities.
The reference set (for "similar cases") is a class-stratified sample of the
training rows. The out-of-distribution gate (:mod:`panderm.eval.ood`) is fitted on
the training rows' features and calibrated on the ``val`` rows (95% pass).
"""

from __future__ import annotations

import base64
import io
import json
import posixpath
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from panderm.classifier.bundle import (
    THUMB_PX,
    default_descriptions,
    fit_temperature,
    nll,
    read_descriptions,
    save_classifier,
    softmax,
)
from panderm.errors import CheckpointError, ConfigError, InputError
from panderm.hardware import torch_dtype

HAM_LICENCE = ("HAM10000 (Tschandl et al., Sci. Data 2018), CC BY-NC 4.0; images by the ViDIR Group, "
               "Department of Dermatology, Medical University of Vienna, and the Cliff Rosendahl practice")


class ClassifierWarning(UserWarning):
    """A non-fatal problem while building a classifier (e.g. no val rows: T = 1)."""


def _stratified(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Up to ``size`` row indices, as equal per class as the classes allow (sorted by class, then row)."""
    rng = np.random.default_rng(seed)
    pools = {c: list(rng.permutation(np.flatnonzero(labels == c))) for c in np.unique(labels)}
    chosen: dict = {c: [] for c in pools}
    left = min(size, len(labels))
    while left > 0:
        progressed = False
        for c in sorted(pools):
            if left and pools[c]:
                chosen[c].append(pools[c].pop(0))
                left -= 1
                progressed = True
        if not progressed:
            break
    return np.array([i for c in sorted(chosen) for i in sorted(chosen[c])], dtype=np.int64)


def _thumbnail(path: Path | None) -> str | None:
    """Base64 JPEG of the image shrunk to ≤ 96 px, or ``None`` when it cannot be read."""
    if path is None:
        return None
    from panderm.data.images import ImageReadError, load_rgb

    try:
        img = load_rgb(path)
    except (ImageReadError, OSError):
        return None
    img.thumbnail((THUMB_PX, THUMB_PX))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=70, optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _reference_rows(images: list[str], paths: list[str | Path | None]) -> list[dict]:
    """One ``reference.json`` row per image: its file name (as the table spells it, normalised) and thumbnail."""
    from panderm.paths import normalise_path

    rows = []
    for name, path in zip(images, paths):
        found = Path(path) if path is not None and Path(path).is_file() else None
        rows.append({"image": posixpath.basename(normalise_path(name)), "thumbnail": _thumbnail(found)})
    return rows


def _table_paths(df, csv: Path, root, base) -> list[Path]:
    """Each row's image under ``root`` (``--root``: rows may not leave it), else relative to ``base``."""
    from panderm.paths import resolve_under_root

    return [resolve_under_root(p, root, base=base, where=f"{csv} line {int(i) + 2}")
            for i, p in zip(df.index, df["image"].astype(str))]


def _metric_lines(metrics: dict | None) -> list[str]:
    if not metrics:
        return ["No test metrics."]
    lines = ["| metric | value | 95% CI |", "|---|---|---|"]
    for m, v in metrics.items():
        if not isinstance(v, dict):
            continue
        def f(x):
            return "–" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.3f}"
        lines.append(f"| {m} | {f(v.get('value'))} | {f(v.get('ci_low'))} – {f(v.get('ci_high'))} |")
    return lines


def render_card(meta: dict) -> str:
    """``card.md``: what the classifier is, its data and metrics, intended use."""
    enc, data = meta["encoder"], meta.get("data", {})
    demo = bool(meta.get("demo"))
    title = "PanDerm demo classifier" if demo else f"PanDerm classifier: {meta.get('name')}"
    parts = [f"# {title}", ""]
    if demo:
        parts += [("**Demo only — not a medical device.** It uses the tiny demo encoder "
                  f"`{enc['name']}` (trained for demonstration, not the released PanDerm weights) on a small "
                  "subset of HAM10000; its accuracy says nothing about PanDerm. Do not use it for any decision "
                  "about a patient."), ""]
    head = ("linear probe (L-BFGS logistic regression, C = D·K/100) on frozen features"
            if meta["head"]["kind"] == "probe" else "end-to-end fine-tuned classifier")
    parts += ["## Model", "",
              (f"- Encoder: `{enc['name']}` (weights sha256 `{enc.get('weights_sha256')}`), preprocessing preset "
              f"`{enc['preset']}`, {enc['dim']}-d features."),
              f"- Head: {head}.",
              f"- {_gate_line(meta.get('ood'), data)}",
              (f"- Calibration: temperature scaling on the validation split, T = {meta['temperature']:.3f}"
              f"{' (no validation rows: T fixed at 1)' if not data.get('n_val') else ''}."),
              "", "## Classes", "", "| class | description | malignant |", "|---|---|---|"]
    for c in meta["classes"]:
        parts.append(f"| {c} | {meta['descriptions'].get(c, c)} | {'yes' if c in meta['malignant'] else 'no'} |")
    parts += ["", "## Data", "",
              (f"- Dataset: {data.get('dataset') or data.get('csv')}; train {data.get('n_train')}, "
              f"validation {data.get('n_val')}, test {data.get('n_test')} images."),
              f"- Training class counts: {data.get('train_class_counts')}."]
    if data.get("licence"):
        parts.append(f"- Licence and attribution: {data['licence']}.")
    parts += ["", f"## Test metrics (n = {data.get('n_test')}, 95% bootstrap CIs)", "",
              *_metric_lines(meta.get("metrics")), "",
              "## Intended use", "",
              ("Research use only, **not a medical device**: not validated for diagnosis, screening or triage. "
              "Probabilities are calibrated on the validation split of the training data and may be "
              "miscalibrated on other populations, devices or image types (dermoscopic vs clinical). "
              "The \"similar cases\" are the nearest reference images in the encoder's feature space."), ""]
    return "\n".join(parts)


def _gate_line(ood: dict | None, data: dict) -> str:
    if not ood:
        return f"Out-of-distribution gate: none ({data.get('ood_missing') or 'not fitted'})."
    return (f"Out-of-distribution gate: nearest-training-image distance after Ledoit-Wolf whitening, fitted on "
            f"{ood['n_reference']} training images; threshold {ood['threshold']:.3f}, passed by "
            f"{ood['pass_rate']:.0%} of {ood['n_calibration']} {ood['calibration_source']}. Images above it, "
            "or failing the image-quality gate, are reported as not assessable.")


def _dataset_name(csv: Path) -> str:
    """The CSV's name, or its folder's when the file has a generic name (``labels.csv``)."""
    return csv.parent.name if csv.stem.lower() in ("labels", "data", "dataset", "metadata") else csv.stem


def _labels_as_str(values) -> list[str]:
    return [str(v) for v in values]


def _finish_meta(*, name, encoder, kind, classes, binary, descriptions, demo, temperature, metrics, data,
                 extra=None) -> dict:
    desc, mal = default_descriptions(classes, binary)
    if descriptions is not None:
        desc, mal = read_descriptions(descriptions, classes, desc, mal)
    from panderm.io import jsonable

    meta = {"name": name, "encoder": encoder, "head": {"kind": kind, **(extra or {})}, "classes": classes,
            "descriptions": desc, "malignant": sorted(mal), "temperature": float(temperature),
            "metrics": jsonable(metrics), "data": jsonable(data),
            "created": datetime.now(UTC).isoformat(timespec="seconds"), "demo": bool(demo)}
    return meta


#: A fine-tune build encodes at most this many training images (a seeded sample) to fit its OOD gate.
OOD_FIT_IMAGES = 2000


def _fit_gate(fit: np.ndarray, calibration: np.ndarray, reference: str, seed: int, warn: list[str], data: dict,
              precision: str | None):
    """The bundle's OOD gate, or ``None`` with the reason in ``data["ood_missing"]`` (too few images)."""
    from panderm.eval.ood import fit_gate_or_reason

    gate, why = fit_gate_or_reason(fit, calibration, reference=f"the {reference} training images", seed=seed,
                                   precision=precision)
    if why:
        data["ood_missing"] = why
        msg = f"no out-of-distribution gate: {why}"
        warn.append(msg)
        warnings.warn(msg, ClassifierWarning, stacklevel=3)
    return gate


def _temperature(logits: np.ndarray, y: np.ndarray, warn: list[str]) -> tuple[float, dict]:
    if not len(y):
        msg = "no val rows: temperature fixed at T = 1 (probabilities are not calibrated)"
        warn.append(msg)
        warnings.warn(msg, ClassifierWarning, stacklevel=3)
        return 1.0, {"n_val": 0}
    t = fit_temperature(logits, y)
    return t, {"n_val": len(y), "nll_t1": nll(logits, y, 1.0), "nll": nll(logits, y, t)}


def _probe(out, features, csv, model, weights, root, binary, reference_size, descriptions, demo, seed,
           n_bootstrap) -> Path:
    """A probe bundle: head fitted on the train rows, calibrated on val, evaluated on test, plus references."""
    from panderm.eval.metrics import ALL_METRICS, bootstrap_ci
    from panderm.data.tables import load_features

    if csv is None:
        raise ConfigError("building from --features needs the dataset --csv (image, split, label)")
    features, csv = Path(features), Path(csv)
    feats = load_features(features)
    fmeta = feats.meta or {}
    enc_model, weights_hash = _probe_encoder(features, fmeta, model, weights)
    train, val, test, classes_raw, label_col, excluded = _probe_rows(csv, binary, feats)
    warn: list[str] = []
    head = _fit_probe_head(feats.X, train, val, test, classes_raw, seed, warn)
    metrics = bootstrap_ci(test["_label"].to_numpy(), head.proba, classes_raw, n=n_bootstrap, seed=seed,
                           metrics=ALL_METRICS)
    ref, ref_rows = _probe_references(train, reference_size, seed, csv, root, fmeta, warn)
    data = {"dataset": _dataset_name(csv), "csv": csv.name, "features": features.name,
            "label_column": label_col, "binary": binary, "n_train": len(train), "n_val": len(val),
            "n_test": len(test), "train_class_counts": {str(c): int((train["_label"] == c).sum()) for c in classes_raw},
            "test_class_counts": {str(c): int((test["_label"] == c).sum()) for c in classes_raw},
            "excluded": excluded["count"], "calibration": head.calib, "reference_size": len(ref_rows),
            "bootstrap": {"n": n_bootstrap, "ci": 0.95, "seed": seed}, "warnings": warn}
    meta = _finish_meta(name=Path(out).name, encoder=_encoder_record(enc_model, weights_hash, int(feats.X.shape[1])),
                        kind="probe", classes=_labels_as_str(classes_raw), binary=binary,
                        descriptions=descriptions, demo=demo, temperature=head.t, metrics=metrics, data=data,
                        extra={"task": "logreg", "penalty": "sklearn", "C": head.C, "seed": seed})
    if demo:
        meta["data"]["licence"] = HAM_LICENCE
        meta["name"] = "panderm-demo-ham10000"
    gate = _fit_gate(feats.X[train["row"].to_numpy()], feats.X[val["row"].to_numpy()],
                     "HAM10000 dermoscopic" if demo else meta["data"]["dataset"], seed, meta["data"]["warnings"],
                     meta["data"], fmeta.get("precision"))
    meta["ood"] = None if gate is None else gate.info
    index = {c: i for i, c in enumerate(classes_raw)}
    ref_labels = np.array([index[v] for v in ref["_label"]], np.int64)
    return save_classifier(out, meta=meta, weight=head.W, bias=head.b, ref_feats=feats.X[ref["row"].to_numpy()],
                           ref_labels=ref_labels, ref_rows=ref_rows, card=render_card(meta), ood_gate=gate)


def _probe_encoder(features: Path, fmeta: dict, model, weights):
    """``(encoder, weights sha256)``: the encoder the features were made with (checked), with trained weights."""
    from panderm.models.factory import create_encoder, create_matching_encoder, fresh_weights_sha256

    fw = fmeta.get("weights") or {}
    name = model or fmeta.get("model")
    if not name:
        raise InputError(f"{features} has no meta.json naming the encoder", hint="pass --model (and --weights)")
    if fmeta.get("model") and fw.get("sha256"):
        enc_model = create_matching_encoder(f"features {features}", {"name": fmeta["model"],
                                            "weights_spec": fw.get("spec"), "weights_sha256": fw["sha256"]},
                                            model, weights)
    else:
        enc_model = create_encoder(name, weights, random_init=weights is None)  # refused below with its own hint
    weights_hash = fresh_weights_sha256(enc_model)
    if weights_hash is None:
        raise ConfigError(f"encoder {name} has no trained weights (random initialisation)",
                          hint="a classifier bundle needs identifiable encoder weights: pass --weights")
    return enc_model, weights_hash


def _encoder_record(enc_model, weights_hash: str, dim: int) -> dict:
    """The bundle's ``encoder`` entry: name, portable weights spec and hash, preset, feature width."""
    from panderm.models.factory import portable_weights_spec

    full_name = enc_model.model_name
    return {"name": full_name, "weights_spec": portable_weights_spec(full_name, enc_model.weights_info.spec,
                                                                     weights_hash),
            "weights_sha256": weights_hash, "preset": enc_model.pretrained_cfg.preset, "dim": dim}


def _probe_rows(csv: Path, binary, feats):
    """``(train, val, test, classes, label column, excluded)``: CSV rows with features, checked for a probe.

    ``val`` keeps only rows of the training classes (the temperature is fitted on them).
    """
    from panderm.data.tables import load_dataset, select_rows

    df, label_col = load_dataset(csv, binary)
    rows, excluded = select_rows(df, feats, csv, True, "features")
    train, val, test = (rows[rows["split"] == s] for s in ("train", "val", "test"))
    if train.empty or test.empty:
        raise InputError(f"{csv} needs train and test rows with features (has {len(train)} train, {len(test)} test)")
    classes_raw = sorted(train["_label"].unique().tolist())
    if len(classes_raw) < 2:
        raise InputError(f"{csv}: the training rows have only one class in '{label_col}'")
    unseen = sorted({str(v) for v in test["_label"]} - {str(c) for c in classes_raw})
    if unseen:
        raise InputError(f"{csv}: test label(s) {', '.join(unseen)} never occur in the training rows")
    return train, val[val["_label"].isin(classes_raw)], test, classes_raw, label_col, excluded


@dataclass
class _ProbeHead:
    """A fitted probe head: weights, bias, C, temperature (and its calibration record), test probabilities."""

    W: np.ndarray
    b: np.ndarray
    C: float
    t: float
    calib: dict
    proba: np.ndarray


def _fit_probe_head(X: np.ndarray, train, val, test, classes_raw: list, seed: int, warn: list[str]) -> _ProbeHead:
    """Fit the logistic head as ``panderm probe`` does (C = D·K/100), the temperature on val, probabilities on test."""
    from panderm.eval.probe import fit_predict

    C = X.shape[1] * len(classes_raw) / 100.0
    _, est = fit_predict("logreg", X[train["row"].to_numpy()], train["_label"].to_numpy(),
                         X[test["row"].to_numpy()][:1], classes_raw, C, "sklearn", seed)
    W, b = np.asarray(est.coef_, np.float64), np.asarray(est.intercept_, np.float64)
    if list(np.asarray(est.classes_).tolist()) != list(classes_raw):
        raise ConfigError("the probe's class order differs from the sorted classes")  # cannot happen (np.unique)
    index = {c: i for i, c in enumerate(classes_raw)}
    vlog = X[val["row"].to_numpy()].astype(np.float64) @ W.T + b
    t, calib = _temperature(vlog, np.array([index[v] for v in val["_label"]], int), warn)
    tlog = X[test["row"].to_numpy()].astype(np.float64) @ W.T + b
    return _ProbeHead(W, b, C, t, calib, softmax(tlog / t))


def _probe_references(train, reference_size: int, seed: int, csv: Path, root, fmeta: dict, warn: list[str]):
    """``(reference rows of train, their bundle rows with thumbnails)``: a class-stratified sample."""
    ref = train.iloc[_stratified(train["_label"].to_numpy(), reference_size, seed)]
    base = fmeta.get("root") or csv.parent  # the folder `extract` read the images from
    ref_rows = _reference_rows(ref["image"].astype(str).tolist(), _table_paths(ref, csv, root, base))
    root = root or base
    for r, lab in zip(ref_rows, ref["_label"]):
        r["label"] = str(lab)
    if ref_rows and not any(r["thumbnail"] for r in ref_rows):
        warn.append(f"reference images not found under {root}: thumbnails omitted (pass --root)")
    return ref, ref_rows


def _run_images(net, paths: list[Path], preset: str, device: str, precision: str, batch_size: int = 32):
    """Features and logits of the readable images (fine-tuned net) and the indices of those read."""
    import torch

    from panderm.data.images import ImageReadError, load_rgb
    from panderm.data.transforms import build_transform

    tf = build_transform(preset)
    feats, logits, ok = [], [], []
    for s in range(0, len(paths), batch_size):
        xs = []
        for i in range(s, min(s + batch_size, len(paths))):
            try:
                xs.append(tf(load_rgb(paths[i])))
                ok.append(i)
            except (ImageReadError, OSError):
                continue
        if not xs:
            continue
        x = torch.stack(xs).to(device)
        with torch.inference_mode(), torch.autocast(torch.device(device).type, dtype=torch_dtype(precision),
                                                    enabled=torch_dtype(precision) is not None):
            f = net.forward_features(x)
            z = net.head(f)
        feats.append(f.float().cpu().numpy())
        logits.append(z.float().cpu().numpy())
    d, k = net.head.in_features, net.head.out_features
    return (np.concatenate(feats) if feats else np.zeros((0, d), np.float32),
            np.concatenate(logits).astype(np.float64) if logits else np.zeros((0, k)), np.array(ok, np.int64))


def _finetune(out, run, csv, root, reference_size, descriptions, demo, seed, device, precision) -> Path:

    from panderm.finetune.run import read_run_config, read_splits, load_run_network
    from panderm.hardware import default_device, resolve_precision
    from panderm.models.factory import portable_weights_spec
    from panderm.train import run_state as ckpt
    from panderm.weights import resolve_weights_path, weights_sha256

    run = Path(run)
    rc = read_run_config(run)
    ck = next((run / n for n in (ckpt.BEST, ckpt.LAST) if (run / n).is_file()), None)
    if ck is None:
        raise CheckpointError(f"{run} has no {ckpt.BEST} or {ckpt.LAST}", hint="the run never finished a step")
    classes_raw = rc["classes"]
    binary = bool(rc.get("binary"))
    net = load_run_network(rc, ck, len(classes_raw))
    device = device or default_device()
    precision = resolve_precision(precision, device)
    net = net.eval().to(device)
    csv = Path(csv or rc["csv"])
    root = root if root is not None else rc.get("root")
    df, label_col, _ = read_splits(csv, binary, classes_raw, None if root is None else Path(root))
    warn: list[str] = []
    train, val = df[(df["split"] == "train") & (df["_y"] >= 0)], df[(df["split"] == "val") & (df["_y"] >= 0)]
    preset = net.pretrained_cfg.preset
    vfeat, vlog, vok = _run_images(net, [Path(p) for p in val["_path"]], preset, device, precision)
    t, calib = _temperature(vlog, val["_y"].to_numpy()[vok], warn)
    ref_idx = _stratified(train["_y"].to_numpy(), reference_size, seed)
    ref = train.iloc[ref_idx]
    rfeat, _, rok = _run_images(net, [Path(p) for p in ref["_path"]], preset, device, precision)
    ref = ref.iloc[rok]
    ref_rows = _reference_rows(ref["image"].astype(str).tolist(), ref["_path"].tolist())
    for r, lab in zip(ref_rows, ref["_label"]):
        r["label"] = str(lab)
    summary = {}
    if (run / "finetune.json").is_file():
        summary = json.loads((run / "finetune.json").read_text(encoding="utf-8"))
    base_spec, base_sha = rc.get("weights"), None
    if base_spec is None:
        from panderm.models.factory import bundled_weights_path, get_encoder_entry

        cfg = get_encoder_entry(rc["model"])[1]
        if cfg.bundled:
            base_sha = weights_sha256(bundled_weights_path(cfg), fresh=True)
    else:
        try:
            base_sha = weights_sha256(resolve_weights_path(base_spec), fresh=True)
        except InputError:
            warn.append(f"the run's base weights {base_spec} are not available here: sha256 not recorded")
    classes = _labels_as_str(classes_raw)
    encoder = {"name": net.model_name, "weights_spec": portable_weights_spec(net.model_name, base_spec, base_sha),
               "weights_sha256": base_sha, "preset": preset, "dim": int(net.head.in_features),
               "rel_pos_bias": bool(rc.get("rel_pos_bias")), "finetuned": True}
    test_counts = summary.get("test_class_counts")
    data = {"dataset": _dataset_name(csv), "csv": csv.name, "run": run.name, "checkpoint": ck.name, "label_column": label_col,
            "binary": binary, "n_train": int(rc.get("n_train", len(train))), "n_val": len(vok),
            "n_test": summary.get("n_test"), "train_class_counts": summary.get("train_class_counts"),
            "test_class_counts": test_counts, "calibration": calib, "reference_size": len(ref_rows),
            "metrics_source": "finetune.json (uncalibrated probabilities; temperature keeps the ranking)",
            "warnings": warn}
    meta = _finish_meta(name=Path(out).name, encoder=encoder, kind="finetune", classes=classes, binary=binary,
                        descriptions=descriptions, demo=demo, temperature=t, metrics=summary.get("metrics"),
                        data=data, extra={"steps": summary.get("steps")})
    sample = train.iloc[np.sort(np.random.default_rng(seed).permutation(len(train))[:OOD_FIT_IMAGES])]
    fit_feats, _, _ = _run_images(net, [Path(p) for p in sample["_path"]], preset, device, precision)
    gate = _fit_gate(fit_feats, vfeat, meta["data"]["dataset"], seed, meta["data"]["warnings"], meta["data"],
                     precision)
    meta["ood"] = None if gate is None else gate.info
    state = {k: v for k, v in net.state_dict().items()}
    labels = np.array(ref["_y"].to_numpy(), np.int64)
    return save_classifier(out, meta=meta, model_state=state, ref_feats=rfeat, ref_labels=labels,
                           ref_rows=ref_rows, card=render_card(meta), ood_gate=gate)


def build_classifier(out, *, features=None, csv=None, model=None, weights=None, finetune_run=None, root=None,
                     binary=False, reference_size=200, descriptions=None, demo=False, seed=0,
                     n_bootstrap=1000, device=None, precision="auto") -> Path:
    """Build a classifier bundle in ``out`` from a features folder + CSV, or from a finetune run.

    Args:
        out: Bundle folder (created; ``classifier.json`` written last).
        features: Folder from ``panderm extract`` (probe head); with ``csv`` (image, split, label).
        model, weights: The encoder the features came from (default: from the features' ``meta.json``;
            the weights' sha256 must match the one recorded there).
        finetune_run: A ``panderm finetune`` run folder (instead of ``features``); ``csv``/``root``
            default to the run's.
        root: Image folder of the CSV paths (reference thumbnails; fine-tune: val/reference images).
        binary: Use ``binary_label`` (probe heads; fine-tune runs know their own).
        reference_size: At most this many reference ("similar cases") rows, stratified by class.
        descriptions: CSV ``class,description[,malignant]`` overriding the built-in clinical names.
        demo: Mark the bundle (and its card) as a demo.
        seed: Probe initialisation, reference sampling and bootstrap seed.
        n_bootstrap: Bootstrap replicates for the test-metric CIs (probe heads).
        device, precision: For the image passes of a fine-tune build.

    Returns:
        ``out`` as a Path.
    """
    if (features is None) == (finetune_run is None):
        raise ConfigError("give exactly one of --features (with --csv) or --run (a finetune run)")
    if reference_size < 0:
        raise ConfigError(f"--reference-size must be ≥ 0, got {reference_size}")
    if features is not None:
        return _probe(out, features, csv, model, weights, root, binary, reference_size, descriptions, demo, seed,
                      n_bootstrap)
    if model is not None or weights is not None:
        raise ConfigError("--model/--weights do not apply to --run (the finetune run records its model)")
    return _finetune(out, finetune_run, csv, root, reference_size, descriptions, demo, seed, device, precision)


__all__ = ["ClassifierWarning", "build_classifier", "render_card"]
