"""``panderm serve`` under load on loopback: 16 clients, 400 requests, zero errors, with and without
micro-batching. Prints requests/s and p50/p95; no timing assertions (targets live in benchmarks/serve.py)."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("httpx")


@pytest.mark.parametrize("microbatch", [True, False], ids=["microbatch", "per-request"])
def test_load_zero_errors(shared_data, microbatch):
    from panderm.serve.app import create_app
    from panderm.serve.fake import FakeClassifier
    from panderm.serve.loadgen import run_load
    from panderm.serve.server import BackgroundServer

    image = min((shared_data / "ham10000_dermoscopy_cls" / "images").glob("*.jpg")).read_bytes()
    clf = FakeClassifier(cost_ms=10)  # fixed cost per model call, whatever the batch size
    app = create_app(clf, microbatch=microbatch, batch_window_ms=5, max_batch=16)
    with BackgroundServer(app) as url:
        stats = run_load(url, image, clients=16, total=400)
    print(f"\n[serve load] microbatch={microbatch}: {stats['n']} requests, {stats['rps']:.0f} req/s, "
          f"p50 {stats['p50_ms']:.0f} ms, p95 {stats['p95_ms']:.0f} ms, model calls {clf.calls}")
    assert stats["n"] == 400 and stats["errors"] == []
    if microbatch:
        assert clf.calls < 400
    else:
        assert clf.calls == 400
