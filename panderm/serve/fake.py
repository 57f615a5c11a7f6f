"""A tiny stand-in classifier with the :mod:`panderm.classifier` interface.

For tests, load benchmarks and UI work without torch or weights: predictions
are a deterministic function of the image colour, and ``cost_ms`` adds a fixed
per-call delay (independent of batch size) to mimic a model call.
"""

from __future__ import annotations

import base64
import io
import time

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


def _thumb(colour) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), tuple(int(c) for c in colour)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class FakeClassifier:
    """Deterministic fake; ``cost_ms`` sleeps once per model call."""

    def __init__(self, cost_ms: float = 0.0):
        self.cost_ms = float(cost_ms)
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
                "device": "cpu", "precision": "fp32", "embed_dim": 6}

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
