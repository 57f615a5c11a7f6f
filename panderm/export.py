"""Export encoder weights: our safetensors layout or a timm ``VisionTransformer`` state dict."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from panderm.errors import ConfigError

FORMATS = ("safetensors", "timm")
_TIMM_ARCH = {768: "vit_base_patch16_224", 1024: "vit_large_patch16_224"}


@dataclass(frozen=True)
class ExportResult:
    """What ``export_encoder`` wrote."""

    path: Path
    format: str
    tensors: int
    timm_create_kwargs: dict | None


def timm_create_kwargs(model) -> dict:
    """Arguments for ``timm.create_model`` that rebuild ``model`` as a timm ViT."""
    arch = _TIMM_ARCH.get(model.embed_dim, "vit_base_patch16_224")
    kwargs = dict(model_name=arch, pretrained=False, num_classes=0, init_values=1e-5,
                  global_pool="avg" if model.global_pool == "avg" else "token")
    if model.embed_dim not in _TIMM_ARCH or len(model.blocks) not in (12, 24):
        kwargs.update(embed_dim=model.embed_dim, depth=len(model.blocks), num_heads=model.num_heads)
    return kwargs


def export_encoder(model_name: str, weights: str | None, to: str, out: str | Path,
                   global_pool: str = "token") -> ExportResult:
    """Load an encoder strictly and write its weights to ``out``.

    Args:
        model_name: Registered encoder name.
        weights: Registered weights name or path (``None`` exports the random init).
        to: ``safetensors`` (PanDerm layout, loadable by ``--weights``) or ``timm``.
        out: Output file; ``.safetensors`` is written with safetensors, ``.pth``/``.bin`` with torch.save.
        global_pool: ``token`` (CLS + norm, linear-probe features) or ``avg`` (``norm`` becomes ``fc_norm``).
    """
    import torch
    from safetensors.torch import save_file

    from panderm.io import atomic_path
    from panderm.models.checkpoint import encoder_state_dict, to_timm_layout
    from panderm.models.factory import create_encoder

    if to not in FORMATS:
        raise ConfigError(f"unknown export format '{to}'", hint=f"choose one of {', '.join(FORMATS)}")
    out = Path(out)
    model = create_encoder(model_name, weights=weights)
    sd = {k: v for k, v in encoder_state_dict(model).items() if not k.startswith("head.")}
    create_kwargs = None
    if to == "timm":
        sd = to_timm_layout(sd, global_pool=global_pool)
        create_kwargs = timm_create_kwargs(model)
        create_kwargs["global_pool"] = global_pool
    meta = {"panderm_model": model.model_name, "format": to,
            "weights_sha256": model.weights_info.sha256 or "", "global_pool": global_pool}
    if create_kwargs:
        meta["timm_create_kwargs"] = json.dumps(create_kwargs)
    with atomic_path(out) as tmp:
        if out.suffix == ".safetensors":
            save_file(sd, str(tmp), metadata=meta)
        elif out.suffix in (".pth", ".pt", ".bin"):
            torch.save(sd, tmp)
        else:
            raise ConfigError(f"cannot tell the file type of '{out.name}'", hint="end --out with .safetensors or .pth")
    return ExportResult(out, to, len(sd), create_kwargs)
