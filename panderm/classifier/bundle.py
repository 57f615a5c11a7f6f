"""The classifier bundle: a PanDerm encoder + linear head, calibrated, with a reference set, without pickle.

Layout (``classifier.json`` is written last, so its presence marks a complete bundle)::

    classifier.json          format, encoder identity, head kind, classes, descriptions, malignant classes,
                             temperature, test metrics (with 95% CIs), data, created, demo
    head.safetensors         probe head: weight (K, D), bias (K,)
    model.safetensors        fine-tuned head: the whole classifier state (encoder, fc_norm, head)
    reference.safetensors    reference-set features (M, D) float32, L2-normalised, and label indices (M,)
    reference.json           per reference row: label, image name, thumbnail (base64 JPEG ≤ 96 px or null)
    ood.safetensors          the out-of-distribution gate (:mod:`panderm.eval.ood`); its record is ``"ood"``
    card.md                  data, metrics, intended use

``classifier.json`` records the sha256 of every member file (``"files"``). Loading
checks ``classifier.json`` against a JSON schema before using any key
(:mod:`panderm.classifier.schema`), then every member's sha256 (a changed file is
named), reads only JSON and safetensors, checks shapes strictly, and rebuilds the
encoder the head was fitted on (its weights' sha256, freshly hashed, must match, as
for the TBP bundle: :func:`panderm.models.factory.create_matching_encoder`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from panderm.errors import CheckpointError, ConfigError, InputError
from panderm.eval.ood import (
    OOD_FILE,
    OODGate,
    check_gate_record,
    gate_summary,
    gate_verdict,
    no_gate_notice,
    precision_note,
    read_gate_file,
)
from panderm.hardware import torch_dtype
from panderm.manifest import read_bundle_json

META_FILE = "classifier.json"
FORMAT = "panderm-classifier"
#: 3: an out-of-distribution gate (``ood``). 2: ``files`` records each member's sha256; version-2
#: bundles load with a notice that they have no gate, version-1 bundles are refused: rebuild them.
VERSION = 3
OLDEST_VERSION = 2
HEAD_FILE, MODEL_FILE, REF_FILE, REF_JSON, CARD_FILE = (
    "head.safetensors", "model.safetensors", "reference.safetensors", "reference.json", "card.md")
HEAD_KINDS = ("probe", "finetune")
THUMB_PX = 96

#: Clinical names of the HAM10000 / ISIC diagnosis codes (keys lower case).
CLINICAL_NAMES: dict[str, str] = {
    "akiec": "actinic keratosis / intraepithelial carcinoma (Bowen's disease)",
    "ak": "actinic keratosis",
    "bcc": "basal cell carcinoma",
    "bkl": "benign keratosis (solar lentigo / seborrhoeic keratosis / lichen planus-like keratosis)",
    "df": "dermatofibroma",
    "mel": "melanoma",
    "nv": "melanocytic naevus",
    "vasc": "vascular lesion",
    "scc": "squamous cell carcinoma",
    "sk": "seborrhoeic keratosis",
    "lentigo": "solar lentigo",
    "unk": "unknown / other",
    "benign": "benign",
    "malignant": "malignant",
}
#: Classes treated as malignant unless ``--descriptions`` says otherwise (lower case).
DEFAULT_MALIGNANT = frozenset({"mel", "bcc", "akiec", "scc"})
BINARY_DESCRIPTIONS = {"0": "benign", "1": "malignant"}


def demo_classifier_path() -> Path:
    """The classifier shipped inside the package (built by ``scripts/make_demo_classifier.py``)."""
    return Path(__file__).resolve().parent / "demo"


def default_descriptions(classes: list[str], binary: bool = False) -> tuple[dict[str, str], set[str]]:
    """Clinical names (case-insensitive lookup; unknown codes keep their name) and the malignant classes."""
    if binary:
        return {c: BINARY_DESCRIPTIONS.get(c, c) for c in classes}, {c for c in classes if c == "1"}
    desc = {c: CLINICAL_NAMES.get(c.strip().lower(), c) for c in classes}
    return desc, {c for c in classes if c.strip().lower() in DEFAULT_MALIGNANT}


def read_descriptions(path: str | Path, classes: list[str], descriptions: dict[str, str],
                      malignant: set[str]) -> tuple[dict[str, str], set[str]]:
    """Override ``descriptions``/``malignant`` from a CSV ``class,description[,malignant]`` (case-insensitive classes)."""
    import pandas as pd

    path = Path(path)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:  # noqa: BLE001 - any unreadable CSV
        raise InputError(f"cannot read descriptions CSV {path}: {exc}") from None
    cols = {c.strip().lower(): c for c in df.columns}
    if "class" not in cols or "description" not in cols:
        raise InputError(f"{path} needs columns class,description[,malignant] (has: {', '.join(df.columns)})")
    by_lower = {c.lower(): c for c in classes}
    desc, mal = dict(descriptions), set(malignant)
    unknown = []
    for _, row in df.iterrows():
        key = str(row[cols["class"]]).strip()
        cls = by_lower.get(key.lower())
        if cls is None:
            unknown.append(key)
            continue
        text = str(row[cols["description"]]).strip()
        if text:
            desc[cls] = text
        if "malignant" in cols:
            flag = str(row[cols["malignant"]]).strip().lower()
            if flag in ("1", "true", "yes", "y"):
                mal.add(cls)
            elif flag in ("0", "false", "no", "n"):
                mal.discard(cls)
            elif flag:
                raise InputError(f"{path}: malignant must be 0/1/true/false, got {flag!r} for class {key}")
    if unknown:
        raise InputError(f"{path} describes class(es) {', '.join(unknown)} that the classifier does not have",
                         hint=f"classes: {', '.join(classes)}")
    return desc, mal


def softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(logits: np.ndarray, y: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of integer labels ``y`` under ``softmax(logits / T)``."""
    z = np.asarray(logits, np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(y)), np.asarray(y, int)].mean())


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """Temperature T > 0 minimising the NLL of ``softmax(logits / T)`` (bounded 1-D search on log T)."""
    from scipy.optimize import minimize_scalar

    logits, y = np.asarray(logits, np.float64), np.asarray(y, int)
    if not len(y):
        return 1.0
    res = minimize_scalar(lambda t: nll(logits, y, float(np.exp(t))), bounds=(np.log(0.02), np.log(50.0)),
                          method="bounded", options={"xatol": 1e-5})
    t = float(np.exp(res.x))
    return t if nll(logits, y, t) <= nll(logits, y, 1.0) else 1.0


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class Classifier:
    """A loaded classifier bundle (see the module docstring)."""

    def __init__(self, path: Path, meta: dict, weight: np.ndarray, bias: np.ndarray, net, ref_feats: np.ndarray,
                 ref_labels: np.ndarray, ref_rows: list[dict], card: str, device: str, precision: str,
                 ood_gate: OODGate | None = None):
        self.path, self.meta, self.card = path, meta, card
        self.ood_gate = ood_gate
        self.classes: list[str] = list(meta["classes"])
        self.descriptions: dict[str, str] = dict(meta.get("descriptions") or {})
        self.malignant: set[str] = set(meta.get("malignant") or [])
        self.temperature: float = float(meta.get("temperature", 1.0))
        self.weight, self.bias = weight.astype(np.float64), bias.astype(np.float64)
        self._net, self.device, self.precision = net, device, precision
        self._ref_feats, self._ref_labels, self._ref_rows = ref_feats, ref_labels, ref_rows
        self._transform = None

    def __repr__(self) -> str:
        return (f"Classifier({self.meta['encoder']['name']}, {self.meta['head']['kind']}, "
                f"classes={self.classes}, T={self.temperature:.3g})")

    def model_info(self) -> dict:
        """Small JSON-able summary (for ``panderm classifier info`` and the server)."""
        enc = self.meta["encoder"]
        return {"name": self.meta.get("name") or self.path.name,
                "encoder": {"name": enc["name"], "weights_sha256": enc.get("weights_sha256"),
                            "preset": enc.get("preset"), "dim": enc.get("dim")},
                "head": self.meta["head"]["kind"], "classes": self.classes, "descriptions": self.descriptions,
                "malignant": sorted(self.malignant), "temperature": self.temperature,
                "metrics": self.meta.get("metrics"), "reference_size": len(self._ref_labels),
                "demo": bool(self.meta.get("demo")), "created": self.meta.get("created"),
                "ood_gate": gate_summary(self.ood_gate),
                "ood_notice": self.ood_notice}

    @property
    def ood_notice(self) -> str | None:
        """Why this classifier cannot refuse out-of-distribution images (``None``: it has a gate)."""
        if self.ood_gate is not None:
            return None
        return no_gate_notice(f"classifier {self.meta.get('name') or self.path.name}",
                              (self.meta.get("data") or {}).get("ood_missing"), self.meta.get("version", 0))

    @property
    def ood_precision_note(self) -> str | None:
        """A note when this classifier computes features in another precision than its gate was calibrated on."""
        return precision_note(self.ood_gate, self.precision)

    def ood_scores(self, feats: np.ndarray) -> np.ndarray | None:
        """``(B,)`` out-of-distribution scores of feature rows (``None`` without a gate)."""
        return None if self.ood_gate is None else self.ood_gate.score(feats)

    def assess(self, feats: np.ndarray, qualities=None) -> list[dict]:
        """The ``ood`` verdict of each feature row (:func:`panderm.eval.ood.gate_verdict`), with its quality report."""
        scores = self.ood_scores(feats)
        qualities = list(qualities) if qualities is not None else [None] * len(feats)
        return [gate_verdict(None if scores is None else float(scores[i]), self.ood_gate, qualities[i])
                for i in range(len(feats))]

    # ------------------------------------------------------------------ inference
    def embed(self, images) -> np.ndarray:
        """``(B, D)`` float32 features of PIL images (the encoder's preset transform, bf16 where fast)."""
        import torch

        from panderm.data.images import to_rgb
        from panderm.data.transforms import build_transform

        if self._transform is None:
            self._transform = build_transform(self.meta["encoder"]["preset"])
        images = list(images)
        if not images:
            return np.zeros((0, int(self.meta["encoder"]["dim"])), np.float32)
        x = torch.stack([self._transform(to_rgb(im)) for im in images]).to(self.device)
        if torch_dtype(self.precision) is not None:
            x = x.to(torch_dtype(self.precision))
        with torch.inference_mode():
            return self._net.forward_features(x).float().cpu().numpy().astype(np.float32)

    def logits(self, feats: np.ndarray) -> np.ndarray:
        """Uncalibrated logits ``X·Wᵀ + b`` (B, K)."""
        return np.asarray(feats, np.float64) @ self.weight.T + self.bias

    def predict_features(self, feats: np.ndarray) -> np.ndarray:
        """``(B, K)`` calibrated probabilities, ``softmax(logits / T)``, from features."""
        feats = np.asarray(feats)
        if feats.ndim != 2 or feats.shape[1] != self.weight.shape[1]:
            raise InputError(f"features must be (B, {self.weight.shape[1]}), got {feats.shape}")
        return softmax(self.logits(feats) / self.temperature)

    def predict_proba(self, images) -> np.ndarray:
        """``(B, K)`` calibrated probabilities of PIL images (rows sum to 1)."""
        return self.predict_features(self.embed(images))

    def neighbours(self, feats: np.ndarray, k: int = 5) -> list[list[dict]]:
        """The ``k`` most similar reference images (cosine) of each feature row."""
        feats = np.atleast_2d(np.asarray(feats, np.float32))
        if not len(self._ref_labels) or k <= 0:
            return [[] for _ in range(len(feats))]
        sims = l2_normalise(feats) @ self._ref_feats.T
        k = min(int(k), sims.shape[1])
        out = []
        for row in sims:
            top = np.argsort(-row, kind="stable")[:k]
            items = []
            for j in top:
                ref = self._ref_rows[int(j)]
                label = self.classes[int(self._ref_labels[j])]
                thumb = ref.get("thumbnail")
                items.append({"label": label, "description": self.descriptions.get(label, label),
                              "image": ref.get("image"),
                              "thumbnail": f"data:image/jpeg;base64,{thumb}" if thumb else None,
                              "similarity": float(row[j])})
            out.append(items)
        return out


# ---------------------------------------------------------------------- writing
def save_classifier(out: str | Path, *, meta: dict, weight: np.ndarray | None = None, bias: np.ndarray | None = None,
                    model_state: dict | None = None, ref_feats: np.ndarray, ref_labels: np.ndarray,
                    ref_rows: list[dict], card: str, ood_gate: OODGate | None = None) -> Path:
    """Write a bundle file by file; ``classifier.json`` (with every member's sha256) last.

    A stale ``classifier.json`` is removed first, so an interrupted rewrite never looks complete.
    """
    import torch
    from safetensors.torch import save

    from panderm.io import atomic_path, atomic_write_json, atomic_write_text, make_out_dir
    from panderm.manifest import FILES_KEY, hash_members

    out = Path(out)
    make_out_dir(out)
    (out / META_FILE).unlink(missing_ok=True)
    meta = dict(meta, format=FORMAT, version=VERSION)
    meta["encoder"] = dict(meta["encoder"], file=None)
    meta["encoder"].pop("file_sha256", None)  # the files record covers it
    if meta["head"]["kind"] == "probe":
        (out / MODEL_FILE).unlink(missing_ok=True)
        head_file = HEAD_FILE
        tensors = {"weight": torch.as_tensor(np.asarray(weight, np.float32)).contiguous(),
                   "bias": torch.as_tensor(np.asarray(bias, np.float32)).contiguous()}
    else:
        (out / HEAD_FILE).unlink(missing_ok=True)
        head_file = meta["encoder"]["file"] = MODEL_FILE
        tensors = {k: v.detach().cpu().contiguous() for k, v in model_state.items()}
    with atomic_path(out / head_file) as tmp:
        tmp.write_bytes(save(tensors))
    with atomic_path(out / REF_FILE) as tmp:
        tmp.write_bytes(save({"features": torch.as_tensor(l2_normalise(ref_feats).reshape(len(ref_rows), -1)),
                              "labels": torch.as_tensor(np.asarray(ref_labels, np.int64))}))
    atomic_write_json(out / REF_JSON, ref_rows)
    atomic_write_text(out / CARD_FILE, card)
    (out / OOD_FILE).unlink(missing_ok=True)
    meta["ood"] = None
    if ood_gate is not None:
        with atomic_path(out / OOD_FILE) as tmp:
            tmp.write_bytes(save(ood_gate.to_tensors()))
        meta["ood"] = dict(ood_gate.info)
    meta[FILES_KEY] = hash_members(out, member_files(meta["head"]["kind"], ood_gate is not None))
    atomic_write_json(out / META_FILE, meta)
    return out


def member_files(kind: str, ood: bool = False) -> tuple[str, ...]:
    """The member files a bundle with head ``kind`` (``probe``/``finetune``), and a gate if ``ood``, must list."""
    return (HEAD_FILE if kind == "probe" else MODEL_FILE, REF_FILE, REF_JSON, CARD_FILE) + ((OOD_FILE,) if ood else ())


# ---------------------------------------------------------------------- loading
def _safetensors(path: Path, what: str) -> dict:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - safetensors raises several kinds for a damaged file
        raise CheckpointError(f"cannot read the {what} {path}: {str(exc)[:200]}",
                              hint="it is not a safetensors file; rebuild the bundle") from None


def read_meta(path: Path) -> dict:
    """``classifier.json`` of bundle ``path``: schema-checked, and every member file's sha256 verified.

    Raises:
        InputError: no ``classifier.json``. CheckpointError: not a classifier, a newer or
            older format, a missing or invalid key (named), or a changed member file (named).
    """
    from panderm.classifier.schema import CLASSIFIER_SCHEMA
    from panderm.manifest import FILES_KEY, validate_json, verify_members

    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise InputError(f"{path} is not a classifier bundle (no {META_FILE})",
                         hint="build one with `panderm classifier build`")
    meta = read_bundle_json(meta_path)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path} is not a {FORMAT} file (format: "
                              f"{meta.get('format') if isinstance(meta, dict) else None!r})")
    version = meta.get("version")
    if isinstance(version, int) and version > VERSION:
        raise CheckpointError(f"{path} has classifier version {version}; this panderm reads up to {VERSION}",
                              hint="upgrade panderm")
    if FILES_KEY not in meta or (isinstance(version, int) and version < OLDEST_VERSION):
        raise CheckpointError(f"classifier {path} records no sha256 for its member files "
                              f"(version {version}, made by an older panderm)",
                              hint="rebuild it with `panderm classifier build` from this version of panderm")
    validate_json(meta, CLASSIFIER_SCHEMA, where=str(meta_path))
    check_gate_record(meta, meta_path, hint="rebuild it with `panderm classifier build`")  # never run ungated
    verify_members(path, meta, owner=f"classifier {path}", meta_file=META_FILE,
                   required=member_files(meta["head"]["kind"], bool(meta.get("ood"))))
    return meta


def _reference_rows(path: Path) -> list[dict]:
    from panderm.classifier.schema import REFERENCE_SCHEMA
    from panderm.manifest import validate_json

    rows = read_bundle_json(path / REF_JSON)
    validate_json(rows, REFERENCE_SCHEMA, where=str(path / REF_JSON))
    return rows


def _card(path: Path) -> str:
    try:
        return (path / CARD_FILE).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"cannot read {path / CARD_FILE}: {exc}") from None


def _probe_head(path: Path, k: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    head = _safetensors(path / HEAD_FILE, "head")
    if set(head) != {"weight", "bias"} or tuple(head["weight"].shape) != (k, dim) \
            or tuple(head["bias"].shape) != (k,):
        raise CheckpointError(f"{path / HEAD_FILE} must hold weight ({k}, {dim}) and bias ({k},); got "
                              f"{', '.join(f'{n} {tuple(v.shape)}' for n, v in head.items())}")
    return head["weight"].double().numpy(), head["bias"].double().numpy()


def _finetuned_net(path: Path, enc: dict, k: int, weights):
    import torch

    from panderm.finetune.model import build_classifier

    if weights is not None:
        raise ConfigError(f"classifier {path} carries its own fine-tuned encoder ({MODEL_FILE}); "
                          "--weights would replace it", hint="drop --weights")
    file = path / MODEL_FILE
    state = _safetensors(file, "fine-tuned model")
    net = build_classifier(enc["name"], None, k, drop_path=0.0, rel_pos_bias=bool(enc.get("rel_pos_bias")),
                           load=False)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"cannot load {file} into {enc['name']}: {str(exc).splitlines()[0]}") from None
    head = net.head
    return net.eval(), head.weight.detach().to(torch.float64).numpy(), head.bias.detach().to(torch.float64).numpy()


def _reference_set(path: Path, dim: int, k: int) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    ref = _safetensors(path / REF_FILE, "reference set")
    rows = _reference_rows(path)
    feats, labels = ref.get("features"), ref.get("labels")
    if set(ref) != {"features", "labels"} or feats.ndim != 2 or (len(feats) and feats.shape[1] != dim) \
            or labels.shape != (len(feats),) or len(rows) != len(feats):
        raise CheckpointError(f"{path / REF_FILE} / {REF_JSON} are inconsistent with a {dim}-d, "
                              f"{k}-class classifier")
    labels = labels.numpy()
    if len(labels) and (labels.min() < 0 or labels.max() >= k):
        raise CheckpointError(f"{path / REF_FILE} has label indices outside 0..{k - 1}")
    return feats.float().numpy(), labels, rows


def load_classifier(path: str | Path | None = None, *, weights: str | Path | None = None, device: str | None = None,
                    precision: str = "auto") -> Classifier:
    """Load a classifier bundle (``None``: the bundled demo classifier).

    Args:
        path: Bundle folder.
        weights: Encoder weights to use instead of the recorded spec (probe heads; sha256 must match).
        device: ``cpu``, ``cuda`` … (default: CUDA when available).
        precision: ``fp32``, ``bf16`` or ``auto`` (bf16 where the hardware is fast at it).

    Raises:
        InputError: not a bundle. CheckpointError: damaged, changed or foreign files.
        ConfigError: other encoder weights.
    """
    from panderm.hardware import default_device, resolve_precision
    from panderm.models.factory import create_matching_encoder

    path = Path(path) if path is not None else demo_classifier_path()
    meta = read_meta(path)
    enc, kind, classes = meta["encoder"], meta["head"]["kind"], list(meta["classes"])
    dim, k = enc["dim"], len(classes)
    device = device or default_device()
    precision = resolve_precision(precision, device)
    if kind == "probe":
        weight, bias = _probe_head(path, k, dim)
        net = create_matching_encoder(f"classifier {path}", enc, None, weights)
    else:
        net, weight, bias = _finetuned_net(path, enc, k, weights)
        if weight.shape != (k, dim):
            raise CheckpointError(f"{path / MODEL_FILE} has a head of shape {weight.shape}, expected {(k, dim)}")
    net = net.eval().to(device)
    if torch_dtype(precision) is not None:
        net = net.to(torch_dtype(precision))
    feats, labels, rows = _reference_set(path, dim, k)
    gate = _ood_gate(path, meta, dim)
    return Classifier(path, meta, weight, bias, net, feats, labels, rows, _card(path), device, precision, gate)


def load_bundle_gate(path: str | Path) -> tuple[OODGate | None, dict]:
    """A classifier bundle's out-of-distribution gate (``None``: it has none) and its encoder record.

    The bundle is verified as :func:`load_classifier` does (schema, member hashes), but no encoder is built.
    """
    path = Path(path)
    meta = read_meta(path)
    return _ood_gate(path, meta, int(meta["encoder"]["dim"])), dict(meta["encoder"])


def _ood_gate(path: Path, meta: dict, dim: int) -> OODGate | None:
    """The bundle's out-of-distribution gate (``None``: it has none; :attr:`Classifier.ood_notice` says why)."""
    return read_gate_file(path, meta.get("ood"), dim, meta_file=META_FILE,
                          hint="rebuild it with `panderm classifier build`")
