"""Unlabelled images for pretraining: image sources (manifest, folders, plugins) and the two-view augmentation.

Determinism contract (what makes ``--resume`` bit-identical): every random
choice is a pure function of ``(seed, epoch, sample index)``. The
:class:`EpochSampler` yields ``(index, epoch)`` keys from a permutation seeded
by ``(seed, epoch)``; :class:`PretrainDataset` builds a per-sample
``numpy.random.Generator`` from ``(seed, epoch, index)`` and draws the crop,
flip, colour jitter and mask from it. Nothing depends on worker scheduling or
on the global RNGs.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np

from panderm.data.images import DEFAULT_MAX_PIXELS, ImageReadError, load_rgb
from panderm.data.inputs import IMAGE_EXTENSIONS
from panderm.data.sampling import EpochSampler
from panderm.errors import ConfigError, InputError
from panderm.paths import resolve_under_root

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


# ----------------------------------------------------------------------------- sources
class SourceItem(NamedTuple):
    path: Path
    modality: str
    weight: float = 1.0


class ImageSource(list):
    """``list[SourceItem]`` of ``(path, modality, weight)`` plus where it came from."""

    def __init__(self, items=(), source: Path | None = None, kind: str = ""):
        super().__init__(items)
        self.source = source
        self.kind = kind

    @property
    def modalities(self) -> list[str]:
        """Sorted distinct modality names (the index order used by :class:`PretrainDataset`)."""
        return sorted({it.modality for it in self})


def manifest_source(spec: str | os.PathLike, **options: Any) -> ImageSource:
    """Read a manifest CSV: columns ``path`` and ``modality``, optional ``weight``.

    Relative paths are relative to the CSV's folder; ``./`` and backslashes are accepted.
    With ``root=``, they are relative to it and a row whose path leaves it (``..``, an
    absolute path) is refused. Missing image files are not an error here; they are
    skipped at load time.
    """
    path = Path(spec).expanduser()
    if not path.is_file():
        raise InputError(f"manifest not found: {path}", hint="pass a CSV with columns path,modality[,weight]")
    root = options.get("root")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            fields = [c.strip() for c in (reader.fieldnames or [])]
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read manifest {path}: {exc}") from None
    missing = [c for c in ("path", "modality") if c not in fields]
    if missing:
        raise InputError(f"manifest {path} lacks column(s) {', '.join(missing)}; "
                         f"present: {', '.join(fields) or '(none)'}",
                         hint="the manifest needs columns path,modality and optionally weight")
    items = []
    for n, row in enumerate(rows, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
        if not row.get("path"):
            raise InputError(f"manifest {path} line {n}: empty path")
        weight = 1.0
        if row.get("weight"):
            try:
                weight = float(row["weight"])
            except ValueError:
                raise InputError(f"manifest {path} line {n}: weight '{row['weight']}' is not a number") from None
            if not math.isfinite(weight) or weight < 0:
                raise InputError(f"manifest {path} line {n}: weight must be a finite number ≥ 0, got {weight}")
        value = os.path.expanduser(row["path"]) if root is None else row["path"]
        p = resolve_under_root(value, root, base=path.parent, where=f"manifest {path} line {n}")
        items.append(SourceItem(p, row["modality"] or "unknown", weight))
    if not items:
        raise InputError(f"manifest {path} lists no images")
    return ImageSource(items, path, "manifest")


def _images_under(folder: Path, exts: tuple[str, ...]) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(Path(dirpath) / f for f in filenames
                     if not f.startswith(".") and f.lower().endswith(exts))
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def folder_source(spec: str | os.PathLike, **options: Any) -> ImageSource:
    """A folder with one subfolder per modality (images found recursively), or a plain image folder.

    Images directly in the folder get modality ``unknown``. ``by_subfolder=False``
    treats every image as ``unknown`` even when there are subfolders.
    """
    folder = Path(spec).expanduser()
    if not folder.is_dir():
        raise InputError(f"data folder not found: {folder}")
    exts = tuple(e.lower() for e in options.get("extensions", IMAGE_EXTENSIONS))
    items = []
    for p in _images_under(folder, exts):
        rel = p.relative_to(folder).parts
        modality = rel[0] if len(rel) > 1 and options.get("by_subfolder", True) else "unknown"
        items.append(SourceItem(p, modality, 1.0))
    if not items:
        raise InputError(f"no images found in {folder}", hint=f"looked for {', '.join(exts)} files, recursively")
    return ImageSource(items, folder, "folder")


def builtin_data_sources(register: Callable[..., None]) -> None:
    """Register the built-in ``manifest`` and ``folder`` sources (called from ``register_data_sources``)."""
    register("manifest", manifest_source, summary="CSV with columns path,modality[,weight]")
    register("folder", folder_source, summary="folder of images, one subfolder per modality (else 'unknown')")


def resolve_data(spec: str | os.PathLike, **options: Any) -> ImageSource:
    """``name:rest`` → registered data source ``name``; a ``.csv`` → manifest; a folder → folder."""
    text = str(spec)
    name, sep, rest = text.partition(":")
    if sep and len(name) > 1 and not Path(text).exists():  # len>1: not a Windows drive letter
        from panderm.plugins import registries

        sources = registries().data_sources
        if name not in sources:
            raise ConfigError(f"unknown data source '{name}' in '{text}'",
                              hint=f"registered sources: {', '.join(sources) or '(none)'}")
        return sources.get(name).factory(rest, **options)
    path = Path(text).expanduser()
    if path.suffix.lower() == ".csv":
        return manifest_source(path, **options)
    if path.is_dir():
        return folder_source(path, **options)
    raise InputError(f"data not found: {path}", hint="pass a manifest .csv, an image folder, or name:spec")


# ----------------------------------------------------------------------------- augmentation
def random_resized_crop_params(rng: np.random.Generator, width: int, height: int,
                               scale=(0.4, 1.0), ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """torchvision's ``RandomResizedCrop.get_params`` driven by ``rng``: returns ``(top, left, h, w)``."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class TwoViewTransform:
    """One random crop, two views: student (``student_size``) and teacher (``teacher_size``).

    The crop box, flip and colour-jitter factors/order are drawn once from the
    per-sample ``rng``; the crop is resized (bicubic) to both sizes and both
    views get the same flip and jitter, then their own normalisation.
    """

    def __init__(self, student_size: int = 224, teacher_size: int = 224, scale=(0.4, 1.0),
                 ratio=(3 / 4, 4 / 3), hflip: float = 0.5, color_jitter: float = 0.4,
                 student_mean=IMAGENET_MEAN, student_std=IMAGENET_STD,
                 teacher_mean=CLIP_MEAN, teacher_std=CLIP_STD):
        self.student_size, self.teacher_size = int(student_size), int(teacher_size)
        self.scale, self.ratio = tuple(scale), tuple(ratio)
        self.hflip, self.color_jitter = float(hflip), float(color_jitter)
        self.student_norm = (list(student_mean), list(student_std))
        self.teacher_norm = (list(teacher_mean), list(teacher_std))

    def params(self, rng: np.random.Generator, width: int, height: int) -> dict[str, Any]:
        """All random choices for one sample (drawn in a fixed order)."""
        box = random_resized_crop_params(rng, width, height, self.scale, self.ratio)
        flip = bool(rng.random() < self.hflip)
        j = self.color_jitter
        factors = [float(rng.uniform(max(0.0, 1 - j), 1 + j)) for _ in range(3)] if j > 0 else [1.0] * 3
        order = [int(i) for i in rng.permutation(3)]
        return {"box": box, "flip": flip, "jitter": factors, "order": order}

    def view(self, img, p: dict[str, Any], size: int):
        """The PIL view at ``size`` for params ``p`` (before tensor conversion)."""
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as F

        top, left, h, w = p["box"]
        out = F.resized_crop(img, top, left, h, w, [size, size], InterpolationMode.BICUBIC, antialias=True)
        if p["flip"]:
            out = F.hflip(out)
        ops = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation)
        for i in p["order"]:
            if p["jitter"][i] != 1.0:
                out = ops[i](out, p["jitter"][i])
        return out

    def __call__(self, img, rng: np.random.Generator):
        """``(student [3,S,S], teacher [3,T,T])`` normalised float tensors."""
        from torchvision.transforms import functional as F

        p = self.params(rng, *img.size)
        student = F.normalize(F.to_tensor(self.view(img, p, self.student_size)), *self.student_norm)
        teacher = F.normalize(F.to_tensor(self.view(img, p, self.teacher_size)), *self.teacher_norm)
        return student, teacher


# ----------------------------------------------------------------------------- dataset
class PretrainDataset:
    """Map-style dataset indexed by ``(index, epoch)`` keys from :class:`EpochSampler`.

    Returns ``{"student", "teacher", "mask" (if a mask generator), "modality", "index"}``
    or, for an unreadable image, a skip record ``{"skip": True, "path", "reason"}``
    (never raises for bad images; :func:`skip_collate` filters them).

    Args:
        items: An :class:`ImageSource` (or any sequence of ``(path, modality[, weight])``).
        view_transform: ``callable(PIL.Image, rng) -> (student, teacher)``, e.g. :class:`TwoViewTransform`.
        mask_generator: ``callable(rng) -> bool array [N]`` (e.g. a block mask generator).
        seed: Data seed; with the epoch and the index it seeds each sample's rng.
        balance: Sampling mode used by :meth:`make_sampler`: ``none``, ``modality`` or ``weight``.
    """

    epoch_aware = True

    def __init__(self, items: Sequence, view_transform, mask_generator=None, seed: int = 0,
                 balance: str = "none", max_pixels: int | None = DEFAULT_MAX_PIXELS):
        self.items = [SourceItem(Path(it[0]), str(it[1]), float(it[2]) if len(it) > 2 else 1.0) for it in items]
        self.transform = view_transform
        self.mask_generator = mask_generator
        self.seed = int(seed)
        self.balance = balance
        self.max_pixels = max_pixels
        self.modalities = sorted({it.modality for it in self.items})
        self._modality_index = {m: i for i, m in enumerate(self.modalities)}

    def __len__(self) -> int:
        return len(self.items)

    def sample_rng(self, index: int, epoch: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, int(epoch), int(index)])

    def __getitem__(self, key):
        import torch

        index, epoch = (key, 0) if isinstance(key, (int, np.integer)) else key
        item = self.items[index]
        try:
            img = load_rgb(item.path, self.max_pixels)
        except ImageReadError as exc:
            return {"skip": True, "path": str(item.path), "reason": exc.reason}
        rng = self.sample_rng(index, epoch)
        student, teacher = self.transform(img, rng)
        out = {"student": student, "teacher": teacher,
               "modality": torch.tensor(self._modality_index[item.modality], dtype=torch.long),
               "index": torch.tensor(int(index), dtype=torch.long)}
        if self.mask_generator is not None:
            out["mask"] = torch.from_numpy(np.asarray(self.mask_generator(rng), dtype=bool).reshape(-1))
        return out

    def make_sampler(self, *, seed: int, rank: int = 0, world: int = 1) -> "EpochSampler":
        return EpochSampler(len(self), seed=seed, rank=rank, world=world, balance=self.balance,
                            groups=[it.modality for it in self.items], weights=[it.weight for it in self.items])
