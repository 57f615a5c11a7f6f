"""Upload handling that never touches the disk: bounded body read, in-memory
multipart parsing, bounded image decoding, optional private keep-copy.

Starlette's own form parser spools file parts over 1 MiB to a temporary file;
we parse ``multipart/form-data`` ourselves (``python_multipart``'s streaming
parser into ``bytes``) so an upload lives only in memory unless the operator
asked for ``--keep-uploads``.

Decoding is bounded in three ways, so many concurrent large uploads cannot
exhaust memory: at most :func:`decode_slots` images decode at once; the pixel
limit is checked from the header before decoding (for a JPEG, against the size
it is decoded at: large JPEGs are decoded reduced, 1/2 to 1/8, in draft mode);
and each decoded image is shrunk to about :data:`WORK_PIXELS` before it waits for
the model (which sees 224 px anyway).
"""

from __future__ import annotations

import io
import math
import os
import secrets
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from panderm.data.images import MAX_ASPECT_RATIO, MIN_SIDE, to_rgb

#: Default pixel limit for served images (pixels actually decoded; a JPEG counts at its draft size):
#: a 48 MP phone JPEG passes (decoded at 1/2 or 1/4), a 49 MP PNG or a bomb does not.
SERVE_MAX_PIXELS = 16_000_000
#: Decoded images are shrunk to about this many pixels (short side ≥ WORK_MIN_SIDE) before the model.
WORK_PIXELS = 4_000_000
WORK_MIN_SIDE = 512
#: Most images decoded at once (never more than the CPU count) ...
MAX_DECODE_SLOTS = 4
#: ... and fewer when that many decodes at the pixel limit would need more memory than this
#: (Pillow keeps RGB as 4 bytes a pixel; shrinking adds an intermediate; measured ~6.3 bytes a pixel).
DECODE_MEMORY_BUDGET = 768 * 2**20
BYTES_PER_DECODED_PIXEL = 7
#: Room for multipart boundaries and part headers on top of the image limit.
MULTIPART_SLACK = 64 * 1024

_ORIENT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
           5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
           8: Image.Transpose.ROTATE_90}
_EXT = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif", "GIF": ".gif"}


class UploadError(Exception):
    """A rejected upload: ``status`` (4xx) and a message safe to show the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


async def read_body(request, limit: int) -> bytes:
    """The request body, refusing (413) anything over ``limit`` bytes, by header or by count."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            n = int(declared)
        except ValueError:
            raise UploadError(400, "invalid Content-Length header") from None
        if n > limit:
            raise UploadError(413, f"upload too large: {n:,} bytes > limit {limit:,}")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise UploadError(413, f"upload too large: more than {limit:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def extract_image_bytes(body: bytes, content_type: str, field: str = "image") -> bytes:
    """The bytes of form field ``field`` (multipart), or the raw body for ``image/*`` requests."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    ctype, params = parse_options_header(content_type or "")
    ctype = ctype.decode("latin-1").lower()
    if ctype.startswith("image/") or ctype == "application/octet-stream":
        data = body
    elif ctype == "multipart/form-data":
        boundary = params.get(b"boundary")
        if not boundary:
            raise UploadError(400, "multipart body without a boundary")
        parts = _parse_multipart(MultipartParser, parse_options_header, body, boundary)
        if field not in parts:
            raise UploadError(422, f"no '{field}' field in the form (send it as -F {field}=@file.jpg)")
        data = parts[field]
    else:
        raise UploadError(415, f"send multipart/form-data with an '{field}' file field (got '{ctype or 'none'}')")
    if not data:
        raise UploadError(400, "empty upload (0 bytes)")
    return data


def _parse_multipart(parser_cls, parse_header, body: bytes, boundary: bytes) -> dict[str, bytes]:
    parts: dict[str, bytes] = {}
    state = {"headers": {}, "field": b"", "value": b"", "data": []}

    def on_part_begin():
        state["headers"], state["data"] = {}, []

    def on_header_field(data, start, end):
        state["field"] += data[start:end]

    def on_header_value(data, start, end):
        state["value"] += data[start:end]

    def on_header_end():
        state["headers"][state["field"].decode("latin-1").lower()] = state["value"]
        state["field"], state["value"] = b"", b""

    def on_part_data(data, start, end):
        state["data"].append(bytes(data[start:end]))

    def on_part_end():
        _, opts = parse_header(state["headers"].get("content-disposition", b""))
        name = opts.get(b"name")
        if name is not None:
            parts.setdefault(name.decode("utf-8", "replace"), b"".join(state["data"]))

    callbacks = {"on_part_begin": on_part_begin, "on_header_field": on_header_field,
                 "on_header_value": on_header_value, "on_header_end": on_header_end,
                 "on_part_data": on_part_data, "on_part_end": on_part_end}
    try:
        parser = parser_cls(boundary, callbacks)
        parser.write(body)
        parser.finalize()
    except Exception:  # noqa: BLE001 - any parser failure is a bad request
        raise UploadError(400, "malformed multipart body") from None
    return parts


def decode_slot_count(n: int | None = None, max_pixels: int | None = SERVE_MAX_PIXELS) -> int:
    """How many uploads may decode at once, between 1 and the CPU count.

    ``n`` when given; else ``min(cpu_count, 4)``, fewer when ``max_pixels`` is so high that
    that many decodes at the limit would need more than :data:`DECODE_MEMORY_BUDGET`.
    """
    cpus = os.cpu_count() or 1
    if n is not None:
        return max(1, min(int(n), cpus))
    per_decode = BYTES_PER_DECODED_PIXEL * (max_pixels or DECODE_MEMORY_BUDGET)
    return max(1, min(cpus, MAX_DECODE_SLOTS, DECODE_MEMORY_BUDGET // per_decode))


def decode_slots(n: int | None = None, max_pixels: int | None = SERVE_MAX_PIXELS) -> threading.BoundedSemaphore:
    """A semaphore bounding concurrent decodes to :func:`decode_slot_count`."""
    return threading.BoundedSemaphore(decode_slot_count(n, max_pixels))


def decode_pool(n: int | None = None, max_pixels: int | None = SERVE_MAX_PIXELS) -> ThreadPoolExecutor:
    """The threads uploads are decoded on, :func:`decode_slot_count` of them.

    Own threads (not the server's general pool of dozens) also bound the memory the
    C allocator keeps after large decodes: it caches freed blocks per thread.
    """
    return ThreadPoolExecutor(max_workers=decode_slot_count(n, max_pixels), thread_name_prefix="panderm-decode")


def decode_image(data: bytes, max_pixels: int | None = SERVE_MAX_PIXELS, *,
                 slots: threading.Semaphore | None = None) -> tuple[Image.Image, dict]:
    """Decode upload bytes to an upright 8-bit RGB image of at most about :data:`WORK_PIXELS`.

    Args:
        data: The uploaded file.
        max_pixels: Largest image decoded (a JPEG counts at its draft size); larger → 413.
        slots: Held while decoding (see :func:`decode_slots`); ``None``: unbounded.

    Returns:
        The image and ``{"width", "height", "format"}`` of the upload (upright, original size).

    Raises:
        UploadError: 400 empty, 415 not an image, 413 too many pixels, 422 too small
            (short side under 32 px), corrupt or truncated.
    """
    if not data:
        raise UploadError(400, "empty upload (0 bytes)")
    if slots is None:
        return _decode(data, max_pixels)
    with slots:
        return _decode(data, max_pixels)


def _decode(data: bytes, max_pixels: int | None) -> tuple[Image.Image, dict]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        img = _open(data)
        width, height = img.size
        fmt = img.format or "unknown"
        _check_size(width, height, max_pixels, img)
        _full_decode(img)
        orientation = _orientation(img)  # after decoding: a PNG's eXIf chunk may follow its pixels
    img = _shrink(_to_rgb(img))
    if orientation in _ORIENT:
        img = img.transpose(_ORIENT[orientation])
        if orientation >= 5:
            width, height = height, width
    return img, {"width": width, "height": height, "format": fmt}


def _open(data: bytes) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise UploadError(415, "not a recognised image format (send a JPEG, PNG, WebP, BMP or TIFF)") from None
    except Image.DecompressionBombError as exc:
        raise UploadError(413, f"image too large ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - header parsers raise assorted types
        raise UploadError(422, f"cannot decode image: corrupt image header ({_short(exc)})") from None


def _check_size(width: int, height: int, max_pixels: int | None, img: Image.Image) -> None:
    """Refuse tiny or strip-shaped images (422) and, before decoding, too many pixels (413); JPEGs get a draft
    size first."""
    if min(width, height) < MIN_SIDE:
        raise UploadError(422, f"image too small: {width}x{height} pixels; the short side must be at least "
                               f"{MIN_SIDE} px")
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):  # resizing a thin strip costs gigabytes
        raise UploadError(422, f"unusual shape: {width}x{height} pixels is more than {MAX_ASPECT_RATIO}:1; "
                               "crop the image to the lesion")
    if img.format == "JPEG":
        img.draft("RGB", _work_size(width, height))  # decode at 1/2, 1/4 or 1/8 when that is still enough
    w, h = img.size
    if max_pixels is not None and w * h > max_pixels:
        shown = f"{w}x{h}" if (w, h) == (width, height) else f"{width}x{height} (decoded at {w}x{h})"
        raise UploadError(413, f"image too large: {shown} = {w * h:,} pixels > limit {max_pixels:,}")


def _work_size(width: int, height: int) -> tuple[int, int]:
    """About WORK_PIXELS, keeping the aspect ratio and a short side of at least WORK_MIN_SIDE; never larger."""
    scale = min(1.0, math.sqrt(WORK_PIXELS / (width * height)))
    scale = min(1.0, max(scale, WORK_MIN_SIDE / min(width, height)))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(0x0112) or 1)
    except Exception:  # noqa: BLE001 - malformed EXIF should not lose an otherwise fine image
        return 1


def _full_decode(img: Image.Image) -> None:
    """Decode now, so a truncated file is an error (422) rather than a grey band."""
    try:
        img.load()
    except Image.DecompressionBombError as exc:
        raise UploadError(413, f"image too large ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - decoder plugins raise assorted types
        msg = _short(exc)
        reason = "truncated image data" if "truncated" in msg.lower() else f"corrupt image data ({msg})"
        raise UploadError(422, f"cannot decode image: {reason}") from None


def _to_rgb(img: Image.Image) -> Image.Image:
    try:
        return to_rgb(img)
    except Exception:  # noqa: BLE001 - odd modes: a client error, not a 500
        raise UploadError(422, "cannot convert image to RGB") from None


def _shrink(img: Image.Image) -> Image.Image:
    size = _work_size(*img.size)
    if size == img.size:
        return img
    return img.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)


def _short(exc: Exception) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:160]


def prepare_keep_folder(directory: str | os.PathLike) -> Path:
    """Create ``directory`` (and parents) for kept uploads and make it private (0700)."""
    from panderm.errors import ConfigError

    directory = Path(directory)
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
    except OSError as exc:
        raise ConfigError(f"cannot use --keep-uploads folder {directory}: {exc.strerror or exc}",
                          hint="pass a folder you own and may write to") from None
    return directory


def keep_upload(directory: str | os.PathLike, data: bytes, fmt: str) -> Path:
    """Write ``data`` to ``directory`` (made private, 0700) under a random name: a 0600 file, atomically."""
    directory = prepare_keep_folder(directory)
    name = secrets.token_hex(16) + _EXT.get(fmt, ".bin")
    tmp = directory / f".{name}.part"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    final = directory / name
    os.replace(tmp, final)
    return final
