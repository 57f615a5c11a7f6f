"""Draw docs/img/align_real_pairs.png: real HAM10000 follow-up pairs before and after ``align-pair``.

Each row: image a, image b as taken, b registered into a's frame, and a checkerboard of a and
registered b, titled with what ``panderm align-pair`` reports (or its reason for refusing).

    python scripts/make_align_docs.py [--data ../shared/data/ham10000_same_lesion_pairs]
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

import cv2
import numpy as np

from panderm.eval.plots import new_figure, save_png
from panderm.longitudinal.align import align_pair, checkerboard

REPO = Path(__file__).resolve().parents[1]
#: (a, b, what the pair is): two registered zoom changes, a refused same-lesion pair, a refused different-lesion pair.
PAIRS = [
    ("ISIC_0033165.jpg", "ISIC_0033430.jpg", "same lesion, b taken 2.3x farther"),
    ("ISIC_0025767.jpg", "ISIC_0032417.jpg", "same lesion, b taken 1.9x closer"),
    ("ISIC_0028041.jpg", "ISIC_0028415.jpg", "same lesion, refused"),
    ("ISIC_0029720.jpg", "ISIC_0026551.jpg", "different lesions, refused"),
]


def title(res) -> str:
    reg = res.registration
    if reg.success:
        q = reg.quality
        return (f"registered: zoom {reg.zoom:.2f}, {reg.rotation_deg:+.1f} deg, {reg.inliers} inliers; "
                f"agreement {q['ncc_aligned']:.2f} (unregistered {q['ncc_unregistered']:.2f})")
    return f"not registered: {reg.reason}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "ham10000_same_lesion_pairs")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "img" / "align_real_pairs.png")
    args = ap.parse_args()
    fig = new_figure(12, 3.3 * len(PAIRS))
    for sub, (a, b, what) in zip(fig.subfigures(len(PAIRS), 1), PAIRS):
        row = sub.subplots(1, 4)
        res = align_pair(args.data / "images" / a, args.data / "images" / b, steps="dark-corner,hair,register")
        im = res.images
        b_in_a = cv2.resize(im["b_pre"], im["a_pre"].shape[1::-1], interpolation=cv2.INTER_AREA)
        panels = [(im["a_pre"], f"a: {a}"), (b_in_a, f"b: {b}"),
                  (im["aligned"] if res.success else b_in_a, "b registered" if res.success else "b (not registered)"),
                  (checkerboard(im["a_pre"], im["aligned"] if res.success else b_in_a), "checkerboard a / b")]
        for ax, (img, name) in zip(row, panels):
            ax.imshow(np.asarray(img))
            ax.set_title(name, fontsize=9)
            ax.axis("off")
        sub.suptitle("\n".join(textwrap.wrap(f"{what}. {title(res)}", 120)), fontsize=10,
                     color="#1a5e20" if res.success else "#9a1b1b")
    save_png(fig, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
