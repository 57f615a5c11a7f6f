"""A flat description of registered encoders (for ``panderm models``)."""

from __future__ import annotations

from panderm.plugins import registries


def list_models() -> list[dict]:
    """One dict per ``arch.tag`` with input size, dims, normalisation and licence."""
    regs = registries()
    rows = []
    for name in regs.encoders:
        entry = regs.encoders.get(name)
        for cfg in entry.pretrained_cfgs:
            rows.append({
                "name": f"{name}.{cfg.tag}", "arch": name, "tag": cfg.tag, "plugin": entry.plugin,
                "summary": entry.summary or cfg.notes, "input_size": list(cfg.input_size),
                "num_features": cfg.num_features, "preset": cfg.preset, "mean": list(cfg.mean),
                "std": list(cfg.std), "license": cfg.license, "file_name": cfg.file_name,
                "notes": cfg.notes,
            })
    return rows
