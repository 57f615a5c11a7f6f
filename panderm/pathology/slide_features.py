"""Per-slide patch features: ``tiles/coords/<slide>.h5`` → one feature file per slide (``--layout``).

Patches are read with :func:`panderm.pathology.patches.iter_patches` (blocks,
parallel readers), resized **whole** to the encoder's input size (no centre crop:
the whole patch is seen) with the interpolation of the encoder's preprocessing
preset (``pretrained_cfg.preset``, or ``preset=``; antialiased) and normalised with
that preset's mean/std, then encoded with the same encoder stack as
``panderm extract`` (``create_encoder``, bf16/fp32 ``precision``, device choice).
Files are laid out as panderm, TRIDENT or CLAM write them
(:mod:`panderm.pathology.layouts`). Each slide's files are written atomically, so a
rerun skips finished slides (resumable; a rerun with another encoder, weights, preset,
precision or layout is refused, :func:`check_resume`); under ``torchrun`` the slides are shared
out over the ranks (:mod:`panderm.pathology.sharding`).
"""

from __future__ import annotations

import csv
import io
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from panderm.errors import ConfigError, InputError
from panderm.io import atomic_write_text
from panderm.paths import check_safe_name

FEATURES_COLUMNS = ("slide", "status", "n_patches", "dim", "reason")


@dataclass
class SlideFeaturesSummary:
    out: Path
    rows: list[dict] = field(default_factory=list)
    dim: int = 0
    precision: str = ""
    device: str = ""
    seconds: float = 0.0
    patches_computed: int = 0
    csv_path: Path | None = None
    layout: str = "panderm"
    folder: Path | None = None  # where the <slide>.h5 files are
    encoder: str = ""
    preset: str = ""
    rank: int = 0
    world_size: int = 1

    def count(self, status: str) -> int:
        return sum(r["status"] == status for r in self.rows)


def encoder_identity(model: Any, preset: str | None = None) -> tuple[str, str]:
    """``(encoder name, preset name)`` of ``model`` (a registered name or a module), without loading weights.

    The preset is ``preset`` if given, else the encoder's ``pretrained_cfg.preset``.

    Raises:
        ConfigError: unknown name or preset; a module without ``pretrained_cfg`` and no ``preset``.
    """
    from panderm.data.transforms import get_preset

    if isinstance(model, str):
        from panderm.models.factory import get_encoder_entry

        entry, cfg = get_encoder_entry(model)
        name = f"{entry.name}.{cfg.tag}"
    else:
        cfg = getattr(model, "pretrained_cfg", None)
        name = getattr(model, "model_name", type(model).__name__)
    name_preset = preset or getattr(cfg, "preset", None)
    if name_preset is None:
        raise ConfigError(f"encoder {name} has no pretrained_cfg naming its preprocessing preset",
                          hint="pass preset= (--preset), e.g. imagenet")
    get_preset(name_preset)
    return name, name_preset


def to_input(batch_u8: np.ndarray, preset) -> Any:
    """uint8 (B, H, W, 3) → float tensor (B, 3, crop, crop): whole-patch resize, ``preset`` mean/std."""
    import torch
    import torch.nn.functional as F

    size = int(preset.crop)
    x = torch.from_numpy(np.ascontiguousarray(batch_u8)).permute(0, 3, 1, 2).float().div_(255.0)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode=preset.interpolation, align_corners=False, antialias=True)
        x = x.clamp_(0.0, 1.0)  # bicubic overshoots
    m = torch.tensor(preset.mean, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(preset.std, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - m) / s


def extract_slide_features(tiles_dir: str | os.PathLike, out: str | os.PathLike, *,
                           model: Any = "panderm_large_patch16_224",
                           weights: str | os.PathLike | None = None, batch_size: int = 64, workers: int | None = None,
                           precision: str = "auto", device: str | None = None,
                           slides_dir: str | os.PathLike | None = None, overwrite: bool = False,
                           progress: bool = True, block: int = 2, mpp: float | None = None,
                           layout: str = "panderm", preset: str | None = None,
                           random_init: bool = False) -> SlideFeaturesSummary:
    """Encode the patches of every ``tiles_dir/coords/<slide>.h5`` into one feature file per slide.

    Args:
        tiles_dir: Output folder of :func:`~panderm.pathology.tiling.tile_slides` (or its ``coords`` folder).
        out: Output folder; the files follow ``layout`` (:mod:`panderm.pathology.layouts`), plus
            ``features.csv`` (per-slide status).
        model, weights: Encoder name and weights (as in ``panderm extract``), or an encoder module.
        batch_size: Patches per forward pass.
        workers: Reader threads (each with its own slide handle); ``None``: min(2, CPUs).
        precision: ``auto``, ``bf16``, ``fp16`` (CUDA only) or ``fp32``.
        device: ``cpu``/``cuda``/``cuda:N`` (default: CUDA when available; ``cuda:LOCAL_RANK`` under torchrun).
        slides_dir: Where to look for the slides (default: the ``slide_path`` recorded at tiling).
        overwrite: Recompute slides whose feature files exist.
        progress: Progress bar and notes on stderr.
        block: Grid cells per side read in one ``read_region``.
        mpp: Level-0 mpp override passed to the slide reader (only needed for exotic files).
        layout: ``panderm`` (``out/<slide>.h5``), ``trident`` (``out/features_<encoder>/<slide>.h5``)
            or ``clam`` (``out/h5_files/<slide>.h5`` and ``out/pt_files/<slide>.pt``).
        preset: Preprocessing preset (default: the encoder's ``pretrained_cfg.preset``).
        random_init: Allow a randomly initialised named model that ships no weights (tests and ablations).

    Returns:
        A :class:`SlideFeaturesSummary`; ``features.csv`` lists every slide with its status
        (``ok``, ``exists``, ``no patches``, ``error``). Under torchrun rank 0's summary lists
        every slide, the other ranks' only their own.
    """
    from panderm.data.transforms import get_preset
    from panderm.hardware import resolve_precision
    from panderm.pathology.layouts import FeatureLayout
    from panderm.pathology.sharding import join_ranks, start_parts

    t0 = time.perf_counter()
    files, enc_name, preset_name, device, workers = _check_args(tiles_dir, model, weights, random_init, batch_size,
                                                                layout, preset, device, workers)
    lay = FeatureLayout(layout, Path(out).expanduser(), enc_name)
    ctx = join_ranks(device)
    prec = resolve_precision(precision, ctx.device)
    summary = SlideFeaturesSummary(lay.out, precision=prec, device=ctx.device, csv_path=lay.csv_path,
                                   layout=layout, folder=lay.folder, encoder=enc_name, preset=preset_name,
                                   rank=ctx.rank, world_size=ctx.world_size)
    wanted = dict(model=enc_name, weights_sha256=weights_identity(model, weights), preset=preset_name,
                  precision=prec, layout=layout)
    if not overwrite:
        check_resume(lay, wanted)
    lay.folder.mkdir(parents=True, exist_ok=True)
    parts = start_parts(lay.out, lay.table, ctx)
    job = _Job(model, weights, random_init, lay, get_preset(preset_name), prec, ctx.device, batch_size, workers,
               block, mpp, slides_dir, overwrite, progress and ctx.rank == 0)
    done = _run_slides(job, files, summary, parts, ctx)
    _finish_table(summary, parts, done, job, progress)
    summary.seconds = time.perf_counter() - t0
    return summary


def _check_args(tiles_dir, model, weights, random_init: bool, batch_size: int, layout: str, preset: str | None,
                device: str | None, workers: int | None) -> tuple[list[Path], str, str, str, int]:
    """Validate before any slide is read: ``(coords files, encoder name, preset name, device, workers)``."""
    import torch

    from panderm.hardware import default_device
    from panderm.pathology.layouts import check_layout

    if batch_size < 1:
        raise ConfigError("batch_size must be a positive integer")
    check_layout(layout)
    if isinstance(model, str):
        from panderm.models.factory import require_weights

        require_weights(model, weights, random_init)  # before any slide is read
    if workers is None:
        workers = min(2, os.cpu_count() or 1)
    files = _coord_files(Path(tiles_dir).expanduser())
    enc_name, preset_name = encoder_identity(model, preset)
    device = device or default_device()
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device '{device}' requested but CUDA is not available", hint="use --device cpu")
    return files, enc_name, preset_name, device, workers


def _run_slides(job: _Job, files: list[Path], summary: SlideFeaturesSummary, parts, ctx) -> list[tuple[int, dict]]:
    """Encode this rank's share of the slides, recording the table after each: ``[(slide index, row)]``."""
    from panderm.pathology.sharding import rank_share

    done = []
    for i in rank_share([f.stem for f in files], ctx.rank, ctx.world_size):
        done.append((i, job.slide(files[i])))
        _record(summary, parts, done)
    return done


def _finish_table(summary: SlideFeaturesSummary, parts, done: list[tuple[int, dict]], job: _Job,
                  progress: bool) -> None:
    """Fill ``summary`` from every rank's rows (merged on rank 0 under torchrun) and write ``features.csv``."""
    from panderm.pathology.sharding import merge_table

    merged, extras = merge_table(parts, done, dict, dict, extra={"patches": job.patches}, progress=progress)
    summary.rows = merged if merged is not None else [r for _, r in done]
    summary.patches_computed = sum(e.get("patches", 0) for e in extras) if merged is not None else job.patches
    summary.dim = max((int(r["dim"]) for r in summary.rows if r["dim"] != ""), default=0)
    if merged is not None:
        _write_csv(summary.csv_path, summary.rows)


RESUME_KEYS = ("model", "weights_sha256", "preset", "precision", "layout")


def weights_identity(model: Any, weights: str | os.PathLike | None) -> str | None:
    """The ``weights_sha256`` this run's files will record, without building the encoder.

    Resolves (and so validates) ``weights``. ``None`` for a fresh random initialisation
    (a registered name without weights: every build differs).
    """
    from panderm.models.inference import params_sha256
    from panderm.weights import resolve_weights_path, weights_sha256

    if not isinstance(model, str):
        if weights is not None:
            raise ConfigError("pass weights either inside the model object or via weights=, not both")
        return getattr(getattr(model, "weights_info", None), "sha256", None) or f"params:{params_sha256(model)}"
    if weights is not None:
        return weights_sha256(resolve_weights_path(weights))
    from panderm.models.factory import bundled_weights_path, get_encoder_entry

    cfg = get_encoder_entry(model)[1]
    return weights_sha256(bundled_weights_path(cfg)) if cfg.bundled else None


def check_resume(lay, wanted: dict) -> None:
    """Refuse to add to ``lay.out`` files made with other settings or another layout (ConfigError).

    Compares ``wanted`` (:data:`RESUME_KEYS`) with the attributes of every feature file already
    in the layout's folder, and looks for the files of the other layouts in ``lay.out``.
    """
    diffs = _other_layouts(lay)
    for key, found in _recorded(lay.folder).items():
        want = wanted[key]
        for value, n in found.items():
            if value != (want if want is not None else "(a new random initialisation)"):
                diffs.append(f"{key}: {value} in {n} file(s), requested {want or 'a new random initialisation'}")
    if diffs:
        raise ConfigError(f"{lay.out} already holds features made with other settings: " + "; ".join(diffs),
                          hint="pass --overwrite to recompute every slide with these settings, "
                               "or write to another --out")


def _recorded(folder: Path) -> dict[str, dict[str, int]]:
    """{setting: {value: number of files}} over the ``*.h5`` feature files of ``folder``."""
    from panderm.hdf5 import open_file

    found: dict[str, dict[str, int]] = {k: {} for k in RESUME_KEYS}
    for h5 in sorted(folder.glob("*.h5")) if folder.is_dir() else []:
        try:
            with open_file(h5, "features file") as f:
                attrs = {k: f.attrs.get(k) for k in RESUME_KEYS}
        except Exception:  # noqa: BLE001 - an unreadable file is recomputed, not compared
            continue
        for k, v in attrs.items():
            v = "(not recorded)" if v is None else v.decode() if isinstance(v, bytes) else str(v)
            found[k][v] = found[k].get(v, 0) + 1
    return {k: v for k, v in found.items() if v}


def _other_layouts(lay) -> list[str]:
    """Differences naming the other layouts whose files are in ``lay.out`` (one --out, one layout)."""
    from panderm.pathology.layouts import has_features

    out = lay.out
    present = {"panderm": lay.name != "panderm" and has_features(out),
               "clam": any(has_features(out / d) for d in ("h5_files", "pt_files")) and lay.name != "clam",
               "trident": lay.name != "trident" and out.is_dir()
               and any(has_features(p) for p in out.glob("features_*"))}
    return [f"layout: {k} files in {out}, requested {lay.name}" for k, v in present.items() if v]


def _coord_files(tiles_dir: Path) -> list[Path]:
    coords_dir = tiles_dir / "coords" if (tiles_dir / "coords").is_dir() else tiles_dir
    files = sorted(coords_dir.glob("*.h5")) if coords_dir.is_dir() else []
    if not files:
        raise InputError(f"no coordinate files (*.h5) in {coords_dir}", hint="run `panderm slide tile` first")
    return files


def _record(summary: SlideFeaturesSummary, parts, done: list[tuple[int, dict]]) -> None:
    """After every slide: the table (one process) or this rank's part (torchrun); survives interruption."""
    if parts is None:
        _write_csv(summary.csv_path, [r for _, r in sorted(done, key=lambda t: t[0])])
    else:
        parts.write(done, done=False)


class _Job:
    """One rank's extraction settings and its lazily loaded encoder."""

    def __init__(self, model, weights, random_init, lay, preset, prec, device, batch_size, workers, block, mpp,
                 slides_dir, overwrite, progress):
        self.model, self.weights, self.lay, self.preset = model, weights, lay, preset
        self.random_init = random_init
        self.prec, self.device = prec, device
        self.batch_size, self.workers, self.block, self.mpp = batch_size, workers, block, mpp
        self.slides_dir, self.overwrite, self.progress = slides_dir, overwrite, progress
        self.enc = None
        self.meta: dict = {}
        self.patches = 0

    def say(self, msg: str) -> None:
        from panderm.progress import note

        note(msg, self.progress)

    def load(self) -> None:
        """Load the encoder (only when a slide needs it) and its provenance attributes."""
        from panderm.models.inference import load_encoder, params_sha256, prepare_for_inference

        enc, user_module = load_encoder(self.model, None if self.weights is None else str(self.weights),
                                       self.random_init)
        info = getattr(enc, "weights_info", None)
        p = self.preset
        self.meta = dict(model=self.lay.encoder, weights=str(getattr(info, "spec", None) or ""),
                         weights_sha256=getattr(info, "sha256", None) or f"params:{params_sha256(enc)}",
                         precision=self.prec, preset=p.name, mean=tuple(p.mean), std=tuple(p.std),
                         input_size=int(p.crop), interpolation=p.interpolation)
        self.enc = prepare_for_inference(enc, self.device, self.prec, False, user_module, self.say)

    def slide(self, cf: Path) -> dict:
        """Encode one coords file's slide; its ``features.csv`` row (never raises for a bad slide)."""
        from panderm.pathology.patches import check_tiling_attrs, find_slide, read_coords

        name = cf.stem
        row = {"slide": name, "status": "ok", "n_patches": 0, "dim": "", "reason": ""}
        try:
            check_safe_name(name, what="slide name", source=str(cf))
            coords, attrs = read_coords(cf)
            check_tiling_attrs(attrs)
        except InputError as exc:
            return self.skip(row, exc)
        row["n_patches"] = len(coords)
        if not self.overwrite and self.lay.complete(name, len(coords)):
            return dict(row, status="exists", reason="already extracted (pass --overwrite to redo)")
        if len(coords) == 0:
            return dict(row, status="no patches", reason="the tiling kept no patch (no tissue)")
        try:
            slide = find_slide(name, attrs, self.slides_dir)
            check_slide_matches(slide, coords, attrs, self.mpp)
        except InputError as exc:
            return self.skip(row, exc)
        if self.enc is None:
            self.load()
        try:
            feats = self.encode(slide, coords, attrs, name)
        except InputError as exc:
            return self.skip(row, exc)
        meta = {k: v for k, v in attrs.items() if isinstance(v, (int, float, str, np.number))}
        meta.update(self.meta, slide_path=str(slide), coords_dir=str(cf.parent))
        self.lay.write(name, feats, coords, meta)
        self.patches += len(coords)
        return dict(row, dim=int(feats.shape[1]))

    def skip(self, row: dict, exc: InputError) -> dict:
        reason = f"{exc.message} ({exc.hint})" if exc.hint else exc.message
        row.update(status="error", reason=reason.replace("\n", " "))
        self.say(f"{row['slide']}: {row['reason']}; skipped")
        return row

    def encode(self, slide, coords, attrs, name) -> np.ndarray:
        return _encode_slide(self.enc, slide, coords, attrs, self.batch_size, self.workers, self.block, self.mpp,
                             self.device, self.prec, self.preset, self.progress, name)


def check_slide_matches(slide: Path, coords: np.ndarray, attrs: dict, mpp: float | None = None) -> None:
    """InputError unless ``slide`` is the slide that was tiled and every patch starts inside it.

    Compares the level-0 size (``width``/``height``, TRIDENT's ``level0_width``/``level0_height``)
    and, when both are known, the level-0 mpp (``level0_mpp``, 2 % tolerance) with the file;
    checks the patch level exists and every top-left corner lies in [0, width) × [0, height).
    """
    from panderm.pathology.slides import open_slide

    with open_slide(slide, mpp=mpp) as r:
        (w, h), level_count, got_mpp = r.dimensions, r.level_count, r.mpp
    rec = _recorded_size(attrs)
    if rec is not None and rec != (w, h):
        raise InputError(f"{slide} is {w}x{h} px but was tiled as {rec[0]}x{rec[1]}: not the tiled slide",
                         hint="pass --slides DIR holding the slides that were tiled")
    rec_mpp = attrs.get("level0_mpp")
    if isinstance(rec_mpp, (int, float)) and np.isfinite(rec_mpp) and got_mpp and abs(got_mpp / rec_mpp - 1) > 0.02:
        raise InputError(f"{slide} has {got_mpp:g} um/px at level 0 but was tiled at {rec_mpp:g}",
                         hint="pass the slide that was tiled, or the --mpp used at tiling")
    if int(attrs["patch_level"]) >= level_count:
        raise InputError(f"patch level {attrs['patch_level']} but {slide} has {level_count} level(s)")
    bad = (coords < 0).any(axis=1) | (coords[:, 0] >= w) | (coords[:, 1] >= h)
    if bad.any():
        x, y = coords[np.argmax(bad)]
        raise InputError(f"{int(bad.sum())} patch(es) start outside the {w}x{h} slide, e.g. ({x}, {y})",
                         hint="re-create the coords file with `panderm slide tile`")


def _recorded_size(attrs: dict) -> tuple[int, int] | None:
    """Level-0 (width, height) recorded at tiling (panderm or TRIDENT names), or None."""
    rec = (attrs.get("width", attrs.get("level0_width")), attrs.get("height", attrs.get("level0_height")))
    if None in rec:
        return None
    try:
        return int(rec[0]), int(rec[1])
    except (TypeError, ValueError):
        raise InputError(f"coords attributes width/height {rec} are not numbers",
                         hint="re-create the file with `panderm slide tile`") from None


def _encode_slide(enc, slide, coords, attrs, batch_size, workers, block, mpp, device, prec, preset, progress,
                  name) -> np.ndarray:
    import torch

    from panderm.models.inference import encode_batch
    from panderm.pathology.patches import iter_patches
    from panderm.progress import progress_bar

    level, psl = int(attrs["patch_level"]), int(attrs["patch_size_level"])
    patch, step0 = int(attrs["patch_size"]), int(attrs["patch_size_level0"])
    dim = int(getattr(enc, "num_features", 0)) or None
    feats: np.ndarray | None = None
    buf_idx: list[np.ndarray] = []
    buf_img: list[np.ndarray] = []
    bar = progress_bar(total=len(coords), desc=name[:24], unit="patch", enabled=progress, leave=False)

    def flush(final: bool):
        nonlocal feats, buf_idx, buf_img
        idx, imgs = np.concatenate(buf_idx), np.concatenate(buf_img)
        n = len(idx) if final else len(idx) // batch_size * batch_size
        buf_idx, buf_img = ([idx[n:]], [imgs[n:]]) if n < len(idx) else ([], [])
        for s in range(0, n, batch_size):
            e = min(s + batch_size, n)
            f = encode_batch(enc, to_input(imgs[s:e], preset), device, prec)
            if feats is None:
                feats = np.zeros((len(coords), dim or f.shape[1]), np.float32)
            feats[idx[s:e]] = f
            bar.update(len(f))

    try:
        with torch.inference_mode():
            pending = 0
            for idx, imgs in iter_patches(slide, coords, level=level, patch_size_level=psl, patch_size=patch,
                                          step0=step0, workers=workers, block=block, mpp=mpp):
                buf_idx.append(idx)
                buf_img.append(imgs)
                pending += len(idx)
                if pending >= batch_size:
                    flush(False)
                    pending = sum(len(i) for i in buf_idx)
            if buf_idx:
                flush(True)
    finally:
        bar.close()
    return feats


def _write_csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FEATURES_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


__all__ = ["RESUME_KEYS", "SlideFeaturesSummary", "check_resume", "check_slide_matches", "encoder_identity",
           "extract_slide_features", "to_input", "weights_identity"]
