"""Patch a slide: pick the pyramid level for a target magnification, keep grid cells on tissue.

Level choice. The target downsample (relative to level 0) is
``slide objective power / mag`` when the slide records its objective power,
else ``target mpp / slide mpp`` with the usual mapping ``mpp = 10 / mag``
(10× ↔ 1.0 µm/px, 20× ↔ 0.5, 40× ↔ 0.25). An explicit ``mpp=`` override
(``--mpp``) always uses the mpp route. The patch level is the
highest-resolution level whose downsample is ≤ the target (1 % tolerance);
``patch_size_level = round(patch * target / level_downsample)`` pixels are read
there and resized to ``patch``; a patch covers
``patch_size_level0 = round(patch * target)`` level-0 pixels.

Output per slide: ``coords/<slide>.h5`` (dataset ``coords`` (N, 2) int64,
level-0 top-left corners, attributes on the dataset and the file) and
``thumbnails/<slide>.png`` (tissue contour in green, kept patches in blue).
"""

from __future__ import annotations

import csv
import io
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from panderm.errors import ConfigError, InputError
from panderm.io import atomic_path, atomic_write_text, read_csv_rows
from panderm.paths import check_safe_name, inside_out, resolve_under_root

TILING_COLUMNS = ("slide", "status", "n_patches", "level", "downsample", "mpp", "magnification", "reason", "path")


def mpp_for_magnification(mag: float) -> float:
    """Conventional microns per pixel of an objective: 10× → 1.0, 20× → 0.5, 40× → 0.25."""
    return 10.0 / float(mag)


@dataclass
class PatchPlan:
    """How patches are read from one slide (see the module docstring)."""

    level: int
    level_downsample: float
    downsample: float  # target downsample vs level 0
    patch_size: int
    patch_size_level: int
    patch_size_level0: int
    magnification: float  # target magnification
    mpp: float | None  # microns per pixel of the output patches
    basis: str  # "objective power" or "mpp"


def plan_patches(reader, patch: int = 256, mag: float = 20, prefer_mpp: bool = False) -> PatchPlan:
    """Choose the level and sizes for ``patch``-pixel patches at magnification ``mag``."""
    if patch < 8 or mag <= 0:
        raise ConfigError(f"bad patching parameters: patch={patch}, mag={mag}")
    if reader.magnification and not (prefer_mpp and reader.mpp):
        target, basis = reader.magnification / mag, "objective power"
    elif reader.mpp:
        target, basis = mpp_for_magnification(mag) / reader.mpp, "mpp"
    else:
        raise InputError(f"slide {reader.path} records neither its resolution (mpp) nor its objective power, "
                         f"so the level for {mag:g}x cannot be chosen",
                         hint="pass --mpp with the level-0 microns per pixel (e.g. --mpp 0.25 for a 40x scan)")
    level = reader.best_level_for_downsample(target)
    lds = reader.level_downsamples[level]
    psl = max(1, round(patch * target / lds))
    if abs(psl - patch) <= max(1, patch // 200) and abs(lds - target) <= 0.01 * target:
        psl = patch  # e.g. openslide's 4.0003 for an exact 4x level
    mpp_out = reader.mpp * target if reader.mpp else mpp_for_magnification(mag)
    return PatchPlan(level, float(lds), float(target), int(patch), int(psl), max(1, round(patch * target)),
                     float(mag), float(mpp_out), basis)


@dataclass
class TileResult:
    """One slide's tiling outcome (one row of ``tiling.csv``)."""

    slide: str
    status: str  # ok | no tissue | exists | error
    n_patches: int = 0
    level: int | None = None
    downsample: float | None = None
    mpp: float | None = None
    magnification: float | None = None
    reason: str = ""
    path: str = ""
    coords_path: Path | None = None
    thumbnail_path: Path | None = None
    seconds: float = 0.0

    def row(self) -> dict:
        d = asdict(self)
        return {k: ("" if d[k] is None else d[k]) for k in TILING_COLUMNS}


def slide_name(path: str | os.PathLike) -> str:
    name = Path(path).name
    for ext in (".ome.tiff", ".ome.tif"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return Path(name).stem


def tile_slide(path: str | os.PathLike, out_dir: str | os.PathLike, *, patch: int = 256, mag: float = 20,
               tissue_threshold: float = 0.5, mpp: float | None = None, sat_threshold: float | None = None,
               mask_max_side: int = 2048, thumb_max_side: int = 1024, name: str | None = None,
               tissue_kwargs: dict | None = None) -> TileResult:
    """Tile one slide into ``out_dir/coords/<name>.h5`` and ``out_dir/thumbnails/<name>.png``.

    Raises:
        InputError: unreadable slide, or neither metadata nor ``mpp``.
    """
    from panderm.pathology.slides import open_slide
    from panderm.pathology.tissue import box_fractions, tissue_mask

    t0 = time.perf_counter()
    if not 0 <= tissue_threshold <= 1:
        raise ConfigError(f"tissue_threshold must be in [0, 1], got {tissue_threshold}")
    path, out_dir = Path(path), Path(out_dir)
    name = name or slide_name(path)
    with open_slide(path, mpp=mpp) as reader:
        plan = plan_patches(reader, patch, mag, prefer_mpp=mpp is not None)
        thumb, _tds = reader.thumbnail(mask_max_side)
        mask = tissue_mask(thumb, sat_threshold=sat_threshold, **(tissue_kwargs or {}))
        W, H = reader.dimensions
        s0 = plan.patch_size_level0
        xs, ys = np.arange(0, W - s0 + 1, s0), np.arange(0, H - s0 + 1, s0)
        grid = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2).astype(np.int64)
        if len(grid):
            frac = box_fractions(mask, grid, s0, (mask.shape[1] / W, mask.shape[0] / H))
            coords = grid[frac >= max(tissue_threshold, 1e-9)]
        else:
            coords = np.zeros((0, 2), np.int64)
        attrs = {"patch_size": plan.patch_size, "patch_level": plan.level, "patch_size_level": plan.patch_size_level,
                     "patch_size_level0": s0, "magnification": plan.magnification, "mpp": plan.mpp or float("nan"),
                     "downsample": plan.downsample, "level_downsample": plan.level_downsample, "basis": plan.basis,
                     "level0_magnification": float(reader.magnification or plan.magnification * plan.downsample),
                     "level0_mpp": float(reader.mpp or float("nan")), "target_magnification": plan.magnification,
                     "overlap": 0, "tissue_threshold": float(tissue_threshold), "width": W, "height": H, "name": name,
                     "slide_path": str(path.resolve())}
        coords_path = inside_out(out_dir, "coords", f"{name}.h5")
        _write_coords(coords_path, coords, attrs)
        thumb_path = inside_out(out_dir, "thumbnails", f"{name}.png")
        _write_thumbnail(thumb_path, thumb, mask, coords, s0, (thumb.shape[1] / W, thumb.shape[0] / H),
                         thumb_max_side)
    status, reason = "ok", ""
    if len(coords) == 0:
        status = "no tissue"
        reason = ("slide smaller than one patch" if not len(grid) else
                  f"no grid cell has tissue fraction >= {tissue_threshold:g}")
    return TileResult(name, status, len(coords), plan.level, plan.downsample, plan.mpp, plan.magnification,
                      reason, str(path), coords_path, thumb_path, time.perf_counter() - t0)


def _write_coords(path: Path, coords: np.ndarray, attrs: dict) -> None:
    import h5py

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        dset = f.create_dataset("coords", data=np.asarray(coords, np.int64).reshape(-1, 2))
        for k, v in attrs.items():
            dset.attrs[k] = v  # CLAM reads the attributes of the coords dataset
            f.attrs[k] = v


def _write_thumbnail(path: Path, thumb: np.ndarray, mask: np.ndarray, coords: np.ndarray, size0: int,
                     scale: tuple[float, float], max_side: int) -> None:
    import cv2

    f = min(1.0, max_side / max(thumb.shape[:2]))
    img = thumb if f == 1.0 else cv2.resize(thumb, (max(1, round(thumb.shape[1] * f)),
                                                   max(1, round(thumb.shape[0] * f))), interpolation=cv2.INTER_AREA)
    img = np.ascontiguousarray(img.copy())
    sx, sy = scale[0] * img.shape[1] / thumb.shape[1], scale[1] * img.shape[0] / thumb.shape[0]
    for x, y in coords:
        p0 = (round(x * sx), round(y * sy))
        p1 = (round((x + size0) * sx) - 1, round((y + size0) * sy) - 1)
        cv2.rectangle(img, p0, p1, (40, 90, 255), 1)
    m = cv2.resize(mask.astype(np.uint8), (img.shape[1], img.shape[0]), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(img, contours, -1, (0, 200, 0), 2)
    _ok, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())


def collect_slides(input: str | os.PathLike, root: str | os.PathLike | None = None) -> list[tuple[Path, float | None]]:
    """Slides of a folder (recursive), a single slide file, or a CSV (``slide``/``path`` column, optional ``mpp``).

    CSV paths follow :func:`panderm.paths.resolve_under_root`: relative to ``root`` and
    refused when they leave it (naming the row), or without ``root`` relative to the
    CSV's folder, absolute allowed; ``./`` and backslashes are normalised.
    """
    from panderm.pathology.slides import SLIDE_EXTENSIONS

    src = Path(input).expanduser()
    if src.is_dir():
        # hidden names ('..svs', '._x.svs') are kept: tile_slides lists them with the reason (unsafe name)
        return [(p, None) for p in sorted(src.rglob("*"))
                if p.is_file() and p.name.lower().endswith(SLIDE_EXTENSIONS)]
    if src.is_file() and src.suffix.lower() == ".csv":
        return _slides_from_csv(src, root)
    if src.is_file():
        return [(src, None)]
    raise InputError(f"slide input {src} does not exist", hint="pass a slide file, a folder of slides or a CSV")


def _slides_from_csv(src: Path, root: str | os.PathLike | None) -> list[tuple[Path, float | None]]:
    rows = read_csv_rows(src, "slide CSV")
    col = next((c for c in ("slide", "path", "slide_path", "image") if rows and c in rows[0][1]), None)
    if col is None:
        raise InputError(f"{src} has no slide column", hint="name the column 'slide' (paths relative to the CSV)")
    out = []
    for line, r in rows:
        where = f"{src} row {line}"
        path = resolve_under_root(r.get(col) or "", root, base=src.parent, where=where)
        mpp = (r.get("mpp") or "").strip()
        try:
            out.append((path, float(mpp) if mpp else None))
        except ValueError:
            raise InputError(f"{where}: mpp {mpp!r} is not a number",
                             hint="give microns per pixel, e.g. 0.25") from None
    return out


@dataclass
class TilingSummary:
    out: Path
    results: list[TileResult] = field(default_factory=list)
    csv_path: Path | None = None
    rank: int = 0
    world_size: int = 1

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def n_patches(self) -> int:
        return sum(r.n_patches for r in self.results)


def tile_slides(input: str | os.PathLike, out: str | os.PathLike, *, patch: int = 256, mag: float = 20,
                tissue_threshold: float = 0.5, mpp: float | None = None, sat_threshold: float | None = None,
                overwrite: bool = False, progress: bool = True, root: str | os.PathLike | None = None,
                **kwargs) -> TilingSummary:
    """Tile every slide of ``input``; a bad slide is reported in ``out/tiling.csv`` and skipped.

    Resumable: a slide whose ``coords/<slide>.h5`` exists is not tiled again
    (status ``exists``) unless ``overwrite``. The slide name (file name without
    extension) becomes the output file names, so a name that is no safe file name
    (:func:`panderm.paths.check_safe_name`) is skipped with the reason. ``root``:
    see :func:`collect_slides`.

    Under ``torchrun`` the slides are shared out over the ranks
    (:mod:`panderm.pathology.sharding`); rank 0 writes ``tiling.csv`` once and its
    summary lists every slide, the other ranks' summaries only their own.
    """
    from tqdm import tqdm

    from panderm.progress import progress_bar

    from panderm.pathology.sharding import join_ranks, merge_table, rank_share, start_parts

    out = Path(out).expanduser()
    slides = collect_slides(input, root)
    if not slides:
        raise InputError(f"no slides found in {input}")
    names = [slide_name(p) for p, _ in slides]
    first: dict[str, int] = {}
    duplicate = {i for i, n in enumerate(names) if first.setdefault(n, i) != i}
    ctx = join_ranks("cpu")
    out.mkdir(parents=True, exist_ok=True)
    summary = TilingSummary(out, csv_path=out / "tiling.csv", rank=ctx.rank, world_size=ctx.world_size)
    parts = start_parts(out, "tiling", ctx)
    done: list[tuple[int, TileResult]] = []
    opts = dict(patch=patch, mag=mag, tissue_threshold=tissue_threshold, sat_threshold=sat_threshold, **kwargs)
    for i in progress_bar(rank_share(names, ctx.rank, ctx.world_size), desc="tile", unit="slide",
                          enabled=progress and ctx.rank == 0):
        path, row_mpp = slides[i]
        res = _tile_or_skip(path, names[i], out, i in duplicate, overwrite,
                            dict(opts, mpp=row_mpp if row_mpp is not None else mpp))
        if res.status in ("error", "no tissue") and progress:
            tqdm.write(f"panderm: {res.slide}: {res.status}: {res.reason}", file=sys.stderr)
        done.append((i, res))
        if parts is None:  # after every slide: survives interruption
            _write_tiling_csv(summary.csv_path, [r for _, r in sorted(done, key=lambda t: t[0])])
        else:
            parts.write([(j, _result_json(r)) for j, r in done], done=False)
    merged, _ = merge_table(parts, done, _result_json, _result_from_json, progress=progress)
    summary.results = merged if merged is not None else [r for _, r in done]
    if merged is not None:
        _write_tiling_csv(summary.csv_path, summary.results)
    return summary


def _tile_or_skip(path: Path, name: str, out: Path, duplicate: bool, overwrite: bool, opts: dict) -> TileResult:
    """One slide of a batch: refused name, duplicate, already tiled, tiled, or failed (never raises)."""
    from panderm.pathology.patches import read_coords

    unsafe = _unsafe_name(name, path)
    if unsafe:
        return TileResult(name, "error", reason=unsafe, path=str(path))
    if duplicate:
        return TileResult(name, "error", reason=f"duplicate slide name '{name}' (another file has it)",
                          path=str(path))
    coords_path = inside_out(out, "coords", f"{name}.h5")
    if not overwrite and coords_path.is_file():
        try:
            coords, a = read_coords(coords_path)
        except InputError as exc:
            return TileResult(name, "error", reason=exc.message, path=str(path))
        return TileResult(name, "exists", len(coords), a.get("patch_level"), a.get("downsample"), a.get("mpp"),
                          a.get("magnification"), "already tiled (pass --overwrite to redo)", str(path), coords_path)
    try:
        return tile_slide(path, out, name=name, **opts)
    except InputError as exc:
        return TileResult(name, "error", reason=str(exc).replace("\n", " "), path=str(path))
    except Exception as exc:  # noqa: BLE001 - one odd slide must not stop a batch
        return TileResult(name, "error", reason=f"{type(exc).__name__}: {str(exc)[:200]}", path=str(path))


def _result_json(res: TileResult) -> dict:
    d = asdict(res)
    for k in ("coords_path", "thumbnail_path"):
        d[k] = None if d[k] is None else str(d[k])
    return d


def _result_from_json(d: dict) -> TileResult:
    d = dict(d)
    for k in ("coords_path", "thumbnail_path"):
        d[k] = None if d.get(k) is None else Path(d[k])
    return TileResult(**d)


def _unsafe_name(name: str, path: Path) -> str:
    """Why slide ``name`` cannot become an output file name (``""`` when it can)."""
    try:
        check_safe_name(name, what="slide name", source=str(path))
    except InputError as exc:
        return f"{exc.message}; rename the file ({exc.hint})"
    return ""


def _write_tiling_csv(path: Path, results: list[TileResult]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=TILING_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in results:
        w.writerow(r.row())
    atomic_write_text(path, buf.getvalue())
