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


def create_encoder(name: str, weights: str | Path | None = None, **kwargs: Any):
    """Build a registered encoder, optionally loading weights strictly.

    Args:
        name: Registered ``arch`` or ``arch.tag``.
        weights: A registered weights name, a file path, or a plugin-resolved
            spec (``hf-hub:...``). ``None`` leaves the random initialisation.
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
    if weights is not None:
        path = resolve_weights_path(weights)
        report = load_encoder_state(model, path)
        info = WeightsInfo(str(weights), str(path), weights_sha256(path), report.summary())
    model.pretrained_cfg = cfg
    model.weights_info = info
    model.model_name = f"{entry.name}.{cfg.tag}"
    return model.eval()
