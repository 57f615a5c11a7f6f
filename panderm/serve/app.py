"""The FastAPI app behind ``panderm serve``: the page, the static files and a small JSON API.

Safe defaults: only loopback ``Host`` names (and the ``--host`` name) are
answered and foreign ``Origin`` headers are refused (DNS rebinding, cross-site
requests); optional bearer token on every ``/api/*`` call; bounded upload size,
pixel limit and concurrent decoding; uploads kept in memory only (unless
``keep_uploads``: private files in a private folder); JSON errors without stack
traces; a request log that never contains image content.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from panderm.eval.ood import gate_verdict
from panderm.image_quality import assess_image
from panderm.io import jsonable
from panderm.serve.batcher import MicroBatcher
from panderm.serve.server import accepted_hosts, normalise_host
from panderm.serve.uploads import (
    MULTIPART_SLACK,
    SERVE_MAX_PIXELS,
    UploadError,
    decode_image,
    decode_pool,
    decode_slots,
    extract_image_bytes,
    keep_upload,
    prepare_keep_folder,
    read_body,
)

log = logging.getLogger("panderm.serve")

MAX_NEIGHBOURS = 20

_PAGE_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
                                "script-src 'self'; connect-src 'self'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}

_DOCS_NOTE = """<!doctype html><meta charset="utf-8"><title>PanDerm API</title>
<body style="font-family:sans-serif;max-width:40em;margin:2em auto">
<h1>PanDerm API</h1><p>This server works offline, so the interactive Swagger UI (loaded from a CDN) is
disabled. The OpenAPI schema is at <a href="/openapi.json">/openapi.json</a>.</p>
<pre>curl -F image=@lesion.jpg http://HOST:PORT/api/v1/predict</pre></body>"""

_PREDICT_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["image"],
            "properties": {"image": {"type": "string", "format": "binary",
                                     "description": "JPEG/PNG/WebP/BMP/TIFF image"}}}}},
    },
    "responses": {"400": {"description": "Bad upload"}, "401": {"description": "Missing or wrong token"},
                  "403": {"description": "Foreign Host or Origin header"},
                  "413": {"description": "Upload or image too large"},
                  "415": {"description": "Not an image"},
                  "422": {"description": "Corrupt image, or short side under 32 px"}},
}


def _model_name(info: dict, classifier) -> str:
    meta = getattr(classifier, "meta", {}) or {}
    for key in ("name", "model", "encoder"):
        value = info.get(key) or meta.get(key)
        if isinstance(value, str) and value:
            return value
    return type(classifier).__name__


def host_refusal(request, hosts: frozenset[str] | None) -> str | None:
    """Why ``request`` must be refused (403) for its ``Host`` or ``Origin`` header; ``None``: fine.

    ``hosts``: the accepted host names (:func:`panderm.serve.server.accepted_hosts`;
    ``None``: any ``Host``, and an ``Origin`` must then name the request's own host).
    A request without ``Origin`` (curl, same-origin page loads) is fine.
    """
    host = normalise_host(request.headers.get("host", ""))
    if hosts is not None and host not in hosts:
        shown = ", ".join(f"[{h}]" if ":" in h else h for h in sorted(hosts))
        return (f"Host '{host[:100]}' is not accepted by this server (it answers to {shown}); "
                "open it as http://127.0.0.1:PORT/ or start it with --host NAME")
    origin = request.headers.get("origin")
    if origin is None:
        return None
    parts = urlsplit(origin.strip())
    name = (parts.hostname or "").rstrip(".")
    allowed = hosts if hosts is not None else {host}
    if parts.scheme not in ("http", "https") or name not in allowed or not _same_port(parts, request):
        return f"cross-origin request from '{origin[:100]}' refused: this server only answers its own pages"
    return None


def _same_port(origin, request) -> bool:
    """The ``Origin``'s port is this server's: another local port is another site (any local web page)."""
    default = {"http": 80, "https": 443}
    try:
        theirs = origin.port or default[origin.scheme]
        ours = urlsplit("//" + request.headers.get("host", "")).port or request.url.port or default.get(
            request.url.scheme, 80)
    except (ValueError, KeyError):  # a malformed port
        return False
    return theirs == ours


def hide_reference_images(cases: list[dict]) -> list[dict]:
    """The similar cases without their pictures or image names (other patients' images)."""
    return [{**case, "thumbnail": None, "image": None} for case in cases]


def make_batch_fn(classifier):
    """``fn(items)`` for the batcher: items are ``(image, k_neighbours)``; one encoder pass per batch.

    Each result is ``(probabilities, neighbours, ood score or None)``; the score needs the
    classifier's ``ood_scores`` (a bundle with an out-of-distribution gate).
    """
    has_features = all(hasattr(classifier, a) for a in ("embed", "predict_features", "neighbours"))
    gated = has_features and getattr(classifier, "ood_gate", None) is not None

    def fn(items):
        images = [img for img, _ in items]
        ks = [k for _, k in items]
        out_n: list[list] = [[] for _ in items]
        scores = [None] * len(items)
        if has_features and (gated or any(ks)):
            feats = classifier.embed(images)
            probs = np.asarray(classifier.predict_features(feats), dtype=np.float64)
            if gated:
                scores = [float(v) for v in classifier.ood_scores(feats)]
            want = [i for i, k in enumerate(ks) if k]
            if want:
                for i, row in zip(want, classifier.neighbours(feats[want], k=max(ks))):
                    out_n[i] = list(row)[: ks[i]]
        else:
            probs = np.asarray(classifier.predict_proba(images), dtype=np.float64)
        return [(probs[i], out_n[i], scores[i]) for i in range(len(items))]

    return fn


def create_app(classifier, *, token: str | None = None, max_upload_mb: float = 10,
               max_pixels: int | None = SERVE_MAX_PIXELS, keep_uploads=None, batch_window_ms: float = 5,
               max_batch: int = 16, microbatch: bool = True, neighbours: int = 5, host: str = "127.0.0.1",
               reference_images: bool = True, decode_concurrency: int | None = None):
    """Build the web app around a loaded classifier (see :mod:`panderm.classifier`).

    Args:
        classifier: Object with ``classes``, ``descriptions``, ``malignant``,
            ``card``, ``model_info()``, ``predict_proba()`` (and optionally
            ``embed``/``predict_features``/``neighbours`` for similar cases).
        token: When set, every ``/api/*`` call needs ``Authorization: Bearer TOKEN``
            or ``X-Panderm-Token: TOKEN``.
        max_upload_mb: Largest accepted image file (MiB); larger → 413.
        max_pixels: Largest image (width × height) decoded; larger → 413. JPEGs count at
            the reduced size they are decoded at (draft mode).
        keep_uploads: Folder to keep a copy of each successfully decoded upload
            (made 0700; random name, 0600, atomic write); ``None`` (default): nothing is written.
        batch_window_ms, max_batch: Micro-batching window and batch cap.
        microbatch: ``False``: one model call per request.
        neighbours: Default number of similar cases returned (``?neighbours=`` overrides; 0 skips).
        host: The interface the server listens on: requests must name a loopback host or this
            one in ``Host`` (any, for ``0.0.0.0``/``::``), and a present ``Origin`` must match.
        reference_images: ``False``: similar cases come without thumbnails or image names
            (they are other patients' pictures).
        decode_concurrency: Most uploads decoded at once, on their own threads (default
            ``min(cpu_count, 4)``, fewer for a raised ``max_pixels``; never above the CPU count).
    """
    s = _Served.build(classifier, token=token, max_upload_mb=max_upload_mb, max_pixels=max_pixels,
                      keep_uploads=keep_uploads, batch_window_ms=batch_window_ms, max_batch=max_batch,
                      microbatch=microbatch, neighbours=neighbours, host=host,
                      reference_images=reference_images, decode_concurrency=decode_concurrency)
    app = _new_app(s)
    _add_guard(app, s)
    _add_error_handlers(app)
    _add_pages(app)
    _add_info_routes(app, s)
    _add_predict_route(app, s)
    return app


@dataclass
class _Served:
    """Everything the routes share: the classifier's public description, the limits and the live state."""

    classifier: Any
    token: str | None
    hosts: frozenset[str] | None
    max_upload_mb: float
    max_bytes: int
    max_pixels: int | None
    slots: Any
    decoder: Any
    keep_uploads: Any
    reference_images: bool
    neighbours_default: int
    info: dict
    name: str
    classes: list[str]
    descriptions: dict[str, str]
    malignant: list[str]
    card: str
    batcher: MicroBatcher
    started: float = field(default_factory=time.time)
    counters: dict = field(default_factory=lambda: {"requests": 0, "predictions": 0, "not_assessable": 0,
                                                    "errors": 0})

    @classmethod
    def build(cls, classifier, *, token, max_upload_mb, max_pixels, keep_uploads, batch_window_ms, max_batch,
              microbatch, neighbours, host, reference_images, decode_concurrency) -> _Served:
        """Check the options, prepare the keep folder and decode pool, describe the classifier, start the batcher."""
        hosts = accepted_hosts(host)
        slots = decode_slots(decode_concurrency, max_pixels)
        decoder = decode_pool(decode_concurrency, max_pixels)
        if keep_uploads is not None:
            prepare_keep_folder(keep_uploads)
        info = jsonable(classifier.model_info())
        descriptions = {str(k): str(v) for k, v in (getattr(classifier, "descriptions", {}) or {}).items()}
        batcher = MicroBatcher(make_batch_fn(classifier), window_ms=batch_window_ms, max_batch=max_batch,
                               enabled=microbatch)
        return cls(classifier, token, hosts, max_upload_mb, int(max_upload_mb * 1024 * 1024), max_pixels, slots,
                   decoder, keep_uploads, reference_images, int(neighbours), info, _model_name(info, classifier),
                   [str(c) for c in classifier.classes], descriptions,
                   sorted(str(c) for c in (getattr(classifier, "malignant", set()) or set())),
                   str(getattr(classifier, "card", "") or ""), batcher)


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    """The one error shape of the API: ``{"error": message}``."""
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _new_app(s: _Served) -> FastAPI:
    """The FastAPI app (no Swagger UI: offline), its static files, and a lifespan that stops the workers."""
    from panderm import __version__

    async def lifespan(app):
        yield
        await s.batcher.aclose()
        s.batcher.shutdown()
        s.decoder.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="PanDerm decision support (research use only)", version=__version__,
                  description="Skin-lesion classifier API. Research use only — not a diagnosis.",
                  docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.classifier = s.classifier
    app.state.batcher = s.batcher
    app.mount("/static", StaticFiles(directory=str(_static_dir())), name="static")
    return app


def _static_dir():
    return resources.files("panderm.serve") / "static"


def _add_guard(app: FastAPI, s: _Served) -> None:
    """Middleware: Host/Origin and token checks, page security headers, counters and the request log."""

    @app.middleware("http")
    async def guard_and_log(request: Request, call_next):
        t0 = time.perf_counter()
        path = request.url.path
        refusal = host_refusal(request, s.hosts)
        if refusal is not None:
            response = _error(403, refusal)
        elif s.token is not None and path.startswith("/api/") and not _token_ok(request, s.token):
            response = _error(401, "missing or wrong access token (send 'Authorization: Bearer TOKEN' "
                                   "or 'X-Panderm-Token: TOKEN')", {"WWW-Authenticate": "Bearer"})
        else:
            try:
                response = await call_next(request)
            except Exception:  # anything unhandled: log it here, never show it
                log.exception("unhandled error on %s %s", request.method, path)
                response = _error(500, "internal server error")
        if path == "/" or path.startswith("/static/"):
            for key, value in _PAGE_HEADERS.items():
                response.headers.setdefault(key, value)
        s.counters["requests"] += 1
        if response.status_code >= 400:
            s.counters["errors"] += 1
        log.info("%s %s %d %.1fms in=%s out=%s", request.method, path, response.status_code,
                 (time.perf_counter() - t0) * 1000.0, request.headers.get("content-length", "-"),
                 response.headers.get("content-length", "-"))
        return response


def _add_error_handlers(app: FastAPI) -> None:
    """Every error as ``{"error": ...}`` JSON, never a stack trace."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc):
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404:
            message = "not found"
        return _error(exc.status_code, message, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc):
        parts = []
        for e in exc.errors()[:3]:
            where = ".".join(str(x) for x in e.get("loc", ()) if x not in ("query", "body"))
            parts.append(f"{where}: {e.get('msg', 'invalid')}" if where else str(e.get("msg", "invalid")))
        return _error(422, "invalid request: " + "; ".join(parts))

    @app.exception_handler(UploadError)
    async def upload_error(request, exc):
        return _error(exc.status, exc.message)

    @app.exception_handler(Exception)
    async def server_error(request, exc):
        log.error("internal error on %s %s: %s", request.method, request.url.path, type(exc).__name__)
        return _error(500, "internal server error")


def _add_pages(app: FastAPI) -> None:
    """``/`` (the page) and ``/docs`` (a note pointing at the OpenAPI schema)."""

    @app.get("/", include_in_schema=False)
    async def page():
        html = (_static_dir() / "index.html").read_text(encoding="utf-8")
        return HTMLResponse(html)

    @app.get("/docs", include_in_schema=False)
    async def docs_note():
        return HTMLResponse(_DOCS_NOTE)


def _add_info_routes(app: FastAPI, s: _Served) -> None:
    """``/api/v1/health`` (liveness, counters) and ``/api/v1/model`` (model information and card)."""
    from panderm import __version__

    @app.get("/api/v1/health", summary="Liveness and counters")
    async def health():
        return {"status": "ok", "model": s.name, "n_classes": len(s.classes), "version": __version__,
                "uptime_s": round(time.time() - s.started, 1), "microbatch": s.batcher.stats(),
                "token_required": s.token is not None, **s.counters}

    @app.get("/api/v1/model", summary="Model information and model card")
    async def model():
        return {"name": s.name, "model": s.info, "classes": s.classes, "descriptions": s.descriptions,
                "malignant": s.malignant, "card": s.card, "max_upload_mb": s.max_upload_mb,
                "max_pixels": s.max_pixels, "reference_images": s.reference_images,
                "ood_gate": s.info.get("ood_gate"), "ood_notice": _ood_notice(s.classifier),
                "notice": "Research use only — not a diagnosis."}


def _add_predict_route(app: FastAPI, s: _Served) -> None:
    """``POST /api/v1/predict``: bounded read, threaded decode, micro-batched prediction."""

    @app.post("/api/v1/predict", summary="Classify one skin-lesion image", openapi_extra=_PREDICT_OPENAPI)
    async def predict(request: Request, neighbours: int | None = None):
        t0 = time.perf_counter()
        k = s.neighbours_default if neighbours is None else neighbours
        if not 0 <= k <= MAX_NEIGHBOURS:
            raise UploadError(422, f"neighbours must be between 0 and {MAX_NEIGHBOURS}")
        image, upload, quality = await _read_upload(request, s)
        probs, nbrs, score = await s.batcher.submit((image, k))
        s.counters["predictions"] += 1
        result = _prediction(s, probs, upload)
        gate = getattr(s.classifier, "ood_gate", None)
        result["ood"] = jsonable(gate_verdict(score, gate, quality))
        result["quality"] = jsonable(quality.to_dict())
        # one plain flag for clients, and which gates ran (a bundle without a gate checks quality only)
        result["assessable"] = result["ood"]["in_distribution"]
        result["gates"] = ["image quality"] + (["out of distribution"] if gate is not None else [])
        if not result["ood"]["in_distribution"]:
            s.counters["not_assessable"] += 1
        if k:
            result["neighbours"] = jsonable(nbrs if s.reference_images else hide_reference_images(nbrs))
        result["latency_ms"] = round((time.perf_counter() - t0) * 1000.0, 2)
        return result


async def _read_upload(request: Request, s: _Served):
    """``(image, upload info, quality report)`` of a predict request: size limits, decode and the
    image-quality gate on the pool, optional kept copy."""
    body = await read_body(request, s.max_bytes + MULTIPART_SLACK)
    data = extract_image_bytes(body, request.headers.get("content-type", ""))
    del body
    if len(data) > s.max_bytes:
        raise UploadError(413, f"image file too large: {len(data):,} bytes > limit {s.max_bytes:,}")
    loop = asyncio.get_running_loop()
    image, upload = await loop.run_in_executor(
        s.decoder, functools.partial(decode_image, data, s.max_pixels, slots=s.slots))
    quality = await loop.run_in_executor(s.decoder, assess_image, np.asarray(image))
    if s.keep_uploads is not None:
        await run_in_threadpool(keep_upload, s.keep_uploads, data, upload["format"])
    return image, upload, quality


def _prediction(s: _Served, probs: np.ndarray, upload: dict) -> dict:
    """The predict response body: classes by probability, the top class, the model and the upload."""
    order = np.argsort(-probs, kind="stable")
    top = s.classes[order[0]]
    return {
        "classes": [s.classes[i] for i in order],
        "probabilities": [float(probs[i]) for i in order],
        "top": {"class": top, "probability": float(probs[order[0]]),
                "description": s.descriptions.get(top, ""), "malignant": top in s.malignant},
        "malignant": s.malignant,
        "descriptions": s.descriptions,
        "model": s.info,
        "image": upload,
        "notice": "Research use only — not a diagnosis.",
    }


def _ood_notice(classifier) -> str | None:
    """Why the served classifier cannot refuse out-of-distribution images (``None``: it can)."""
    if getattr(classifier, "ood_gate", None) is not None:
        return None
    return getattr(classifier, "ood_notice", None) or (
        "this classifier has no out-of-distribution gate: only the image-quality gate can refuse an image")


def _token_ok(request, token: str) -> bool:
    supplied = request.headers.get("x-panderm-token")
    auth = request.headers.get("authorization", "")
    if supplied is None and auth[:7].lower() == "bearer ":
        supplied = auth[7:].strip()
    if not supplied:
        return False
    return hmac.compare_digest(supplied.encode("utf-8", "replace"), token.encode("utf-8"))
