"""Longitudinal lesion monitoring: preprocessing and registration of image pairs.

Import is light; heavy modules (OpenCV, Numba) load in the submodules.
"""

from __future__ import annotations

__all__ = ["align", "preprocess", "ransac", "register"]
