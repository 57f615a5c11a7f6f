"""Longitudinal lesion monitoring: registration of image pairs, change detection, sequences.

Import is light; heavy modules (OpenCV, Numba, torch) load in the submodules. The classical
image operations (dark-corner and hair removal, lesion segmentation) live in
:mod:`panderm.data.skin`.
"""

from __future__ import annotations

__all__ = ["ablation", "align", "change", "quality", "ransac", "register", "sequence"]
