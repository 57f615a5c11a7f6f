"""Lesion segmentation: UPerNet on PanDerm ViT features (docs/reference/segmentation.md); see docs/segmentation.md.

Modules: :mod:`~panderm.segmentation.data` (CSV, path rule, datasets),
:mod:`~panderm.segmentation.model` (taps, neck, UPerHead, loss, Dice/Jaccard),
:mod:`~panderm.segmentation.train` (``train_segmentation``, ``load_segmentation_model``),
:mod:`~panderm.segmentation.predict` (``predict_masks``, ``evaluate_segmentation``),
:mod:`~panderm.segmentation.segmenters` (the segmenter registry used by align-pair).
Importing this package is light; torch loads with the submodules that need it.
"""
