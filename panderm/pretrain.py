"""``pretrain``: CAE v2 masked latent alignment on unlabelled skin images (docs/reference/pretraining.md).

A run is described by a flat config (a recipe YAML plus command-line overrides);
the resolved config is stored in the run folder, and ``--resume`` refuses to
continue with different settings.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

from panderm.errors import ConfigError, InputError

RECIPES = Path(__file__).resolve().parent / "recipes" / "pretrain"

#: Every config key with its default: the CPU demo setting, offline (HOG teacher).
DEFAULTS: dict[str, Any] = {
    "model": "panderm_tiny_patch16_224",
    "init_weights": None,
    "teacher": "hog",
    "teacher_input_size": None,
    "trust_torchscript_teacher": False,
    "data": None,
    "num_masked": 98,
    "mask_generator": "block",
    "min_mask_patches_per_block": 16,
    "regressor_depth": 4,
    "regressor_dim": None,
    "regressor_heads": None,
    "init_values": 1e-5,
    "regressor_init_values": 1e-5,
    "drop_path": 0.1,
    "loss_weighting": "tokens",
    "loss_weight_visible": 1.0,
    "loss_weight_masked": 1.0,
    "batch_size": 32,
    "accum_steps": 1,
    "epochs": None,
    "steps": None,
    "lr": 1.5e-3,
    "lr_base_batch": 256,
    "warmup_epochs": 10,
    "warmup_steps": None,
    "min_lr": 1e-5,
    "weight_decay": 0.05,
    "clip_grad": 3.0,
    "color_jitter": 0.4,
    "crop_scale": [0.4, 1.0],
    "precision": "auto",
    "balance": "none",
    "checkpoint_every": 1000,
    "keep_last": 3,
    "log_every": 10,
    "num_workers": None,  # None: min(2, CPUs)
    "seed": 0,
    "tensorboard": False,
}
#: Keys that may change between a run and its resumption.
RESUME_IGNORE = ("steps", "epochs", "num_workers", "tensorboard", "log_every", "progress", "out",
                 "trust_torchscript_teacher")


def load_recipe(config: str | Path) -> dict[str, Any]:
    """Read a recipe YAML: a path, or the name of a bundled recipe (``panderm_large``)."""
    path = Path(config)
    if not path.is_file():
        candidate = RECIPES / f"{config}.yaml"
        if not candidate.is_file():
            known = ", ".join(sorted(p.stem for p in RECIPES.glob("*.yaml")))
            raise InputError(f"pretraining config '{config}' not found", hint=f"give a YAML path or one of: {known}")
        path = candidate
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot parse {path}: {exc}") from None
    except RecursionError:
        raise InputError(f"cannot parse {path}: nested too deeply to be a pretraining recipe") from None
    if not isinstance(data, dict):
        raise InputError(f"{path} must hold a mapping of config keys")
    for key, value in data.items():
        if key in DEFAULTS:
            try:
                check_config_value(key, value)
            except ConfigError as exc:
                raise ConfigError(f"{path}: {exc.message}") from None
    return data


#: Keys whose value must be > 0 (or ≥ 0 for the second set) when given.
_POSITIVE = ("lr", "lr_base_batch", "batch_size", "accum_steps", "steps", "epochs", "num_masked", "regressor_depth",
             "checkpoint_every", "log_every", "keep_last", "min_mask_patches_per_block")
_NON_NEGATIVE = ("min_lr", "weight_decay", "warmup_epochs", "warmup_steps", "drop_path", "clip_grad", "color_jitter",
                 "init_values", "regressor_init_values", "loss_weight_visible", "loss_weight_masked", "num_workers")


#: Keys whose default is ``None`` but whose value, when given, is a whole number.
_WHOLE = ("num_workers",)


def check_config_value(key: str, value: Any) -> None:
    """Refuse a recipe value of the wrong kind or range (a recipe is a file we did not write).

    Raises:
        ConfigError: naming the key, what it holds and what it should hold.
    """
    default = DEFAULTS.get(key)
    if value is None:
        return
    if key in _WHOLE:
        default = 0
    if isinstance(default, bool) or isinstance(value, bool):
        ok = isinstance(value, bool) and (default is None or isinstance(default, bool))
        want = "true or false"
    elif isinstance(default, int) and not isinstance(default, bool):
        ok = isinstance(value, int) and abs(value) < 2**53
        want = "a whole number"
    elif isinstance(default, float) or (default is None and isinstance(value, (int, float))):
        ok = isinstance(value, (int, float)) and math.isfinite(value)
        want = "a finite number"
    elif isinstance(default, list):
        ok = (isinstance(value, list) and len(value) == len(default)
              and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value))
        want = f"a list of {len(default)} finite numbers"
    else:
        ok = isinstance(value, str)
        want = "text"
    if not ok:
        raise ConfigError(f"pretraining config key '{key}' holds {str(value)[:60]!r}; it must be {want}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if key in _POSITIVE and value <= 0 or key in _NON_NEGATIVE and value < 0:
            raise ConfigError(f"pretraining config key '{key}' must be {'> 0' if key in _POSITIVE else '≥ 0'}, "
                              f"got {value}")


def resolve_config(recipe: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """Merge defaults, a recipe and non-``None`` overrides; reject unknown keys."""
    config = dict(DEFAULTS)
    for source in (recipe or {}, {k: v for k, v in overrides.items() if v is not None}):
        unknown = sorted(set(source) - set(DEFAULTS))
        if unknown:
            raise ConfigError(f"unknown pretraining config key(s): {', '.join(unknown)}",
                              hint=f"known keys: {', '.join(sorted(DEFAULTS))}")
        for key, value in source.items():
            check_config_value(key, value)
        config.update(source)
    if config["data"] is None:
        raise ConfigError("no training data given", hint="pass --data manifest.csv | folder/ | name:spec")
    if config["steps"] is None and config["epochs"] is None:
        raise ConfigError("give the run length",
                          hint="pass --max-steps N or --epochs N (or set steps or epochs in the config)")
    return config


def build_pretrainer(config: dict[str, Any]):
    """Encoder + frozen teacher + regressor for ``config`` (a resolved config)."""
    from panderm.models.factory import create_encoder
    from panderm.train.cae2 import CAEv2Pretrainer
    from panderm.train.teachers import build_teacher

    encoder = create_encoder(config["model"], random_init=True,  # the student starts random (or from init_weights)
                             init_values=config["init_values"], drop_path_rate=config["drop_path"])
    if config.get("init_weights"):
        load_init_weights(encoder, config["init_weights"])
    teacher = build_teacher(config["teacher"], trust_torchscript=bool(config.get("trust_torchscript_teacher")))
    size = config.get("teacher_input_size")
    if size is not None and int(size) != teacher.input_size:
        raise ConfigError(f"teacher '{config['teacher']}' takes {teacher.input_size}-px inputs for a 14x14 grid, "
                          f"but the config asks for {size}", hint="drop teacher_input_size or fix it")
    return CAEv2Pretrainer(
        encoder, teacher, num_masked=config["num_masked"], regressor_depth=config["regressor_depth"],
        regressor_dim=config["regressor_dim"], regressor_heads=config["regressor_heads"],
        init_values=config["regressor_init_values"], drop_path=config["drop_path"],
        loss_weighting=config["loss_weighting"], loss_weight_visible=config["loss_weight_visible"],
        loss_weight_masked=config["loss_weight_masked"])


def load_init_weights(encoder, path: str | Path):
    """Start the student from ``path`` (the paper continued from ImageNet-1K weights), strictly.

    Every encoder tensor must be in the file with the same shape (released/CAE layout,
    ``model``-wrapped, or timm layout with layer scale and a zero k bias); pretraining-only
    keys (regressor, decoder, teacher) are dropped.

    Raises:
        CheckpointError: naming the file and the missing, unexpected or mis-shaped keys.
    """
    from panderm.errors import CheckpointError
    from panderm.models.checkpoint import load_encoder_state

    try:
        return load_encoder_state(encoder, path)
    except CheckpointError as exc:
        raise CheckpointError(
            f"--weights (init_weights): {exc.message}",
            hint=(f"{exc.hint} " if exc.hint else "") + "--weights must hold this encoder with layer scale "
                 "(gamma_1/gamma_2) and q/v biases only: a PanDerm or CAE v2 checkpoint of the same size "
                 "(see docs/pretraining.md)") from None


def build_dataset(config: dict[str, Any], model) -> Any:
    """The two-view, masked pretraining dataset for ``config``."""
    from panderm.data.unlabelled import PretrainDataset, TwoViewTransform, resolve_data
    from panderm.train.masking import BlockMaskGenerator, RandomMaskGenerator

    items = resolve_data(config["data"])
    grid = model.encoder.grid_size
    if config["mask_generator"] == "block":
        masks = BlockMaskGenerator(grid=grid, num_masked=config["num_masked"],
                                   min_block=config["min_mask_patches_per_block"])
    elif config["mask_generator"] == "random":
        masks = RandomMaskGenerator(grid=grid, num_masked=config["num_masked"])
    else:
        raise ConfigError(f"unknown mask_generator '{config['mask_generator']}'", hint="use block or random")
    cfg, teacher = model.encoder.pretrained_cfg, model.teacher
    views = TwoViewTransform(student_size=model.encoder.img_size, teacher_size=teacher.input_size,
                             scale=tuple(config["crop_scale"]), color_jitter=config["color_jitter"],
                             student_mean=cfg.mean, student_std=cfg.std,
                             teacher_mean=teacher.mean, teacher_std=teacher.std)
    dataset = PretrainDataset(items, views, masks, seed=config["seed"], balance=config["balance"])
    dataset.source = getattr(items, "source", None)
    return dataset


def describe_pretrain_inputs(config: dict[str, Any], dataset, model) -> dict:
    """What a pretraining run is made from (checked on ``--resume``).

    One row per image (key: its path relative to the manifest's or folder's location;
    values: modality and sampling weight; the file's size and mtime), the teacher's
    weights file when it has one (and whether its activation was corrected to QuickGELU),
    and the sha256 of ``init_weights`` (None: random init).
    """
    from panderm.paths import relative_key
    from panderm.provenance import describe_records, weights_file_sha256

    source = getattr(dataset, "source", None)
    folder = None if source is None else (source if Path(source).is_dir() else Path(source).parent)
    records = [(relative_key(it.path, folder), [it.modality, it.weight], {"image": it.path})
               for it in dataset.items]
    teacher_file = getattr(model.teacher, "weights_path", None)
    if teacher_file:
        # A teacher whose activation was corrected gives other targets than before: a resume must notice.
        fixed = ["activation corrected to QuickGELU"] if getattr(model.teacher, "notes", None) else []
        records.append(("teacher weights", [config["teacher"], *fixed], {"weights": teacher_file}))
    return describe_records(records, source=config["data"], weights_sha256=weights_file_sha256(config["init_weights"]))


def pretrain(config: dict[str, Any], out: str | Path, *, resume: bool = False, progress: bool = True,
             stop_after_steps: int | None = None):
    """Run (or resume) CAE v2 pretraining into ``out``.

    Args:
        config: A resolved config (:func:`resolve_config`); on resume, the stored one.
        out: Run folder: ``checkpoint-last.pth`` (released layout, loads with
            ``--weights``), periodic checkpoints, ``train-state.pt``, ``log.jsonl``.
        resume: Continue the run in ``out`` exactly where it stopped; refused when the data
            (image list, modalities, weights, files on disk) or the starting weights differ.
        progress: Show a progress bar.
        stop_after_steps: Stop early as if killed (for tests and demos).

    Returns:
        The trainer's :class:`~panderm.train.trainer.TrainResult`.
    """
    from panderm.hardware import default_device, resolve_precision
    from panderm.train.trainer import TrainConfig, Trainer

    out = Path(out)
    if not resume and (out / "train-state.pt").exists():
        raise InputError(f"{out} already holds a pretraining run",
                         hint=f"continue it with `panderm pretrain --out {out} --resume`, or choose another --out")
    device = default_device()
    precision = resolve_precision(config["precision"], device) if config["precision"] == "auto" else \
        config["precision"]
    model = build_pretrainer(config)
    dataset = build_dataset(config, model)
    inputs = describe_pretrain_inputs(config, dataset, model)
    if not resume:  # only once the run can start, so a failed start leaves no half-made run folder
        save_config(config, out)
    train_cfg = TrainConfig(
        steps=config["steps"], epochs=config["epochs"], batch_size=config["batch_size"],
        accum_steps=config["accum_steps"], lr=config["lr"], lr_base_batch=config["lr_base_batch"],
        min_lr=config["min_lr"], warmup_steps=config["warmup_steps"], warmup_epochs=config["warmup_epochs"],
        weight_decay=config["weight_decay"], clip_grad=config["clip_grad"], precision=precision,
        checkpoint_every=config["checkpoint_every"], keep_last=config["keep_last"], log_every=config["log_every"],
        seed=config["seed"], num_workers=_workers(config["num_workers"]), tensorboard=config["tensorboard"],
        progress=progress, device=device, stop_after_steps=stop_after_steps)
    trainer = Trainer(model, dataset, train_cfg, out, param_groups=lambda m, wd: m.param_groups(wd),
                      export_fn=lambda m: m.released_state_dict(), run_config=config, resume=resume,
                      resume_ignore=RESUME_IGNORE, inputs=inputs)
    return trainer.fit()


def _workers(value: int | None) -> int:
    """``num_workers`` of a config: ``None`` = min(2, CPUs), as the CLI's ``--workers``."""
    import os

    return min(2, os.cpu_count() or 1) if value is None else value


def stored_config(out: str | Path) -> dict[str, Any]:
    """The resolved config a run in ``out`` was started with (for ``--resume``)."""
    import json

    path = Path(out) / "pretrain-config.json"
    if not path.is_file():
        raise InputError(f"{out} holds no pretraining run to resume ({path.name} missing)",
                         hint="start a run with `panderm pretrain --data ... --out DIR` first")
    return json.loads(path.read_text(encoding="utf-8"))


def save_config(config: dict[str, Any], out: str | Path) -> None:
    """Store the resolved config next to the run (read back by ``--resume``)."""
    from panderm.io import atomic_write_json

    Path(out).mkdir(parents=True, exist_ok=True)
    atomic_write_json(Path(out) / "pretrain-config.json", config)
