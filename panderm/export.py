"""Export encoder weights: our safetensors layout, or a timm folder (``model.safetensors`` + ``config.json``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from panderm.errors import ConfigError

FORMATS = ("safetensors", "timm")
#: (embed_dim, depth, num_heads) -> the stock timm architecture of that shape.
_TIMM_ARCH = {(192, 12, 3): "vit_tiny_patch16_224", (384, 12, 6): "vit_small_patch16_224",
              (768, 12, 12): "vit_base_patch16_224", (1024, 24, 16): "vit_large_patch16_224"}


@dataclass(frozen=True)
class ExportResult:
    """What ``export_encoder`` wrote (``path`` is the folder for ``timm``)."""

    path: Path
    format: str
    tensors: int
    timm_create_kwargs: dict | None


def timm_model_args(model, global_pool: str = "token") -> dict:
    """timm ``VisionTransformer`` arguments that rebuild ``model`` exactly (every shape explicit)."""
    return dict(img_size=model.img_size, patch_size=model.patch_size, embed_dim=model.embed_dim,
                depth=len(model.blocks), num_heads=model.num_heads,
                mlp_ratio=model.blocks[0].mlp.fc1.out_features / model.embed_dim, qkv_bias=True,
                init_values=1e-5, class_token=True, global_pool=global_pool, fc_norm=global_pool == "avg",
                num_classes=0)


def timm_architecture(model) -> str:
    """The stock timm architecture of ``model``'s shape (``vit_base_patch16_224`` + explicit args otherwise)."""
    return _TIMM_ARCH.get((model.embed_dim, len(model.blocks), model.num_heads), "vit_base_patch16_224")


def timm_create_kwargs(model, global_pool: str = "token") -> dict:
    """Arguments for ``timm.create_model`` that rebuild ``model`` as a timm ViT."""
    return dict(model_name=timm_architecture(model), pretrained=False, **timm_model_args(model, global_pool))


def timm_config(model, global_pool: str = "token") -> dict:
    """``config.json`` of a timm export, in the layout ``timm.create_model("local-dir:DIR")`` reads."""
    cfg = model.pretrained_cfg
    keep = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode", "num_classes",
            "fixed_input_size", "first_conv", "classifier", "license")
    pretrained_cfg = {k: list(cfg[k]) if isinstance(cfg[k], tuple) else cfg[k] for k in keep}
    pretrained_cfg["tag"] = f"panderm_{cfg.tag}"
    return {"architecture": timm_architecture(model), "num_classes": 0, "num_features": model.embed_dim,
            "global_pool": global_pool, "model_args": timm_model_args(model, global_pool),
            "pretrained_cfg": pretrained_cfg,
            "panderm": {"model": model.model_name, "preset": cfg.preset,
                        "weights_sha256": model.weights_info.sha256 or ""}}


def export_encoder(model_name: str, weights: str | None, to: str, out: str | Path,
                   global_pool: str = "token", *, random_init: bool = False) -> ExportResult:
    """Load an encoder strictly and write its weights to ``out``.

    Args:
        model_name: Registered encoder name.
        weights: Registered weights name or path (``None`` exports the tag's bundled weights).
        to: ``safetensors`` (PanDerm layout, loadable by ``--weights``) or ``timm``.
        out: ``safetensors``: a ``.safetensors`` file (``.pth``/``.pt``/``.bin`` are written with torch.save).
            ``timm``: a folder that receives ``model.safetensors`` and ``config.json``
            (``timm.create_model("local-dir:OUT", pretrained=True)``).
        global_pool: timm only: ``token`` (CLS + norm, the PanDerm feature) or ``avg`` (``norm`` becomes ``fc_norm``).
        random_init: Export a random initialisation of a model that ships no weights (tests and ablations).

    Raises:
        ConfigError: unknown format, or an output path of the wrong kind.
    """
    from panderm.models.checkpoint import encoder_state_dict, to_timm_layout
    from panderm.models.factory import create_encoder

    if to not in FORMATS:
        raise ConfigError(f"unknown export format '{to}'", hint=f"choose one of {', '.join(FORMATS)}")
    out = Path(out)
    if to == "timm" and (out.suffix in (".safetensors", ".pth", ".pt", ".bin") or out.is_file()):
        raise ConfigError(f"--to timm writes a folder (model.safetensors + config.json), not the file '{out}'",
                          hint=f"pass a folder, e.g. --out {out.with_suffix('')}")
    model = create_encoder(model_name, weights=weights, random_init=random_init)
    sd = {k: v for k, v in encoder_state_dict(model).items() if not k.startswith("head.")}
    meta = {"panderm_model": model.model_name, "format": to,
            "weights_sha256": model.weights_info.sha256 or "", "global_pool": global_pool}
    if to == "safetensors":
        _write_weights(out, sd, meta)
        return ExportResult(out, to, len(sd), None)
    sd = to_timm_layout(sd, global_pool=global_pool)
    _write_weights(out / "model.safetensors", sd, meta)
    _write_json(out / "config.json", timm_config(model, global_pool))
    return ExportResult(out, to, len(sd), timm_create_kwargs(model, global_pool))


def _write_weights(path: Path, sd: dict, meta: dict) -> None:
    import torch
    from safetensors.torch import save_file

    from panderm.io import atomic_path

    if path.suffix not in (".safetensors", ".pth", ".pt", ".bin"):
        raise ConfigError(f"cannot tell the file type of '{path.name}'", hint="end --out with .safetensors or .pth")
    with atomic_path(path) as tmp:
        if path.suffix == ".safetensors":
            save_file(sd, str(tmp), metadata=meta)
        else:
            torch.save(sd, tmp)


def _write_json(path: Path, obj: dict) -> None:
    from panderm.io import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")
