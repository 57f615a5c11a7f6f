"""The built-in pretraining teachers, by name: ``--teacher NAME[:SPEC]`` (the ``pretrain`` plugin forwards them).

Each factory takes the part of the spec after ``NAME:`` and imports its teacher class only when called,
so registering them stays light.
"""

from __future__ import annotations

from typing import Callable


def hog_teacher(rest: str):
    from panderm.errors import ConfigError
    from panderm.train.teachers import HOGTeacher

    if rest.strip() == "plain":
        return HOGTeacher(color=False, global_token=False)
    if rest.strip():
        raise ConfigError(f"unknown hog teacher option 'hog:{rest}'", hint="use --teacher hog or hog:plain")
    return HOGTeacher()


def hogplus_teacher(rest: str):
    from panderm.errors import ConfigError
    from panderm.train.hogplus_teacher import HOGPlusTeacher

    if rest.strip() not in ("", "broadcast"):
        raise ConfigError(f"unknown hogplus teacher option 'hogplus:{rest}'",
                          hint="use --teacher hogplus or hogplus:broadcast")
    return HOGPlusTeacher(broadcast=rest.strip() == "broadcast")


def random_teacher(rest: str):
    from panderm.errors import ConfigError
    from panderm.train.teachers import RandomTeacher

    try:
        out_dim = int(rest) if rest.strip() else 16
    except ValueError:
        raise ConfigError(f"random teacher: '{rest}' is not an output width",
                          hint="use random or random:<dim>") from None
    return RandomTeacher(out_dim=out_dim)


def openclip_teacher(rest: str, trust_torchscript: bool = False):
    from panderm.errors import ConfigError
    from panderm.train.teachers import OpenCLIPTeacher, split_weights_spec

    if rest.startswith(("hf-hub:", "local-dir:")):
        raise ConfigError(f"openclip teacher arch must be a plain model name, not '{rest.split(':')[0]}:...'",
                          hint="hub names are refused: teachers load local files only (openclip:<arch>:<path>)")
    arch, path = split_weights_spec(rest, "openclip")
    return OpenCLIPTeacher(arch, path, trust_torchscript=trust_torchscript)


def timm_teacher(rest: str, trust_torchscript: bool = False):
    from panderm.train.teachers import TimmTeacher, split_weights_spec

    name, path = split_weights_spec(rest, "timm")
    return TimmTeacher(name, path, trust_torchscript=trust_torchscript)


def builtin_teachers(register: Callable[..., None]) -> None:
    """Register the built-in teachers with a ``register_teachers`` callback."""
    register("hog", hog_teacher, summary="HOG + cell colour targets with an image-level CLS target, no weights (hog:plain = MaskFeat HOG)")
    register("hogplus", hogplus_teacher,
             summary="hog patch targets + a colour-histogram/HOG image descriptor as CLS target, no weights "
                     "(hogplus:broadcast = descriptor in every token)")
    register("random", random_teacher, summary="frozen random patch projector with CLS (tests and smoke runs only)")
    register("openclip", openclip_teacher,
             summary="CLIP ViT image tower from a local file: openclip:<arch>:<path> (paper: ViT-L-14 @196 px)")
    register("timm", timm_teacher, summary="timm ViT tokens from a local file: timm:<name>:<path>")
