"""Feature extraction: images → ``features.npy`` + ``index.csv`` + ``meta.json`` + ``skipped.csv``.

Work is cut into fixed shards of ``shard_size`` images. Each finished shard is
saved atomically under ``out/.shards/`` next to a fingerprint of everything that
affects the numbers, so an interrupted run resumes where it stopped and the
final files are byte-identical to an uninterrupted run (batches inside a shard
are fixed). Under ``torchrun`` shard ``i`` goes to rank ``i % world_size`` and
rank 0 merges. Final files appear only when every shard is done.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from panderm.data.images import DEFAULT_MAX_PIXELS, MIN_SIDE, ImageReadError, load_rgb
from panderm.data.inputs import IMAGE_EXTENSIONS, collect_inputs
from panderm.data.transforms import build_transform, get_preset
from panderm.distributed import DistContext, barrier, init_distributed
from panderm.errors import ConfigError, InputError
from panderm.extract_folder import (
    OUTPUT_FILES,
    SHARD_DIR,
    finished_result,
    prepare_shard_dir,
    read_shard,
    refuse_foreign_outputs,
    refuse_other_weights,
    save_shard,
    shard_done,
)
from panderm.io import atomic_path, atomic_write_json, atomic_write_text, file_stamp
from panderm.models.inference import encode_batch, load_encoder, params_sha256, prepare_for_inference
from panderm.progress import note

FORMAT_VERSION = 1
NON_FINITE_REASON = "the encoder's output is not finite (NaN or Inf): the weights may be damaged"


@dataclass
class ExtractResult:
    """What an extraction run produced (on non-zero ranks: only that rank's work)."""

    out: Path
    n_images: int
    n_skipped: int
    dim: int
    precision: str
    device: str
    seconds: float
    features_path: Path | None = None
    index_path: Path | None = None
    meta_path: Path | None = None
    skipped_path: Path | None = None
    n_shards: int = 0
    shards_reused: int = 0
    shards_computed: int = 0
    images_computed: int = 0
    rank: int = 0
    world_size: int = 1
    up_to_date: bool = False
    notes: list[str] = field(default_factory=list)
    weights_summary: str = ""

    @property
    def images_per_second(self) -> float:
        """Images decoded and encoded per wall-clock second in this run."""
        return self.images_computed / self.seconds if self.seconds > 0 else 0.0


class _ImageDataset(torch.utils.data.Dataset):
    """Item ``i`` → ``(i, tensor, None)`` or ``(i, None, reason)``; never raises for a bad image.

    Images under :data:`~panderm.data.images.MIN_SIDE` px on the short side are skipped too.
    """

    def __init__(self, paths: list[Path], transform, max_pixels: int | None):
        self.paths, self.transform, self.max_pixels = paths, transform, max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            return i, self.transform(load_rgb(self.paths[i], self.max_pixels, min_side=MIN_SIDE)), None
        except ImageReadError as exc:
            return i, None, exc.reason
        except Exception as exc:  # one odd file must not kill a million-image job
            return i, None, f"preprocessing failed ({type(exc).__name__}: {str(exc)[:120]})"


def _collate(batch):
    good = [(i, t) for i, t, _ in batch if t is not None]
    bad = [(i, r) for i, t, r in batch if t is None]
    x = torch.stack([t for _, t in good]) if good else None
    return [i for i, _ in good], x, bad


def _fingerprint(**kw: Any) -> dict[str, Any]:
    return {"format": FORMAT_VERSION, **kw}


def extract_features(
    input: str | os.PathLike, out: str | os.PathLike, *, model: Any = "panderm_large_patch16_224",
    weights: str | os.PathLike | None = None, root: str | os.PathLike | None = None, preset: str | None = None,
    precision: str = "auto", batch_size: int = 64, workers: int | None = None, shard_size: int = 1024,
    device: str | None = None, resume: bool = True, keep_shards: bool = False, overwrite: bool = False,
    progress: bool = True, compile: bool = False, extensions=IMAGE_EXTENSIONS,
    max_pixels: int | None = DEFAULT_MAX_PIXELS, random_init: bool = False,
) -> ExtractResult:
    """Encode every image under ``input`` and write the feature matrix to ``out``.

    Args:
        input: Image folder (recursive) or CSV with an ``image`` column.
        out: Output folder (created).
        model: Registered encoder name, or an encoder module with ``forward_features``.
        weights: Weights name/path/spec for a named model (``None``: the tag's bundled weights).
        root: Folder CSV paths are relative to (default: the CSV's folder).
        preset: Preprocessing preset (default: the model's ``pretrained_cfg.preset``).
        precision: ``fp32``, ``bf16`` or ``auto`` (bf16 where the hardware is fast at it).
        batch_size: Images per forward pass.
        workers: DataLoader worker processes (default ``min(2, cpu_count)``).
        shard_size: Images per resumable shard.
        device: ``cpu``, ``cuda``, ``cuda:1`` (default: CUDA when available).
        resume: Reuse finished shards of an identical earlier run.
        keep_shards: Keep ``out/.shards`` after the final files are written.
        overwrite: Replace the outputs of a *different* finished run in ``out``
            (without it such a folder is refused, so no features are lost).
        progress: Show a progress bar and notes on stderr.
        compile: Wrap the model in ``torch.compile`` (falls back to eager on failure).
        extensions: Image extensions for folder input.
        max_pixels: Decompression-bomb guard per image.
        random_init: Allow a randomly initialised named model that ships no weights
            (tests and ablations; the features are meaningless).

    Returns:
        An :class:`ExtractResult`.

    Raises:
        InputError: bad input path/CSV, or no image could be read.
        ConfigError: bad option values, unknown model or preset.
    """
    t0 = time.perf_counter()
    out, items, ctx = _open_job(input, out, root, extensions, device, batch_size, shard_size)
    try:
        run = _load_run(ctx, items, out, model, weights, random_init, preset, precision, batch_size, shard_size,
                        compile, progress)
        done = finished_result(out, run.fp_hash, resume)
        if done is not None:
            return _up_to_date(run, done, t0)
        if not overwrite:
            refuse_other_weights(out, run.wsha, getattr(run.info, "spec", None))
            refuse_foreign_outputs(out, run.fp_hash)
        notes = _start_outputs(run, resume)
        result = _compute(run, notes, batch_size, shard_size, workers, max_pixels, progress, compile)
        if ctx.rank == 0:
            _write_outputs(run, result, batch_size, root, keep_shards)
        barrier(ctx)
        result.seconds = time.perf_counter() - t0
        return result
    finally:
        if ctx.created:
            torch.distributed.destroy_process_group()


@dataclass
class _Run:
    """One extraction run: its job, inputs, encoder, preprocessing and fingerprint (see :func:`_load_run`)."""

    ctx: DistContext
    items: Any
    out: Path
    enc: Any
    user_module: bool
    info: Any
    model_name: str
    preset_name: str
    transform: Any
    prec: str
    wsha: str
    fp: dict
    fp_hash: str
    n_shards: int
    say: Any

    @property
    def shard_dir(self) -> Path:
        return self.out / SHARD_DIR


def _open_job(input, out, root, extensions, device: str | None, batch_size: int, shard_size: int):
    """Validate the options, list the inputs and join the torchrun job: ``(out, items, DistContext)``."""
    from panderm.hardware import default_device

    if batch_size < 1 or shard_size < 1:
        raise ConfigError("batch_size and shard_size must be positive integers")
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a folder")
    items = collect_inputs(input, root, extensions)
    device = device or default_device()
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device '{device}' requested but CUDA is not available", hint="use --device cpu")
    return out, items, init_distributed(device)  # under torchrun: one GPU per local rank, gloo/nccl group


def _load_run(ctx: DistContext, items, out: Path, model, weights, random_init: bool, preset: str | None,
              precision: str, batch_size: int, shard_size: int, use_compile: bool, progress: bool) -> _Run:
    """Resolve the precision, load the encoder and its preset, and fingerprint everything the numbers depend on."""
    from panderm.hardware import resolve_precision

    prec = resolve_precision(precision, ctx.device)
    say = (lambda m: note(m, progress)) if ctx.rank == 0 else (lambda m: None)
    for line in items.notes:
        say(line)
    enc, user_module = load_encoder(model, None if weights is None else str(weights), random_init)
    cfg = getattr(enc, "pretrained_cfg", None)
    preset_name = preset or (cfg.preset if cfg is not None else None)
    if preset_name is None:
        raise ConfigError("model has no pretrained_cfg; pass preset= explicitly")
    transform = build_transform(get_preset(preset_name))
    info = getattr(enc, "weights_info", None)
    model_name = getattr(enc, "model_name", type(enc).__name__)
    wsha = getattr(info, "sha256", None) or f"params:{params_sha256(enc)}"
    listing = hashlib.sha256("\n".join(f"{r}\t{p}\t{file_stamp(p)}" for r, p in items).encode()).hexdigest()
    fp = _fingerprint(model=model_name, weights_sha256=wsha, preset=preset_name, precision=prec,
                      device_type=torch.device(ctx.device).type, batch_size=batch_size, shard_size=shard_size,
                      compile=bool(use_compile), n_inputs=len(items), inputs_sha256=listing, min_side=MIN_SIDE,
                      torch=torch.__version__)
    fp_hash = hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()
    n_shards = (len(items) + shard_size - 1) // shard_size
    return _Run(ctx, items, out, enc, user_module, info, model_name, preset_name, transform, prec, wsha, fp,
                fp_hash, n_shards, say)


def _up_to_date(run: _Run, done: dict, t0: float) -> ExtractResult:
    """The result for an ``out`` already complete for these settings: nothing is computed."""
    if run.ctx.rank == 0:
        run.say(f"outputs in {run.out} are already complete for these settings; nothing to do")
    barrier(run.ctx)
    return ExtractResult(run.out, done["n"], done["n_skipped"], done["dim"], run.prec, run.ctx.device,
                         time.perf_counter() - t0, *[run.out / f for f in OUTPUT_FILES],
                         n_shards=run.n_shards, rank=run.ctx.rank, world_size=run.ctx.world_size, up_to_date=True,
                         weights_summary=getattr(run.info, "summary", ""))


def _start_outputs(run: _Run, resume: bool) -> list[str]:
    """Rank 0 clears the old final files and validates or resets ``.shards``; every rank waits. Notes for the user."""
    notes = list(run.items.notes)
    if run.ctx.rank == 0:
        run.out.mkdir(parents=True, exist_ok=True)
        for name in OUTPUT_FILES:  # never leave outputs of an older run next to a new skipped list
            (run.out / name).unlink(missing_ok=True)
        notes += prepare_shard_dir(run.shard_dir, run.fp, resume, run.say)
    barrier(run.ctx)
    return notes


def _compute(run: _Run, notes: list[str], batch_size: int, shard_size: int, workers: int | None,
             max_pixels: int | None, progress: bool, use_compile: bool) -> ExtractResult:
    """Compute this rank's unfinished shards (shard ``i`` is rank ``i % world_size``'s); wait for all ranks."""
    ctx = run.ctx
    mine = [s for s in range(run.n_shards) if s % ctx.world_size == ctx.rank]
    todo = [s for s in mine if not shard_done(run.shard_dir / f"shard-{s:05d}.npz")]
    enc = prepare_for_inference(run.enc, ctx.device, run.prec, use_compile, run.user_module, run.say)
    computed_images = _run_shards(enc, run.items, todo, run.shard_dir, run.transform, batch_size, shard_size,
                                  workers, ctx.device, run.prec, max_pixels, progress and ctx.rank == 0)
    barrier(ctx)
    return ExtractResult(run.out, 0, 0, int(getattr(enc, "num_features", 0)), run.prec, ctx.device, 0.0,
                         n_shards=run.n_shards, shards_reused=len(mine) - len(todo), shards_computed=len(todo),
                         images_computed=computed_images, rank=ctx.rank, world_size=ctx.world_size, notes=notes,
                         weights_summary=getattr(run.info, "summary", ""))


def _write_outputs(run: _Run, result: ExtractResult, batch_size: int, root, keep_shards: bool) -> None:
    """Rank 0: merge the shards into the final files (releasing the other ranks on error); drop ``.shards``."""
    meta = dict(model=run.model_name, weights=_weights_meta(run.info, run.wsha), preset=run.preset_name,
                preprocessing=get_preset(run.preset_name).__dict__, precision=run.prec, device=run.ctx.device,
                batch_size=batch_size, world_size=run.ctx.world_size, input=str(run.items.source),
                input_kind=run.items.kind, root=str(root) if root is not None else None, fingerprint=run.fp_hash)
    try:
        _merge(run.out, run.shard_dir, run.items, run.n_shards, meta, result)
    except BaseException:
        barrier(run.ctx)  # release the other ranks before reporting the error
        raise
    if not keep_shards:
        shutil.rmtree(run.shard_dir, ignore_errors=True)


def _weights_meta(info, wsha: str) -> dict[str, Any]:
    if info is None:
        return {"spec": None, "path": None, "sha256": None, "summary": "model object passed in", "params": wsha}
    return {"spec": info.spec, "path": info.path, "sha256": info.sha256, "summary": info.summary}


def _run_shards(enc, items, todo: list[int], shard_dir: Path, transform, batch_size: int, shard_size: int,
                workers: int | None, device: str, prec: str, max_pixels: int | None, progress: bool) -> int:
    """Compute shards ``todo`` in order, saving each as soon as its last batch is done."""
    if not todo:
        return 0
    from panderm.progress import progress_bar

    batches, batch_shard = [], []
    for s in todo:
        lo, hi = s * shard_size, min((s + 1) * shard_size, len(items))
        for b in range(lo, hi, batch_size):  # batch boundaries depend only on the shard: deterministic
            batches.append(list(range(b, min(b + batch_size, hi))))
            batch_shard.append(s)
    n_workers = min(2, os.cpu_count() or 1) if workers is None else max(0, int(workers))
    dataset = _ImageDataset([p for _, p in items], transform, max_pixels)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=batches, num_workers=n_workers, collate_fn=_collate,
        pin_memory=device.startswith("cuda"), prefetch_factor=4 if n_workers else None)
    total = sum(len(b) for b in batches)
    bar = progress_bar(total=total, unit="img", enabled=progress, desc="extract")
    acc: dict[int, tuple[list, list, list]] = {}
    remaining = {s: batch_shard.count(s) for s in todo}
    try:
        with torch.inference_mode():
            for (idx, x, bad), s in zip(loader, batch_shard):
                ok, feats, skipped = acc.setdefault(s, ([], [], []))
                if x is not None:
                    f = encode_batch(enc, x, device, prec)
                    finite = np.isfinite(f).all(axis=1)  # damaged weights overflow to NaN: never write those
                    ok.extend(i for i, good in zip(idx, finite) if good)
                    feats.append(f[finite])
                    bad = bad + [(i, NON_FINITE_REASON) for i, good in zip(idx, finite) if not good]
                skipped.extend(bad)
                bar.update(len(idx) + len(bad))
                remaining[s] -= 1
                if remaining[s] == 0:
                    dim = int(getattr(enc, "num_features", 0))
                    arr = np.concatenate(feats) if feats else np.zeros((0, dim), np.float32)
                    save_shard(shard_dir / f"shard-{s:05d}.npz", ok, arr, skipped)
                    del acc[s]
    finally:
        bar.close()
    return total


def _merge(out: Path, shard_dir: Path, items, n_shards: int, meta: dict, result: ExtractResult) -> None:
    """Concatenate all shards in order and write the four output files atomically."""
    feats, names, skipped = [], [], []
    for s in range(n_shards):
        path = shard_dir / f"shard-{s:05d}.npz"
        shard = read_shard(path)
        if shard is None:
            path.unlink(missing_ok=True)  # so that a rerun recomputes it
            raise InputError(f"shard {s} is missing or unreadable in {shard_dir}; outputs were not written",
                             hint="rerun the same command to compute the missing shards")
        feats.append(shard["features"])
        names.extend(items[i][0] for i in shard["ok_index"].tolist())
        skipped.extend((items[i][0], r) for i, r in zip(shard["skipped_index"].tolist(),
                                                        shard["skipped_reason"].tolist()))
    skipped_path = out / "skipped.csv"
    atomic_write_text(skipped_path, _csv_text(["image", "reason"], skipped))
    result.n_skipped, result.skipped_path = len(skipped), skipped_path
    if not names:
        raise InputError(f"none of the {len(items)} images could be read; reasons are in {skipped_path}",
                         hint="check the files listed there (format, truncation, paths relative to --root)")
    matrix = np.ascontiguousarray(np.concatenate(feats), dtype=np.float32)
    features_path, index_path = out / "features.npy", out / "index.csv"
    with atomic_path(features_path) as tmp, open(tmp, "wb") as f:
        np.save(f, matrix)
    atomic_write_text(index_path, _csv_text(["image"], [(n,) for n in names]))
    import panderm

    meta = dict(meta, n=len(names), dim=int(matrix.shape[1]), n_skipped=len(skipped),
                panderm_version=panderm.__version__, torch_version=torch.__version__,
                created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                files={"features": "features.npy", "index": "index.csv", "skipped": "skipped.csv"})
    meta_path = out / "meta.json"
    atomic_write_json(meta_path, meta)  # written last: its presence marks a complete output folder
    result.n_images, result.dim = len(names), int(matrix.shape[1])
    result.features_path, result.index_path, result.meta_path = features_path, index_path, meta_path


def _csv_text(header: list[str], rows) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()
