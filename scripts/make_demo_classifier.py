"""Build the bundled demo classifier in ``panderm/classifier/demo/``.

Extracts features of the HAM10000 dermoscopy subset (``shared/data/ham10000_dermoscopy_cls``:
2164 images, 7 classes, train/val/test in ``labels.csv``) with the tiny demo encoder
``panderm_tiny_patch16_224.demo``, fits the linear probe, calibrates it on val and keeps
20 reference images per class (140)::

    python scripts/make_demo_classifier.py [--data DIR] [--work DIR]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODEL = "panderm_tiny_patch16_224.demo"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "ham10000_dermoscopy_cls")
    ap.add_argument("--work", type=Path, default=None, help="where to keep the features (default: a temp dir)")
    ap.add_argument("--out", type=Path, default=REPO / "panderm" / "classifier" / "demo")
    args = ap.parse_args()

    from panderm.classifier import build_classifier, load_classifier
    from panderm.extract import extract_features

    work = args.work or Path(tempfile.mkdtemp(prefix="panderm-democlf-"))
    feats = work / "features"
    extract_features(args.data / "labels.csv", feats, model=MODEL, root=args.data / "images", progress=True)
    if args.out.exists():
        shutil.rmtree(args.out)
    build_classifier(args.out, features=feats, csv=args.data / "labels.csv", root=args.data / "images",
                     reference_size=140, demo=True, seed=0)
    clf = load_classifier(args.out)
    size = sum(f.stat().st_size for f in args.out.iterdir())
    print(f"wrote {args.out} ({size / 1024:.0f} KiB), T = {clf.temperature:.3f}")
    for m, v in clf.meta["metrics"].items():
        print(f"  {m}: {v['value']:.3f} [{v['ci_low']:.3f}, {v['ci_high']:.3f}]")
    if args.work is None:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
