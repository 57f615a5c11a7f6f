"""The bundled demo: extract features from 84 HAM10000 images and linear-probe them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEMO_DIR = Path(__file__).resolve().parent / "demo_data"


@dataclass(frozen=True)
class DemoResult:
    """Where the demo wrote its outputs, and the headline numbers."""

    features_dir: Path
    probe_dir: Path
    n_images: int
    metrics: dict
    random_weights: bool


def demo_csv() -> Path:
    """``labels.csv`` of the bundled demo images (``image,label,split,...``)."""
    return DEMO_DIR / "labels.csv"


def demo_images() -> Path:
    """Folder of the bundled demo images."""
    return DEMO_DIR / "images"


def run_demo(out: str | Path, *, model: str = "panderm_tiny_patch16_224.demo", weights: str | None = None,
             precision: str = "auto", progress: bool = True, random_init: bool = False) -> DemoResult:
    """Run ``extract`` then ``probe`` on the bundled images.

    Args:
        out: Output folder; gets ``features/`` and ``probe/``.
        model: Encoder name. The default, the bundled tiny demo encoder, runs anywhere in seconds.
        weights: Weights name or path; without it the model's bundled weights
            are used if its tag has any; a model that ships none needs ``random_init``.
        precision: ``fp32``, ``bf16`` or ``auto``.
        progress: Show progress bars.
        random_init: Allow a randomly initialised encoder that ships no weights (tests and ablations).
    """
    from panderm.eval.probe import run_probe
    from panderm.extract import extract_features

    out = Path(out)
    extracted = extract_features(demo_csv(), out / "features", model=model, weights=weights, root=demo_images(),
                                 precision=precision, batch_size=32, progress=progress,
                                 random_init=random_init)
    probed = run_probe(out / "features", demo_csv(), out / "probe")
    from panderm.models.factory import has_weights

    return DemoResult(out / "features", out / "probe", extracted.n_images, probed.metrics,
                      not has_weights(model, weights))
