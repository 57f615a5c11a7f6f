"""Out-of-distribution gate on encoder features (issue 17, part 2).

The score of an image is its distance to the nearest training image after
whitening the features with a shrunk covariance (Ledoit–Wolf): the 1-nearest-
neighbour distance in Mahalanobis space, as a root-mean-square per feature
dimension, so 1.0 is "one standard deviation away in every direction". It was
chosen by measurement against class-conditional Mahalanobis, plain cosine kNN
(k = 1 … 50), the energy score and the maximum softmax probability
(``docs/image-quality.md``, ``benchmarks/ood.py``): on the demo classifier it
refuses as few held-out dermoscopic images as Mahalanobis and more
pathology tiles and photos; energy and softmax scores could not tell a cat from a
naevus at all.

The threshold is the ``pass_rate`` (default 95%) quantile of the scores of
in-distribution validation images, so that share of them passes. A gate is stored
in its bundle as ``ood.safetensors`` (the whitened reference rows, the mean and
the whitening matrix) plus an ``"ood"`` record in the bundle's JSON; both are
covered by the bundle's member hashes.

Eval layer: numpy, scikit-learn, the image-quality gate of the core.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from panderm.errors import CheckpointError, ConfigError, InputError

OOD_FILE = "ood.safetensors"
METHOD = "whitened-1nn"
DEFAULT_PASS_RATE = 0.95
MIN_FIT_ROWS = 20
"""Fewer training rows than this fit no gate (the bundle is marked as having none)."""
MIN_CALIBRATION_ROWS = 20
"""A threshold set on fewer rows than this would be noise: no gate either."""
MAX_THRESHOLD = 1e6
"""A stored threshold above this (scores are O(1)) would let everything pass: refused on load."""
STORED_DTYPES = {"mean": "float32", "whitener": "float32", "reference": "float16"}
MAX_REFERENCE_ROWS = 10_000
"""At most this many training rows are kept as the reference (a seeded sample; float16 on disk)."""
HOLDOUT_FRACTION = 0.2
"""Share of the training rows held out for calibration when there are no validation rows."""

#: The ``"ood"`` record of a bundle's JSON (``null``: the bundle has no gate, with the reason in ``data``).
OOD_SCHEMA = {
    "type": ["object", "null"],
    "required": ["method", "file", "threshold", "pass_rate", "dim", "n_reference", "n_calibration"],
    "properties": {
        "method": {"const": METHOD},
        "file": {"const": OOD_FILE},
        "threshold": {"type": "number", "minimum": 0, "maximum": MAX_THRESHOLD},
        "pass_rate": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "dim": {"type": "integer", "minimum": 1, "maximum": 65536},
        "n_reference": {"type": "integer", "minimum": 1, "maximum": MAX_REFERENCE_ROWS},
        "n_calibration": {"type": "integer", "minimum": 1},
        "calibration_source": {"enum": ["validation", "held-out training rows"]},
        "shrinkage": {"type": "number", "minimum": 0, "maximum": 1},
        "reference": {"type": ["string", "null"], "maxLength": 256},
        "precision": {"type": ["string", "null"], "maxLength": 16},
    },
}


@dataclass
class OODGate:
    """A fitted out-of-distribution gate: ``score(features) > threshold`` means out of distribution.

    Attributes:
        mean: ``(D,)`` mean of the training features.
        whitener: ``(D, D)`` lower-triangular ``L`` with ``L Lᵀ`` the shrunk precision matrix.
        reference: ``(M, D)`` whitened training rows.
        threshold: Largest score that passes.
        info: The JSON record (method, pass rate, counts, what the reference set is).
    """

    mean: np.ndarray
    whitener: np.ndarray
    reference: np.ndarray
    threshold: float
    info: dict = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def whiten(self, feats: np.ndarray) -> np.ndarray:
        """Whitened float64 rows (float64 so that huge feature values overflow to inf, never to NaN silently)."""
        with np.errstate(over="ignore", invalid="ignore"):
            return (np.asarray(feats, np.float64) - self.mean) @ self.whitener

    def _reference64(self) -> tuple[np.ndarray, np.ndarray]:
        """The reference rows in float64 and their squared norms, computed once."""
        cache = getattr(self, "_ref_cache", None)
        if cache is None or cache[0] is not self.reference:  # rebuilt when the reference array is replaced
            ref = np.asarray(self.reference, np.float64)
            self._ref_cache = cache = (self.reference, ref, (ref ** 2).sum(1))
        return cache[1], cache[2]

    def score(self, feats: np.ndarray, batch: int = 256) -> np.ndarray:
        """``(B,)`` RMS whitened distance of each feature row to its nearest reference row (``inf``: not scorable)."""
        feats = np.atleast_2d(np.asarray(feats))
        if feats.ndim != 2 or feats.shape[1] != self.dim:
            raise ConfigError(f"the OOD gate expects ({self.dim},)-d features, got {feats.shape}")
        ref, ref_sq = self._reference64()
        out = np.empty(len(feats), np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            for s in range(0, len(feats), batch):
                q = self.whiten(feats[s:s + batch])
                d2 = (q ** 2).sum(1)[:, None] + ref_sq[None, :] - 2.0 * (q @ ref.T)
                out[s:s + batch] = np.sqrt(np.maximum(d2.min(axis=1), 0.0) / self.dim)
        out[~np.isfinite(out)] = np.inf  # overflowed or NaN features: as unusual as it gets
        return out

    def passes(self, scores: np.ndarray) -> np.ndarray:
        return np.asarray(scores) <= self.threshold

    def to_tensors(self) -> dict:
        """The arrays for ``ood.safetensors`` (reference in float16: whitened values are O(1))."""
        import torch

        return {"mean": torch.as_tensor(self.mean.astype(np.float32)),
                "whitener": torch.as_tensor(self.whitener.astype(np.float32)),
                "reference": torch.as_tensor(self.reference.astype(np.float16))}


def fit_ood_gate(fit_features: np.ndarray, calibration_features: np.ndarray | None = None, *,
                 pass_rate: float = DEFAULT_PASS_RATE, seed: int = 0, reference: str | None = None,
                 precision: str | None = None) -> OODGate:
    """Fit the gate on training features and set its threshold so ``pass_rate`` of calibration rows pass.

    Args:
        fit_features: ``(N, D)`` features of the training images.
        calibration_features: In-distribution validation features; ``None`` or empty: a seeded
            :data:`HOLDOUT_FRACTION` of the training rows is held out instead.
        pass_rate: Share of calibration images that must pass (the threshold's quantile).
        seed: Sampling seed (reference subsample, hold-out).
        reference: A short description of the training images (shown in reasons), e.g. "HAM10000".
        precision: The precision the features were computed in (recorded: bf16 and fp32 scores differ slightly).

    Raises:
        ConfigError: fewer than :data:`MIN_FIT_ROWS` fitting or :data:`MIN_CALIBRATION_ROWS`
            calibration rows, or a bad ``pass_rate``. InputError: features that are not finite.
    """
    from sklearn.covariance import LedoitWolf

    if not 0.0 < pass_rate <= 1.0:
        raise ConfigError(f"the OOD pass rate must be in (0, 1], got {pass_rate}")
    X = np.asarray(fit_features, np.float64)
    if X.ndim != 2 or len(X) < MIN_FIT_ROWS:
        raise ConfigError(f"an out-of-distribution gate needs at least {MIN_FIT_ROWS} training images, "
                          f"got {len(X) if X.ndim == 2 else 0}")
    rng = np.random.default_rng(seed)
    source = "validation"
    C = None if calibration_features is None else np.asarray(calibration_features, np.float64)
    if C is None or len(C) == 0:
        order = rng.permutation(len(X))
        n_hold = max(1, int(round(HOLDOUT_FRACTION * len(X))))
        C, X, source = X[order[:n_hold]], X[order[n_hold:]], "held-out training rows"
    if len(C) < MIN_CALIBRATION_ROWS:
        raise ConfigError(f"an out-of-distribution gate needs at least {MIN_CALIBRATION_ROWS} calibration images "
                          f"({source}), got {len(C)}")
    if not (np.isfinite(X).all() and np.isfinite(C).all()) or max(np.abs(X).max(), np.abs(C).max()) > 1e150:
        raise InputError("the features to fit the out-of-distribution gate on are not finite (or absurdly large)")
    mean = X.mean(axis=0)
    lw = LedoitWolf(assume_centered=True).fit(X - mean)
    whitener = _lower_cholesky(lw.precision_)
    keep = np.sort(rng.choice(len(X), MAX_REFERENCE_ROWS, replace=False)) if len(X) > MAX_REFERENCE_ROWS \
        else np.arange(len(X))
    gate = OODGate(mean, whitener, np.zeros((0, len(mean)), np.float32), 0.0)
    white = gate.whiten(X[keep])
    if np.abs(white).max() > np.finfo(np.float16).max / 2:
        raise InputError("the whitened training features do not fit in float16: the features are degenerate")
    gate.reference = white.astype(np.float16).astype(np.float32)  # as it will be stored
    scores = gate.score(C)
    gate.threshold = float(np.quantile(scores, pass_rate, method="higher"))
    gate.info = {"method": METHOD, "file": OOD_FILE, "threshold": gate.threshold, "pass_rate": float(pass_rate),
                 "dim": int(len(mean)), "n_reference": int(len(keep)), "n_calibration": int(len(C)),
                 "calibration_source": source, "shrinkage": float(lw.shrinkage_), "reference": reference,
                 "precision": precision}
    return gate


def _lower_cholesky(precision: np.ndarray) -> np.ndarray:
    """``L`` with ``L Lᵀ = precision`` (a tiny ridge when rounding made it not quite positive definite)."""
    P = (precision + precision.T) / 2.0
    for ridge in (0.0, 1e-10, 1e-8, 1e-6):
        try:
            return np.linalg.cholesky(P + ridge * np.trace(P) / len(P) * np.eye(len(P)))
        except np.linalg.LinAlgError:
            continue
    raise ConfigError("the training features' covariance could not be inverted for the OOD gate")


def load_ood_gate(record: dict, tensors: dict, *, where: str) -> OODGate:
    """Rebuild a gate from its bundle record and ``ood.safetensors`` arrays, checking every shape.

    Raises:
        CheckpointError: missing, extra or misshapen arrays, or non-finite values.
    """
    d = int(record["dim"])
    want = {"mean": (d,), "whitener": (d, d), "reference": (int(record["n_reference"]), d)}
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    if got != want:
        raise CheckpointError(f"{where} must hold " + ", ".join(f"{k} {v}" for k, v in want.items())
                              + "; got " + ", ".join(f"{k} {v}" for k, v in got.items()))
    wrong = [f"{k} is {str(tensors[k].dtype).replace('torch.', '')}" for k, dt in STORED_DTYPES.items()
             if str(tensors[k].dtype) != f"torch.{dt}"]
    if wrong:
        raise CheckpointError(f"{where}: {', '.join(wrong)} (expected "
                              + ", ".join(f"{k} {dt}" for k, dt in STORED_DTYPES.items()) + ")")
    arrays = {k: tensors[k].double().numpy() for k in want}
    threshold = float(record["threshold"])
    if not all(np.isfinite(a).all() for a in arrays.values()) or not 0 <= threshold <= MAX_THRESHOLD:
        raise CheckpointError(f"{where} or its record holds values that are not finite or out of range")
    L = arrays["whitener"]
    if np.abs(np.triu(L, 1)).max(initial=0.0) > 0 or (np.diag(L) <= 0).any():
        raise CheckpointError(f"{where}: the whitening matrix is not lower-triangular with a positive diagonal")
    return OODGate(arrays["mean"], L, arrays["reference"], threshold, dict(record))


def gate_verdict(score: float | None, gate: OODGate | None, quality=None) -> dict:
    """The ``ood`` answer for one image: ``{score, threshold, in_distribution, reasons}``.

    ``quality``: the image's :class:`~panderm.image_quality.QualityReport`, or just its reasons (a list).

    ``in_distribution`` is ``False`` when the image fails the quality gate (its reasons are listed
    first) or its feature score is above the threshold. Without a gate (a bundle built before
    gates existed) only the quality gate decides, and ``score``/``threshold`` are ``None``.
    """
    reasons = list(quality) if isinstance(quality, (list, tuple)) else list(getattr(quality, "reasons", []) or [])
    threshold = None if gate is None else float(gate.threshold)
    if gate is not None and score is not None:
        seen = gate.info.get("reference") or "its training images"
        if not np.isfinite(score):
            reasons.append(f"its features could not be compared with {seen} (out-of-distribution score not finite)")
        elif score > gate.threshold:
            reasons.append(f"does not resemble {seen} (out-of-distribution score {score:.3g} > {threshold:.3g})")
    finite = score is not None and bool(np.isfinite(score))
    return {"score": float(score) if finite else None, "threshold": threshold,
            "in_distribution": not reasons, "reasons": reasons}


NO_GATE_NOTICE = ("{owner} has no out-of-distribution gate (built by an older panderm): only the image-quality "
                  "gate can refuse an image; rebuild it to add one")


def fit_gate_or_reason(fit: np.ndarray, calibration: np.ndarray | None, *, reference: str, seed: int = 0,
                       precision: str | None = None) -> tuple[OODGate | None, str | None]:
    """A bundle builder's gate: ``(gate, None)``, or ``(None, why)`` when there are too few images to fit one."""
    try:
        return fit_ood_gate(fit, calibration, seed=seed, reference=reference, precision=precision), None
    except ConfigError as exc:
        return None, str(exc)


def no_gate_notice(owner: str, why: str | None, version: int) -> str:
    """Why the bundle ``owner`` has no gate: the recorded reason, none fitted, or an older format."""
    if why or version >= 3:
        return f"{owner} has no out-of-distribution gate ({why or 'none was fitted'})"
    return NO_GATE_NOTICE.format(owner=owner)


#: The part of a gate's record that outputs show (model info, patients.json).
SUMMARY_KEYS = ("method", "threshold", "pass_rate", "n_reference", "n_calibration", "calibration_source", "reference",
                "precision")


def gate_summary(gate: OODGate | None) -> dict | None:
    """What outputs say about ``gate`` (``None`` without one)."""
    return None if gate is None else {k: gate.info.get(k) for k in SUMMARY_KEYS}


def precision_note(gate: OODGate | None, precision: str) -> str | None:
    """A note when features are computed in another ``precision`` than ``gate`` was calibrated on (else ``None``)."""
    fitted = None if gate is None else gate.info.get("precision")
    if not fitted or fitted == precision:
        return None
    return (f"the out-of-distribution gate was calibrated on {fitted} features and this run computes {precision} "
            f"ones: its refusal rates differ slightly from the bundle's (pass --precision {fitted} to match)")


def check_gate_record(meta: dict, meta_path, *, hint: str) -> None:
    """A gated bundle format (version 3 on) must carry its ``"ood"`` record, and a listed gate file needs one.

    Raises:
        CheckpointError: the record is missing, or ``ood.safetensors`` is listed without one (a stripped gate).
    """
    version = meta.get("version")
    if isinstance(version, int) and version >= 3 and "ood" not in meta:
        raise CheckpointError(f"{meta_path} (version {version}) has no 'ood' record", hint=hint)
    if not meta.get("ood") and OOD_FILE in (meta.get("files") or {}):
        raise CheckpointError(f"{meta_path} lists {OOD_FILE} but has no 'ood' record for it",
                              hint=f"the bundle was altered; {hint}")


def read_gate_file(folder, record: dict | None, dim: int, *, meta_file: str, hint: str) -> OODGate | None:
    """The gate stored in bundle ``folder`` (``None`` when ``record`` is empty), every array checked.

    Raises:
        CheckpointError: a gate of another width than the encoder's, or an unreadable or misshapen file.
    """
    from pathlib import Path

    from safetensors.torch import load_file

    if not record:
        return None
    folder = Path(folder)
    if record["dim"] != dim:
        raise CheckpointError(f"{folder / meta_file}: the OOD gate is {record['dim']}-d, the encoder {dim}-d",
                              hint=hint)
    try:
        tensors = load_file(str(folder / OOD_FILE))
    except Exception as exc:  # noqa: BLE001 - safetensors raises several kinds for a damaged file
        raise CheckpointError(f"cannot read the out-of-distribution gate {folder / OOD_FILE}: not a safetensors "
                              f"file ({str(exc)[:200]})", hint=hint) from None
    return load_ood_gate(record, tensors, where=str(folder / OOD_FILE))

__all__ = ["DEFAULT_PASS_RATE", "MAX_REFERENCE_ROWS", "METHOD", "MIN_CALIBRATION_ROWS", "MIN_FIT_ROWS",
           "NO_GATE_NOTICE", "OODGate", "SUMMARY_KEYS", "gate_summary", "OOD_FILE", "OOD_SCHEMA", "check_gate_record", "fit_gate_or_reason",
           "fit_ood_gate", "gate_verdict", "load_ood_gate", "no_gate_notice", "precision_note", "read_gate_file"]
