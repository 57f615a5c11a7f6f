"""Built-in plugin: image modalities and the ``extract`` command.

Import stays light (no torch): the command module loads only when ``extract`` runs.
"""

from __future__ import annotations

import panderm
from panderm.registry import ModalitySpec

MODALITIES = (
    ModalitySpec("dermoscopy", "dermoscopic images (ISIC, HAM10000)", preset="panderm"),
    ModalitySpec("clinical", "clinical close-up photographs (PAD-UFES-20, phone cameras)", preset="panderm"),
    ModalitySpec("tbp", "total-body-photography lesion tiles (ISIC 2024 3D-TBP crops)", preset="panderm"),
    # The official WSI patch pipeline normalises with the standard ImageNet std (0.229).
    ModalitySpec("pathology", "dermatopathology patches cut from whole-slide images", preset="imagenet"),
)


@panderm.hookimpl
def register_modalities(register):
    for spec in MODALITIES:
        register(spec)


@panderm.hookimpl
def register_commands(cli):
    cli.add_lazy_command("extract", "panderm_features.commands:extract_cmd",
                         "Extract encoder features from a folder or CSV of images.")
