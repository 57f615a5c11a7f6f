"""``panderm serve`` HTTP API: response shape, token, bad uploads, no disk writes (fake classifier; fast)."""

from __future__ import annotations

import struct
import tempfile
import zlib
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient

from panderm.serve.app import create_app
from panderm.serve.fake import FakeClassifier

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def jpeg_bytes(shared_data) -> bytes:
    images = sorted((shared_data / "ham10000_dermoscopy_cls" / "images").glob("*.jpg"))
    if not images:
        pytest.fail("no JPEGs in shared data ham10000_dermoscopy_cls/images")
    return images[0].read_bytes()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(side: int = 30000) -> bytes:
    """A valid 1-bit grey PNG of side×side zeros (~112 MB raw) in ~100 KB, built row-block by row-block."""
    row = b"\x00" * (1 + (side + 7) // 8)
    comp = zlib.compressobj(9)
    block = row * 1000
    idat = []
    for start in range(0, side, 1000):
        idat.append(comp.compress(block if side - start >= 1000 else row * (side - start)))
    idat.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"".join(idat)) + _chunk(b"IEND", b"")


def _files_under(path: Path) -> set[Path]:
    return {p for p in path.rglob("*") if p.is_file()}


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """cwd and the temp dir both inside tmp_path, so any stray write is visible."""
    work = tmp_path / "cwd"
    tmp = tmp_path / "tmp"
    work.mkdir()
    tmp.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp_path


BASE = "http://127.0.0.1:8765"  # a loopback Host header (TestClient's default 'testserver' is refused)


def _client(clf=None, **kwargs):
    return TestClient(create_app(clf or FakeClassifier(), **kwargs), base_url=BASE, raise_server_exceptions=False)


def _assert_good(resp):
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert abs(sum(body["probabilities"]) - 1.0) < 1e-6
    assert body["probabilities"] == sorted(body["probabilities"], reverse=True)
    return body


def test_predict_shape(jpeg_bytes):
    with _client() as c:
        body = _assert_good(c.post("/api/v1/predict", files={"image": ("x.jpg", jpeg_bytes, "image/jpeg")}))
    fake = FakeClassifier()
    assert sorted(body["classes"]) == sorted(fake.classes)
    assert len(body["classes"]) == len(body["probabilities"])
    top = body["top"]
    assert top["class"] == body["classes"][0] and top["probability"] == body["probabilities"][0]
    assert top["description"] == fake.descriptions[top["class"]]
    assert top["malignant"] == (top["class"] in fake.malignant)
    assert set(body["malignant"]) == fake.malignant
    assert body["model"]["name"] == "fake-classifier"
    assert len(body["neighbours"]) == 5
    assert {"label", "thumbnail", "similarity"} <= set(body["neighbours"][0])
    assert body["neighbours"][0]["thumbnail"].startswith("data:image/")
    assert isinstance(body["latency_ms"], float)


def test_predict_options(jpeg_bytes):
    with _client() as c:
        assert "neighbours" not in _assert_good(
            c.post("/api/v1/predict?neighbours=0", files={"image": jpeg_bytes}))
        assert len(_assert_good(c.post("/api/v1/predict?neighbours=2", files={"image": jpeg_bytes}))["neighbours"]) == 2
        # raw body with an image content type works too (curl --data-binary)
        _assert_good(c.post("/api/v1/predict", content=jpeg_bytes, headers={"content-type": "image/jpeg"}))
        r = c.post("/api/v1/predict?neighbours=99", files={"image": jpeg_bytes})
        assert r.status_code == 422 and "neighbours" in r.json()["error"]


def test_health_model_openapi_page():
    with _client() as c:
        h = c.get("/api/v1/health").json()
        assert h["status"] == "ok" and h["n_classes"] == 7
        m = c.get("/api/v1/model").json()
        assert m["card"].startswith("# Fake classifier") and m["model"]["name"] == "fake-classifier"
        paths = c.get("/openapi.json").json()["paths"]
        assert {"/api/v1/predict", "/api/v1/health", "/api/v1/model"} <= set(paths)
        assert "multipart/form-data" in paths["/api/v1/predict"]["post"]["requestBody"]["content"]
        page = c.get("/")
        assert page.status_code == 200 and "Research use only" in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert c.get("/static/app.js").status_code == 200 and c.get("/static/app.css").status_code == 200
        docs = c.get("/docs")  # offline: a note instead of the CDN-hosted Swagger UI
        assert docs.status_code == 200 and "cdn" not in docs.text.lower().replace("a cdn", "")
        missing = c.get("/nope")
        assert missing.status_code == 404 and missing.json() == {"error": "not found"}


def test_token(jpeg_bytes):
    with _client(token=TOKEN) as c:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-Panderm-Token": "wrong"},
                        {"Authorization": TOKEN}):
            for method, path in (("get", "/api/v1/health"), ("get", "/api/v1/model")):
                r = getattr(c, method)(path, headers=headers)
                assert r.status_code == 401 and "token" in r.json()["error"]
            r = c.post("/api/v1/predict", files={"image": jpeg_bytes}, headers=headers)
            assert r.status_code == 401
        assert c.get("/api/v1/health", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        _assert_good(c.post("/api/v1/predict", files={"image": jpeg_bytes}, headers={"X-Panderm-Token": TOKEN}))
        assert c.get("/").status_code == 200  # the page itself asks for the token client-side


def test_bad_uploads_rejected_and_nothing_written(sandbox, jpeg_bytes):
    before = _files_under(sandbox)
    bomb = png_bomb()
    assert len(bomb) < 300_000
    cases = {
        "empty": {"files": {"image": ("e.jpg", b"", "image/jpeg")}},
        "empty raw": {"content": b"", "headers": {"content-type": "image/jpeg"}},
        "text": {"files": {"image": ("t.jpg", b"hello, I am not an image\n" * 10, "image/jpeg")}},
        "text body": {"content": b"hello", "headers": {"content-type": "text/plain"}},
        "no image field": {"files": {"other": ("x.jpg", jpeg_bytes, "image/jpeg")}},
        "truncated jpeg": {"files": {"image": ("cut.jpg", jpeg_bytes[: len(jpeg_bytes) // 2], "image/jpeg")}},
        "png bomb": {"files": {"image": ("bomb.png", bomb, "image/png")}},
        "oversized": {"files": {"image": ("big.jpg", jpeg_bytes + b"\0" * (2 * 1024 * 1024), "image/jpeg")}},
        "oversized chunked": {"content": (b"\0" * 65536 for _ in range(40)), "headers": {"content-type": "image/jpeg"}},
        "wrong token": {"files": {"image": jpeg_bytes}, "headers": {"X-Panderm-Token": "nope"}},
        "malformed multipart": {"content": b"--xx\r\ngarbage", "headers": {"content-type": "multipart/form-data; boundary=xx"}},
    }
    expected = {"empty": 400, "empty raw": 400, "text": 415, "text body": 415, "no image field": 422,
                "truncated jpeg": 422, "png bomb": 413, "oversized": 413, "oversized chunked": 413,
                "wrong token": 401}
    with _client(token=TOKEN, max_upload_mb=1) as c:
        auth = {"X-Panderm-Token": TOKEN}
        for name, kwargs in cases.items():
            kwargs = dict(kwargs)
            kwargs["headers"] = {**auth, **kwargs.get("headers", {})}
            r = c.post("/api/v1/predict", **kwargs)
            assert 400 <= r.status_code < 500, (name, r.status_code, r.text)
            if name in expected:
                assert r.status_code == expected[name], (name, r.status_code, r.text)
            assert set(r.json()) == {"error"} and r.json()["error"], name
            assert "Traceback" not in r.text and 'File "' not in r.text, name
            _assert_good(c.post("/api/v1/predict", files={"image": jpeg_bytes}, headers=auth))  # still serving
    assert _files_under(sandbox) == before


def test_content_length_checked_before_reading(jpeg_bytes):
    with _client(max_upload_mb=0.01) as c:
        r = c.post("/api/v1/predict", content=b"x", headers={"content-type": "image/jpeg",
                                                              "content-length": str(50 * 1024 * 1024)})
        assert r.status_code in (400, 413)  # refused on the header alone


def test_keep_uploads_one_file_per_good_request(sandbox, jpeg_bytes):
    keep = sandbox / "kept"
    with _client(keep_uploads=keep) as c:
        for _ in range(3):
            _assert_good(c.post("/api/v1/predict", files={"image": jpeg_bytes}))
        assert c.post("/api/v1/predict", files={"image": b"not an image"}).status_code == 415
    kept = sorted(keep.iterdir())
    assert len(kept) == 3 and all(p.suffix == ".jpg" for p in kept)
    assert all(p.read_bytes() == jpeg_bytes for p in kept)
    assert len({p.name for p in kept}) == 3
    assert _files_under(sandbox) - set(kept) == set()


def test_model_failure_is_generic_500(jpeg_bytes):
    class Broken(FakeClassifier):
        def embed(self, images):
            raise RuntimeError("CUDA exploded at /secret/path")

    with _client(Broken()) as c:
        r = c.post("/api/v1/predict", files={"image": jpeg_bytes})
        assert r.status_code == 500 and r.json() == {"error": "internal server error"}
        assert "secret" not in r.text


def test_request_log_has_no_image_content(jpeg_bytes, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="panderm.serve"), _client() as c:
        c.post("/api/v1/predict", files={"image": jpeg_bytes})
    lines = [r.getMessage() for r in caplog.records if r.name == "panderm.serve"]
    assert any(line.startswith("POST /api/v1/predict 200") for line in lines), lines
    assert all(len(line) < 300 for line in lines)


def test_microbatch_collects_concurrent_requests(jpeg_bytes):
    import asyncio

    from panderm.serve.batcher import MicroBatcher

    sizes = []

    def fn(items):
        sizes.append(len(items))
        return [x * 2 for x in items]

    async def main(enabled):
        b = MicroBatcher(fn, window_ms=20, max_batch=8, enabled=enabled)
        out = await asyncio.gather(*(b.submit(i) for i in range(20)))
        await b.aclose()
        b.shutdown()
        return out

    assert asyncio.run(main(True)) == [2 * i for i in range(20)]
    assert max(sizes) == 8 and sum(sizes) == 20 and len(sizes) <= 4
    sizes.clear()
    assert asyncio.run(main(False)) == [2 * i for i in range(20)]
    assert sizes == [1] * 20


def test_cli_refuses_public_host_without_token(cli, monkeypatch):
    monkeypatch.delenv("PANDERM_SERVE_TOKEN", raising=False)
    result = cli(["serve", "--demo", "--host", "0.0.0.0"])
    assert result.exit_code != 0
    assert "without an access token" in result.output and "--token" in result.output


def test_cli_help_and_loopback_rule(cli):
    from panderm.serve.server import is_loopback

    result = cli(["serve", "--help"])
    assert result.exit_code == 0 and "--keep-uploads" in result.output and "--no-microbatch" in result.output
    assert "--run" in result.output and "--classifier" not in result.output
    assert cli(["serve", "--classifier", "clf/"]).exit_code == 2  # renamed to --run
    both = cli(["serve", "--run", "clf/", "--demo"])
    assert both.exit_code == 2 and "exactly one of --run DIR" in both.output
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1") and is_loopback("[::1]")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("example.org")
