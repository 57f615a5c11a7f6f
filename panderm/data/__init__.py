"""Image loading, preprocessing presets and input discovery for feature extraction.

Submodules import torch/torchvision only where needed (``transforms``), so
``panderm.data.images`` and ``panderm.data.inputs`` stay light.
"""

from __future__ import annotations

from panderm.data.images import DEFAULT_MAX_PIXELS, ImageReadError, load_rgb
from panderm.data.inputs import IMAGE_EXTENSIONS, InputList, collect_inputs

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "ImageReadError",
    "InputList",
    "collect_inputs",
    "load_rgb",
]
