"""``panderm serve`` under hostile load: bounded decoding, pixel limits, tiny images, Host/Origin checks,
private kept uploads and hidden reference images."""

from __future__ import annotations

import io
import os
import stat
import threading
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient
from PIL import Image

from panderm.serve import uploads
from panderm.serve.app import create_app
from panderm.serve.fake import FakeClassifier
from panderm.serve.uploads import SERVE_MAX_PIXELS, UploadError, decode_image, decode_slots

BASE = "http://127.0.0.1:8765"


def _client(clf=None, base_url: str = BASE, **kwargs):
    return TestClient(create_app(clf or FakeClassifier(), **kwargs), base_url=base_url,
                      raise_server_exceptions=False)


def _encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


@pytest.fixture(scope="module")
def jpeg_bytes(shared_data) -> bytes:
    return min((shared_data / "ham10000_dermoscopy_cls" / "images").glob("*.jpg")).read_bytes()


def _post(client, data: bytes, mime: str = "image/jpeg", **kwargs):
    return client.post("/api/v1/predict", files={"image": ("x", data, mime)}, **kwargs)


# ------------------------------------------------------------------ decoding limits
def _free_slots(sem) -> int:
    n = 0
    while sem.acquire(blocking=False):
        n += 1
    for _ in range(n):
        sem.release()
    return n


def test_decode_slots_never_exceed_cpu_count():
    cpus = os.cpu_count() or 1
    assert 1 <= _free_slots(decode_slots()) <= min(cpus, uploads.MAX_DECODE_SLOTS)
    assert _free_slots(decode_slots(10_000)) == cpus
    assert _free_slots(decode_slots(0)) == 1


def test_decode_slots_shrink_for_a_raised_pixel_limit():
    from panderm.serve.uploads import DECODE_MEMORY_BUDGET, decode_slot_count

    for max_pixels in (SERVE_MAX_PIXELS, 50_000_000, 100_000_000, 400_000_000):
        n = decode_slot_count(None, max_pixels)
        assert n == 1 or n * max_pixels * uploads.BYTES_PER_DECODED_PIXEL <= DECODE_MEMORY_BUDGET
    assert decode_slot_count(None, 50_000_000) <= 2 and decode_slot_count(None, None) == 1


def test_concurrent_decodes_are_bounded(jpeg_bytes, monkeypatch):
    pytest.importorskip("uvicorn")
    from panderm.serve.loadgen import run_load
    from panderm.serve.server import BackgroundServer

    state = {"now": 0, "peak": 0}
    lock = threading.Lock()
    real = uploads._decode

    def counting_decode(data, max_pixels):
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        try:
            time.sleep(0.05)  # long enough for 12 clients to pile up
            return real(data, max_pixels)
        finally:
            with lock:
                state["now"] -= 1

    monkeypatch.setattr(uploads, "_decode", counting_decode)
    app = create_app(FakeClassifier(), decode_concurrency=2)
    with BackgroundServer(app) as url:
        stats = run_load(url, jpeg_bytes, clients=12, total=36)
    assert stats["errors"] == [] and stats["n"] == 36
    assert state["peak"] == min(2, os.cpu_count() or 1)


def test_default_pixel_limit_is_about_16_megapixels():
    from panderm_serve.commands import SERVE_MAX_PIXELS as CLI_DEFAULT

    assert 15_000_000 <= SERVE_MAX_PIXELS <= 17_000_000
    assert CLI_DEFAULT == SERVE_MAX_PIXELS  # the CLI repeats it to keep --help light
    png = _encode(Image.new("L", (5000, 4000), 128), "PNG")  # 20 MP
    with _client() as c:
        r = _post(c, png, "image/png")
    assert r.status_code == 413 and "20,000,000 pixels > limit 16,000,000" in r.json()["error"]


def test_huge_jpeg_is_decoded_reduced_in_draft_mode(monkeypatch):
    from PIL import JpegImagePlugin

    drafts = []
    real_draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size, *args, **kwargs):
        drafts.append(size)
        return real_draft(self, mode, size, *args, **kwargs)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    data = _encode(Image.linear_gradient("L").resize((6400, 4800)), "JPEG", quality=80)  # 30.7 MP
    img, info = decode_image(data)  # over the 16 MP limit at full size: only a draft decode passes
    assert drafts and info == {"width": 6400, "height": 4800, "format": "JPEG"}
    assert img.mode == "RGB" and img.width * img.height <= 1.05 * uploads.WORK_PIXELS
    assert abs(img.width / img.height - 4 / 3) < 0.01


def test_decoded_images_are_shrunk_and_upright():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    data = _encode(Image.new("RGB", (3000, 2000), (200, 120, 90)), "JPEG", exif=exif)
    img, info = decode_image(data)
    assert (info["width"], info["height"]) == (2000, 3000)
    assert img.height > img.width and img.width * img.height <= 1.05 * uploads.WORK_PIXELS
    png = _encode(Image.new("RGB", (3000, 3000), (10, 20, 30)), "PNG")  # 9 MP, no draft for PNG
    img, info = decode_image(png)
    assert info["width"] == 3000 and img.size == (2000, 2000)


@pytest.mark.parametrize(("size", "status"), [((31, 400), 422), ((400, 20), 422), ((1, 1), 422), ((32, 32), 200)])
def test_images_under_32_px_are_refused(size, status):
    with _client() as c:
        r = _post(c, _encode(Image.new("RGB", size, (150, 90, 80)), "PNG"), "image/png")
    assert r.status_code == status, r.text
    if status == 422:
        assert set(r.json()) == {"error"}
        assert "too small" in r.json()["error"] and "32 px" in r.json()["error"]


def test_decode_image_maps_failures_to_upload_errors():
    with pytest.raises(UploadError) as info:
        decode_image(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    assert info.value.status in (415, 422)
    with pytest.raises(UploadError) as info:
        decode_image(b"")
    assert info.value.status == 400


# ------------------------------------------------------------------ Host and Origin
@pytest.mark.parametrize("host", ["127.0.0.1:8765", "localhost:8765", "localhost", "[::1]:8765", "LOCALHOST:1"])
def test_loopback_host_names_are_accepted(host, jpeg_bytes):
    with _client() as c:
        assert c.get("/api/v1/health", headers={"host": host}).status_code == 200
        assert _post(c, jpeg_bytes, headers={"host": host}).status_code == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8765", "127.0.0.1.evil.example", "192.168.1.5:8765",
                                  "testserver", ""])
def test_foreign_host_names_are_refused(host, jpeg_bytes):
    with _client() as c:
        for r in (c.get("/", headers={"host": host}), c.get("/api/v1/health", headers={"host": host}),
                  _post(c, jpeg_bytes, headers={"host": host})):
            assert r.status_code == 403, (host, r.text)
            assert set(r.json()) == {"error"} and "Host" in r.json()["error"]


def test_host_option_adds_its_name(jpeg_bytes):
    with _client(host="lesions.lan", token="t") as c:
        auth = {"X-Panderm-Token": "t"}
        assert c.get("/api/v1/health", headers={"host": "lesions.lan:8765", **auth}).status_code == 200
        assert c.get("/api/v1/health", headers={"host": "localhost:8765", **auth}).status_code == 200
        assert c.get("/api/v1/health", headers={"host": "other.lan:8765", **auth}).status_code == 403


def test_wildcard_host_accepts_any_name_but_not_a_foreign_origin():
    with _client(host="0.0.0.0", token="t") as c:
        auth = {"X-Panderm-Token": "t"}
        assert c.get("/api/v1/health", headers={"host": "192.168.1.5:8765", **auth}).status_code == 200
        same = {"host": "192.168.1.5:8765", "origin": "http://192.168.1.5:8765", **auth}
        assert c.get("/api/v1/health", headers=same).status_code == 200
        cross = {"host": "192.168.1.5:8765", "origin": "https://evil.example", **auth}
        assert c.get("/api/v1/health", headers=cross).status_code == 403


@pytest.mark.parametrize("origin", ["https://evil.example", "http://evil.example:8765", "null", "file://",
                                    "http://127.0.0.1.evil.example", "chrome-extension://abc",
                                    "http://127.0.0.1:9999", "http://localhost", "http://127.0.0.1:bad"])
def test_foreign_origin_is_refused(origin, jpeg_bytes):
    with _client() as c:
        r = _post(c, jpeg_bytes, headers={"origin": origin})
        assert r.status_code == 403 and "cross-origin" in r.json()["error"], (origin, r.text)
        assert c.get("/api/v1/model", headers={"origin": origin}).status_code == 403


@pytest.mark.parametrize("origin", ["http://127.0.0.1:8765", "http://localhost:8765", "http://[::1]:8765", None])
def test_own_or_missing_origin_is_fine(origin, jpeg_bytes):
    headers = {"origin": origin} if origin else {}
    with _client() as c:
        assert _post(c, jpeg_bytes, headers=headers).status_code == 200


def test_refused_requests_never_reach_the_model(jpeg_bytes):
    clf = FakeClassifier()
    with _client(clf) as c:
        assert _post(c, jpeg_bytes, headers={"origin": "https://evil.example"}).status_code == 403
        assert _post(c, jpeg_bytes, headers={"host": "evil.example"}).status_code == 403
    assert clf.calls == 0


# ------------------------------------------------------------------ kept uploads
def test_kept_uploads_are_private(tmp_path, jpeg_bytes):
    keep = tmp_path / "kept"
    keep.mkdir(mode=0o755)
    os.chmod(keep, 0o755)  # an existing, world-readable folder is made private
    old = os.umask(0)  # even a permissive umask gives private files
    try:
        with _client(keep_uploads=keep) as c:
            assert stat.S_IMODE(keep.stat().st_mode) == 0o700
            assert _post(c, jpeg_bytes).status_code == 200
        nested = tmp_path / "a" / "b"
        with _client(keep_uploads=nested) as c:
            assert _post(c, jpeg_bytes).status_code == 200
    finally:
        os.umask(old)
    for folder in (keep, nested):
        files = list(folder.iterdir())
        assert len(files) == 1 and files[0].read_bytes() == jpeg_bytes
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert stat.S_IMODE(files[0].stat().st_mode) == 0o600


def test_unusable_keep_folder_is_a_config_error(tmp_path):
    from panderm.errors import ConfigError

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="--keep-uploads"):
        create_app(FakeClassifier(), keep_uploads=blocker / "sub")


# ------------------------------------------------------------------ reference images
def test_no_reference_images_hides_thumbnails_and_names(jpeg_bytes):
    with _client(reference_images=False) as c:
        body = _post(c, jpeg_bytes).json()
        model = c.get("/api/v1/model").json()
        js = c.get("/static/app.js").text
    assert len(body["neighbours"]) == 5
    for case in body["neighbours"]:
        assert case["thumbnail"] is None and case["image"] is None
        assert case["label"] and isinstance(case["similarity"], float)
    assert model["reference_images"] is False
    assert "image not shown" in js  # the page draws a placeholder instead of a picture
    with _client() as c:
        assert c.get("/api/v1/model").json()["reference_images"] is True
        assert all(n["thumbnail"].startswith("data:image/") for n in _post(c, jpeg_bytes).json()["neighbours"])


def test_cli_documents_the_new_options(cli):
    result = cli(["serve", "--help"])
    assert result.exit_code == 0
    for option in ("--no-reference-images", "--max-pixels", "Origin"):
        assert option in result.output
