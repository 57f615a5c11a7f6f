"""The TBP screening bundle: everything ``screen-tbp`` needs, in one folder, without pickle.

Layout (``bundle.json`` is written last, so its presence marks a complete bundle)::

    bundle.json               encoder identity, risk head (mode, target column), thresholds, UD settings,
                              measurement schema, metrics, and ``files``: the sha256 of every member file below
    risk_head.safetensors     the linear risk head: weight (1, D), bias (1,)
    encoder.safetensors       only for a fine-tuned (or randomly initialised) encoder
    extra_trees.safetensors   the measurement model's tree arrays (rebuilt by :mod:`panderm.tbp.forest`)
    ood.safetensors           the out-of-distribution gate (:mod:`panderm.eval.ood`); its record is ``"ood"``
    importance.csv            feature, importance, std (permutation importance on validation)
    card.md                   data, metrics and intended use

Nothing in a bundle is read with a deserialiser that can run code. Loading checks
``bundle.json`` against :data:`BUNDLE_SCHEMA` before using any key, then every member's
sha256, then reads the arrays. A version-2 bundle (made before the gate existed) still loads,
with :attr:`Bundle.ood_gate` ``None`` and :attr:`Bundle.ood_notice` saying so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from panderm.errors import CheckpointError, ConfigError, InputError
from panderm.eval.ood import OOD_FILE, OOD_SCHEMA, OODGate, check_gate_record, no_gate_notice, read_gate_file
from panderm.io import atomic_path, atomic_write_json, atomic_write_text
from panderm.manifest import read_bundle_json

BUNDLE_FILE = "bundle.json"
FORMAT = "panderm-tbp-bundle"
#: 3: an out-of-distribution gate (``ood``). 2: trees in safetensors, member sha256 in ``files`` (loads
#: without a gate, with a notice). 1 (skops, no ``files``) is refused.
VERSION = 3
OLDEST_VERSION = 2
HEAD_FILE, ENCODER_FILE, ML_FILE, IMPORTANCE_FILE, CARD_FILE = (
    "risk_head.safetensors", "encoder.safetensors", "extra_trees.safetensors", "importance.csv", "card.md")
LEGACY_ML_FILE = "extra_trees.skops"
#: Columns a risk head can have learnt, and what 1 means: sent to dermoscopy (the paper's target), or malignant.
RISK_TARGETS = {"risk_label": "sent to dermoscopy", "label": "malignant"}
RETRAIN_HINT = "retrain the bundle with `panderm tbp train` (this panderm stores the trees as safetensors arrays)"


def _bundle_schema() -> dict:
    from panderm.tbp.forest import MODEL_SCHEMA

    number = {"type": "number"}
    sha = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
    return {
        "type": "object",
        "required": ["format", "version", "encoder", "risk_head", "ud", "ml", "thresholds", "files"],
        "properties": {
            "format": {"const": FORMAT},
            "version": {"type": "integer"},
            "encoder": {"type": "object", "required": ["name", "weights_sha256", "preset", "dim", "finetuned", "file"],
                        "properties": {"name": {"type": "string", "minLength": 1},
                                       "weights_spec": {"type": ["string", "null"]},
                                       "weights_sha256": {"type": ["string", "null"], "pattern": "^[0-9a-f]{64}$"},
                                       "preset": {"type": "string"},
                                       "dim": {"type": "integer", "minimum": 1, "maximum": 65536},
                                       "finetuned": {"type": "boolean"},
                                       "file": {"enum": [ENCODER_FILE, None]}}},
            # target is absent in bundles made before risk_label existed: they learnt the pathology label
            "risk_head": {"type": "object", "required": ["mode"],
                          "properties": {"mode": {"enum": ["probe", "finetune"]},
                                         "target": {"enum": list(RISK_TARGETS)}}},
            "ud": {"type": "object", "required": ["k", "min_lesions", "metric"],
                   "properties": {"k": {"type": "number", "minimum": 0, "maximum": 100},
                                  "min_lesions": {"type": "integer", "minimum": 1, "maximum": 1000000},
                                  "metric": {"enum": ["euclidean", "cosine"]}}},
            # "required"/"properties" apply to objects only, so null (no measurement model) passes them
            "ml": {"type": ["object", "null"],
                   "required": ["columns", "fill_values", "measurement_source", "file", "model"],
                   "properties": {"columns": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                                  "fill_values": {"type": "object", "additionalProperties": number},
                                  "measurement_source": {"enum": ["vectra", "image"]},
                                  "file": {"const": ML_FILE},
                                  "model": MODEL_SCHEMA}},
            "thresholds": {"type": "object", "required": ["risk", "ml", "target_sensitivity"],
                           "properties": {"risk": number, "ml": {"type": ["number", "null"]},
                                          "target_sensitivity": number}},
            "files": {"type": "object", "minProperties": 1, "additionalProperties": sha},
            "ood": OOD_SCHEMA,
            "demo": {"type": "boolean"},
            "created": {"type": ["string", "null"]},
        },
    }


BUNDLE_SCHEMA = _bundle_schema()


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
    ood_gate: OODGate | None = None

    @property
    def thresholds(self) -> dict:
        return self.meta["thresholds"]

    @property
    def ud(self) -> dict:
        return self.meta["ud"]

    @property
    def risk_target(self) -> str:
        """The column the risk head learnt: ``risk_label`` or ``label`` (older bundles: ``label``)."""
        return self.meta["risk_head"].get("target", "label")

    @property
    def measurement_source(self) -> str | None:
        return (self.meta.get("ml") or {}).get("measurement_source")

    @property
    def ood_notice(self) -> str | None:
        """Why this bundle cannot refuse out-of-distribution tiles (``None``: it has a gate)."""
        if self.ood_gate is not None:
            return None
        return no_gate_notice(f"this screening bundle ({self.path.name})",
                              (self.meta.get("training") or {}).get("ood_missing"), self.meta.get("version", 0))

    def ood_precision_note(self, precision: str = "auto", device: str | None = None) -> str | None:
        """A note when screening at ``precision`` on ``device`` differs from the precision the gate was calibrated on."""
        from panderm.eval.ood import precision_note
        from panderm.hardware import default_device, resolve_precision

        return precision_note(self.ood_gate, resolve_precision(precision, device or default_device()))

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
                card: str = "", ood_gate: OODGate | None = None) -> Path:
    """Write a bundle folder atomically file by file; ``bundle.json`` (with every member's sha256) last.

    ``ood_gate``: the out-of-distribution gate (``None``: the bundle has none; ``"ood"`` is null).
    """
    import torch
    from safetensors.torch import save

    from panderm.manifest import FILES_KEY, hash_members
    from panderm.tbp.forest import save_forest

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / BUNDLE_FILE).unlink(missing_ok=True)  # an interrupted rewrite must not look complete
    for stale in (LEGACY_ML_FILE, ENCODER_FILE, ML_FILE, IMPORTANCE_FILE, CARD_FILE, OOD_FILE):
        (out / stale).unlink(missing_ok=True)  # a member of an earlier bundle in this folder must not linger
    w = torch.as_tensor(np.asarray(risk_weight, np.float32).reshape(1, -1))
    with atomic_path(out / HEAD_FILE) as tmp:  # bytes, so the file keeps atomic_path's permissions
        tmp.write_bytes(save({"weight": w.contiguous(), "bias": torch.tensor([float(risk_bias)], dtype=torch.float32)}))
    members = [HEAD_FILE]
    meta = dict(meta, format=FORMAT, version=VERSION)
    meta["encoder"] = dict(meta["encoder"], file=None)
    if encoder_state is not None:
        with atomic_path(out / ENCODER_FILE) as tmp:
            tmp.write_bytes(save({k: v.detach().cpu().contiguous() for k, v in encoder_state.items()}))
        meta["encoder"]["file"] = ENCODER_FILE
        members.append(ENCODER_FILE)
    if ml is not None:
        with atomic_path(out / ML_FILE) as tmp:
            record = save_forest(ml, tmp)
        meta["ml"] = dict(meta["ml"], file=ML_FILE, model=record)
        members.append(ML_FILE)
    if importance is not None:
        with atomic_path(out / IMPORTANCE_FILE) as tmp:
            importance.to_csv(tmp, index=False)
        members.append(IMPORTANCE_FILE)
    if card:
        atomic_write_text(out / CARD_FILE, card)
        members.append(CARD_FILE)
    meta["ood"] = None
    if ood_gate is not None:
        with atomic_path(out / OOD_FILE) as tmp:
            tmp.write_bytes(save(ood_gate.to_tensors()))
        meta["ood"] = dict(ood_gate.info)
        members.append(OOD_FILE)
    meta[FILES_KEY] = hash_members(out, members)
    atomic_write_json(out / BUNDLE_FILE, meta)
    return out


#: The hint when a folder is not a bundle; callers with more options (screen-tbp: its demo bundle) pass their own.
NOT_A_BUNDLE_HINT = "train one with `panderm tbp train`"


def _read_meta(path: Path, hint: str = NOT_A_BUNDLE_HINT) -> dict:
    """``bundle.json``, refusing older (skops) bundles and anything that does not match the schema."""
    from panderm.manifest import FILES_KEY, validate_json

    meta_path = path / BUNDLE_FILE
    if not meta_path.is_file():
        raise InputError(f"{path} is not a TBP screening bundle (no {BUNDLE_FILE})",
                         hint=hint)
    if (path / LEGACY_ML_FILE).exists():
        raise CheckpointError(f"bundle {path} holds {path / LEGACY_ML_FILE}, a measurement model in the skops "
                              "format, which panderm no longer reads (loading it could run code)", hint=RETRAIN_HINT)
    meta = read_bundle_json(meta_path)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(f"{meta_path} is not a {FORMAT} file (format: {found!r})")
    version = meta.get("version")
    if isinstance(version, int) and version > VERSION:
        raise CheckpointError(f"{path} has bundle version {version}; this panderm reads up to {VERSION}",
                              hint="upgrade panderm")
    if FILES_KEY not in meta or not isinstance(version, int) or version < OLDEST_VERSION:
        raise CheckpointError(f"bundle {path} was written by an older panderm (version {version!r}, no sha256 "
                              "record of its files)", hint=RETRAIN_HINT)
    validate_json(meta, BUNDLE_SCHEMA, where=str(meta_path))
    check_gate_record(meta, meta_path, hint=RETRAIN_HINT)  # never run a gated format ungated
    return meta


#: What ``tbp train`` writes beside the bundle; never read when the bundle is loaded.
TRAINING_SIDE_FILES = ("metrics.json", "validation_lesions.csv", "skipped.csv")


def _check_members(path: Path, meta: dict) -> None:
    from panderm.manifest import verify_members

    required = [HEAD_FILE] + ([ML_FILE] if meta["ml"] else []) + ([ENCODER_FILE] if meta["encoder"]["file"] else []) \
        + ([OOD_FILE] if meta.get("ood") else [])
    verify_members(path, meta, owner=f"bundle {path}", meta_file=BUNDLE_FILE, required=required,
                   side_files=TRAINING_SIDE_FILES)
    if meta["ml"] and len(meta["ml"]["columns"]) != meta["ml"]["model"]["n_features"]:
        raise CheckpointError(f"{path / BUNDLE_FILE}: ml/columns names {len(meta['ml']['columns'])} columns but "
                              f"the model has {meta['ml']['model']['n_features']} features")


def _load_head(path: Path, dim: int) -> tuple[np.ndarray, float]:
    from safetensors.torch import load_file

    try:
        head = load_file(str(path / HEAD_FILE))
    except Exception as exc:  # noqa: BLE001 - safetensors raises several kinds for a damaged file
        raise CheckpointError(f"cannot read the risk head {path / HEAD_FILE}: not a safetensors file ({exc})",
                              hint=RETRAIN_HINT) from None
    if set(head) != {"weight", "bias"} or head["weight"].shape != (1, dim) or head["bias"].shape != (1,):
        raise CheckpointError(f"{path / HEAD_FILE} must hold weight (1, {dim}) and bias (1,); "
                              f"got {', '.join(f'{k} {tuple(v.shape)}' for k, v in head.items())}")
    return head["weight"][0].double().numpy(), float(head["bias"][0])


def _load_importance(path: Path) -> pd.DataFrame | None:
    file = path / IMPORTANCE_FILE
    if not file.is_file():
        return None
    try:
        imp = pd.read_csv(file)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"cannot read {file}: {exc}") from None
    if not {"feature", "importance", "std"} <= set(imp.columns):
        raise CheckpointError(f"{file} must have the columns feature, importance, std")
    return imp


def load_bundle(path: str | Path | None = None, *, not_a_bundle_hint: str = NOT_A_BUNDLE_HINT) -> Bundle:
    """Load a bundle folder (default: the bundled demo bundle).

    ``not_a_bundle_hint`` is the hint of the error for a folder without ``bundle.json`` (the caller
    knows what else its user can do).

    Order: ``bundle.json`` against the schema, every member's sha256, then the arrays.

    Raises:
        InputError: Not a bundle folder. CheckpointError: an older (skops) bundle, a missing or
            invalid key, a changed member file, or damaged arrays.
    """
    from panderm.tbp.forest import load_forest

    path = Path(path) if path is not None else demo_bundle_path()
    meta = _read_meta(path, not_a_bundle_hint)
    _check_members(path, meta)
    weight, bias = _load_head(path, meta["encoder"]["dim"])
    ml = load_forest(path / ML_FILE, meta["ml"]["model"]) if meta["ml"] else None
    return Bundle(path, meta, weight, bias, ml, _load_importance(path), _load_gate(path, meta))


def _load_gate(path: Path, meta: dict) -> OODGate | None:
    """The bundle's out-of-distribution gate (``None``: it has none; :attr:`Bundle.ood_notice` says why)."""
    return read_gate_file(path, meta.get("ood"), meta["encoder"]["dim"], meta_file=BUNDLE_FILE, hint=RETRAIN_HINT)
