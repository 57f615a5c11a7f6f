"""Dermatopathology: whole-slide reading, tissue masks, patching, per-slide features and MIL."""
