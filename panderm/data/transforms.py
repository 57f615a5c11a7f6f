"""Preprocessing presets (docs/reference/preprocessing.md): the official PanDerm eval pipeline and friends.

Every preset is built from stock torchvision transforms on PIL images, so the
result is bit-identical to the hand-written official pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass

from panderm.errors import ConfigError


@dataclass(frozen=True)
class Preset:
    """Eval-time preprocessing: shorter-side resize, centre crop, normalise.

    Attributes:
        name: Preset name.
        resize: Target of the shorter side.
        crop: Centre-crop side (the encoder input size).
        interpolation: ``"bilinear"`` or ``"bicubic"`` (PIL filters, always antialiased).
        mean: Per-channel normalisation mean.
        std: Per-channel normalisation std.
        summary: One line for help texts.
    """

    name: str
    resize: int
    crop: int
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    summary: str = ""


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("panderm", 256, 224, "bilinear", (0.485, 0.456, 0.406), (0.228, 0.224, 0.225),
               "official PanDerm eval: Resize 256 bilinear, CenterCrop 224, ImageNet mean, std 0.228/0.224/0.225"),
        Preset("imagenet", 256, 224, "bilinear", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
               "same geometry with the standard ImageNet std 0.229 (TTA, pathology patches)"),
        Preset("clip", 224, 224, "bicubic", (0.48145466, 0.4578275, 0.40821073),
               (0.26862954, 0.26130258, 0.27577711),
               "OpenAI CLIP: Resize 224 bicubic, CenterCrop 224, CLIP mean/std"),
    )
}


def get_preset(name: str) -> Preset:
    """Return the preset called ``name`` or raise a ConfigError listing the presets."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preprocessing preset '{name}'",
                          hint=f"choose one of: {', '.join(PRESETS)}") from None


def build_transform(preset: str | Preset):
    """A torchvision ``Compose`` mapping an RGB ``PIL.Image`` to a normalised ``[3, crop, crop]`` tensor."""
    from torchvision import transforms as T

    p = preset if isinstance(preset, Preset) else get_preset(preset)
    interp = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC}[p.interpolation]
    return T.Compose([
        T.Resize(p.resize, interpolation=interp, antialias=True),
        T.CenterCrop(p.crop),
        T.ToTensor(),
        T.Normalize(p.mean, p.std),
    ])
