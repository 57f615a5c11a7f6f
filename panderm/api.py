"""The Python API for notebooks: ``panderm.create_model``, ``extract_features``, ``linear_probe``...

Thin wrappers over the library functions behind the CLI. Keyword names equal the
CLI's option names (``--batch-size`` → ``batch_size``), so a command line translates
one to one::

    import panderm
    model, preprocess = panderm.create_model_and_transforms("panderm_tiny_patch16_224.demo")
    feats = panderm.extract_features("images/", model=model)
    result = panderm.linear_probe(feats, csv="labels.csv")
    result.metrics["auroc"]
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from panderm.errors import ConfigError

#: Preprocessing fields a ``pretrained_cfg_overlay`` may replace (besides any PretrainedCfg field).
PREPROCESS_FIELDS = ("mean", "std", "input_size", "interpolation", "crop", "resize")


@dataclass
class Features:
    """Features of a set of images: row ``i`` of ``features`` is image ``index.image[i]``.

    Attributes:
        features: float32 ``N × D`` matrix (``features.npy``).
        index: One row per feature row (``index.csv``), with an ``image`` column.
        meta: Model, weights sha256, preset, precision (``meta.json``).
        out: The folder holding the files (the ``out`` given, or a temporary one).
        result: The library's :class:`panderm.extract.ExtractResult`.
    """

    features: Any
    index: Any
    meta: dict
    out: Path
    result: Any = None
    _tmp: Any = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.features)


def list_models(pattern: str = "*", all: bool = False) -> list[str]:
    """Registered ``arch.tag`` names matching the fnmatch ``pattern`` (e.g. ``"*tiny*"``).

    Test-only architectures are left out unless ``all`` (as ``panderm models --all``).
    """
    from panderm.models.listing import list_models as rows
    from panderm.registry import is_test_arch

    return [r["name"] for r in rows()
            if fnmatch.fnmatchcase(r["name"], pattern) and (all or not is_test_arch(r["arch"]))]


def _overlay_cfg(cfg, overlay: dict):
    """Return ``cfg`` with ``overlay``'s fields replaced; unknown fields are a ConfigError."""
    fields = {f.name for f in dataclasses.fields(cfg)}
    unknown = sorted(set(overlay) - fields - set(PREPROCESS_FIELDS))
    if unknown:
        raise ConfigError(f"pretrained_cfg_overlay has unknown field(s): {', '.join(unknown)}",
                          hint=f"known fields: {', '.join(sorted(fields | set(PREPROCESS_FIELDS)))}")
    return dataclasses.replace(cfg, **{k: tuple(v) if isinstance(v, list) else v
                                       for k, v in overlay.items() if k in fields})


def create_model(name: str, weights: str | os.PathLike | None = None,
                 pretrained_cfg_overlay: dict | None = None, random_init: bool = False):
    """Build a registered encoder (``arch`` or ``arch.tag``) in eval mode.

    Args:
        name: Encoder name (see :func:`list_models`).
        weights: Registered weights name, file path or hub spec; ``None`` loads the
            tag's bundled weights when it has any.
        pretrained_cfg_overlay: Fields of the tag's pretrained cfg to replace
            (``mean``, ``std``, ``input_size``, ``interpolation``, ``crop``, ``preset``...).
        random_init: Build a model that ships no weights with its random initialisation
            (tests and ablations; ``.untrained`` tags need no flag).

    Raises:
        ConfigError: unknown name, tag or overlay field; a model that ships no weights without
            ``weights`` or ``random_init``. InputError/CheckpointError: weights problems.
    """
    import inspect

    from panderm.models.factory import create_encoder

    if pretrained_cfg_overlay:
        from panderm.models.factory import get_encoder_entry

        _overlay_cfg(get_encoder_entry(name)[1], pretrained_cfg_overlay)  # unknown fields fail before building
    if pretrained_cfg_overlay and "pretrained_cfg_overlay" in inspect.signature(create_encoder).parameters:
        return create_encoder(name, weights, random_init=random_init, pretrained_cfg_overlay=pretrained_cfg_overlay)
    model = create_encoder(name, weights, random_init=random_init)
    if pretrained_cfg_overlay:
        model.pretrained_cfg = _overlay_cfg(model.pretrained_cfg, pretrained_cfg_overlay)
    return model


def preset_for(cfg, overlay: dict | None = None):
    """The eval :class:`~panderm.data.transforms.Preset` of a pretrained cfg: its preset, with
    ``overlay``'s preprocessing fields (mean, std, interpolation, crop, resize, input_size) replaced."""
    from panderm.data.transforms import get_preset

    preset = get_preset((overlay or {}).get("preset", cfg.preset))
    changes = {k: v for k, v in (overlay or {}).items() if k in PREPROCESS_FIELDS and k != "input_size"}
    if "input_size" in (overlay or {}):
        changes.setdefault("crop", int(overlay["input_size"][-1]))
    changes = {k: tuple(v) if isinstance(v, list) else v for k, v in changes.items()}
    if not changes:
        return preset
    return dataclasses.replace(preset, name=f"{preset.name}+overlay", **changes)


def get_preprocess(name: str, pretrained_cfg_overlay: dict | None = None):
    """The eval transform (PIL image → normalised tensor) of encoder ``name``, without building it."""
    from panderm.data.transforms import build_transform
    from panderm.models.factory import get_encoder_entry

    cfg = get_encoder_entry(name)[1]
    if pretrained_cfg_overlay:
        _overlay_cfg(cfg, pretrained_cfg_overlay)  # validates the field names
    return build_transform(preset_for(cfg, pretrained_cfg_overlay))


def create_model_and_transforms(name: str, weights: str | os.PathLike | None = None,
                                pretrained_cfg_overlay: dict | None = None, random_init: bool = False):
    """``(model, eval_transform)`` like open_clip: the encoder and its preprocessing transform."""
    from panderm.data.transforms import build_transform

    model = create_model(name, weights, pretrained_cfg_overlay=pretrained_cfg_overlay, random_init=random_init)
    return model, build_transform(preset_for(model.pretrained_cfg, pretrained_cfg_overlay))


def _extract_kwargs(modality: str | None, preset: str | None, max_pixels: int | None) -> tuple[str | None, dict]:
    """Resolve ``modality`` to a preset and image extensions, as ``panderm extract`` does."""
    kwargs: dict[str, Any] = {}
    if modality is not None:
        from panderm.plugins import registries

        spec = registries().modalities.get(modality)
        preset = preset or spec.preset
        kwargs["extensions"] = spec.extensions
    if max_pixels is not None:
        kwargs["max_pixels"] = max_pixels
    return preset, kwargs


def read_features(folder: str | os.PathLike) -> Features:
    """Load a folder written by ``panderm extract`` (``features.npy``, ``index.csv``, ``meta.json``)."""
    from panderm.data.tables import load_features

    import pandas as pd

    folder = Path(folder)
    loaded = load_features(folder)
    index = pd.read_csv(folder / "index.csv", keep_default_na=False)
    return Features(loaded.X, index, loaded.meta, folder)


def extract_features(input: str | os.PathLike, out: str | os.PathLike | None = None, *,
                     root: str | os.PathLike | None = None, model: Any = "panderm_large_patch16_224",
                     weights: str | os.PathLike | None = None, preset: str | None = None,
                     modality: str | None = None, precision: str = "auto", batch_size: int = 64,
                     workers: int | None = None, shard_size: int = 1024, device: str | None = None,
                     no_resume: bool = False, keep_shards: bool = False, overwrite: bool = False,
                     compile: bool = False, max_pixels: int | None = None, quiet: bool = False,
                     random_init: bool = False) -> Features:
    """``panderm extract`` from Python: encode a folder or CSV of images.

    Keywords are the CLI's options. ``model`` may also be a module from
    :func:`create_model`. With ``out`` the same files as the CLI are written there;
    without it they go to a temporary folder that lives as long as the result.

    Returns:
        :class:`Features` (``.features`` N × D array, ``.index`` DataFrame, ``.meta``).
    """
    from panderm.extract import extract_features as run

    tmp = None
    if out is None:
        tmp = tempfile.TemporaryDirectory(prefix="panderm-features-")
        out = Path(tmp.name) / "features"
    preset, kwargs = _extract_kwargs(modality, preset, max_pixels)
    result = run(input, out, model=model, weights=weights, root=root, preset=preset, precision=precision,
                 batch_size=batch_size, workers=workers, shard_size=shard_size, device=device,
                 resume=not no_resume, keep_shards=keep_shards, overwrite=overwrite, progress=not quiet,
                 compile=compile, random_init=random_init, **kwargs)
    feats = read_features(result.out)
    feats.result, feats._tmp = result, tmp
    return feats


def _features_folder(features: Features | str | os.PathLike) -> Path:
    return features.out if isinstance(features, Features) else Path(features)


def linear_probe(features: Features | str | os.PathLike, csv: str | os.PathLike, out: str | os.PathLike | None = None,
                 *, binary: bool = False, percent_data: float = 1.0, seed: int = 0, use_val: bool = False,
                 head: str = "logreg", protocol: str = "release", bootstrap: int = 1000,
                 compare: Features | str | os.PathLike | None = None, compare_method: str = "permutation",
                 folds: int | None = None, stratify: str | None = None, group: str | None = None,
                 oof: bool = False, quiet: bool = False):
    """``panderm probe`` from Python: fit a linear probe, report test metrics with 95% CIs.

    Keywords are the CLI's options; ``features`` and ``compare`` may be folders or
    :class:`Features`. ``out`` writes the CLI's files; ``None`` writes nothing. The probe
    prints nothing, so ``quiet`` (the CLI's ``-q``) changes nothing here.

    Returns:
        The library result (:class:`panderm.eval.probe.ProbeResult`, or
        :class:`panderm.eval.oof.OOFResult` with ``folds``); ``.metrics`` is the
        metrics dict (``{"auroc": {"value", "ci_low", "ci_high"}, ...}``).

    Raises:
        ConfigError: options that do not go together (as the CLI refuses them).
    """
    features = _features_folder(features)
    compare = None if compare is None else _features_folder(compare)
    out = None if out is None else Path(out)
    if folds is None:
        if stratify or group or oof:
            raise ConfigError("stratify, group and oof need folds=K (out-of-fold mode)")
        from panderm.eval.probe import run_probe

        return run_probe(features, Path(csv), out, binary=binary, percent_data=percent_data, seed=seed,
                         use_val=use_val, head=head, protocol=protocol, n_bootstrap=bootstrap,
                         compare=compare, compare_method=compare_method)
    if percent_data != 1.0 or use_val or compare_method != "permutation":
        raise ConfigError("percent_data, use_val and compare_method do not apply with folds",
                          hint="compare with folds uses a paired t-test over the folds")
    from panderm.eval.oof import run_oof_probe

    return run_oof_probe(features, Path(csv), out, folds=folds, stratify=stratify, group=group, binary=binary,
                         seed=seed, protocol=protocol, head=head, n_bootstrap=bootstrap, compare=compare)
