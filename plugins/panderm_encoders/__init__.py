"""Built-in plugin: the PanDerm ViT encoders, weights resolution, and the model/weights/export commands."""

from __future__ import annotations

from pathlib import Path

import panderm


@panderm.hookimpl
def register_encoders(register):
    """Forward the library's PanDerm ViT sizes (:mod:`panderm.models.archs`)."""
    from panderm.models.archs import register_panderm_encoders

    register_panderm_encoders(register)


@panderm.hookimpl
def resolve_weights(spec):
    from panderm.weights import get_weights

    record = get_weights(spec)
    if record is not None:
        return Path(record.path)
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    if (path / "model.safetensors").is_file():  # a `panderm export --to timm` folder
        return path / "model.safetensors"
    return None


@panderm.hookimpl
def register_commands(cli):
    cli.add_lazy_command("models", "panderm_encoders.commands:models_cmd",
                         "List registered encoders: input size, dims, normalisation, licence.")
    cli.add_lazy_command("weights", "panderm_encoders.commands:weights_group",
                         "Register local weight files by name (add, list, remove).")
    cli.add_lazy_command("export", "panderm_encoders.commands:export_cmd",
                         "Write encoder weights as safetensors, or a timm folder (weights + config.json).")
