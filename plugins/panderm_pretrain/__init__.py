"""Built-in plugin: CAE v2 pretraining: teachers, data sources and the ``pretrain`` command.

Import stays light: no torch here. Teacher factories import
:mod:`panderm.train.teachers` only when a teacher is built.
"""

from __future__ import annotations

import panderm

# --------------------------------------------------------------------------- teachers


def _hog(rest: str):
    from panderm.errors import ConfigError
    from panderm.train.teachers import HOGTeacher

    if rest.strip() == "plain":
        return HOGTeacher(color=False, global_token=False)
    if rest.strip():
        raise ConfigError(f"unknown hog teacher option 'hog:{rest}'", hint="use --teacher hog or hog:plain")
    return HOGTeacher()


def _hogplus(rest: str):
    from panderm.errors import ConfigError
    from panderm.train.hogplus_teacher import HOGPlusTeacher

    if rest.strip() not in ("", "broadcast"):
        raise ConfigError(f"unknown hogplus teacher option 'hogplus:{rest}'",
                          hint="use --teacher hogplus or hogplus:broadcast")
    return HOGPlusTeacher(broadcast=rest.strip() == "broadcast")


def _random(rest: str):
    from panderm.errors import ConfigError
    from panderm.train.teachers import RandomTeacher

    try:
        out_dim = int(rest) if rest.strip() else 16
    except ValueError:
        raise ConfigError(f"random teacher: '{rest}' is not an output width",
                          hint="use random or random:<dim>") from None
    return RandomTeacher(out_dim=out_dim)


def _openclip(rest: str, trust_torchscript: bool = False):
    from panderm.errors import ConfigError
    from panderm.train.teachers import OpenCLIPTeacher, split_weights_spec

    if rest.startswith(("hf-hub:", "local-dir:")):
        raise ConfigError(f"openclip teacher arch must be a plain model name, not '{rest.split(':')[0]}:...'",
                          hint="hub names are refused: teachers load local files only (openclip:<arch>:<path>)")
    arch, path = split_weights_spec(rest, "openclip")
    return OpenCLIPTeacher(arch, path, trust_torchscript=trust_torchscript)


def _timm(rest: str, trust_torchscript: bool = False):
    from panderm.train.teachers import TimmTeacher, split_weights_spec

    name, path = split_weights_spec(rest, "timm")
    return TimmTeacher(name, path, trust_torchscript=trust_torchscript)


@panderm.hookimpl
def register_teachers(register):
    register("hog", _hog, summary="HOG + cell colour targets with an image-level CLS target, no weights (hog:plain = MaskFeat HOG)")
    register("hogplus", _hogplus,
             summary="hog patch targets + a colour-histogram/HOG image descriptor as CLS target, no weights "
                     "(hogplus:broadcast = descriptor in every token)")
    register("random", _random, summary="frozen random patch projector with CLS (tests and smoke runs only)")
    register("openclip", _openclip,
             summary="CLIP ViT image tower from a local file: openclip:<arch>:<path> (paper: ViT-L-14 @196 px)")
    register("timm", _timm, summary="timm ViT tokens from a local file: timm:<name>:<path>")


# --------------------------------------------------------------------------- commands (register_commands)


@panderm.hookimpl
def register_commands(cli):
    cli.add_lazy_command("pretrain", "panderm_pretrain.commands:pretrain_cmd",
                         "Self-supervised CAE v2 pretraining of a PanDerm encoder (CPU demo to multi-GPU).")


# --------------------------------------------------------------------------- data sources (register_data_sources)


@panderm.hookimpl
def register_data_sources(register):
    from panderm.data.pretrain import builtin_data_sources

    builtin_data_sources(register)
