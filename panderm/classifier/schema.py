"""JSON schemas of a classifier bundle's ``classifier.json`` and ``reference.json``.

Both files are checked against these before any key is used, so a missing or
mistyped key is a :class:`~panderm.errors.CheckpointError` that names it
(:func:`panderm.manifest.validate_json`).
"""

from __future__ import annotations

from panderm.eval.ood import OOD_SCHEMA

SHA256 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
OPTIONAL_SHA256 = {"type": ["string", "null"], "pattern": "^[0-9a-f]{64}$"}
SHORT_TEXT = {"type": "string", "maxLength": 4096}
#: A member file name: no folders, no leading dot (the same rule as ``panderm.manifest.verify_members``).
MEMBER_NAME = "^[A-Za-z0-9_][A-Za-z0-9_.\\-]{0,127}$"
#: Largest thumbnail kept in reference.json (base64 of a ≤ 96 px JPEG is a few KiB).
MAX_THUMBNAIL_CHARS = 256 * 1024

ENCODER = {
    "type": "object",
    "required": ["name", "weights_spec", "weights_sha256", "preset", "dim"],
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 256},
        "weights_spec": {"type": ["string", "null"], "maxLength": 4096},
        "weights_sha256": OPTIONAL_SHA256,
        "preset": {"type": "string", "minLength": 1, "maxLength": 64},
        "dim": {"type": "integer", "minimum": 1, "maximum": 65536},
        "file": {"type": ["string", "null"], "pattern": MEMBER_NAME},
        "rel_pos_bias": {"type": "boolean"},
        "finetuned": {"type": "boolean"},
    },
}

CLASSIFIER_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "panderm classifier.json",
    "type": "object",
    "required": ["format", "version", "encoder", "head", "classes", "temperature", "files"],
    "properties": {
        "format": {"const": "panderm-classifier"},
        "version": {"type": "integer", "minimum": 1},
        "name": {"type": ["string", "null"], "maxLength": 256},
        "encoder": ENCODER,
        "head": {"type": "object", "required": ["kind"],
                 "properties": {"kind": {"enum": ["probe", "finetune"]}}},
        "classes": {"type": "array", "minItems": 2, "uniqueItems": True,
                    "items": {"type": "string", "minLength": 1, "maxLength": 256}},
        "descriptions": {"type": "object", "additionalProperties": SHORT_TEXT},
        "malignant": {"type": "array", "items": {"type": "string", "maxLength": 256}},
        "temperature": {"type": "number", "minimum": 0.01, "maximum": 100},  # fitted in [0.02, 50]
        "metrics": {"type": ["object", "null"]},
        "data": {"type": ["object", "null"]},
        "created": {"type": ["string", "null"], "maxLength": 64},
        "demo": {"type": "boolean"},
        "ood": OOD_SCHEMA,
        "files": {"type": "object", "minProperties": 1,
                  "propertyNames": {"pattern": MEMBER_NAME},
                  "additionalProperties": SHA256},
    },
}

REFERENCE_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "panderm classifier reference.json",
    "type": "array",
    "items": {
        "type": "object",
        "required": ["image", "thumbnail", "label"],
        "properties": {
            "image": {"type": ["string", "null"], "maxLength": 1024},
            "thumbnail": {"type": ["string", "null"], "maxLength": MAX_THUMBNAIL_CHARS,
                          "pattern": "^[A-Za-z0-9+/]*={0,2}$"},
            "label": {"type": "string", "maxLength": 256},
        },
    },
}

__all__ = ["CLASSIFIER_SCHEMA", "MAX_THUMBNAIL_CHARS", "REFERENCE_SCHEMA"]
