"""Run under ``torchrun --nproc_per_node 2``: tile and extract a folder of slides, sharded over the ranks.

Usage: python -m torch.distributed.run --standalone --nproc_per_node 2 tests/_slide_ddp.py SLIDES OUT LAYOUT

Each rank writes ``OUT/rank<r>.json``: the slides whose files it wrote (``tile_slide`` and
``FeatureLayout.write`` calls, recorded here), the rows its summaries list, and the statuses
of a second (resumed) extraction.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from panderm.pathology import tiling
from panderm.pathology.layouts import FeatureLayout
from panderm.pathology.slide_features import extract_slide_features
from panderm.pathology.tiling import tile_slides

MODEL = "panderm_tiny_patch16_224.demo"


def main(slides: Path, out: Path, layout: str) -> None:
    rank = int(os.environ["RANK"])
    tiled, written = [], []
    real_tile, real_write = tiling.tile_slide, FeatureLayout.write

    def tile_slide(path, *a, **k):
        tiled.append(k.get("name") or Path(path).stem)
        return real_tile(path, *a, **k)

    def write(self, slide, *a, **k):
        written.append(slide)
        return real_write(self, slide, *a, **k)

    tiling.tile_slide, FeatureLayout.write = tile_slide, write
    t = tile_slides(slides, out / "tiles", patch=256, mag=20, progress=False)
    kw = dict(model=MODEL, device="cpu", precision="fp32", workers=0, batch_size=4, progress=False, layout=layout)
    f = extract_slide_features(out / "tiles", out / "feats", **kw)
    if rank == 0:  # the rerun below rewrites it (all "exists")
        (out / "features_first_run.csv").write_bytes((out / "feats" / "features.csv").read_bytes())
    again = extract_slide_features(out / "tiles", out / "feats", **kw)
    (out / f"rank{rank}.json").write_text(json.dumps({
        "rank": t.rank, "world_size": t.world_size,
        "tiled": tiled, "extracted": written,
        "tile_rows": len(t.results),
        "extract_rows": len(f.rows), "patches_computed": f.patches_computed,
        "again": sorted({r["status"] for r in again.rows}), "again_rows": len(again.rows),
    }))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])
