"""Benchmark ``panderm serve``: micro-batching vs one model call per request.

Same load as tests/test_serve_load.py (16 concurrent clients, 400 requests,
one real dermoscopy JPEG) against the bundled demo classifier
(``load_classifier()``) behind a real uvicorn server on loopback. Falls back to
the fake classifier (20 ms per call) when the demo cannot be loaded, and says so.

Targets: micro-batching ≥ 2× the requests/s of per-request calls, p95 < 1 s.

    python benchmarks/serve.py [--clients 16] [--requests 400] [--device cpu] [--neighbours 0]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--device", default=None)
    ap.add_argument("--neighbours", type=int, default=0, help="similar cases per request (0: classification only)")
    ap.add_argument("--batch-window-ms", type=float, default=5.0)
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--image", type=Path, default=None)
    args = ap.parse_args(argv)

    from panderm.serve.app import create_app
    from panderm.serve.loadgen import run_load
    from panderm.serve.server import BackgroundServer

    image = args.image or min((REPO.parent / "shared" / "data" / "ham10000_dermoscopy_cls" / "images")
                                 .glob("*.jpg"))
    data = Path(image).read_bytes()
    try:
        from panderm.classifier import load_classifier

        clf = load_classifier(device=args.device)
        label = f"demo classifier ({clf.model_info().get('name', '?')})"
    except Exception as exc:  # noqa: BLE001 - any failure to load: fall back and say why
        from panderm.serve.fake import FakeClassifier

        print(f"demo classifier unavailable ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
              "using the fake classifier (20 ms per model call)")
        clf = FakeClassifier(cost_ms=20)
        label = "fake classifier, 20 ms/call"
    info = clf.model_info()
    print(f"model: {label}; device={info.get('device', '?')} precision={info.get('precision', '?')}")
    print(f"load: {args.clients} clients, {args.requests} requests, image {Path(image).name} "
          f"({len(data):,} bytes), neighbours={args.neighbours}")

    results = {}
    for microbatch in (True, False):
        app = create_app(clf, microbatch=microbatch, batch_window_ms=args.batch_window_ms,
                         max_batch=args.max_batch, neighbours=args.neighbours)
        with BackgroundServer(app) as url:
            run_load(url, data, clients=args.clients, total=min(32, args.requests), neighbours=args.neighbours)
            stats = run_load(url, data, clients=args.clients, total=args.requests, neighbours=args.neighbours)
            stats["batcher"] = app.state.batcher.stats()
        results[microbatch] = stats
        name = "micro-batching" if microbatch else "per-request  "
        b = stats["batcher"]
        print(f"{name}: {stats['rps']:7.1f} req/s  p50 {stats['p50_ms']:7.1f} ms  p95 {stats['p95_ms']:7.1f} ms  "
              f"errors {len(stats['errors'])}  model calls {b['model_calls']} (largest batch {b['largest_batch']})")
    ratio = results[True]["rps"] / results[False]["rps"]
    p95 = results[True]["p95_ms"]
    print(f"speed-up (req/s): {ratio:.2f}x  [target >= 2x: {'met' if ratio >= 2 else 'NOT met'}]; "
          f"micro-batching p95 {p95:.0f} ms [target < 1000 ms: {'met' if p95 < 1000 else 'NOT met'}]")
    errors = sum(len(r["errors"]) for r in results.values())
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
