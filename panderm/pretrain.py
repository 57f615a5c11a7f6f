"""``pretrain``: CAE v2 masked latent alignment on unlabelled skin images (reference-model §6).

A run is described by a flat config (a recipe YAML plus command-line overrides);
the resolved config is stored in the run folder, and ``--resume`` refuses to
continue with different settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from panderm.errors import ConfigError, InputError

RECIPES = Path(__file__).resolve().parent / "recipes" / "pretrain"

#: Every config key with its default: the CPU demo setting, offline (HOG teacher).
DEFAULTS: dict[str, Any] = {
    "model": "panderm_tiny_patch16_224",
    "teacher": "hog",
    "teacher_input_size": None,
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
    "num_workers": 2,
    "seed": 0,
    "tensorboard": False,
}
#: Keys that may change between a run and its resumption.
RESUME_IGNORE = ("steps", "epochs", "num_workers", "tensorboard", "log_every", "progress", "out")


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
    except yaml.YAMLError as exc:
        raise InputError(f"cannot parse {path}: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path} must hold a mapping of config keys")
    return data


def resolve_config(recipe: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """Merge defaults, a recipe and non-``None`` overrides; reject unknown keys."""
    config = dict(DEFAULTS)
    for source in (recipe or {}, {k: v for k, v in overrides.items() if v is not None}):
        unknown = sorted(set(source) - set(DEFAULTS))
        if unknown:
            raise ConfigError(f"unknown pretraining config key(s): {', '.join(unknown)}",
                              hint=f"known keys: {', '.join(sorted(DEFAULTS))}")
        config.update(source)
    if config["data"] is None:
        raise ConfigError("no training data given", hint="pass --data manifest.csv | folder/ | name:spec")
    if config["steps"] is None and config["epochs"] is None:
        raise ConfigError("give the run length", hint="pass --steps N or --epochs N (or set one in the config)")
    return config
