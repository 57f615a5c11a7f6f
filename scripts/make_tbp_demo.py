"""Build the bundled TBP demo: pseudo-patients from HAM10000, a demo patient and a demo bundle.

HAM10000 has no patient ids and no TBP tiles; the demo groups real labelled dermoscopic
lesions into pseudo-patients (HAM lesion ids never straddle patients) so that every part of
`screen-tbp` runs on real images. The bundle is trained by our own `tbp train` with the tiny
demo encoder and `--measure-from-image`. Usage (from the repo root, ../shared beside it):

    python scripts/make_tbp_demo.py [--shared ../shared/data] [--eval-out /tmp/tbp-demo-eval]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "panderm" / "tbp" / "demo"
MALIGNANT = {"mel", "bcc", "akiec"}


def pseudo_patients(labels: pd.DataFrame, n_patients: int, per_patient: int, seed: int) -> pd.DataFrame:
    """One image per HAM lesion, lesions dealt to pseudo-patients: mostly benign, 0-2 malignant each."""
    rng = np.random.default_rng(seed)
    labels = labels.drop_duplicates("lesion_id")  # one image per lesion, as one TBP tile per lesion
    lesions = labels.groupby("lesion_id").agg(label=("binary_label", "max")).reset_index()
    benign = rng.permutation(lesions.loc[lesions["label"] == 0, "lesion_id"].to_numpy())
    malignant = rng.permutation(lesions.loc[lesions["label"] == 1, "lesion_id"].to_numpy())
    rows, b, m = [], 0, 0
    for p in range(n_patients):
        k_mal = int(rng.choice([0, 1, 1, 2]))
        take = list(malignant[m:m + k_mal]) + list(benign[b:b + per_patient - k_mal])
        m, b = m + k_mal, b + per_patient - k_mal
        rows += [(f"P{p:03d}", lid) for lid in take]
    assign = pd.DataFrame(rows, columns=["patient_id", "lesion_id"])
    out = labels.merge(assign, on="lesion_id")
    out["label"] = out["binary_label"].astype(int)
    return out[["patient_id", "lesion_id", "image", "label", "dx"]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--patients", type=int, default=56)
    ap.add_argument("--per-patient", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-out", default=None, help="also evaluate the bundle on held-out pseudo-patients here")
    args = ap.parse_args()
    from panderm.tbp.train import train_tbp

    src = Path(args.shared) / "ham10000_dermoscopy_cls"
    labels = pd.read_csv(src / "labels.csv").rename(columns={"label": "dx"})
    cohort = pseudo_patients(labels, args.patients, args.per_patient, args.seed)
    patients = sorted(cohort["patient_id"].unique())
    # Last 8 pseudo-patients are held out: one becomes the shipped demo patient, the rest a test set.
    test_ids, demo_id = patients[-8:-1], patients[-1]
    cohort["split"] = np.where(cohort["patient_id"].isin(test_ids + [demo_id]), "test", "train")
    work = Path(tempfile.mkdtemp(prefix="tbp-demo-"))
    csv = work / "lesions.csv"
    cohort.to_csv(csv, index=False)
    train_rows = cohort[cohort["split"] == "train"].drop(columns="split")
    train_rows.to_csv(work / "train.csv", index=False)

    bundle = DEMO / "bundle"
    shutil.rmtree(bundle, ignore_errors=True)
    note = (f"{len(train_rows)} real labelled HAM10000 dermoscopic images (malignant = mel/bcc/akiec) grouped into "
            f"{train_rows['patient_id'].nunique()} pseudo-patients of {args.per_patient} lesions (HAM10000 has no "
            "patient ids or TBP tiles; CC BY-NC 4.0, ViDIR Group, Medical University of Vienna); measurements "
            "computed from the images (--measure-from-image); built by scripts/make_tbp_demo.py.")
    os.chdir(work)  # the card records the lesions CSV as given: "train.csv", not a temporary path
    res = train_tbp("train.csv", bundle, root=src / "images", model="panderm_tiny_patch16_224.demo",
                    head="probe", measure_from_image=True, demo=True, data_note=note, seed=args.seed,
                    n_estimators=100, progress=False)
    for junk in (".work", "validation_lesions.csv", "skipped.csv"):
        p = bundle / junk
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    print(json.dumps(res.metrics["validation"]["summary"], indent=1))
    print(res.metrics["validation"]["table_markdown"])

    patient = DEMO / "patient_demo"
    shutil.rmtree(patient, ignore_errors=True)
    patient.mkdir(parents=True)
    rows = cohort[cohort["patient_id"] == demo_id]
    for img in rows["image"]:
        shutil.copyfile(src / "images" / img, patient / img)
    rows[["lesion_id", "image"]].to_csv(patient / "measurements.csv", index=False)
    (patient / "README.md").write_text(
        f"# Demo patient ({len(rows)} lesions, {int(rows['label'].sum())} malignant)\n\n"
        "Real HAM10000 dermoscopic images (200×150 JPEG, bytes unchanged) standing in for TBP tiles; "
        "CC BY-NC 4.0, ViDIR Group, Medical University of Vienna, and Cliff Rosendahl, University of "
        "Queensland. Held out from the demo bundle's training data. Labels (not used by screening): "
        + ", ".join(f"{r.lesion_id}={r.dx}" for r in rows.itertuples()) + ".\n")
    if args.eval_out:
        from panderm.tbp.evaluate import evaluate_tbp

        test = cohort[cohort["split"] == "test"]
        test.to_csv(work / "test.csv", index=False)
        m = evaluate_tbp(bundle, work / "test.csv", args.eval_out, root=src / "images", progress=False)
        print(json.dumps(m["summary"], indent=1))
        print(m["table_markdown"])
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
