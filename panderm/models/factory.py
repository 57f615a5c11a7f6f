"""Create encoders by registered name and load their weights strictly."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from panderm.plugins import registries
from panderm.registry import EncoderEntry, PretrainedCfg, split_model_name


@dataclass(frozen=True)
class WeightsInfo:
    """Where an encoder's weights came from (recorded in output ``meta.json``)."""

    spec: str | None
    path: str | None
    sha256: str | None
    summary: str


def get_encoder_entry(name: str) -> tuple[EncoderEntry, PretrainedCfg]:
    """Look up ``arch`` or ``arch.tag`` in the encoder registry."""
    arch, tag = split_model_name(name)
    entry = registries().encoders.get(arch)
    return entry, entry.cfg(tag)


def bundled_weights_path(cfg: PretrainedCfg) -> Path:
    """Path of weights shipped inside the package for ``cfg`` (``panderm/weights/<file>``)."""
    from panderm.errors import CheckpointError

    path = Path(__file__).resolve().parents[1] / "weights" / cfg.bundled
    if not path.is_file():
        raise CheckpointError(f"bundled weights {path} for tag '{cfg.tag}' are missing from the installation",
                              hint="reinstall panderm, or pass --weights explicitly")
    return path


def has_weights(name: str, weights: str | Path | None) -> bool:
    """True when ``create_encoder(name, weights)`` would load trained weights (given or bundled)."""
    return weights is not None or bool(get_encoder_entry(name)[1].bundled)


def create_encoder(name: str, weights: str | Path | None = None, **kwargs: Any):
    """Build a registered encoder, optionally loading weights strictly.

    Args:
        name: Registered ``arch`` or ``arch.tag``.
        weights: A registered weights name, a file path, or a plugin-resolved
            spec (``hf-hub:...``). ``None`` loads the tag's bundled weights if it
            has any, else leaves the random initialisation.
        **kwargs: Passed to the architecture factory (``global_pool``, ...).

    Returns:
        The model in eval mode, with ``pretrained_cfg`` and ``weights_info`` set.

    Raises:
        ConfigError: unknown name or tag. InputError/CheckpointError: weights problems.
    """
    from panderm.models.checkpoint import load_encoder_state
    from panderm.weights import resolve_weights_path, weights_sha256

    entry, cfg = get_encoder_entry(name)
    model = entry.factory(**kwargs)
    info = WeightsInfo(None, None, None, "random initialisation (no --weights given)")
    if weights is None and cfg.bundled:
        weights = bundled_weights_path(cfg)
    if weights is not None:
        path = resolve_weights_path(weights)
        report = load_encoder_state(model, path)
        info = WeightsInfo(str(weights), str(path), weights_sha256(path), report.summary())
    model.pretrained_cfg = cfg
    model.weights_info = info
    model.model_name = f"{entry.name}.{cfg.tag}"
    return model.eval()
