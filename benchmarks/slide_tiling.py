"""Benchmark slide tiling + patch reading against a plain per-patch ``read_region`` loop.

For each slide (the real Aperio CMU-1 region from ../shared/data/wsi and a larger
synthetic pyramidal TIFF written to a temp dir), in the same run:

* tiling: ``tile_slide`` (thumbnail, tissue mask, grid, coords .h5, thumbnail .png);
* plain: one reader, one ``read_region`` per kept patch (+ resize to --patch), in a loop
  (OpenSlide for the .svs, as CLAM-style pipelines do; tifffile for the generic TIFF);
* per-patch loop with panderm's default reader (for the .svs: tifffile + OpenCV JPEG);
* fast: :func:`panderm.pathology.patches.iter_patches` (k×k blocks per read, parallel readers).

Both readers start cold (a fresh handle per repeat); the best of --repeat runs is
reported, and the fast patches are checked to equal the plain ones. Usage::

    python benchmarks/slide_tiling.py --workers 4 --block 2 --repeat 5
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from panderm.pathology.patches import iter_patches, read_coords, resize_patch
from panderm.pathology.slides import open_slide
from panderm.pathology.synthetic import synthetic_image, write_pyramid_tiff
from panderm.pathology.tiling import tile_slide

SVS = Path(__file__).resolve().parents[2] / "shared" / "data" / "wsi" / "images" / "cmu-1-small-region.svs"


def plain(path, coords, a, backend="auto"):
    out = np.empty((len(coords), a["patch_size"], a["patch_size"], 3), np.uint8)
    with open_slide(path, backend=backend) as r:
        for i, (x, y) in enumerate(coords):
            out[i] = resize_patch(r.read_region((int(x), int(y)), a["patch_level"],
                                                (a["patch_size_level"],) * 2), a["patch_size"])
    return out


def fast(path, coords, a, workers, block):
    out = np.empty((len(coords), a["patch_size"], a["patch_size"], 3), np.uint8)
    for idx, imgs in iter_patches(path, coords, level=a["patch_level"], patch_size_level=a["patch_size_level"],
                                  patch_size=a["patch_size"], step0=a["patch_size_level0"], workers=workers,
                                  block=block):
        out[idx] = imgs
    return out


def best(fn, repeat):
    times, res = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        res = fn()
        times.append(time.perf_counter() - t)
    return min(times), res


def bench(label, path, out, args, **tile_kw):
    t_tile, res = best(lambda: tile_slide(path, out, patch=args.patch, mag=tile_kw.pop("mag", args.mag),
                                          tissue_threshold=tile_kw.pop("tissue_threshold", 0.5)), 1)
    coords, a = read_coords(res.coords_path)
    n = len(coords)
    backend = "openslide" if path.suffix == ".svs" else "auto"
    t_plain, ref = best(lambda: plain(path, coords, a, backend), args.repeat)
    t_loop, _ = best(lambda: plain(path, coords, a), args.repeat)
    t_fast, got = best(lambda: fast(path, coords, a, args.workers, args.block), args.repeat)
    diff = int(np.abs(ref.astype(np.int16) - got).max()) if n else 0
    print(f"\n{label}: {path.name} {open_slide(path).dimensions}, level {a['patch_level']} "
          f"(downsample {a['downsample']:g}), patch {a['patch_size']} (read {a['patch_size_level']} px), {n} patches")
    print(f"  tiling (mask, grid, h5, png)   {t_tile:7.3f} s")
    print(f"  plain per-patch loop ({backend[:9]:>9}) {t_plain:7.3f} s  {n / t_plain:8.0f} patches/s   "
          f"tiling+reading {n / (t_tile + t_plain):8.0f} patches/s")
    print(f"  per-patch loop, panderm reader {t_loop:7.3f} s  {n / t_loop:8.0f} patches/s")
    print(f"  blocks {args.block}x{args.block}, {args.workers} readers        {t_fast:7.3f} s  {n / t_fast:8.0f} patches/s   "
          f"tiling+reading {n / (t_tile + t_fast):8.0f} patches/s")
    print(f"  reading speed-up {t_plain / t_fast:.2f}x; tiling+reading speed-up "
          f"{(t_tile + t_plain) / (t_tile + t_fast):.2f}x; max |fast - plain| = {diff}")
    return t_plain / t_fast


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patch", type=int, default=256)
    ap.add_argument("--mag", type=float, default=20)
    ap.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    ap.add_argument("--block", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--size", type=int, default=8192, help="Side of the synthetic slide.")
    args = ap.parse_args()
    print(f"CPUs: {os.cpu_count()}, readers: {args.workers}, block: {args.block}x{args.block}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if SVS.is_file():
            bench("real Aperio slide, 20x", SVS, tmp / "svs", args, tissue_threshold=0.1)
        s = args.size
        rects = [(s // 8, s // 8, s // 2, 7 * s // 8), (9 * s // 16, s // 4, 15 * s // 16, 3 * s // 4)]
        t = time.perf_counter()
        syn = write_pyramid_tiff(tmp / "synthetic.tif", synthetic_image(s, s, rects), levels=4, mpp=0.25,
                                 magnification=40, tile=240)
        print(f"\n(synthetic {s}x{s} 4-level TIFF, 240-px zlib tiles, written in {time.perf_counter() - t:.1f} s)")
        bench("synthetic pyramid, 40x source -> 20x", syn, tmp / "syn20", args, mag=20)
        bench("synthetic pyramid, 40x source -> 40x", syn, tmp / "syn40", args, mag=40)


if __name__ == "__main__":
    main()
