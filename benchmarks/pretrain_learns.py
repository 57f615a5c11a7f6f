"""Does our pretraining learn? Linear-probe a pretrained tiny encoder against random initialisations.

Protocol (the paper's release protocol, docs/reference/linear-probe.md): features are the CLS
token after the final LayerNorm in fp32 (what ``panderm extract`` writes: same preset
transform, same ``forward_features``); the probe is
``LBFGSLogisticRegression(penalty="official", seed=0)`` with C = D·K/100, fitted on the
``train`` split and scored on the ``test`` split of HAM10000 (7 classes); weighted F1
with a 1,000-replicate bootstrap 95% CI, AUROC (OvO) and balanced accuracy.

Random baselines of the same architecture (``--inits``, each with ``--seeds``):

* ``ours``      the PanDermViT init (trunc-normal 0.02, zero biases, layer scale 0.1,
                proj/fc2 rescaled by depth);
* ``ls0.05``, ``ls0.1``, ``ls0.3``  an ordinary "well-scaled" init: layer scale s, qkv
                weight std 0.05, every other Linear std 0.02, all biases N(0, 0.02²);
* ``timm``      timm's ViT default (trunc-normal 0.02, zero biases, no layer scale = γ 1,
                no depth rescaling, CLS token N(0, 1e-6²)).

Usage::

    python benchmarks/pretrain_learns.py --weights panderm/bundled_weights/panderm_tiny_demo.safetensors \\
        --out runs/pretrain_learns            # table: demo vs every random init
    python benchmarks/pretrain_learns.py --run runs/tiny-demo --inits none --out runs/curve
                                              # curve: probe score of every checkpoint of a run

Writes ``OUT/results.json`` and ``OUT/results.md``. Images are decoded once and cached
(``--cache``), so each extra encoder costs one forward pass over 1,730 images.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ARCH = "panderm_tiny_patch16_224"
HAM = Path(__file__).resolve().parents[2] / "shared" / "data" / "ham10000_dermoscopy_cls"
DEFAULT_INITS = ("ours", "ls0.05", "ls0.1", "ls0.3", "timm")
METRICS = ("weighted_f1", "auroc", "bacc")


# --------------------------------------------------------------------------- data


def load_split(csv: Path, root: Path, cache: Path | None) -> dict[str, tuple[torch.Tensor, np.ndarray]]:
    """``{split: (images [N,3,224,224] fp32, labels)}`` for train and test, preprocessed as ``extract`` does."""
    if cache is not None and cache.is_file():
        return torch.load(cache, weights_only=False)
    from panderm.data.images import MIN_SIDE, load_rgb
    from panderm.data.transforms import build_transform, get_preset
    from panderm.models.factory import create_encoder

    transform = build_transform(get_preset(create_encoder(ARCH).pretrained_cfg.preset))
    df = pd.read_csv(csv)
    data = {}
    for split in ("train", "test"):
        rows = df[df.split == split]
        x = torch.stack([transform(load_rgb(root / name, min_side=MIN_SIDE)) for name in rows.image])
        data[split] = (x.to(torch.float16), rows.label.to_numpy())
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save(data, cache)
    return data


@torch.no_grad()
def encode(model: torch.nn.Module, images: torch.Tensor, batch: int = 64) -> np.ndarray:
    """fp32 CLS-after-LN features, as ``panderm extract --precision fp32``."""
    model = model.eval().float()
    return np.concatenate([model.forward_features(images[i:i + batch].float()).numpy()
                           for i in range(0, len(images), batch)])


# --------------------------------------------------------------------------- encoders


def _linears(model):
    return [m for m in model.modules() if isinstance(m, torch.nn.Linear)]


def _gammas(model):
    return [p for b in model.blocks for p in (b.gamma_1, b.gamma_2) if p is not None]


def init_scaled(model, layer_scale: float, g: torch.Generator, qkv_std: float = 0.05,
                std: float = 0.02, bias_std: float = 0.02) -> None:
    """The reviewer's well-scaled random ViT: layer scale s, qkv std 0.05, small random biases."""
    for m in _linears(model):
        m.weight.copy_(torch.randn(m.weight.shape, generator=g) * std)
        if m.bias is not None:
            m.bias.copy_(torch.randn(m.bias.shape, generator=g) * bias_std)
    for b in model.blocks:
        b.attn.qkv.weight.copy_(torch.randn(b.attn.qkv.weight.shape, generator=g) * qkv_std)
        for p in (b.attn.q_bias, b.attn.v_bias):
            p.copy_(torch.randn(p.shape, generator=g) * bias_std)
    for p in _gammas(model):
        p.fill_(layer_scale)


def init_timm(model, g: torch.Generator) -> None:
    """timm's ViT default init on our architecture (no layer scale: γ = 1)."""
    for m in _linears(model):
        torch.nn.init.trunc_normal_(m.weight, std=0.02, generator=g)
        if m.bias is not None:
            m.bias.zero_()
    for b in model.blocks:
        b.attn.q_bias.zero_()
        b.attn.v_bias.zero_()
    model.cls_token.copy_(torch.randn(model.cls_token.shape, generator=g) * 1e-6)
    for p in _gammas(model):
        p.fill_(1.0)


@torch.no_grad()
def random_encoder(init: str, seed: int):
    """A random tiny encoder with the named initialisation (see the module docstring)."""
    from panderm.models.factory import create_encoder

    torch.manual_seed(seed)
    model = create_encoder(ARCH)  # "ours": the PanDermViT init under this seed
    g = torch.Generator().manual_seed(seed)
    if init.startswith("ls"):
        init_scaled(model, float(init[2:]), g)
    elif init == "timm":
        init_timm(model, g)
    elif init != "ours":
        raise SystemExit(f"unknown init {init!r}; choose from {', '.join(DEFAULT_INITS)} or ls<scale>")
    return model


def trained_encoder(weights: str | Path):
    from panderm.models.factory import create_encoder

    return create_encoder(ARCH, weights=str(weights))


def run_checkpoints(run: Path, every: int = 1) -> list[tuple[int, Path]]:
    """``(step, file)`` for the periodic checkpoints of a run folder whose step is a multiple of ``every``."""
    from panderm.train.run_state import periodic_checkpoints

    found = [(step, path) for step, path in periodic_checkpoints(run) if step % every == 0]
    if not found:
        raise SystemExit(f"{run} holds no checkpoint-NNNNNNN.pth files")
    return found


# --------------------------------------------------------------------------- probe


def probe(train_x: np.ndarray, train_y, test_x: np.ndarray, test_y, n_boot: int) -> tuple[dict, np.ndarray, list]:
    """Fit the release probe on train, score test: ``({metric: {value, ci_low, ci_high}}, proba, classes)``."""
    from panderm.eval.linear import LBFGSLogisticRegression
    from panderm.eval.metrics import bootstrap_ci

    from panderm.eval.metrics import classification_metrics

    clf = LBFGSLogisticRegression(penalty="official", seed=0).fit(train_x, train_y)
    proba = clf.predict_proba(test_x)
    classes = list(clf.classes_)
    scores = bootstrap_ci(test_y, proba, classes, n=n_boot, seed=0, metrics=METRICS)
    # Secondary: `panderm probe`'s default objective (sklearn penalty), point estimate only.
    sk = LBFGSLogisticRegression(penalty="sklearn", seed=0).fit(train_x, train_y)
    scores["weighted_f1_sklearn"] = classification_metrics(test_y, sk.predict_proba(test_x), classes)["weighted_f1"]
    return scores, proba, classes


def evaluate(label: str, kind: str, model, data, n_boot: int) -> dict:
    t0 = time.perf_counter()
    (xtr, ytr), (xte, yte) = data["train"], data["test"]
    scores, proba, classes = probe(encode(model, xtr), ytr, encode(model, xte), yte, n_boot)
    row = {"encoder": label, "kind": kind, **{m: scores[m] for m in METRICS},
           "weighted_f1_sklearn_penalty": scores["weighted_f1_sklearn"],
           "seconds": round(time.perf_counter() - t0, 1), "_proba": proba, "_classes": classes}
    wf = scores["weighted_f1"]
    print(f"{label:>40}: wF1 {wf['value']:.3f} [{wf['ci_low']:.3f}, {wf['ci_high']:.3f}]  "
          f"AUROC {scores['auroc']['value']:.3f}  BACC {scores['bacc']['value']:.3f}  "
          f"(sklearn-penalty wF1 {scores['weighted_f1_sklearn']:.3f}; {row['seconds']} s)", flush=True)
    return row


def compare(rows: list[dict], test_y, n: int) -> list[dict]:
    """Paired permutation test of every trained encoder against the best random one (weighted F1)."""
    from panderm.eval.metrics import paired_test

    randoms = [r for r in rows if r["kind"] == "random"]
    if not randoms:
        return []
    best = max(randoms, key=lambda r: r["weighted_f1"]["value"])
    out = []
    for r in rows:
        if r["kind"] == "random":
            continue
        t = paired_test(test_y, r["_proba"], best["_proba"], metric=list(METRICS), n=n, classes=r["_classes"])
        out.append({"encoder": r["encoder"], "vs": best["encoder"],
                    **{m: {k: t[m][k] for k in ("difference", "ci_low", "ci_high", "p_value")} for m in METRICS}})
    return out


# --------------------------------------------------------------------------- report


def _cell(s: dict) -> str:
    return f"{s['value']:.3f} [{s['ci_low']:.3f}, {s['ci_high']:.3f}]"


def markdown(rows: list[dict], tests: list[dict]) -> str:
    lines = ["| encoder | kind | weighted F1 [95% CI] | AUROC (OvO) | balanced acc. | wF1, sklearn penalty |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['encoder']} | {r['kind']} | {_cell(r['weighted_f1'])} | "
                     f"{r['auroc']['value']:.3f} | {r['bacc']['value']:.3f} | {r['weighted_f1_sklearn_penalty']:.3f} |")
    randoms = [r["weighted_f1"]["value"] for r in rows if r["kind"] == "random"]
    if randoms:
        lines.append(f"\nrandom initialisations: weighted F1 mean {np.mean(randoms):.3f}, best {max(randoms):.3f}")
    if tests:
        lines += ["", "| encoder | vs best random | Δ weighted F1 [95% CI], p | Δ AUROC, p | Δ BACC, p |",
                  "|---|---|---|---|---|"]
        for t in tests:
            w, a, b = (t[m] for m in METRICS)
            lines.append(f"| {t['encoder']} | {t['vs']} | {w['difference']:+.3f} [{w['ci_low']:+.3f}, "
                         f"{w['ci_high']:+.3f}], p = {w['p_value']:.3f} | {a['difference']:+.3f}, "
                         f"p = {a['p_value']:.3f} | {b['difference']:+.3f}, p = {b['p_value']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", nargs="*", default=[], help="encoder weights files to evaluate (label=path allowed)")
    ap.add_argument("--run", nargs="*", default=[], type=Path,
                    help="pretraining run folder(s): probe every periodic checkpoint (the step curve)")
    ap.add_argument("--every", type=int, default=1, help="with --run: only checkpoints at multiples of this step")
    ap.add_argument("--inits", nargs="*", default=list(DEFAULT_INITS), help="random inits ('none' for none)")
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1])
    ap.add_argument("--csv", type=Path, default=HAM / "labels.csv")
    ap.add_argument("--root", type=Path, default=None, help="image folder (default: CSV folder/images)")
    ap.add_argument("--cache", type=Path, default=Path("runs/.ham_probe_images.pt"),
                    help="preprocessed-image cache ('' to disable)")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    root = args.root or args.csv.parent / "images"
    data = load_split(args.csv, root, args.cache if str(args.cache) else None)
    rows = []
    for spec in args.weights:
        label, _, path = spec.rpartition("=")
        rows.append(evaluate(label or Path(path).name, "pretrained", trained_encoder(path), data, args.bootstrap))
    for run in args.run:
        for step, path in run_checkpoints(run, args.every):
            rows.append(evaluate(f"{run.name}@{step}", "checkpoint", trained_encoder(path), data, args.bootstrap))
    inits = [] if args.inits == ["none"] else args.inits
    for init in inits:
        for seed in args.seeds:
            rows.append(evaluate(f"random {init} seed {seed}", "random", random_encoder(init, seed), data,
                                 args.bootstrap))
    tests = compare(rows, data["test"][1], args.bootstrap)
    args.out.mkdir(parents=True, exist_ok=True)
    clean = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
    (args.out / "results.json").write_text(json.dumps({"rows": clean, "vs_best_random": tests}, indent=1))
    (args.out / "results.md").write_text(markdown(rows, tests))
    print(markdown(rows, tests))


if __name__ == "__main__":
    main()
