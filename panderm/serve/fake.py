"""A tiny stand-in classifier with the :mod:`panderm.classifier` interface.

For tests, load benchmarks and UI work without torch or weights: predictions
are a deterministic function of the image colour, and ``cost_ms`` adds a fixed
per-call delay (independent of batch size) to mimic a model call. With
``ood_threshold`` it also has a stand-in out-of-distribution gate, so the
server's "not assessable" answer can be exercised without a real bundle.
"""

from __future__ import annotations

import base64
import io
import time
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
DESCRIPTIONS = {
    "akiec": "Actinic keratosis / intraepithelial carcinoma",
    "bcc": "Basal cell carcinoma",
    "bkl": "Benign keratosis-like lesion",
    "df": "Dermatofibroma",
    "mel": "Melanoma",
    "nv": "Melanocytic naevus",
    "vasc": "Vascular lesion",
}


# Colour statistics (mean RGB, std RGB over a 16x16 thumbnail, 0..1) of 200 HAM10000 training
# images: the fake gate's "training distribution".
_REF_MEAN = np.array([0.765, 0.561, 0.591, 0.074, 0.102, 0.116])
_REF_STD = np.array([0.084, 0.086, 0.090, 0.043, 0.043, 0.050])
FAKE_OOD_THRESHOLD = 2.5
"""A threshold for the fake gate that passes about 91% of held-out HAM10000 images and flags a cat photo."""


@dataclass
class FakeGate:
    """Stand-in for :class:`panderm.eval.ood.OODGate`: the largest z-score of the fake's colour features."""

    threshold: float
    info: dict = field(default_factory=dict)

    def score(self, feats) -> np.ndarray:
        """``(B,)`` largest absolute z-score of each feature row against dermoscopy-like colours."""
        return np.abs((np.atleast_2d(np.asarray(feats, np.float64)) - _REF_MEAN) / _REF_STD).max(axis=1)


def _thumb(colour) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), tuple(int(c) for c in colour)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class FakeClassifier:
    """Deterministic fake; ``cost_ms`` sleeps once per model call.

    ``ood_threshold``: give it a :class:`FakeGate` with that threshold (e.g.
    :data:`FAKE_OOD_THRESHOLD`); ``None`` (default): no gate, as a bundle built before gates.
    """

    def __init__(self, cost_ms: float = 0.0, ood_threshold: float | None = None):
        self.cost_ms = float(cost_ms)
        self.ood_gate = None if ood_threshold is None else FakeGate(
            float(ood_threshold), {"method": "fake-colour-z", "threshold": float(ood_threshold), "pass_rate": 0.91,
                                   "reference": "dermoscopy-like colours (fake gate)"})
        self.classes = list(CLASSES)
        self.descriptions = dict(DESCRIPTIONS)
        self.malignant = {"akiec", "bcc", "mel"}
        self.meta = {"name": "fake-classifier", "encoder": "none"}
        self.card = "# Fake classifier\n\nA deterministic stand-in for tests. **Not a model.**\n"
        self.calls = 0
        self._proj = np.random.default_rng(0).normal(size=(6, len(CLASSES)))
        self._bank = [(c, DESCRIPTIONS[c], _thumb(((i * 37) % 255, (i * 91) % 255, (i * 53) % 255)))
                      for i, c in enumerate(CLASSES)]

    def model_info(self) -> dict:
        return {"name": "fake-classifier", "classes": self.classes, "n_classes": len(self.classes),
                "device": "cpu", "precision": "fp32", "embed_dim": 6,
                "ood_gate": None if self.ood_gate is None else dict(self.ood_gate.info)}

    def _cost(self):
        self.calls += 1
        if self.cost_ms:
            time.sleep(self.cost_ms / 1000.0)

    def _features(self, images) -> np.ndarray:
        feats = []
        for img in images:
            small = np.asarray(img.convert("RGB").resize((16, 16)), dtype=np.float64) / 255.0
            feats.append(np.concatenate([small.mean((0, 1)), small.std((0, 1))]))
        return np.stack(feats)

    def embed(self, images) -> np.ndarray:
        self._cost()
        return self._features(images)

    def ood_scores(self, feats) -> np.ndarray | None:
        """``(B,)`` out-of-distribution scores (``None`` without a gate)."""
        return None if self.ood_gate is None else self.ood_gate.score(feats)

    def predict_features(self, feats) -> np.ndarray:
        logits = (np.asarray(feats) - 0.4) @ self._proj * 4.0
        e = np.exp(logits - logits.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    def predict_proba(self, images) -> np.ndarray:
        self._cost()
        return self.predict_features(self._features(images))

    def neighbours(self, feats, k: int = 5):
        out = []
        for f in np.asarray(feats):
            row = []
            for j, (label, desc, thumb) in enumerate(self._bank[:k]):
                sim = float(1.0 / (1.0 + abs(f.sum() - j * 0.3)))
                row.append({"label": label, "description": desc, "image": f"fake/{label}.jpg",
                            "thumbnail": thumb, "similarity": round(sim, 4)})
            out.append(sorted(row, key=lambda r: -r["similarity"]))
        return out
