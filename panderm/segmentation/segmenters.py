"""The segmenter registry: named lesion segmenters usable by ``panderm align-pair --segmenter``.

A segmenter is a callable ``rgb (H×W×3 uint8) -> bool mask (H×W)``. Plugins add
factories through the ``register_segmenters(register)`` hook:
``register(name, factory, summary="")`` where ``factory(spec: str)`` builds the
segmenter from the part of ``name:spec`` after the colon. Built-ins:

* ``classical``: Otsu threshold on the blue channel + clean-up
  (:func:`panderm.data.skin.segment_lesion`, the default);
* ``run:<RUN_DIR>``: a UPerNet model trained by ``panderm segment train``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from panderm.errors import ConfigError

Segmenter = Callable[[Any], Any]


def classical_segmenter(spec: str = "") -> Segmenter:
    """The Otsu segmenter used by align-pair (no options)."""
    from panderm.data.skin import segment_lesion

    if spec.strip():
        raise ConfigError(f"the classical segmenter takes no options (got 'classical:{spec}')")
    return segment_lesion


class RunSegmenter:
    """A trained run as a segmenter: probability ≥ ``threshold`` at the image's own resolution."""

    def __init__(self, run_dir, threshold: float = 0.5, device: str | None = None):
        import torch

        from panderm.segmentation.train import load_segmentation_model

        self.net, self.config = load_segmentation_model(run_dir)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.net.to(self.device)
        self.threshold = threshold
        self.run_dir = str(run_dir)

    def __call__(self, rgb):
        import numpy as np

        from panderm.segmentation.train import predict_probability

        rgb = np.asarray(rgb)
        if rgb.ndim == 2:
            rgb = np.repeat(rgb[..., None], 3, axis=-1)
        return predict_probability(self.net, [rgb[..., :3]], self.device)[0] >= self.threshold


def run_segmenter(spec: str) -> Segmenter:
    """``run:<RUN_DIR>`` → :class:`RunSegmenter` of that run folder."""
    if not spec.strip():
        raise ConfigError("the run segmenter needs a run folder", hint="use --segmenter run:runs/seg")
    return RunSegmenter(spec)


def builtin_segmenters(register: Callable[..., None]) -> None:
    """Register ``classical`` and ``run`` (called from the ``panderm_segment`` plugin)."""
    register("classical", classical_segmenter, summary="Otsu threshold on the blue channel + clean-up (default)")
    register("run", run_segmenter, summary="a model trained by `panderm segment train`: run:<RUN_DIR>")


def get_segmenter(spec) -> Segmenter:
    """Resolve ``name`` or ``name:spec`` (e.g. ``classical``, ``run:runs/seg``); a callable passes through.

    Raises:
        ConfigError: an unknown segmenter name (the hint lists the registered ones).
    """
    if callable(spec):
        return spec
    from panderm.plugins import registries

    name, _, rest = str(spec).partition(":")
    return registries().segmenters.get(name.strip()).factory(rest)
