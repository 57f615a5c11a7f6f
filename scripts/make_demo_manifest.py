"""Build the pretraining manifest of the bundled demo encoder from ../shared/data.

Every image of the shared real data except the HAM10000 classification test split
(and any image of a lesion in it), so the demo's linear-probe test numbers are
not inflated by pretraining on test lesions. Usage:

    python scripts/make_demo_manifest.py ../shared/data demo-manifest.csv
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pandas as pd

FOLDERS = {  # folder -> (modality, image columns)
    "ham10000_dermoscopy_cls": ("dermoscopy", ["image"]),
    "ham10000_segmentation": ("dermoscopy", ["image"]),
    "ham10000_same_lesion_pairs": ("dermoscopy", ["image", "image_b"]),
    "isic2017_segmentation": ("dermoscopy", ["image"]),
    "isic_archive_8class_cls": ("dermoscopy", ["image"]),
    "pad_ufes20_clinical": ("clinical", ["image"]),
    "isic2024_tbp_tiles": ("tbp", ["image"]),
}


def build(shared: Path) -> list[tuple[str, str]]:
    """(absolute path, modality) rows, HAM10000 test lesions excluded."""
    ham = pd.read_csv(shared / "ham10000_dermoscopy_cls" / "labels.csv")
    test_lesions = set(ham.loc[ham.split == "test", "lesion_id"])
    test_images = set(ham.loc[ham.split == "test", "image"])
    rows, seen = [], set()
    for folder, (modality, columns) in FOLDERS.items():
        df = pd.read_csv(shared / folder / "labels.csv")
        lesion_cols = [c for c in ("lesion_id", "lesion_id_b", "ham_lesion_id") if c in df.columns]
        for _, row in df.iterrows():
            if any(row[c] in test_lesions for c in lesion_cols):
                continue
            for col in columns:
                name = row[col]
                if name in test_images or name in seen:
                    continue
                seen.add(name)
                rows.append((str((shared / folder / "images" / name).resolve()), modality))
    return rows


if __name__ == "__main__":
    shared, out = Path(sys.argv[1]), Path(sys.argv[2])
    rows = build(shared)
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "modality"])
        w.writerows(rows)
    counts = pd.Series([m for _, m in rows]).value_counts().to_dict()
    print(f"wrote {len(rows)} images to {out}: {counts}")
