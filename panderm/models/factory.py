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
    """Path of weights shipped inside the package for ``cfg`` (``panderm/bundled_weights/<file>``)."""
    from panderm.errors import CheckpointError

    path = Path(__file__).resolve().parents[1] / "bundled_weights" / cfg.bundled
    if not path.is_file():
        raise CheckpointError(f"bundled weights {path} for tag '{cfg.tag}' are missing from the installation",
                              hint="reinstall panderm, or pass --weights explicitly")
    return path


def has_weights(name: str, weights: str | Path | None) -> bool:
    """True when ``create_encoder(name, weights)`` would load trained weights (given or bundled)."""
    return weights is not None or bool(get_encoder_entry(name)[1].bundled)


#: The tag of encoders whose random initialisation is what the name asks for (``arch.untrained``).
UNTRAINED_TAG = "untrained"


def registered_weights_names() -> list[str]:
    """The names ``--weights`` accepts without a path (``panderm weights list``)."""
    from panderm.errors import PandermError
    from panderm.weights import list_weights

    try:
        return [r.name for r in list_weights()]
    except PandermError:  # an unreadable weights.json must not hide the error being reported
        return []


def bundled_model_names() -> list[str]:
    """``arch.tag`` names whose weights ship inside the package: pass them as ``--model``, no ``--weights``."""
    return [f"{entry.name}.{c.tag}" for entry in registries().encoders.entries()
            for c in entry.pretrained_cfgs if c.bundled]


def _no_weights_error(entry: EncoderEntry, cfg: PretrainedCfg):
    from panderm.errors import ConfigError, examples

    names, bundled = registered_weights_names(), bundled_model_names()
    have = f"registered weights (--weights NAME): {examples(names, 8)}" if names else "no weights are registered"
    ships = f"; models that ship weights (--model NAME, no --weights): {examples(bundled, 8)}" if bundled else ""
    release = f"the released file {cfg.file_name}" if cfg.file_name else "a weights file"
    return ConfigError(
        f"encoder {entry.name}.{cfg.tag} ships no weights: pass --weights, or --random-init for a randomly "
        f"initialised encoder (tests and ablations only; its features are meaningless); {have}{ships}",
        hint=f"add {release} with `panderm weights add NAME PATH`, then pass --weights NAME")


def require_weights(name: str, weights: str | Path | None, random_init: bool = False):
    """``(entry, cfg)`` of ``name``, or the ConfigError ``create_encoder`` would raise for these weights.

    Lets commands that build the encoder late (per slide, after preprocessing) fail before any work.
    """
    entry, cfg = get_encoder_entry(name)
    if random_init and weights is not None:
        from panderm.errors import ConfigError

        raise ConfigError("--weights and --random-init exclude each other", hint="drop one of them")
    if weights is None and not cfg.bundled and not random_init and cfg.tag != UNTRAINED_TAG:
        raise _no_weights_error(entry, cfg)
    return entry, cfg


def create_encoder(name: str, weights: str | Path | None = None, *, random_init: bool = False, **kwargs: Any):
    """Build a registered encoder, optionally loading weights strictly.

    Args:
        name: Registered ``arch`` or ``arch.tag``.
        weights: A registered weights name, a file path, or a plugin-resolved
            spec (``hf-hub:...``). ``None`` loads the tag's bundled weights if it
            has any; a tag without any needs ``random_init``.
        random_init: Allow the random initialisation when there are no weights to
            load (tests, ablations, pretraining, or weights loaded right after);
            not needed for ``.untrained`` tags, whose meaning it is. A tag's
            bundled weights are still loaded; with ``weights`` it is an error.
        **kwargs: Passed to the architecture factory (``global_pool``, ...).

    Returns:
        The model in eval mode, with ``pretrained_cfg`` and ``weights_info`` set.

    Raises:
        ConfigError: unknown name or tag; no weights for a tag that ships none and
            no ``random_init``; both ``weights`` and ``random_init``. InputError/CheckpointError: weights problems.
    """
    from panderm.models.checkpoint import load_encoder_state
    from panderm.weights import resolve_weights_path, weights_sha256

    entry, cfg = require_weights(name, weights, random_init)
    model = entry.factory(**kwargs)
    info = WeightsInfo(None, None, None, "random initialisation (--random-init)" if random_init
                       else f"random initialisation (.{cfg.tag} tag)")
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


def portable_weights_spec(name: str, spec: str | Path | None, sha256: str | None) -> str | None:
    """``spec`` as a bundle should record it: ``None`` when it is the tag's bundled weights file.

    ``create_encoder`` loads bundled weights when given ``None``, so recording the
    absolute path of the installed file would only tie a bundle to one installation.
    """
    if spec is None:
        return None
    cfg = get_encoder_entry(name)[1]
    if cfg.bundled:
        from panderm.io import sha256_file

        try:
            bundled = bundled_weights_path(cfg)
        except Exception:  # noqa: BLE001 - a broken install simply keeps the explicit spec
            return str(spec)
        if Path(str(spec)) == bundled or (sha256 is not None and sha256 == sha256_file(bundled)):
            return None
    return str(spec)


def fresh_weights_sha256(model) -> str | None:
    """The sha256 of the file ``model``'s weights came from, re-hashed now (never a cached registry value)."""
    info = model.weights_info
    if not info.path:
        return info.sha256
    from panderm.weights import weights_sha256

    return weights_sha256(Path(info.path), fresh=True)


def create_matching_encoder(owner: str, encoder: dict, model: str | None = None,
                            weights: str | Path | None = None, **kwargs: Any):
    """Rebuild the encoder a bundle was made with, refusing any other (sha256 of the weights).

    Shared by the TBP bundle and the classifier bundle.

    Args:
        owner: How error messages name the bundle (``"bundle PATH"``).
        encoder: The bundle's ``{"name", "weights_spec", "weights_sha256"}``.
        model: A model name the user asked for (must be the bundle's, with or without tag).
        weights: Weights to use instead of ``weights_spec`` (must have the same sha256).

    Raises:
        ConfigError: another model, unavailable weights, or weights with another sha256.
    """
    from panderm.errors import ConfigError, InputError

    name = encoder["name"]
    if model and model != name and model != name.split(".")[0]:
        raise ConfigError(f"{owner} was made for encoder {name}, not {model}",
                          hint="drop --model, or use a bundle trained for that encoder")
    want = encoder.get("weights_sha256")
    spec = weights if weights is not None else encoder.get("weights_spec")
    if weights is None and spec is not None and get_encoder_entry(name)[1].bundled:
        # a recorded path to the bundled file of another installation: the bundled weights are checked below
        from panderm.weights import resolve_weights_path

        try:
            resolve_weights_path(spec)
        except Exception:  # noqa: BLE001 - any resolution failure: fall back to the bundled weights
            spec = None
    try:
        model_ = create_encoder(name, spec, **kwargs)
    except InputError as exc:
        raise ConfigError(f"{owner} needs the encoder weights it was trained with "
                          f"({encoder.get('weights_spec')}, sha256 {str(want)[:12]}…): {exc.message}",
                          hint="pass them with --weights PATH_OR_NAME") from None
    got = fresh_weights_sha256(model_)
    if got != want:
        raise ConfigError(
            f"{owner} was made for {name} with weights sha256 {str(want)[:12]}…, "
            f"but {model_.weights_info.spec or 'the default weights'} have sha256 {str(got)[:12]}…",
            hint="use the encoder weights the bundle was trained with, or train a bundle for these")
    return model_
