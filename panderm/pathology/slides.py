"""Whole-slide reading behind one small interface (:class:`SlideReader`).

Backends, chosen by :func:`open_slide`:

* **OpenSlide** for vendor formats and pyramids it recognises (Aperio ``.svs``,
  Hamamatsu ``.ndpi``, MIRAX ``.mrxs``, Leica ``.scn``, Ventana ``.bif``, ...),
  imported lazily (``pip install "panderm[slide]"``).
* **tifffile** for plain (generic) TIFFs, pyramidal (SubIFDs / series levels) or
  not; regions are decoded tile by tile (or strip by strip), never the whole page.
* **PIL** for PNG/JPEG and other small single-level images (at most :data:`MAX_PIL_PIXELS`).

Coordinates follow OpenSlide: ``read_region((x, y), level, (w, h))`` takes the
top-left corner in **level-0** pixels and a size in pixels **of that level**,
and returns an RGB ``uint8`` array ``(h, w, 3)``; pixels outside the slide (or
transparent) are white.
"""

from __future__ import annotations

import os
import re
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from panderm.errors import InputError

#: Extensions handed to OpenSlide (when it recognises the file).
OPENSLIDE_EXTENSIONS = (".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide", ".tif", ".tiff")
TIFF_EXTENSIONS = (".tif", ".tiff", ".btf", ".qptiff", ".ome.tif", ".ome.tiff")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
SLIDE_EXTENSIONS = tuple(sorted(set(OPENSLIDE_EXTENSIONS + TIFF_EXTENSIONS[:3] + IMAGE_EXTENSIONS)))
#: Largest PNG/JPEG/BMP the PIL backend decodes (it holds the whole image, ~3 bytes/px plus a decode copy:
#: 100 MP peaks near 1 GB). Larger slides belong in a pyramidal TIFF read by OpenSlide or tifffile.
MAX_PIL_PIXELS = 100_000_000
SLIDE_HINT = 'install the slide extras: pip install "panderm[slide]"'


class SlideReader:
    """A whole-slide image. Subclasses implement ``_read`` (and may override ``thumbnail``).

    Attributes:
        path: The slide file.
        dimensions: ``(width, height)`` of level 0.
        level_count, level_dimensions, level_downsamples: The pyramid.
        mpp: Microns per pixel at level 0 (``None`` when unknown).
        magnification: Objective power of level 0 (``None`` when unknown).
    """

    path: Path
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    mpp: float | None
    magnification: float | None

    @property
    def dimensions(self) -> tuple[int, int]:
        return self.level_dimensions[0]

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """RGB ``uint8`` ``(h, w, 3)`` of ``size`` level pixels whose top-left is ``location`` (level 0)."""
        if not 0 <= level < self.level_count:
            raise InputError(f"{self.path}: level {level} does not exist (the slide has {self.level_count})")
        w, h = int(size[0]), int(size[1])
        if w <= 0 or h <= 0:
            raise InputError(f"{self.path}: region size must be positive, got {size}")
        try:
            return self._read((int(location[0]), int(location[1])), level, (w, h))
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"cannot read a region of slide {self.path} ({type(exc).__name__}: "
                             f"{str(exc)[:160]}); the file may be truncated or corrupt") from exc

    def _read(self, location, level, size) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def best_level_for_downsample(self, downsample: float) -> int:
        """Highest-resolution level whose downsample is ≤ ``downsample`` (1 % tolerance)."""
        best = 0
        for i, d in enumerate(self.level_downsamples):
            if d <= downsample * 1.01:
                best = i
        return best

    def thumbnail(self, max_side: int = 1024) -> tuple[np.ndarray, float]:
        """Downscaled RGB image whose longer side is ≤ ``max_side``, and its downsample vs level 0."""
        import cv2

        w0, h0 = self.dimensions
        ds = max(w0, h0) / max_side if max(w0, h0) > max_side else 1.0
        tw, th = max(1, round(w0 / ds)), max(1, round(h0 / ds))
        level = self.best_level_for_downsample(ds)
        lw, lh = self.level_dimensions[level]
        lds = self.level_downsamples[level]
        band = max(1, min(lh, (64 << 20) // max(1, lw * 3)))  # read ≤ 64 MB bands of the level
        parts = []
        for y in range(0, lh, band):
            bh = min(band, lh - y)
            arr = self._read((0, round(y * lds)), level, (lw, bh))
            oh = max(1, round(th * (y + bh) / lh) - round(th * y / lh))
            parts.append(cv2.resize(arr, (tw, oh), interpolation=cv2.INTER_AREA))
        return np.ascontiguousarray(np.concatenate(parts)[:th]), w0 / tw

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({str(self.path)!r}, dimensions={self.dimensions}, levels={self.level_count}, "
                f"mpp={self.mpp}, magnification={self.magnification})")


# --------------------------------------------------------------------------- OpenSlide
class _OpenSlideReader(SlideReader):
    def __init__(self, path: Path, osr):
        self.path, self._osr = path, osr
        self.level_dimensions = tuple(tuple(map(int, d)) for d in osr.level_dimensions)
        self.level_downsamples = tuple(float(d) for d in osr.level_downsamples)
        props = osr.properties
        self.mpp = _positive(props.get("openslide.mpp-x"))
        self.magnification = _positive(props.get("openslide.objective-power"))

    def _read(self, location, level, size):
        import cv2

        rgba = np.asarray(self._osr.read_region(location, level, size))
        rgb = cv2.cvtColor(rgba, cv2.COLOR_RGBA2RGB)
        if rgba[..., 3].min() == 0:
            rgb[rgba[..., 3] == 0] = 255  # outside the scanned area: white, as on a glass slide
        return rgb

    def thumbnail(self, max_side: int = 1024):
        w0, _h0 = self.dimensions
        img = self._osr.get_thumbnail((max_side, max_side)).convert("RGB")
        arr = np.asarray(img)
        return arr, w0 / arr.shape[1]

    def close(self) -> None:
        self._osr.close()


# --------------------------------------------------------------------------- tifffile
class _TiffReader(SlideReader):
    """Generic TIFF: decodes only the tiles/strips a region touches (small LRU cache per level)."""

    def __init__(self, path: Path):
        import tifffile

        self.path = path
        self._tif = tifffile.TiffFile(path)
        series = self._tif.series[0]
        pages = [lvl.keyframe for lvl in series.levels]
        self._pages = []
        for p in pages:
            shape = p.shape
            if p.planarconfig != 1 and p.samplesperpixel > 1 and len(shape) == 3 and shape[0] <= 4:
                raise InputError(f"{path}: planar-separate TIFFs are not supported", hint="convert to tiled RGB")
            self._pages.append(p)
        dims = [(int(p.imagewidth), int(p.imagelength)) for p in self._pages]
        self.level_dimensions = tuple(dims)
        self.level_downsamples = tuple(dims[0][0] / d[0] for d in dims)
        self.mpp, self.magnification = _tiff_metadata(self._pages[0])
        self._jpeg = [_cv2_jpeg_ok(p) for p in self._pages]
        self._lock = threading.Lock()
        self._cache: OrderedDict = OrderedDict()
        self._cache_max = 256

    def _segment(self, level: int, index: int) -> np.ndarray | None:
        key = (level, index)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        page = self._pages[level]
        fh = self._tif.filehandle
        with self._lock:
            fh.seek(page.dataoffsets[index])
            data = fh.read(page.databytecounts[index]) if page.databytecounts[index] else None
        if data is not None and self._jpeg[level]:
            seg = _decode_jpeg(data, page.jpegtables, int(page.photometric) == 2)
        else:
            seg, _, _ = page.decode(data, index, jpegtables=page.jpegtables)
        if seg is not None:
            seg = _to_rgb(np.asarray(seg).reshape(seg.shape[-3:]))
        with self._lock:
            self._cache[key] = seg
            if len(self._cache) > self._cache_max:
                self._cache.popitem(last=False)
        return seg

    def _read(self, location, level, size):
        page = self._pages[level]
        ds = self.level_downsamples[level]
        x0, y0 = round(location[0] / ds), round(location[1] / ds)
        w, h = size
        W, H = self.level_dimensions[level]
        out = np.full((h, w, 3), 255, np.uint8)
        if page.is_tiled:
            sh, sw = int(page.tilelength), int(page.tilewidth)
        else:
            sh, sw = int(page.rowsperstrip or H), W
        ncol = -(-W // sw)
        xa, xb, ya, yb = max(0, x0), min(W, x0 + w), max(0, y0), min(H, y0 + h)
        if xa >= xb or ya >= yb:
            return out
        for r in range(ya // sh, (yb - 1) // sh + 1):
            for c in range(xa // sw, (xb - 1) // sw + 1):
                seg = self._segment(level, r * ncol + c)
                if seg is None:
                    continue
                sy, sx = r * sh, c * sw
                iy0, iy1 = max(ya, sy), min(yb, sy + seg.shape[0])
                ix0, ix1 = max(xa, sx), min(xb, sx + seg.shape[1])
                if iy0 < iy1 and ix0 < ix1:
                    out[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0] = seg[iy0 - sy:iy1 - sy, ix0 - sx:ix1 - sx]
        return out

    def close(self) -> None:
        self._tif.close()


#: Adobe APP14 marker with transform 0: tells libjpeg the 3 components are RGB, not YCbCr.
_ADOBE_RGB = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00"


def _cv2_jpeg_ok(page) -> bool:
    """8-bit RGB/YCbCr JPEG tiles, decodable by OpenCV's libjpeg-turbo (as OpenSlide does for Aperio)."""
    return (int(page.compression) == 7 and page.is_tiled and int(page.photometric) in (2, 6)
            and page.samplesperpixel == 3 and page.bitspersample == 8 and page.planarconfig == 1)


def _decode_jpeg(data: bytes, tables: bytes | None, rgb: bool) -> np.ndarray:
    import cv2

    body = data[2:]  # drop SOI; tables (DQT/DHT) and, for RGB, the Adobe marker go first
    stream = b"\xff\xd8" + (_ADOBE_RGB if rgb else b"") + (tables[2:-2] if tables else b"") + body
    bgr = cv2.imdecode(np.frombuffer(stream, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError("a JPEG tile could not be decoded (truncated or corrupt file)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _to_rgb(a: np.ndarray) -> np.ndarray:
    if a.ndim == 2:
        a = a[..., None]
    if a.dtype != np.uint8:
        a = a.astype(np.float32)
        hi = float(a.max()) or 1.0
        a = np.clip(a * (255.0 / (65535.0 if hi > 255 else 255.0)), 0, 255).astype(np.uint8)
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return np.ascontiguousarray(a[..., :3])


def _tiff_metadata(page) -> tuple[float | None, float | None]:
    """mpp from XResolution/ResolutionUnit (inch or cm); magnification from an Aperio-style description."""
    mpp = mag = None
    desc = page.description or ""
    m = re.search(r"MPP\s*=\s*([0-9.]+)", desc)
    if m:
        mpp = _positive(m.group(1))
    m = re.search(r"AppMag\s*=\s*([0-9.]+)", desc)
    if m:
        mag = _positive(m.group(1))
    if mpp is None:
        tags = page.tags
        xres, unit = tags.get("XResolution"), tags.get("ResolutionUnit")
        if xres is not None and unit is not None:
            num, den = xres.value if isinstance(xres.value, tuple) else (xres.value, 1)
            per_unit = num / den if den else 0
            um = {2: 25400.0, 3: 10000.0}.get(int(unit.value))
            if um and per_unit > 0:
                mpp = um / per_unit
    return mpp, mag


# --------------------------------------------------------------------------- PIL
class _PilReader(SlideReader):
    """A PNG/JPEG/BMP decoded whole into memory, so at most :data:`MAX_PIL_PIXELS` (checked from the header)."""

    def __init__(self, path: Path):
        from PIL import Image

        # Pillow's own guard (~179 MP) is lifted for this one read only, never process-wide (serve and
        # extract in the same process rely on it); the header check below is the bound instead.
        guard, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            with Image.open(path) as im:
                _check_pil_size(path, im.size)
                im.load()
                self._img = np.ascontiguousarray(np.asarray(im.convert("RGB")))
        finally:
            Image.MAX_IMAGE_PIXELS = guard
        self.path = path
        h, w = self._img.shape[:2]
        self.level_dimensions = ((w, h),)
        self.level_downsamples = (1.0,)
        self.mpp = self.magnification = None

    def _read(self, location, level, size):
        x0, y0 = location
        w, h = size
        H, W = self._img.shape[:2]
        out = np.full((h, w, 3), 255, np.uint8)
        xa, xb, ya, yb = max(0, x0), min(W, x0 + w), max(0, y0), min(H, y0 + h)
        if xa < xb and ya < yb:
            out[ya - y0:yb - y0, xa - x0:xb - x0] = self._img[ya:yb, xa:xb]
        return out


def _check_pil_size(path: Path, size: tuple[int, int]) -> None:
    """Refuse an image whose header declares more than :data:`MAX_PIL_PIXELS` (before decoding it)."""
    w, h = size
    if w * h > MAX_PIL_PIXELS:
        raise InputError(f"{path} declares {w}×{h} pixels ({w * h / 1e6:.0f} MP), more than the "
                         f"{MAX_PIL_PIXELS // 1_000_000} MP a PNG/JPEG/BMP slide may have (it is decoded whole)",
                         hint="store large slides as a pyramidal TIFF/SVS (read tile by tile with tifffile or "
                              "OpenSlide), e.g. `vips tiffsave in.png out.tif --tile --pyramid`")


# --------------------------------------------------------------------------- entry point
def _positive(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if f > 0 and np.isfinite(f) else None


def _import_openslide():
    try:
        import openslide
    except ImportError as exc:
        raise InputError(f"OpenSlide is needed for this slide format ({exc})", hint=SLIDE_HINT) from None
    return openslide


def _tiff_fast_ok(path: Path) -> bool:
    """All pyramid levels are JPEG tiles OpenCV can decode (then tifffile + OpenCV beats OpenSlide ~5x)."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            return all(_cv2_jpeg_ok(lvl.keyframe) for lvl in tif.series[0].levels)
    except Exception:  # noqa: BLE001 - anything odd: let OpenSlide handle the file
        return False


def open_slide(path: str | os.PathLike, mpp: float | None = None,
               magnification: float | None = None, *, backend: str = "auto") -> SlideReader:
    """Open a whole-slide image (OpenSlide, tifffile or PIL, by format).

    Args:
        path: The slide file.
        mpp: Override the level-0 microns per pixel (wins over the file's metadata).
        magnification: Override the level-0 objective power.
        backend: ``auto`` (default), ``openslide``, ``tifffile`` or ``pil``. ``auto`` reads
            Aperio slides whose levels are all plain JPEG tiles with tifffile + OpenCV's
            libjpeg-turbo (bit-identical to OpenSlide, about 5x faster per tile; metadata
            from the same ImageDescription), other vendor formats with OpenSlide, generic
            TIFFs with tifffile and PNG/JPEG with PIL.

    Raises:
        InputError: missing, unrecognised, unreadable or truncated file; OpenSlide
            missing for a vendor format.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"slide {path} does not exist or is not a file")
    name = path.name.lower()
    reader: SlideReader | None = None
    try:
        if backend not in ("auto", "openslide", "tifffile", "pil"):
            raise InputError(f"unknown slide backend '{backend}'", hint="use auto, openslide, tifffile or pil")
        if backend == "pil" or (backend == "auto" and name.endswith(IMAGE_EXTENSIONS)):
            reader = _PilReader(path)
        elif backend == "tifffile":
            reader = _TiffReader(path)
        elif backend == "openslide":
            reader = _OpenSlideReader(path, _import_openslide().OpenSlide(str(path)))
        else:
            vendor = None
            if name.endswith(OPENSLIDE_EXTENSIONS):
                is_tiff = name.endswith((".tif", ".tiff"))
                try:
                    openslide = _import_openslide()
                except InputError:
                    if not is_tiff:
                        raise
                    openslide = None
                vendor = openslide.OpenSlide.detect_format(str(path)) if openslide else None
                if vendor == "aperio" and _tiff_fast_ok(path):
                    reader = _TiffReader(path)
                elif vendor and vendor != "generic-tiff":
                    reader = _OpenSlideReader(path, openslide.OpenSlide(str(path)))
                elif not is_tiff and vendor is None:
                    raise InputError(f"slide {path} is not a format OpenSlide recognises (empty, truncated or "
                                     "not a slide)", hint="check the file; supported: " + ", ".join(SLIDE_EXTENSIONS))
            if reader is None:
                reader = _TiffReader(path)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"cannot open slide {path} ({type(exc).__name__}: {str(exc)[:160]}); "
                         "the file may be truncated, corrupt or not a slide") from exc
    if mpp is not None:
        reader.mpp = float(mpp)
    if magnification is not None:
        reader.magnification = float(magnification)
    return reader
