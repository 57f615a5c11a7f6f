"""Classifier bundles: a PanDerm encoder + calibrated linear head + reference set (see :mod:`.bundle`)."""

from panderm.classifier.build import ClassifierWarning, build_classifier
from panderm.classifier.bundle import (
    CLINICAL_NAMES,
    DEFAULT_MALIGNANT,
    Classifier,
    default_descriptions,
    demo_classifier_path,
    fit_temperature,
    load_bundle_gate,
    load_classifier,
)

__all__ = ["CLINICAL_NAMES", "DEFAULT_MALIGNANT", "Classifier", "ClassifierWarning", "build_classifier",
           "default_descriptions", "demo_classifier_path", "fit_temperature", "load_bundle_gate", "load_classifier"]
