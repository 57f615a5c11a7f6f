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


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)


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
    """``fn(items)`` for the batcher: items are ``(image, k_neighbours)``; one encoder pass per batch."""
    has_features = all(hasattr(classifier, a) for a in ("embed", "predict_features", "neighbours"))

    def fn(items):
        images = [img for img, _ in items]
        ks = [k for _, k in items]
        if has_features and any(ks):
            feats = classifier.embed(images)
            probs = np.asarray(classifier.predict_features(feats), dtype=np.float64)
            kmax = max(ks)
            want = [i for i, k in enumerate(ks) if k]
            nbrs = classifier.neighbours(feats[want], k=kmax)
            out_n = [[] for _ in items]
            for i, row in zip(want, nbrs):
                out_n[i] = list(row)[: ks[i]]
        else:
            probs = np.asarray(classifier.predict_proba(images), dtype=np.float64)
            out_n = [[] for _ in items]
        return [(probs[i], out_n[i]) for i in range(len(items))]

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
    from panderm import __version__

    max_bytes = int(max_upload_mb * 1024 * 1024)
    hosts = accepted_hosts(host)
    slots = decode_slots(decode_concurrency, max_pixels)
    decoder = decode_pool(decode_concurrency, max_pixels)
    if keep_uploads is not None:
        prepare_keep_folder(keep_uploads)
    info = _jsonable(classifier.model_info())
    name = _model_name(info, classifier)
    classes = [str(c) for c in classifier.classes]
    descriptions = {str(k): str(v) for k, v in (getattr(classifier, "descriptions", {}) or {}).items()}
    malignant = sorted(str(c) for c in (getattr(classifier, "malignant", set()) or set()))
    card = str(getattr(classifier, "card", "") or "")
    batcher = MicroBatcher(make_batch_fn(classifier), window_ms=batch_window_ms, max_batch=max_batch,
                           enabled=microbatch)
    started = time.time()
    counters = {"requests": 0, "predictions": 0, "errors": 0}

    async def lifespan(app):
        yield
        await batcher.aclose()
        batcher.shutdown()
        decoder.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="PanDerm decision support (research use only)", version=__version__,
                  description="Skin-lesion classifier API. Research use only — not a diagnosis.",
                  docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.classifier = classifier
    app.state.batcher = batcher
    static_dir = resources.files("panderm.serve") / "static"
    app.mount("/static", StaticFiles(directory=str(static_dir)), name="static")

    def error(status: int, message: str, headers: dict | None = None):
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    @app.middleware("http")
    async def guard_and_log(request: Request, call_next):
        t0 = time.perf_counter()
        path = request.url.path
        refusal = host_refusal(request, hosts)
        if refusal is not None:
            response = error(403, refusal)
        elif token is not None and path.startswith("/api/") and not _token_ok(request, token):
            response = error(401, "missing or wrong access token (send 'Authorization: Bearer TOKEN' "
                                  "or 'X-Panderm-Token: TOKEN')", {"WWW-Authenticate": "Bearer"})
        else:
            try:
                response = await call_next(request)
            except Exception:  # anything unhandled: log it here, never show it
                log.exception("unhandled error on %s %s", request.method, path)
                response = error(500, "internal server error")
        if path == "/" or path.startswith("/static/"):
            for key, value in _PAGE_HEADERS.items():
                response.headers.setdefault(key, value)
        counters["requests"] += 1
        if response.status_code >= 400:
            counters["errors"] += 1
        log.info("%s %s %d %.1fms in=%s out=%s", request.method, path, response.status_code,
                 (time.perf_counter() - t0) * 1000.0, request.headers.get("content-length", "-"),
                 response.headers.get("content-length", "-"))
        return response

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc):
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404:
            message = "not found"
        return error(exc.status_code, message, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc):
        parts = []
        for e in exc.errors()[:3]:
            where = ".".join(str(x) for x in e.get("loc", ()) if x not in ("query", "body"))
            parts.append(f"{where}: {e.get('msg', 'invalid')}" if where else str(e.get("msg", "invalid")))
        return error(422, "invalid request: " + "; ".join(parts))

    @app.exception_handler(UploadError)
    async def upload_error(request, exc):
        return error(exc.status, exc.message)

    @app.exception_handler(Exception)
    async def server_error(request, exc):
        log.error("internal error on %s %s: %s", request.method, request.url.path, type(exc).__name__)
        return error(500, "internal server error")

    @app.get("/", include_in_schema=False)
    async def page():
        html = (static_dir / "index.html").read_text(encoding="utf-8")
        return HTMLResponse(html)

    @app.get("/docs", include_in_schema=False)
    async def docs_note():
        return HTMLResponse(_DOCS_NOTE)

    @app.get("/api/v1/health", summary="Liveness and counters")
    async def health():
        return {"status": "ok", "model": name, "n_classes": len(classes), "version": __version__,
                "uptime_s": round(time.time() - started, 1), "microbatch": batcher.stats(),
                "token_required": token is not None, **counters}

    @app.get("/api/v1/model", summary="Model information and model card")
    async def model():
        return {"name": name, "model": info, "classes": classes, "descriptions": descriptions,
                "malignant": malignant, "card": card, "max_upload_mb": max_upload_mb,
                "max_pixels": max_pixels, "reference_images": reference_images,
                "notice": "Research use only — not a diagnosis."}

    @app.post("/api/v1/predict", summary="Classify one skin-lesion image", openapi_extra=_PREDICT_OPENAPI)
    async def predict(request: Request, neighbours: int | None = None):
        t0 = time.perf_counter()
        k = neighbours_default if neighbours is None else neighbours
        if not 0 <= k <= MAX_NEIGHBOURS:
            raise UploadError(422, f"neighbours must be between 0 and {MAX_NEIGHBOURS}")
        body = await read_body(request, max_bytes + MULTIPART_SLACK)
        data = extract_image_bytes(body, request.headers.get("content-type", ""))
        del body
        if len(data) > max_bytes:
            raise UploadError(413, f"image file too large: {len(data):,} bytes > limit {max_bytes:,}")
        image, upload = await asyncio.get_running_loop().run_in_executor(
            decoder, functools.partial(decode_image, data, max_pixels, slots=slots))
        if keep_uploads is not None:
            await run_in_threadpool(keep_upload, keep_uploads, data, upload["format"])
        del data
        probs, nbrs = await batcher.submit((image, k))
        counters["predictions"] += 1
        order = np.argsort(-probs, kind="stable")
        top = classes[order[0]]
        result = {
            "classes": [classes[i] for i in order],
            "probabilities": [float(probs[i]) for i in order],
            "top": {"class": top, "probability": float(probs[order[0]]),
                    "description": descriptions.get(top, ""), "malignant": top in malignant},
            "malignant": malignant,
            "descriptions": descriptions,
            "model": info,
            "image": upload,
            "notice": "Research use only — not a diagnosis.",
        }
        if k:
            result["neighbours"] = _jsonable(nbrs if reference_images else hide_reference_images(nbrs))
        result["latency_ms"] = round((time.perf_counter() - t0) * 1000.0, 2)
        return result

    neighbours_default = int(neighbours)
    return app


def _token_ok(request, token: str) -> bool:
    supplied = request.headers.get("x-panderm-token")
    auth = request.headers.get("authorization", "")
    if supplied is None and auth[:7].lower() == "bearer ":
        supplied = auth[7:].strip()
    if not supplied:
        return False
    return hmac.compare_digest(supplied.encode("utf-8", "replace"), token.encode("utf-8"))
