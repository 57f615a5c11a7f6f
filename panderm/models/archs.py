"""The PanDerm ViT sizes (:data:`ARCHS`) and their encoder factories.

The library owns the table: the built-in plugin ``panderm_encoders`` registers these
encoders (:func:`register_panderm_encoders`, its ``register_encoders`` hook) and
:mod:`panderm.models.timm_compat` exposes the same architectures to timm. Import stays
light: torch loads only when a model is built.
"""

from __future__ import annotations

from functools import partial

from panderm.registry import PretrainedCfg

_LICENSE = "PanDerm release terms (research use; see the official PanDerm repository)"

#: arch name -> (PanDermViT kwargs, pretrained cfgs, summary)
ARCHS = {
    "panderm_large_patch16_224": (
        dict(embed_dim=1024, depth=24, num_heads=16),
        [PretrainedCfg(tag="official", num_features=1024, license=_LICENSE,
                       file_name="panderm_ll_data6_checkpoint-499.pth",
                       notes="the paper's PanDerm (ViT-L/16, CAE v2 pretraining, 2M+ skin images)")],
        "PanDerm ViT-L/16 (303M), the paper's model",
    ),
    "panderm_base_patch16_224": (
        dict(embed_dim=768, depth=12, num_heads=12),
        [PretrainedCfg(tag="official", num_features=768, license=_LICENSE,
                       file_name="panderm_bb_data6_checkpoint-499.pth", notes="PanDerm ViT-B/16 (86M)")],
        "PanDerm ViT-B/16 (86M)",
    ),
    "panderm_tiny_patch16_224": (
        dict(embed_dim=192, depth=12, num_heads=3),
        [PretrainedCfg(tag="untrained", num_features=192, license="n/a",
                       notes="ViT-Ti width for CPU demos and pretraining runs; random initialisation"),
         PretrainedCfg(tag="demo", num_features=192, bundled="panderm_tiny_demo.safetensors",
                       license="CC BY-NC 4.0 (trained on HAM10000 / ISIC images; attribute, non-commercial)",
                       notes="demo encoder pretrained by `panderm pretrain` (hogplus teacher, 250 steps, ~15-45 CPU minutes) on "
                             "../shared/data; a demo, not for clinical use (panderm/bundled_weights/panderm_tiny_demo.md)")],
        "ViT-Ti/16 sized PanDerm encoder for CPU demos",
    ),
    "panderm_test_patch16_224": (
        dict(embed_dim=32, depth=2, num_heads=2),
        [PretrainedCfg(tag="untrained", num_features=32, license="n/a",
                       notes="2-block, 32-wide encoder for unit tests")],
        "tiny 2-block encoder for tests",
    ),
}


def build(arch_kwargs: dict, **kwargs):
    """Factory shared by all archs: import torch only when a model is built."""
    from panderm.models.vit import PanDermViT

    return PanDermViT(**{**arch_kwargs, **kwargs})


def register_panderm_encoders(register) -> None:
    """Register every :data:`ARCHS` entry with an encoder registry's ``register(name, factory, ...)``."""
    for name, (arch_kwargs, cfgs, summary) in ARCHS.items():
        register(name, partial(build, arch_kwargs), pretrained_cfgs=cfgs, summary=summary)


__all__ = ["ARCHS", "build", "register_panderm_encoders"]
