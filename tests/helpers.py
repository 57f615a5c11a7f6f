"""Test helpers: checkpoints in the released CAE v2 layout, built from a model's own tensors."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch


def randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter non-trivial values so that layout mistakes change the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "pos_embed":
                continue
            scale = 0.5 if ("gamma" in name or "bias" in name or "norm" in name) else 0.05
            base = 1.0 if (name.endswith("norm1.weight") or name.endswith("norm2.weight")
                           or name.startswith("norm.") and name.endswith("weight")) else 0.0
            p.copy_(base + scale * torch.randn(p.shape, generator=g))
    return model


def released_state_dict(model: torch.nn.Module, prefix: bool = True, extras: bool = True) -> dict:
    """The flat CAE v2 pretraining dict the official release ships: ``encoder.*`` plus pretraining-only keys."""
    sd = {(f"encoder.{k}" if prefix else k): v.clone() for k, v in model.state_dict().items()
          if not k.startswith("head.") and "relative_position" not in k}
    if extras:
        d = model.embed_dim
        sd.update({
            "mask_token": torch.zeros(1, 1, d),
            "rd_pos_embed": torch.zeros(1, 197, d),
            "regresser.regressor_blocks.0.norm1_q.weight": torch.ones(d),
            "regresser.regressor_blocks.0.cross_attn.q.weight": torch.zeros(d, d),
            "regresser.norm.weight": torch.ones(d),
            "decoder.norm.weight": torch.ones(d),
            "decoder.head.weight": torch.zeros(768, d),
            "teacher.visual.proj": torch.zeros(d, 768),
        })
    return sd


def save_released(model: torch.nn.Module, path: Path, wrap: str | None = None, **kwargs) -> Path:
    """Write ``model`` as a released-layout ``.pth`` (optionally wrapped in ``{wrap: sd}``)."""
    sd = released_state_dict(model, **kwargs)
    torch.save({wrap: sd, "epoch": 499} if wrap else sd, path)
    return path


def copy_change_pairs(shared_data: Path, root: Path, per_class: dict[str, int]) -> Path:
    """Write ``root/pairs.csv`` from real HAM10000 pairs and copy their images into ``root``.

    ``per_class`` maps a split to how many same-lesion (label 0) and different-lesion
    (label 1) pairs it gets.
    """
    import shutil

    import pandas as pd

    src = shared_data / "ham10000_same_lesion_pairs"
    df = pd.read_csv(src / "labels.csv")
    rows = []
    for split, n in per_class.items():
        for name, label in (("same_lesion", 0), ("different_lesion", 1)):
            for r in df[(df["split"] == split) & (df["label"] == name)].head(n).itertuples():
                rows.append({"image_a": r.image, "image_b": r.image_b, "label": label, "split": split,
                             "patient": r.lesion_id})
    for r in rows:
        for col in ("image_a", "image_b"):
            shutil.copy(src / "images" / r[col], root / r[col])
    pd.DataFrame(rows).to_csv(root / "pairs.csv", index=False)
    return root


def skops_runstring_payload(marker: Path) -> bytes:
    """A skops zip whose schema makes numpy's ``runstring`` exec ``open(marker, 'w')`` on load (issue 12's payload).

    Built by hand, so the tests need no skops: panderm no longer reads skops at all.
    """
    import io
    import json
    import zipfile

    code = f"open({str(marker)!r}, 'w').write('ran')"
    schema = {
        "__class__": "runstring", "__module__": "numpy.testing._private.utils",
        "__loader__": "ConstructorFromReduceNode",
        "content": {"__class__": "tuple", "__module__": "builtins", "__loader__": "TupleNode", "__id__": 1,
                    "content": [
                        {"__class__": "str", "__module__": "builtins", "__loader__": "JsonNode",
                         "content": json.dumps(code), "is_json": True, "__id__": 2},
                        {"__class__": "dict", "__module__": "builtins", "__loader__": "DictNode", "content": {},
                         "key_types": {"__class__": "list", "__module__": "builtins", "__loader__": "ListNode",
                                       "content": [], "__id__": 4}, "__id__": 3}]},
        "__id__": 0, "protocol": 2, "_skops_version": "0.16.0"}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("schema.json", json.dumps(schema))
    return buf.getvalue()


def find_chromium() -> str | None:
    """A Chromium binary for the browser tests: ``$PANDERM_CHROMIUM``, Debian's, or one on PATH."""
    for cand in (os.environ.get("PANDERM_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                 shutil.which("chromium-browser")):
        if cand and Path(cand).exists():
            return cand
    return None


def tiled_synthetic_slide(folder: Path, patch: int = 224):
    """A 20x synthetic slide (896 x 896, 0.5 um/px, tissue in the top-left 672 x 448) tiled into six
    ``patch``-px patches: ``(level-0 image, slide path, tiles folder)``."""
    from panderm.pathology.synthetic import synthetic_image, write_pyramid_tiff
    from panderm.pathology.tiling import tile_slides

    img = synthetic_image(896, 896, [(0, 0, 672, 448)], seed=3)
    write_pyramid_tiff(folder / "syn.tif", img, levels=1, mpp=0.5)
    s = tile_slides(folder / "syn.tif", folder / "tiles", patch=patch, mag=20, progress=False)
    assert s.results[0].status == "ok" and s.results[0].n_patches == 6
    return img, folder / "syn.tif", folder / "tiles"
