"""Benchmark ``align-pair`` registration on real follow-up pairs and on synthetic transforms.

1. **Real pairs** (the 200 pairs of ``../shared/data/ham10000_same_lesion_pairs``: 100 pairs
   of two dermoscopic images of one lesion, at different zoom and angle, and 100 pairs of
   different lesions). Per setting: same-lesion pairs registered, registered with a quality
   gain (aligned band-pass correlation above the unregistered one), different-lesion pairs
   accepted (false accepts), and time per pair. Target: >= 70 % registered, <= 2 % false accepts.
2. **Independent check**: the gate's thresholds were chosen on those 200 pairs, so 150 more
   same-lesion pairs (two images sharing a HAM10000 ``lesion_id``) and 150 different-lesion
   pairs are drawn from the other HAM10000 folders of ``../shared/data``, from lesions that
   are not in the pairs set, and measured the same way.
3. **Synthetic** (the historical figure): real images upscaled to 800x600 get a known random
   rigid transform (+-15 deg, +-12 px); ours (paper preset: Numba RANSAC + ``cv2.warpAffine``)
   against a textbook ``skimage.measure.ransac(EuclideanTransform)`` + ``skimage.transform.warp``.
   Then zoom: b is the central 1/z of a enlarged back to a's size, z = 1.5, 2, 3.

Usage::

    python benchmarks/align_pair.py                 # all of it (about 2 minutes on 2 cores)
    python benchmarks/align_pair.py --skip-synthetic --json out.json
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import cv2
import numpy as np

from panderm.longitudinal.align import PRESETS, preprocess, registration_settings, resolve_preset
from panderm.longitudinal.register import (
    MIN_INLIERS,
    MIN_MATCHES,
    detect,
    register,
    warp_to,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DATA = SHARED / "ham10000_same_lesion_pairs"
#: Other HAM10000 folders of ../shared/data and their lesion-id column (the independent check).
OTHER_HAM = {"ham10000_dermoscopy_cls": "lesion_id", "ham10000_segmentation": "lesion_id",
             "isic_archive_8class_cls": "ham_lesion_id"}
STEPS = ("dark-corner", "hair")
#: Settings measured on the real pairs: the two presets, and the default preset with the other models.
REAL_SETTINGS = {
    "default (similarity)": ("default", None),
    "default, affine": ("default", "affine"),
    "default, euclidean": ("default", "euclidean"),
    "paper (euclidean)": ("paper", None),
}


def read_rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def settings_for(preset: str, transform: str | None):
    return registration_settings(resolve_preset(preset, transform=transform))


def real_pairs(rows: list[dict], preset: str, transform: str | None) -> dict:
    """Register every pair (after dark-corner and hair removal, as align-pair does)."""
    settings = settings_for(preset, transform)
    cache: dict[str, np.ndarray] = {}

    def pre(name):
        if name not in cache:
            cache[name] = preprocess(read_rgb(DATA / "images" / name), STEPS)
        return cache[name]

    out = {"same": [], "different": [], "seconds": []}
    for row in rows:
        a, b = pre(row["image"]), pre(row["image_b"])
        t0 = time.perf_counter()
        res = register(a, b, settings)
        out["seconds"].append(time.perf_counter() - t0)
        gain = (res.quality or {}).get("gain")
        kind = "same" if row["binary_label"] == "1" else "different"
        out[kind].append({"success": res.success, "gain": gain, "split": row["split"]})
    return out


def independent_pairs(rows: list[dict], n: int = 150, seed: int = 1) -> list[dict]:
    """``n`` same-lesion and ``n`` different-lesion pairs from :data:`OTHER_HAM`, lesions disjoint from ``rows``."""
    import pandas as pd

    used = {r["lesion_id"] for r in rows} | {r["lesion_id_b"] for r in rows}
    images = []
    for folder, col in OTHER_HAM.items():
        df = pd.read_csv(SHARED / folder / "labels.csv").dropna(subset=[col])
        # paths relative to DATA / "images", as the pairs CSV's
        images += [(lesion, f"../../{folder}/images/{name}") for lesion, name in zip(df[col], df["image"])
                   if (SHARED / folder / "images" / name).is_file()]
    df = pd.DataFrame(images, columns=["lesion", "path"])
    df = df.assign(name=df["path"].str.rsplit("/", n=1).str[-1]).drop_duplicates("name")
    df = df[~df["lesion"].isin(used)]
    groups = df.groupby("lesion")["path"].apply(sorted)
    groups = groups[groups.str.len() >= 2]
    rng = np.random.default_rng(seed)
    lesions = rng.choice(groups.index.to_numpy(), min(n, len(groups)), replace=False)
    others = df[~df["lesion"].isin(set(lesions))]["path"].to_numpy()
    same = [{"image": groups[le][0], "image_b": groups[le][1], "binary_label": "1", "split": "independent"}
            for le in lesions]
    diff = [{"image": groups[le][0], "image_b": str(rng.choice(others)), "binary_label": "0", "split": "independent"}
            for le in lesions]
    return same + diff


def summarise_real(name: str, out: dict) -> dict:
    same, diff = out["same"], out["different"]
    ok = [r for r in same if r["success"]]
    rec = {"setting": name, "same_pairs": len(same), "same_registered": len(ok),
           "same_registered_with_gain": sum(1 for r in ok if (r["gain"] or 0) > 0),
           "different_pairs": len(diff), "different_accepted": sum(r["success"] for r in diff),
           "ms_per_pair_median": round(1000 * float(np.median(out["seconds"])), 1),
           "ms_per_pair_mean": round(1000 * float(np.mean(out["seconds"])), 1)}
    for split in ("train", "val", "test"):
        rows = [r for r in same if r["split"] == split]
        if rows:
            rec[f"same_registered_{split}"] = f"{sum(r['success'] for r in rows)}/{len(rows)}"
    return rec


def skimage_pipeline(a, b):
    """Same steps, textbook skimage RANSAC and warp (the paper's implementation)."""
    from skimage.measure import ransac
    from skimage.transform import EuclideanTransform, warp

    a, b = preprocess(a, STEPS), preprocess(b, STEPS)
    kp_a, des_a = detect(cv2.cvtColor(a, cv2.COLOR_RGB2GRAY))
    kp_b, des_b = detect(cv2.cvtColor(b, cv2.COLOR_RGB2GRAY))
    if des_a is None or des_b is None or min(len(kp_a), len(kp_b)) < MIN_MATCHES:
        return None
    matches = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(des_b, des_a)
    if len(matches) < MIN_MATCHES:
        return None
    src = np.array([kp_b[m.queryIdx].pt for m in matches])
    dst = np.array([kp_a[m.trainIdx].pt for m in matches])
    model, inl = ransac((src, dst), EuclideanTransform, min_samples=2, residual_threshold=2.5, max_trials=2000,
                        rng=0)
    if model is None or inl.sum() < MIN_INLIERS:
        return None
    warp(b, model.inverse, output_shape=a.shape[:2], order=1, mode="reflect", preserve_range=True)
    return model.params[:2]


def ours_pipeline(a, b, preset="paper"):
    a, b = preprocess(a, STEPS), preprocess(b, STEPS)
    res = register(a, b, settings_for(preset, None))
    if not res.success:
        return None
    warp_to(b, res.matrix, a.shape[:2], border=PRESETS[preset]["border"])
    return res.matrix_array


def corner_error(m_est, m_true, w, h):
    c = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], float)
    return float(np.abs(c @ m_est.T - c @ m_true.T).max())


def synthetic(rows: list[dict], n: int, seed: int) -> dict:
    """Known rigid transforms of upscaled real images: ours (paper and default presets) vs skimage."""
    names = [r["image"] for r in rows][:n]
    rng = np.random.default_rng(seed)
    fns = {"ours (paper preset)": ours_pipeline, "ours (default preset)": lambda a, b: ours_pipeline(a, b, "default"),
           "skimage reference": skimage_pipeline}
    stats = {k: {"t": [], "err": [], "ok": 0} for k in fns}
    for name in names:
        a = cv2.resize(read_rgb(DATA / "images" / name), (800, 600), interpolation=cv2.INTER_CUBIC)
        m = cv2.getRotationMatrix2D((400, 300), rng.uniform(-15, 15), 1.0)
        m[:, 2] += rng.uniform(-12, 12, 2)
        b = cv2.warpAffine(a, m, (800, 600), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        true = cv2.invertAffineTransform(m)
        for key, fn in fns.items():
            t0 = time.perf_counter()
            est = fn(a, b)
            stats[key]["t"].append(time.perf_counter() - t0)
            if est is not None:
                stats[key]["ok"] += 1
                stats[key]["err"].append(corner_error(est, true, 800, 600))
    return {k: {"pairs": len(names), "registered": s["ok"],
                "median_corner_error_px": round(float(np.median(s["err"])), 3) if s["err"] else None,
                "ms_per_pair_mean": round(1000 * float(np.mean(s["t"])), 1)} for k, s in stats.items()}


def zoom(rows: list[dict], n: int) -> dict:
    """b = the central 1/z of a, enlarged back to a's size: registered, and the scale error."""
    out = {}
    names = [r["image"] for r in rows][:n]
    for z in (1.5, 2.0, 3.0):
        ok, errs = 0, []
        for name in names:
            a = preprocess(read_rgb(DATA / "images" / name), STEPS)
            h, w = a.shape[:2]
            cw, ch = int(round(w / z)), int(round(h / z))
            x0, y0 = (w - cw) // 2, (h - ch) // 2
            b = cv2.resize(a[y0:y0 + ch, x0:x0 + cw], (w, h), interpolation=cv2.INTER_CUBIC)
            res = register(a, b)
            if res.success:
                ok += 1
                errs.append(abs(res.scale - cw / w) / (cw / w))
        out[f"zoom {z:g}x"] = {"pairs": len(names), "registered": ok,
                               "median_scale_error": round(float(np.median(errs)), 4) if errs else None}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--synthetic-pairs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-synthetic", action="store_true")
    ap.add_argument("--json", type=Path, default=None, help="Also write the figures here.")
    args = ap.parse_args()
    cv2.setNumThreads(1)  # one thread: time per pair comparable across machines' core counts
    with open(DATA / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    register(np.zeros((64, 64), np.uint8), np.zeros((64, 64), np.uint8))  # compile Numba outside the timing
    report = {"real": [summarise_real(name, real_pairs(rows, *cfg)) for name, cfg in REAL_SETTINGS.items()]}
    print(f"Real HAM10000 pairs ({DATA.name}), 1 thread")
    for r in report["real"]:
        print(f"  {r['setting']:22s} same-lesion registered {r['same_registered']}/{r['same_pairs']} "
              f"(with a quality gain {r['same_registered_with_gain']}; train {r['same_registered_train']}, "
              f"val {r['same_registered_val']}, test {r['same_registered_test']}); different-lesion accepted "
              f"{r['different_accepted']}/{r['different_pairs']}; {r['ms_per_pair_median']:.0f} ms/pair median, "
              f"{r['ms_per_pair_mean']:.0f} mean")
    report["independent"] = summarise_real("default (similarity)", real_pairs(independent_pairs(rows), "default", None))
    r = report["independent"]
    print(f"Independent check (other HAM10000 folders, lesions not in the pairs set): same-lesion registered "
          f"{r['same_registered']}/{r['same_pairs']} (with a quality gain {r['same_registered_with_gain']}); "
          f"different-lesion accepted {r['different_accepted']}/{r['different_pairs']}")
    if not args.skip_synthetic:
        report["synthetic"] = synthetic(rows, args.synthetic_pairs, args.seed)
        report["zoom"] = zoom(rows, args.synthetic_pairs)
        print(f"Synthetic rigid transforms of {args.synthetic_pairs} real images at 800x600")
        for k, s in report["synthetic"].items():
            print(f"  {k:22s} registered {s['registered']}/{s['pairs']}, median corner error "
                  f"{s['median_corner_error_px']} px, {s['ms_per_pair_mean']:.0f} ms/pair")
        syn = report["synthetic"]
        print(f"  speed-up of ours (paper preset) over skimage: "
              f"{syn['skimage reference']['ms_per_pair_mean'] / syn['ours (paper preset)']['ms_per_pair_mean']:.2f}x")
        print("Zoom (default preset)")
        for k, s in report["zoom"].items():
            print(f"  {k:10s} registered {s['registered']}/{s['pairs']}, median relative scale error "
                  f"{s['median_scale_error']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
