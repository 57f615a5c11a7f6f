"""The TBP screening bundle: everything ``screen-tbp`` needs, in one folder, without pickle.

Layout (``bundle.json`` is written last, so its presence marks a complete bundle)::

    bundle.json            encoder identity, thresholds, UD settings, measurement schema, metrics
    risk_head.safetensors  the linear risk head: weight (1, D), bias (1,)
    encoder.safetensors    only for a fine-tuned (or randomly initialised) encoder
    extra_trees.skops      the measurement model (skops, loaded with an allow-list of types)
    importance.csv         feature, importance, std (permutation importance on validation)
    card.md                data, metrics and intended use
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from panderm.errors import CheckpointError, ConfigError, InputError
from panderm.io import atomic_path, atomic_write_json, atomic_write_text

BUNDLE_FILE = "bundle.json"
FORMAT = "panderm-tbp-bundle"
VERSION = 1
HEAD_FILE, ENCODER_FILE, ML_FILE, IMPORTANCE_FILE, CARD_FILE = (
    "risk_head.safetensors", "encoder.safetensors", "extra_trees.skops", "importance.csv", "card.md")
# skops refuses unknown types; these are the only ones an ExtraTrees file may need.
_TRUSTED_PREFIXES = ("sklearn.", "numpy.")


def demo_bundle_path() -> Path:
    """The bundle shipped inside the package (trained by ``scripts/make_tbp_demo.py``)."""
    return Path(__file__).resolve().parent / "demo" / "bundle"


def demo_patient_path() -> Path:
    """The demo patient folder shipped inside the package."""
    return Path(__file__).resolve().parent / "demo" / "patient_demo"


def linear_risk(features: np.ndarray, weight: np.ndarray, bias: float) -> np.ndarray:
    """P(high risk) from a linear head: ``sigmoid(X w + b)`` in float64."""
    z = features.astype(np.float64) @ np.asarray(weight, np.float64) + bias
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))


@dataclass
class Bundle:
    """A loaded screening bundle."""

    path: Path
    meta: dict
    risk_weight: np.ndarray  # (D,)
    risk_bias: float
    ml: Any | None
    importance: pd.DataFrame | None

    @property
    def thresholds(self) -> dict:
        return self.meta["thresholds"]

    @property
    def ud(self) -> dict:
        return self.meta["ud"]

    @property
    def measurement_source(self) -> str | None:
        return (self.meta.get("ml") or {}).get("measurement_source")

    def risk_scores(self, features: np.ndarray) -> np.ndarray:
        """P(high risk) from the bundle's linear head."""
        return linear_risk(features, self.risk_weight, self.risk_bias)

    def build_encoder(self, model: str | None = None, weights: str | Path | None = None):
        """The encoder the bundle was trained with; refuses any other.

        Raises:
            ConfigError: ``model`` differs from the bundle's, or the weights' sha256 does not match.
        """
        from panderm.models.factory import create_encoder, create_matching_encoder

        enc = self.meta["encoder"]
        if model and model != enc["name"] and model != enc["name"].split(".")[0]:
            raise ConfigError(f"bundle {self.path} was made for encoder {enc['name']}, not {model}",
                              hint="drop --model, or use a bundle trained for that encoder")
        if enc.get("file"):
            if weights is not None:
                raise ConfigError(f"bundle {self.path} carries its own {'fine-tuned' if enc['finetuned'] else ''} "
                                  f"encoder ({enc['file']}); --weights would replace it",
                                  hint="drop --weights")
            return create_encoder(enc["name"], self.path / enc["file"])
        return create_matching_encoder(f"bundle {self.path}", enc, model, weights)


def save_bundle(out: str | Path, *, meta: dict, risk_weight: np.ndarray, risk_bias: float, ml=None,
                importance: pd.DataFrame | None = None, encoder_state: dict | None = None,
                card: str = "") -> Path:
    """Write a bundle folder atomically file by file; ``bundle.json`` last."""
    import skops.io as sio
    import torch
    from safetensors.torch import save

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / BUNDLE_FILE).unlink(missing_ok=True)  # an interrupted rewrite must not look complete
    w = torch.as_tensor(np.asarray(risk_weight, np.float32).reshape(1, -1))
    with atomic_path(out / HEAD_FILE) as tmp:  # bytes, so the file keeps atomic_path's permissions
        tmp.write_bytes(save({"weight": w.contiguous(), "bias": torch.tensor([float(risk_bias)], dtype=torch.float32)}))
    meta = dict(meta, format=FORMAT, version=VERSION)
    meta["encoder"] = dict(meta["encoder"], file=None)
    if encoder_state is not None:
        with atomic_path(out / ENCODER_FILE) as tmp:
            tmp.write_bytes(save({k: v.detach().cpu().contiguous() for k, v in encoder_state.items()}))
        meta["encoder"]["file"] = ENCODER_FILE
    if ml is not None:
        with atomic_path(out / ML_FILE) as tmp:
            sio.dump(ml, str(tmp))
        meta["ml"] = dict(meta["ml"], file=ML_FILE)
    if importance is not None:
        with atomic_path(out / IMPORTANCE_FILE) as tmp:
            importance.to_csv(tmp, index=False)
    if card:
        atomic_write_text(out / CARD_FILE, card)
    atomic_write_json(out / BUNDLE_FILE, meta)
    return out


def _load_skops(path: Path):
    import skops.io as sio

    try:
        untrusted = sio.get_untrusted_types(file=str(path))
        bad = [t for t in untrusted if not t.startswith(_TRUSTED_PREFIXES)]
        if bad:
            raise CheckpointError(f"{path} contains types outside scikit-learn/numpy: {', '.join(bad)}",
                                  hint="the measurement model must be a plain scikit-learn estimator")
        return sio.load(str(path), trusted=untrusted)
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - skops raises many kinds for a damaged file
        raise CheckpointError(f"cannot read the measurement model {path}: {exc}") from None


def load_bundle(path: str | Path | None = None) -> Bundle:
    """Load a bundle folder (default: the bundled demo bundle).

    Raises:
        InputError: Not a bundle folder. CheckpointError: damaged or unsafe files.
    """
    from safetensors.torch import load_file

    path = Path(path) if path is not None else demo_bundle_path()
    meta_path = path / BUNDLE_FILE
    if not meta_path.is_file():
        raise InputError(f"{path} is not a TBP screening bundle (no {BUNDLE_FILE})",
                         hint="train one with `panderm tbp train`, or use --demo")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {meta_path}: {exc}") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path} is not a {FORMAT} file (format: {meta.get('format')!r})")
    if int(meta.get("version", 0)) > VERSION:
        raise CheckpointError(f"{path} has bundle version {meta['version']}; this panderm reads up to {VERSION}",
                              hint="upgrade panderm")
    try:
        head = load_file(str(path / HEAD_FILE))
    except Exception as exc:  # noqa: BLE001 - safetensors raises several kinds for a damaged file
        raise CheckpointError(f"cannot read the risk head {path / HEAD_FILE}: {exc}") from None
    if set(head) != {"weight", "bias"} or head["weight"].shape != (1, meta["encoder"]["dim"]):
        raise CheckpointError(f"{path / HEAD_FILE} must hold weight (1, {meta['encoder']['dim']}) and bias (1,); "
                              f"got {', '.join(f'{k} {tuple(v.shape)}' for k, v in head.items())}")
    ml = None
    if meta.get("ml"):
        ml = _load_skops(path / meta["ml"]["file"])
        if hasattr(ml, "n_jobs"):  # threaded tree averaging adds in a varying order: keep scores reproducible
            ml.n_jobs = 1
    importance = None
    if (path / IMPORTANCE_FILE).is_file():
        importance = pd.read_csv(path / IMPORTANCE_FILE)
    return Bundle(path, meta, head["weight"][0].double().numpy(), float(head["bias"][0]), ml, importance)
