"""Per-slide feature file layouts: panderm's own, TRIDENT's and CLAM's (``slide extract --layout``).

========  ==================================================  ===========================================
layout    files in ``--out``                                   content
========  ==================================================  ===========================================
panderm   ``<slide>.h5``, ``features.csv``                     ``features`` (N, D) float32, ``coords`` (N, 2)
                                                               int64; all attributes on the file
trident   ``features_<encoder>/<slide>.h5``,                   as TRIDENT's ``extract_patch_features``:
          ``features_<encoder>/features.csv``                  ``features`` (attrs ``name``, ``savetodir``)
                                                               and ``coords`` with TRIDENT's coords attrs
clam      ``h5_files/<slide>.h5``, ``pt_files/<slide>.pt``,    CLAM's ``extract_features_fp.py``: h5 with
          ``features.csv``                                     ``features``/``coords``; ``.pt`` = the plain
                                                               (N, D) float32 tensor (``torch.save``)
========  ==================================================  ===========================================

Every layout also carries panderm's provenance attributes (encoder, weights sha256,
preprocessing preset with mean/std, precision) on the h5 file and its ``features``
dataset. :func:`resolve_features_dir` and :func:`feature_file` let the readers
(``slide mil``) take any of the three folders.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from panderm.errors import ConfigError, InputError
from panderm.io import atomic_path
from panderm.paths import check_safe_name, inside_out

LAYOUTS = ("panderm", "trident", "clam")
#: TRIDENT's ``coords_to_h5`` attributes of the ``coords`` dataset (TRIDENT name: panderm tiling attribute).
TRIDENT_COORDS_ATTRS = {"patch_size": "patch_size", "patch_size_level0": "patch_size_level0",
                        "level0_magnification": "level0_magnification",
                        "target_magnification": "target_magnification", "overlap": "overlap", "name": "name",
                        "level0_width": "width", "level0_height": "height"}
#: What CLAM's patching puts on ``coords`` (its feature/heatmap code reads ``patch_level``, ``patch_size``).
CLAM_COORDS_ATTRS = ("patch_level", "patch_size", "patch_size_level0", "magnification", "mpp")
PROVENANCE = ("model", "weights", "weights_sha256", "preset", "mean", "std", "input_size", "interpolation",
              "precision", "layout")


def check_layout(layout: str) -> str:
    if layout not in LAYOUTS:
        raise ConfigError(f"unknown feature layout {layout!r}", hint=f"choose one of: {', '.join(LAYOUTS)}")
    return layout


@dataclass(frozen=True)
class FeatureLayout:
    """Where and how one extraction run writes its per-slide feature files."""

    name: str
    out: Path
    encoder: str

    @property
    def folder(self) -> Path:
        """The folder holding the ``<slide>.h5`` files."""
        if self.name == "trident":
            enc = check_safe_name(self.encoder, what="encoder name")
            return inside_out(self.out, f"features_{enc}")
        return inside_out(self.out, "h5_files") if self.name == "clam" else inside_out(self.out)

    @property
    def csv_path(self) -> Path:
        """The per-slide status table (``features.csv``)."""
        return inside_out(self.folder if self.name == "trident" else self.out, "features.csv")

    @property
    def table(self) -> str:
        """Name of the per-rank parts of the status table (unique per layout and encoder)."""
        return f"features-{self.name}-{check_safe_name(self.encoder, what='encoder name')}"

    def h5(self, slide: str) -> Path:
        return inside_out(self.folder, f"{check_safe_name(slide, what='slide name')}.h5")

    def pt(self, slide: str) -> Path | None:
        if self.name != "clam":
            return None
        return inside_out(self.out, "pt_files", f"{check_safe_name(slide, what='slide name')}.pt")

    def complete(self, slide: str, n: int) -> bool:
        """Every file of ``slide`` is there and holds ``n`` patches (else: recompute)."""
        pt = self.pt(slide)
        return h5_complete(self.h5(slide), n) and (pt is None or pt_complete(pt, n))

    def write(self, slide: str, feats: np.ndarray, coords: np.ndarray, meta: dict) -> list[Path]:
        """Write ``slide``'s files atomically (the ``.pt`` before the ``.h5``); returns their paths."""
        feats = np.ascontiguousarray(feats, dtype=np.float32)
        coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
        meta = dict(meta, layout=self.name)
        written = []
        pt = self.pt(slide)
        if pt is not None:
            write_pt(pt, feats)
            written.append(pt)
        h5 = self.h5(slide)
        write_h5(h5, feats, coords, file_attrs=meta, features_attrs=self._features_attrs(slide, meta),
                 coords_attrs=self._coords_attrs(meta))
        return [h5, *written]

    def _features_attrs(self, slide: str, meta: dict) -> dict:
        attrs = {k: meta[k] for k in PROVENANCE if k in meta}
        if self.name == "trident":
            attrs.update(name=slide, savetodir=str(self.folder))
        return attrs

    def _coords_attrs(self, meta: dict) -> dict:
        if self.name == "trident":
            attrs = {k: meta[src] for k, src in TRIDENT_COORDS_ATTRS.items() if src in meta}
            attrs.setdefault("overlap", 0)
            if "coords_dir" in meta:
                attrs["savetodir"] = meta["coords_dir"]
            return {**{k: meta[k] for k in CLAM_COORDS_ATTRS if k in meta}, **attrs}
        return {k: v for k, v in meta.items() if k.startswith("patch") or k in ("magnification", "mpp")}


def write_h5(path: Path, feats: np.ndarray, coords: np.ndarray, *, file_attrs: dict, features_attrs: dict,
             coords_attrs: dict) -> None:
    import h5py

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        fd = f.create_dataset("features", data=feats)
        cd = f.create_dataset("coords", data=coords)
        for target, attrs in ((f, file_attrs), (fd, features_attrs), (cd, coords_attrs)):
            for k, v in attrs.items():
                target.attrs[k] = np.asarray(v, dtype=np.float64) if isinstance(v, (tuple, list)) else v


def write_pt(path: Path, feats: np.ndarray) -> None:
    """``torch.save`` of the plain (N, D) float32 tensor, what CLAM's MIL datasets ``torch.load``."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(torch.from_numpy(np.array(feats, dtype=np.float32)), tmp)


def h5_complete(path: Path, n: int) -> bool:
    """``path`` holds ``features`` and ``coords`` for ``n`` patches, in the file itself."""
    from panderm.hdf5 import MAX_ARRAY_BYTES, open_dataset, open_file

    if not path.is_file():
        return False
    try:
        with open_file(path) as f:
            return all(open_dataset(f, k, max_bytes=MAX_ARRAY_BYTES).shape[:1] == (n,)
                       for k in ("features", "coords"))
    except Exception:  # noqa: BLE001 - unreadable/partial/linked file: recompute
        return False


def pt_complete(path: Path, n: int) -> bool:
    if not path.is_file():
        return False
    try:
        return tuple(load_pt(path).shape[:1]) == (n,)
    except InputError:
        return False


def load_pt(path: Path):
    """A ``.pt`` feature tensor (N, D): ``torch.load(weights_only=True)``, size-checked first."""
    import torch

    from panderm.hdf5 import MAX_ARRAY_BYTES

    path = Path(path)
    if path.is_symlink() or not path.is_file():
        raise InputError(f"features file {path} is missing or a link")
    if path.stat().st_size > MAX_ARRAY_BYTES:
        raise InputError(f"features file {path} is larger than the {MAX_ARRAY_BYTES >> 30} GiB limit; not read")
    try:
        t = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - anything torch.load refuses is the user's file
        raise InputError(f"cannot read {path} as a tensor file: {type(exc).__name__}: {str(exc)[:200]}",
                         hint="a .pt features file must hold one (N, D) tensor (torch.save)") from None
    if not isinstance(t, torch.Tensor):
        raise InputError(f"{path} holds a {type(t).__name__}, not a tensor",
                         hint="a .pt features file must hold one (N, D) tensor (torch.save)")
    return t


def resolve_features_dir(folder: str | Path) -> Path:
    """The folder of per-slide feature files in ``folder``, whichever layout wrote it.

    ``folder`` itself when it holds ``*.h5``/``*.pt``; else its CLAM ``h5_files`` (or
    ``pt_files``); else its only TRIDENT ``features_<encoder>`` folder (several: an
    error naming them). Otherwise ``folder`` unchanged.
    """
    folder = Path(folder)
    if not folder.is_dir() or has_features(folder):
        return folder
    for sub in ("h5_files", "pt_files"):
        if has_features(folder / sub):
            return folder / sub
    encoders = sorted(p for p in folder.glob("features_*") if p.is_dir() and has_features(p))
    if len(encoders) > 1:
        raise InputError(f"{folder} holds features of {len(encoders)} encoders: "
                         f"{', '.join(p.name for p in encoders)}",
                         hint=f"pass one of them, e.g. {encoders[0]}")
    return encoders[0] if encoders else folder


def has_features(folder: Path) -> bool:
    return folder.is_dir() and any(p.suffix in (".h5", ".pt") and p.is_file() for p in folder.iterdir())


def feature_file(folder: Path, slide: str) -> Path:
    """``folder/<slide>.h5``, else ``folder/<slide>.pt`` when only that exists (CLAM ``pt_files``)."""
    h5 = Path(folder) / f"{slide}.h5"
    pt = Path(folder) / f"{slide}.pt"
    return pt if not h5.is_file() and pt.is_file() else h5


__all__ = ["LAYOUTS", "FeatureLayout", "check_layout", "feature_file", "has_features", "load_pt",
           "resolve_features_dir", "write_h5", "write_pt"]
