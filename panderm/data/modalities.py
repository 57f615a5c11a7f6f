"""The built-in image modalities and the preprocessing preset each one defaults to (``extract --modality``)."""

from __future__ import annotations

from panderm.registry import ModalitySpec

MODALITIES = (
    ModalitySpec("dermoscopy", "dermoscopic images (ISIC, HAM10000)", preset="panderm"),
    ModalitySpec("clinical", "clinical close-up photographs (PAD-UFES-20, phone cameras)", preset="panderm"),
    ModalitySpec("tbp", "total-body-photography lesion tiles (ISIC 2024 3D-TBP crops)", preset="panderm"),
    # The official WSI patch pipeline normalises with the standard ImageNet std (0.229).
    ModalitySpec("pathology", "dermatopathology patches cut from whole-slide images", preset="imagenet"),
)
