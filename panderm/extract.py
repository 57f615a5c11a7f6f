"""Feature extraction: images → ``features.npy`` + ``index.csv`` + ``meta.json`` + ``skipped.csv``.

Work is cut into fixed shards of ``shard_size`` images. Each finished shard is
saved atomically under ``out/.shards/`` next to a fingerprint of everything that
affects the numbers, so an interrupted run resumes where it stopped and the
final files are byte-identical to an uninterrupted run (batches inside a shard
are fixed). Under ``torchrun`` shard ``i`` goes to rank ``i % world_size`` and
rank 0 merges. Final files appear only when every shard is done.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
import os
import shutil
import sys
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
from panderm.hardware import torch_dtype
from panderm.io import atomic_path, atomic_write_json, atomic_write_text, file_stamp
from panderm.train.distributed import barrier, init_distributed

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


def _say(msg: str, enabled: bool) -> None:
    if enabled:
        print(f"panderm: {msg}", file=sys.stderr, flush=True)


def _params_sha256(model: torch.nn.Module) -> str:
    """Hash of the weights, for fingerprinting models without a weights file (random init)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()


def _load_model(model: Any, weights: str | None, random_init: bool = False):
    from panderm.models.factory import create_encoder

    if isinstance(model, str):
        return create_encoder(model, weights, random_init=random_init), False
    if weights is not None:
        raise ConfigError("pass weights either inside the model object or via weights=, not both")
    return model, True


def _fingerprint(**kw: Any) -> dict[str, Any]:
    return {"format": FORMAT_VERSION, **kw}


def extract_features(
    input: str | os.PathLike,
    out: str | os.PathLike,
    *,
    model: Any = "panderm_large_patch16_224",
    weights: str | os.PathLike | None = None,
    root: str | os.PathLike | None = None,
    preset: str | None = None,
    precision: str = "auto",
    batch_size: int = 64,
    workers: int | None = None,
    shard_size: int = 1024,
    device: str | None = None,
    resume: bool = True,
    keep_shards: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    compile: bool = False,
    extensions=IMAGE_EXTENSIONS,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    random_init: bool = False,
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
    from panderm.hardware import default_device, resolve_precision

    t0 = time.perf_counter()
    if batch_size < 1 or shard_size < 1:
        raise ConfigError("batch_size and shard_size must be positive integers")
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a folder")
    items = collect_inputs(input, root, extensions)
    device = device or default_device()
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device '{device}' requested but CUDA is not available", hint="use --device cpu")
    ctx = init_distributed(device)  # under torchrun: one GPU per local rank, gloo/nccl group
    device, world_size, rank, we_init = ctx.device, ctx.world_size, ctx.rank, ctx.created
    prec = resolve_precision(precision, device)
    say = (lambda m: _say(m, progress)) if rank == 0 else (lambda m: None)
    try:
        for note in items.notes:
            say(note)
        enc, user_module = _load_model(model, None if weights is None else str(weights), random_init)
        cfg = getattr(enc, "pretrained_cfg", None)
        preset_name = preset or (cfg.preset if cfg is not None else None)
        if preset_name is None:
            raise ConfigError("model has no pretrained_cfg; pass preset= explicitly")
        transform = build_transform(get_preset(preset_name))
        info = getattr(enc, "weights_info", None)
        model_name = getattr(enc, "model_name", type(enc).__name__)
        wsha = getattr(info, "sha256", None) or f"params:{_params_sha256(enc)}"
        listing = hashlib.sha256("\n".join(f"{r}\t{p}\t{file_stamp(p)}" for r, p in items).encode()).hexdigest()
        fp = _fingerprint(model=model_name, weights_sha256=wsha, preset=preset_name, precision=prec,
                          device_type=torch.device(device).type, batch_size=batch_size, shard_size=shard_size,
                          compile=bool(compile), n_inputs=len(items), inputs_sha256=listing, min_side=MIN_SIDE,
                          torch=torch.__version__)
        fp_hash = hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()
        shard_dir = out / SHARD_DIR
        n_shards = (len(items) + shard_size - 1) // shard_size

        done = finished_result(out, fp_hash, resume)
        if done is not None:
            if rank == 0:
                say(f"outputs in {out} are already complete for these settings; nothing to do")
            barrier(ctx)
            return ExtractResult(out, done["n"], done["n_skipped"], done["dim"], prec, device,
                                 time.perf_counter() - t0, *[out / f for f in OUTPUT_FILES],
                                 n_shards=n_shards, rank=rank, world_size=world_size, up_to_date=True,
                                 weights_summary=getattr(info, "summary", ""))
        if not overwrite:
            refuse_other_weights(out, wsha, getattr(info, "spec", None))
            refuse_foreign_outputs(out, fp_hash)
        notes = list(items.notes)
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            for name in OUTPUT_FILES:  # never leave outputs of an older run next to a new skipped list
                (out / name).unlink(missing_ok=True)
            notes += prepare_shard_dir(shard_dir, fp, resume, say)
        barrier(ctx)

        mine = [s for s in range(n_shards) if s % world_size == rank]
        todo = [s for s in mine if not shard_done(shard_dir / f"shard-{s:05d}.npz")]
        reused = len(mine) - len(todo)
        enc = _prepare_model(enc, device, prec, compile, user_module, say)
        computed_images = _run_shards(enc, items, todo, shard_dir, transform, batch_size, shard_size, workers,
                                      device, prec, max_pixels, progress and rank == 0)
        barrier(ctx)
        dim = int(getattr(enc, "num_features", 0))
        result = ExtractResult(out, 0, 0, dim, prec, device, 0.0, n_shards=n_shards, shards_reused=reused,
                               shards_computed=len(todo), images_computed=computed_images, rank=rank,
                               world_size=world_size, notes=notes, weights_summary=getattr(info, "summary", ""))
        if rank == 0:
            meta = dict(model=model_name, weights=_weights_meta(info, wsha), preset=preset_name,
                        preprocessing=get_preset(preset_name).__dict__, precision=prec, device=device,
                        batch_size=batch_size, world_size=world_size, input=str(items.source),
                        input_kind=items.kind, root=str(root) if root is not None else None,
                        fingerprint=fp_hash)
            try:
                _merge(out, shard_dir, items, n_shards, meta, result)
            except BaseException:
                barrier(ctx)  # release the other ranks before reporting the error
                raise
            if not keep_shards:
                shutil.rmtree(shard_dir, ignore_errors=True)
        barrier(ctx)
        result.seconds = time.perf_counter() - t0
        return result
    finally:
        if we_init:
            torch.distributed.destroy_process_group()


def _weights_meta(info, wsha: str) -> dict[str, Any]:
    if info is None:
        return {"spec": None, "path": None, "sha256": None, "summary": "model object passed in", "params": wsha}
    return {"spec": info.spec, "path": info.path, "sha256": info.sha256, "summary": info.summary}


def _prepare_model(enc, device: str, prec: str, use_compile: bool, user_module: bool, say):
    """Move to device; for bf16 cast the weights themselves.

    Casting the whole model (rather than autocast around an fp32 model) keeps
    attention, GELU and the residual adds in bf16 too: ~1.4x faster than
    autocast on AVX512-BF16 CPUs, with feature cosine > 0.9999 vs fp32.
    """
    if user_module:
        enc = copy.deepcopy(enc)  # never cast or move the caller's module in place
    enc = enc.eval().to(device)
    if torch_dtype(prec) is not None:
        enc = enc.to(torch_dtype(prec))
    if use_compile:
        try:
            # Inductor "freezing" pre-packs the (inference-only) weights for oneDNN: ~1.2x on CPU bf16.
            options = {"freezing": True} if device == "cpu" else None
            enc._compiled_ff = torch.compile(enc.forward_features, options=options)
        except Exception as exc:  # compile is an optional speed-up only
            say(f"torch.compile unavailable ({type(exc).__name__}); running eager")
    return enc


def _forward(enc, x: torch.Tensor, device: str, prec: str) -> np.ndarray:
    x = x.to(device, non_blocking=True)
    if torch_dtype(prec) is not None:
        x = x.to(torch_dtype(prec))
    compiled = getattr(enc, "_compiled_ff", None)
    if compiled is not None:
        try:
            return compiled(x).float().cpu().numpy()
        except Exception as exc:  # compilation errors surface on the first call; fall back to eager
            print(f"panderm: torch.compile failed ({type(exc).__name__}); running eager", file=sys.stderr)
            enc._compiled_ff = None
    return enc.forward_features(x).float().cpu().numpy()


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
                    f = _forward(enc, x, device, prec)
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
