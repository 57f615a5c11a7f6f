"""The reusable (DDP) training loop: AdamW + warm-up/cosine, AMP, accumulation, exact resume.

Contract: ``model(batch)`` returns a dict with a scalar ``"loss"`` (other scalar
entries are logged). The trainer builds the sampler and loader itself:

* the sampler comes from ``sampler_factory(dataset, seed=, rank=, world=)``,
  else ``dataset.make_sampler(seed=, rank=, world=)``, else a plain
  :class:`~panderm.data.sampling.EpochSampler`. It must have ``__len__``
  (samples per rank per epoch) and ``set_epoch(epoch, start)`` and yield
  ``(index, epoch)`` keys;
* datasets with ``epoch_aware = True`` receive those keys; any other dataset is
  wrapped so ``dataset[index]`` runs with the global RNGs seeded from
  ``(seed, epoch, index)`` (torchvision random transforms become deterministic);
* skip records (``{"skip": True, "path", "reason"}``) are dropped by the collate,
  counted (``skipped`` in the log) and listed in ``out/skipped.csv``.

An optimizer step consumes ``accum_steps`` loader batches; an epoch has
``len(sampler) // batch_size // accum_steps`` steps, so the data position is
just the step number and a resumed run replays exactly the same batches.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from panderm.data.sampling import EpochSampler, SeededIndexDataset, skip_collate
from panderm.errors import ConfigError, PandermError
from panderm.hardware import PRECISIONS, resolve_precision, torch_dtype
from panderm.io import atomic_write_json, atomic_write_text, write_skipped_csv
from panderm.provenance import check_resume_inputs, save_inputs
from panderm.train import run_state as ckpt
from panderm import distributed as D
from panderm.train.optim import WarmupCosine, build_adamw, default_param_groups, scaled_lr

#: run_config keys that may change on resume.
DEFAULT_RESUME_IGNORE = ("steps", "epochs", "out", "progress", "resume", "num_workers", "log_every",
                         "tensorboard", "checkpoint_every", "keep_last", "stop_after_steps", "device")
#: TrainConfig fields that must match on resume (they change the numbers).
_STRICT = ("batch_size", "accum_steps", "lr", "lr_base_batch", "min_lr", "warmup_steps", "warmup_epochs",
           "weight_decay", "betas", "clip_grad", "precision", "seed")


@dataclass
class TrainConfig:
    """Training options; see the module docstring. ``stop_after_steps`` is a testing hook (simulated kill)."""

    steps: int | None = None
    epochs: float | None = None
    batch_size: int = 64
    accum_steps: int = 1
    lr: float = 1.5e-3
    lr_base_batch: int = 256
    min_lr: float = 1e-5
    warmup_steps: int | None = None
    warmup_epochs: float = 10
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    clip_grad: float | None = 3.0
    precision: str = "auto"
    checkpoint_every: int = 1000
    keep_last: int = 3
    log_every: int = 10
    seed: int = 0
    num_workers: int = 2
    tensorboard: bool = False
    progress: bool = True
    device: str | None = None
    stop_after_steps: int | None = None
    eval_every: int | None = None  # steps between eval_fn calls; None: once per epoch (and at the end)


@dataclass
class TrainResult:
    steps: int
    final_loss: float
    out: Path
    checkpoints: list[Path] = field(default_factory=list)
    seconds: float = 0.0
    skipped: int = 0
    interrupted: bool = False
    best: dict | None = None  # {"step", "value", "metrics"} of the best evaluation when monitoring


def _plain(obj: Any) -> Any:
    """JSON-safe (and ``weights_only``-safe) copy: tuples → lists, Paths → str."""
    return json.loads(json.dumps(obj, default=str))


def _diff(old: dict, new: dict, ignore) -> list[str]:
    keys = [k for k in dict.fromkeys([*old, *new]) if k not in ignore and old.get(k) != new.get(k)]
    return [f"{k}: {old.get(k, '(unset)')!r} → {new.get(k, '(unset)')!r}" for k in keys]


def _log_step(line: str) -> int | None:
    """The step of a log.jsonl line, or None for a blank or half-written one."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


def _to_device(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def _batch_len(batch) -> int:
    if isinstance(batch, torch.Tensor):
        return batch.shape[0]
    vals = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (list, tuple)) else []
    for v in vals:
        n = _batch_len(v)
        if n:
            return n
    return 0


class Trainer:
    """Train ``model`` on ``dataset`` into ``out``; see the module docstring and :class:`TrainConfig`."""

    def __init__(self, model: torch.nn.Module, dataset, config: TrainConfig, out, *, collate_fn=None,
                 param_groups: Callable | None = None, export_fn: Callable | None = None,
                 run_config: dict | None = None, resume: bool = False,
                 resume_ignore=DEFAULT_RESUME_IGNORE, sampler_factory: Callable | None = None,
                 eval_fn: Callable[[torch.nn.Module], dict[str, float]] | None = None,
                 monitor: str | None = None, monitor_mode: str = "max", inputs: dict | None = None):
        self.model, self.dataset, self.cfg, self.out = model, dataset, config, Path(out)
        self.inputs = inputs  # panderm.provenance record of the table and weights; checked on resume
        self.eval_fn, self.monitor, self.monitor_mode = eval_fn, monitor, monitor_mode
        if monitor_mode not in ("max", "min"):
            raise ConfigError(f"monitor_mode must be 'max' or 'min', not {monitor_mode!r}")
        if monitor and eval_fn is None:
            raise ConfigError("monitor needs an eval_fn")
        self.collate_fn, self.param_groups, self.export_fn = collate_fn, param_groups or default_param_groups, export_fn
        self.run_config = _plain(run_config or {})
        self.resume, self.resume_ignore, self.sampler_factory = resume, tuple(resume_ignore), sampler_factory
        self._check_config()

    # ------------------------------------------------------------------ setup
    def _check_config(self) -> None:
        c = self.cfg
        if (c.steps is None) == (c.epochs is None):
            raise ConfigError("give exactly one of steps or epochs")
        if c.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision '{c.precision}'", hint=f"choose one of {', '.join(PRECISIONS)}")
        for name in ("batch_size", "accum_steps", "checkpoint_every", "log_every"):
            if int(getattr(c, name)) < 1:
                raise ConfigError(f"{name} must be ≥ 1, got {getattr(c, name)}")

    def _say(self, msg: str) -> None:
        if self.ctx.is_main:
            print(f"panderm: {msg}", file=sys.stderr, flush=True)

    def _release_workers(self) -> None:
        """Stop persistent DataLoader workers now rather than at interpreter exit (where they may be
        killed mid-shutdown by a test runner or a notebook)."""
        iterator = getattr(self.loader, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
        self.loader._iterator = None

    def _setup(self) -> None:
        c, ctx = self.cfg, D.init_distributed(self.cfg.device)
        self.ctx, self.device = ctx, torch.device(ctx.device)
        self.precision = resolve_precision(c.precision, self.device.type)
        dtype = torch_dtype(self.precision)
        self.autocast = (lambda: torch.autocast(self.device.type, dtype=dtype)) if dtype else contextlib.nullcontext
        self.scaler = None
        if self.precision == "fp16":
            try:
                self.scaler = torch.amp.GradScaler(self.device.type)
                with self.autocast():
                    torch.ones(2, 2, device=self.device) @ torch.ones(2, 2, device=self.device)
            except Exception as exc:
                raise ConfigError(f"fp16 training is not supported on {self.device.type} ({exc})".splitlines()[0],
                                  hint="use --precision bf16 or fp32") from None
        ds = self.dataset if getattr(self.dataset, "epoch_aware", False) else SeededIndexDataset(self.dataset, c.seed)
        kw = dict(seed=c.seed, rank=ctx.rank, world=ctx.world_size)
        if self.sampler_factory:
            self.sampler = self.sampler_factory(self.dataset, **kw)
        elif hasattr(self.dataset, "make_sampler"):
            self.sampler = self.dataset.make_sampler(**kw)
        else:
            self.sampler = EpochSampler(len(self.dataset), **kw)
        self.sampler.set_epoch(0, 0)
        self.loader = torch.utils.data.DataLoader(
            ds, batch_size=c.batch_size, sampler=self.sampler, drop_last=True, num_workers=c.num_workers,
            persistent_workers=c.num_workers > 0, pin_memory=self.device.type == "cuda",
            collate_fn=skip_collate(self.collate_fn), generator=torch.Generator().manual_seed(c.seed))
        self.spe = len(self.sampler) // c.batch_size // c.accum_steps
        if self.spe < 1:
            raise ConfigError(f"dataset too small: {len(self.sampler)} samples per rank cannot fill one step of "
                              f"batch_size {c.batch_size} × accum_steps {c.accum_steps}")
        self.total = int(c.steps) if c.steps is not None else max(1, round(c.epochs * self.spe))
        warm = c.warmup_steps if c.warmup_steps is not None else round(c.warmup_epochs * self.spe)
        self.warmup = max(0, min(int(warm), self.total))
        self.global_batch = c.batch_size * c.accum_steps * ctx.world_size
        self.lr = scaled_lr(c.lr, self.global_batch, c.lr_base_batch)

        self.model.to(self.device).train()
        self.net = self.model
        if ctx.distributed and any(p.requires_grad for p in self.model.parameters()):
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DDP(self.model, device_ids=ids, find_unused_parameters=False)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = build_adamw(self.param_groups(self.model, c.weight_decay), self.lr, c.betas)
        self.sched = WarmupCosine(self.opt, base_lr=self.lr, min_lr=c.min_lr, warmup_steps=self.warmup,
                                  total_steps=self.total)

    def _state_config(self) -> dict:
        return _plain({**asdict(self.cfg), "world_size": self.ctx.world_size, "steps_per_epoch": self.spe})

    def _restore(self) -> int:
        path = self.out / ckpt.TRAIN_STATE
        if not path.exists():
            raise PandermError(f"nothing to resume in {self.out}: {ckpt.TRAIN_STATE} not found",
                               hint="start without --resume, or point at the run folder")
        if self.inputs is not None:
            for note in check_resume_inputs(self.out, self.inputs):
                self._say(note)
        st = ckpt.load_state(path)
        old_cfg, new_cfg = st["config"], self._state_config()
        diffs = _diff({k: old_cfg.get(k) for k in (*_STRICT, "world_size", "steps_per_epoch")},
                      {k: new_cfg.get(k) for k in (*_STRICT, "world_size", "steps_per_epoch")}, ())
        diffs += _diff(st["run_config"], self.run_config, self.resume_ignore)
        diffs = list(dict.fromkeys(diffs))
        if diffs:
            raise PandermError(f"cannot resume {self.out}: the configuration differs from the saved run:\n  "
                               + "\n  ".join(diffs),
                               hint="resume with the original options, or start a new run in another folder")
        self.model.load_state_dict(st["model"])
        self.opt.load_state_dict(st["optimizer"])
        self.sched.load_state_dict(st["scheduler"])
        if self.scaler is not None and st.get("scaler"):
            self.scaler.load_state_dict(st["scaler"])
        ckpt.restore_rng(st["rng"][self.ctx.rank])
        self.acc, self.skipped_total = dict(st["log_acc"]), int(st["skipped_total"])
        self.best = st.get("best")
        self.skipped = [tuple(r) for r in st["skipped"]] if self.ctx.is_main else []
        step = int(st["step"])
        if self.ctx.is_main:  # drop log lines the killed run wrote after this checkpoint
            log = self.out / "log.jsonl"
            lines = log.read_text(encoding="utf-8").splitlines() if log.exists() else []
            atomic_write_text(log, "".join(ln + "\n" for ln in lines if (_log_step(ln) or step + 1) <= step))
        self._say(f"resuming {self.out} at step {step}/{self.total}")
        return step

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint(self, step: int) -> None:
        rngs = D.all_gather_objects(ckpt.capture_rng(), self.ctx)
        skipped = [r for part in D.all_gather_objects(self.skipped, self.ctx) for r in part]
        err = None
        if self.ctx.is_main:
            try:
                tensors = self.export_fn(self.model) if self.export_fn else ckpt.tensor_dict(self.model.state_dict())
                path = ckpt.write_weights(self.out, step, tensors, self.cfg.keep_last)
                state = {"format": 1, "step": step, "epoch": step // self.spe, "step_in_epoch": step % self.spe,
                         "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                         "scheduler": self.sched.state_dict(),
                         "scaler": self.scaler.state_dict() if self.scaler else {}, "rng": rngs,
                         "config": self._state_config(), "run_config": self.run_config, "log_acc": dict(self.acc),
                         "skipped_total": self.skipped_total, "skipped": [list(r) for r in skipped],
                         "best": self.best}
                ckpt.save_atomic(state, self.out / ckpt.TRAIN_STATE)
                self._write_skipped(skipped)
                self.last_good = (step, self.out / ckpt.LAST)
                self.checkpoints.append(path)
            except Exception as exc:  # tell the other ranks, or they wait forever
                err = exc if isinstance(exc, PandermError) else PandermError(
                    f"writing the checkpoint at step {step} failed: {type(exc).__name__}: {exc}".splitlines()[0])
        msg = D.broadcast_object(None if err is None else (err.message, err.hint), self.ctx)
        if err is not None:
            raise err
        if msg is not None:
            raise PandermError(*msg)

    def _evaluate(self, step: int) -> None:
        """Run ``eval_fn`` on rank 0 (RNG state preserved, so resume stays exact); log it; keep the best."""
        metrics = None
        if self.ctx.is_main:
            rng = ckpt.capture_rng()
            was_training = self.model.training
            self.model.eval()
            try:
                with torch.no_grad():
                    metrics = {k: float(v) for k, v in self.eval_fn(self.model).items()}
            finally:
                self.model.train(was_training)
                ckpt.restore_rng(rng)
        metrics = D.broadcast_object(metrics, self.ctx)
        if not self.ctx.is_main:
            return
        with open(self.out / "log.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, "epoch": step / self.spe, "eval": metrics}) + "\n")
        if not self.monitor:
            return
        if self.monitor not in metrics:
            raise ConfigError(f"monitor '{self.monitor}' is not among the evaluation metrics: {', '.join(metrics)}")
        value, best = metrics[self.monitor], None if self.best is None else self.best["value"]
        if best is None or not math.isfinite(best):
            better = True
        else:
            better = math.isfinite(value) and (value > best if self.monitor_mode == "max" else value < best)
        if better:
            self.best = {"step": step, "value": value, "metrics": metrics, "monitor": self.monitor}
            tensors = self.export_fn(self.model) if self.export_fn else ckpt.tensor_dict(self.model.state_dict())
            ckpt.save_atomic(tensors, self.out / ckpt.BEST)
            atomic_write_json(self.out / "best.json", self.best)
            self._say(f"step {step}: best {self.monitor} so far {value:.4f}")

    def _write_skipped(self, skipped) -> None:
        if skipped or (self.out / "skipped.csv").exists():
            write_skipped_csv(self.out, dict.fromkeys(tuple(r) for r in skipped))  # once per (path, reason)

    # ------------------------------------------------------------------ training
    def _micro(self, batch, weight: float, sync: bool) -> dict[str, torch.Tensor]:
        batch = _to_device(batch, self.device)
        ctx = self.net.no_sync() if (self.net is not self.model and not sync) else contextlib.nullcontext()
        with ctx:
            with self.autocast():
                out = self.net(batch)
            if not isinstance(out, dict) or "loss" not in out:
                raise PandermError(f"the model returned {type(out).__name__}; the trainer needs a dict with 'loss'")
            loss = out["loss"].float() * (weight / self.cfg.accum_steps)
            (self.scaler.scale(loss) if self.scaler else loss).backward()
        return {k: v.detach().float().reshape(()) for k, v in out.items()
                if isinstance(v, torch.Tensor) and v.numel() == 1}

    def _step(self, it, step: int) -> dict[str, float]:
        c, sums, n_valid, n_samples, n_skip = self.cfg, {}, 0, 0, 0
        lr = self.sched.apply(step)
        for m in range(c.accum_steps):
            batch, skipped = next(it)
            self.skipped.extend(skipped)
            n_skip += len(skipped)
            weight = 1.0
            if batch is None:  # every image unreadable: replay the previous batch with zero weight (keeps DDP in sync)
                if self._prev is None:
                    raise PandermError("every image of the first batch was unreadable; see skipped.csv")
                batch, weight = self._prev, 0.0
            else:
                self._prev, n_valid, n_samples = batch, n_valid + 1, n_samples + _batch_len(batch)
            for k, v in self._micro(batch, weight, sync=m == c.accum_steps - 1).items():
                sums[k] = sums.get(k, 0.0) + v * weight
        keys = sorted(sums)
        vec = torch.stack([torch.tensor(float(x), dtype=torch.float64) for x in (n_valid, n_samples, n_skip)]
                          + [sums[k].double().cpu() for k in keys]).to(self.device)
        vals = D.all_reduce_sum(vec, self.ctx).tolist()
        n_valid, n_samples, n_skip = vals[:3]
        stats = {k: v / max(n_valid, 1) for k, v in zip(keys, vals[3:])}
        if not math.isfinite(stats.get("loss", float("nan"))):
            self._fail("loss", stats.get("loss"), step)
        if self.scaler:
            self.scaler.unscale_(self.opt)
        norm = torch.nn.utils.clip_grad_norm_(self.params, c.clip_grad or float("inf")) if self.params else None
        gnorm = float(norm) if norm is not None else 0.0
        if not self.scaler and not math.isfinite(gnorm):
            self._fail("gradient norm", gnorm, step)
        if self.scaler:
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.skipped_total += int(n_skip)
        return {**stats, "lr": lr, "grad_norm": gnorm, "samples": n_samples}

    def _fail(self, what: str, value, step: int) -> None:
        last = f"{self.last_good[1]} (step {self.last_good[0]})" if self.last_good else "none written yet"
        raise PandermError(f"{what} became {value} at step {step + 1}; last good checkpoint: {last}",
                           hint="lower the learning rate, use fp32/bf16, or check the data; "
                                "resume from the last good checkpoint with --resume")

    def _log(self, step: int, stats: dict[str, float]) -> None:
        a = self.acc
        for k, v in stats.items():
            if k not in ("lr", "samples"):
                a[k] = a.get(k, 0.0) + v
        a["_n"] = a.get("_n", 0) + 1
        a["_samples"] = a.get("_samples", 0) + stats["samples"]
        if step % self.cfg.log_every and step != self.total:
            return
        n, dt = a.pop("_n"), max(time.perf_counter() - self._t_log, 1e-9)
        rec = {"step": step, "epoch": step / self.spe, "loss": a.pop("loss", float("nan")) / n, "lr": stats["lr"],
               "samples_per_s": a.pop("_samples") / dt, "skipped": self.skipped_total}
        rec.update({k: v / n for k, v in sorted(a.items())})
        self.acc, self._t_log, self.final_loss = {}, time.perf_counter(), rec["loss"]
        if self.ctx.is_main:
            with open(self.out / "log.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(rec) + "\n")
            if self.tb is not None:
                for k, v in rec.items():
                    if k != "step":
                        self.tb.add_scalar(f"train/{k}", v, step)
            self.bar.set_postfix(loss=f"{rec['loss']:.4f}", lr=f"{rec['lr']:.2e}", refresh=False)

    def fit(self) -> TrainResult:
        """Run (or resume) training; returns when ``steps`` are done (or ``stop_after_steps`` is hit)."""
        t0 = time.perf_counter()
        self._setup()
        c, ctx = self.cfg, self.ctx
        self.acc, self.skipped, self.skipped_total, self.checkpoints = {}, [], 0, []
        self.last_good, self._prev, self.final_loss, self.tb = None, None, float("nan"), None
        self.best = None
        if ctx.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        if self.resume:
            step = self._restore()
            self.last_good = (step, self.out / ckpt.LAST)
        else:
            if (self.out / ckpt.TRAIN_STATE).exists():
                raise PandermError(f"{self.out} already holds a training run",
                                   hint="pass --resume to continue it, or choose a new output folder")
            random.seed(c.seed + ctx.rank)
            np.random.seed(c.seed + ctx.rank)
            torch.manual_seed(c.seed + 1000 * ctx.rank)
            step = 0
            if ctx.is_main:
                atomic_write_text(self.out / "log.jsonl", "")
                if self.inputs is not None:
                    save_inputs(self.out, self.inputs)
        if ctx.is_main:
            atomic_write_json(self.out / "config.json", _plain({
                "train": asdict(c), "run_config": self.run_config,
                "resolved": {"lr": self.lr, "global_batch": self.global_batch, "world_size": ctx.world_size,
                             "steps": self.total, "steps_per_epoch": self.spe, "warmup_steps": self.warmup,
                             "device": str(self.device), "precision": self.precision}}))
            self._say(f"training {self.total} steps ({self.spe}/epoch), global batch {self.global_batch}, "
                      f"lr {self.lr:.3g}, world size {ctx.world_size}, {self.device}")
            if c.tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter

                    self.tb = SummaryWriter(str(self.out / "tensorboard"))
                except ImportError:
                    self._say("tensorboard is not installed; skipping TensorBoard logging")
        from panderm.progress import progress_bar

        self.bar = progress_bar(total=self.total, initial=step, enabled=c.progress and ctx.is_main, desc="train")
        self._t_log, interrupted = time.perf_counter(), False
        try:
            while step < self.total and not interrupted:
                epoch, in_epoch = divmod(step, self.spe)
                self.sampler.set_epoch(epoch, in_epoch * c.accum_steps * c.batch_size)
                it = iter(self.loader)
                for _ in range(in_epoch, self.spe):
                    stats = self._step(it, step)
                    step += 1
                    self.bar.update(1)
                    self._log(step, stats)
                    if self.eval_fn is not None and (step % (c.eval_every or self.spe) == 0 or step == self.total):
                        self._evaluate(step)
                    if step % c.checkpoint_every == 0 or step == self.total:
                        self._checkpoint(step)
                    if step >= self.total or (c.stop_after_steps is not None and step >= c.stop_after_steps):
                        interrupted = step < self.total
                        break
        finally:
            self.bar.close()
            if self.tb is not None:
                self.tb.close()
            self._release_workers()
        if self.skipped_total:
            self._say(f"skipped {self.skipped_total} unreadable image load(s); files listed in {self.out / 'skipped.csv'}")
        D.barrier(ctx)
        return TrainResult(step, self.final_loss, self.out, list(self.checkpoints), time.perf_counter() - t0,
                           self.skipped_total, interrupted, self.best)
