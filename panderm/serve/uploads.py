"""Upload handling that never touches the disk: bounded body read, in-memory
multipart parsing, safe image decoding, optional atomic keep-copy.

Starlette's own form parser spools file parts over 1 MiB to a temporary file;
we parse ``multipart/form-data`` ourselves (``python_multipart``'s streaming
parser into ``bytes``) so an upload lives only in memory unless the operator
asked for ``--keep-uploads``.
"""

from __future__ import annotations

import io
import os
import secrets
from pathlib import Path

from PIL import Image, ImageOps

from panderm.data.images import ImageReadError, _open_decoded, to_rgb

#: Default pixel limit for served images: a 48 MP phone photo passes, a bomb does not.
SERVE_MAX_PIXELS = 50_000_000
#: Room for multipart boundaries and part headers on top of the image limit.
MULTIPART_SLACK = 64 * 1024

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


def decode_image(data: bytes, max_pixels: int | None = SERVE_MAX_PIXELS) -> tuple[Image.Image, str]:
    """Decode upload bytes to an upright 8-bit RGB image and its format name.

    Uses the same checks as :func:`panderm.data.images.load_rgb` (pixel limit
    checked from the header before decoding, forced full decode so truncation
    is an error) and maps each failure to a 4xx ``UploadError``.
    """
    if not data:
        raise UploadError(400, "empty upload (0 bytes)")
    try:
        img = _open_decoded(io.BytesIO(data), max_pixels)
    except ImageReadError as exc:
        reason = exc.reason
        if reason.startswith("image too large"):
            raise UploadError(413, reason) from None
        if reason.startswith("not a recognised"):
            raise UploadError(415, "not a recognised image format (send a JPEG, PNG, WebP, BMP or TIFF)") from None
        raise UploadError(422, f"cannot decode image: {reason}") from None
    fmt = img.format or "unknown"
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001, S110 - malformed EXIF should not lose an otherwise fine image
        pass
    try:
        return to_rgb(img), fmt
    except Exception:  # noqa: BLE001 - odd modes: a client error, not a 500
        raise UploadError(422, "cannot convert image to RGB") from None


def keep_upload(directory: str | os.PathLike, data: bytes, fmt: str) -> Path:
    """Write ``data`` to ``directory`` under a random name, atomically (temp file + rename)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    name = secrets.token_hex(16) + _EXT.get(fmt, ".bin")
    tmp = directory / f".{name}.part"
    with open(tmp, "xb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    final = directory / name
    os.replace(tmp, final)
    return final
