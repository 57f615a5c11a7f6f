"""Benchmark ``panderm serve``: micro-batching vs one model call per request.

Same load as tests/test_serve_load.py (16 concurrent clients, 400 requests,
one real dermoscopy JPEG) against the bundled demo classifier
(``load_classifier()``) behind a real uvicorn server on loopback. Falls back to
the fake classifier (20 ms per call) when the demo cannot be loaded, and says so.

Targets: micro-batching ≥ 2× the requests/s of per-request calls, p95 < 1 s.

    python benchmarks/serve.py [--clients 16] [--requests 400] [--device cpu] [--neighbours 0]

``--memory``: peak memory under hostile uploads instead. A real ``panderm serve --demo``
process on 127.0.0.1 gets 12 concurrent uploads of a 49-megapixel (7000×7000) PNG
(gradient + blocky noise: ~5 MB, so it passes the 10 MB upload limit and must be
inflated in full to be decoded); the server's RSS is sampled every 5 ms (and its
kernel high-water mark read). Two runs: the default pixel limit (16 MP: refused from
the header, 413) and ``--max-pixels 50000000`` (every upload decoded, a few at a time).
Target: peak RSS within 1 GiB of idle in both.

    python benchmarks/serve.py --memory [--clients 12]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
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
    ap.add_argument("--memory", action="store_true", help="peak RSS under concurrent 49 MP PNG uploads instead")
    args = ap.parse_args(argv)
    if args.memory:
        return memory_benchmark(clients=args.clients if args.clients != 16 else 12, device=args.device)

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


# ---------------------------------------------------------------------- memory under hostile uploads
MEMORY_TARGET = 1 << 30
SIDE = 7000


def big_png(side: int = SIDE, seed: int = 0) -> bytes:
    """A side×side RGB PNG: colour gradients plus 8×8-block noise (compressible, decoded in full)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    ramp = (np.arange(side, dtype=np.uint32) * 255 // side).astype(np.uint8)
    img = np.empty((side, side, 3), np.uint8)
    img[..., 0] = ramp[None, :] // 2
    img[..., 1] = ramp[:, None] // 2
    img[..., 2] = (ramp[None, :] // 4 + ramp[:, None] // 4)
    blocks = rng.integers(0, 64, (side // 8 + 1, side // 8 + 1, 3), dtype=np.uint8)
    for y0 in range(0, side, 8):  # row band by row band: no 49 MP temporaries
        band = np.repeat(blocks[y0 // 8], 8, axis=0)[:side]
        img[y0:y0 + 8] += (band * 2)[None, :, :]
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    """Resident memory of ``pid`` (``VmRSS``, or the high-water mark ``VmHWM``) from /proc, else psutil."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import psutil

    info = psutil.Process(pid).memory_info()
    return info.rss


def reset_high_water_mark(pid: int) -> bool:
    """Reset the kernel's peak-RSS record of ``pid`` (Linux ``clear_refs`` 5); False where unsupported."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class RssSampler:
    """Samples a process's RSS every ``interval_s`` in a thread; ``peak`` is the largest seen."""

    def __init__(self, pid: int, interval_s: float = 0.005):
        self.pid, self.interval_s, self.peak = pid, interval_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes(self.pid))
            time.sleep(self.interval_s)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(extra: list[str], device: str | None) -> tuple[subprocess.Popen, str]:
    """``panderm serve --demo`` in its own process on a free loopback port; waits until it answers."""
    import httpx

    port = _free_port()
    cmd = [sys.executable, "-m", "panderm_cli", "serve", "--demo", "--port", str(port), "--log-level", "warning",
           *(["--device", device] if device else []), *extra]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(url + "/api/v1/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not start within 120 s")


def concurrent_uploads(url: str, data: bytes, clients: int) -> list[int]:
    """``clients`` threads POST ``data`` at the same moment; their HTTP status codes."""
    import httpx

    barrier = threading.Barrier(clients)
    codes: list[int] = []

    def one():
        with httpx.Client(timeout=600) as client:
            barrier.wait()
            r = client.post(url + "/api/v1/predict?neighbours=0", files={"image": ("big.png", data, "image/png")})
            codes.append(r.status_code)

    threads = [threading.Thread(target=one) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(codes)


def measure(label: str, extra: list[str], png: bytes, warm: bytes, clients: int, device: str | None) -> dict:
    import httpx

    proc, url = start_server(extra, device)
    try:
        for _ in range(3):  # warm the model, the allocator and the thread pools
            httpx.post(url + "/api/v1/predict", files={"image": ("w.jpg", warm, "image/jpeg")}, timeout=120)
        time.sleep(1.0)
        idle = rss_bytes(proc.pid)
        hwm_ok = reset_high_water_mark(proc.pid)
        t0 = time.perf_counter()
        with RssSampler(proc.pid) as sampler:
            codes = concurrent_uploads(url, png, clients)
            time.sleep(0.2)
        wall = time.perf_counter() - t0
        peak = max(sampler.peak, rss_bytes(proc.pid, "VmHWM") if hwm_ok else 0)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    row = {"run": label, "clients": clients, "statuses": {str(c): codes.count(c) for c in sorted(set(codes))},
           "idle_mib": round(idle / 2**20), "peak_mib": round(peak / 2**20),
           "delta_mib": round((peak - idle) / 2**20), "wall_s": round(wall, 1),
           "within_target": peak - idle <= MEMORY_TARGET}
    print(f"{label:34s} statuses {row['statuses']}  idle {row['idle_mib']} MiB  peak {row['peak_mib']} MiB  "
          f"delta {row['delta_mib']} MiB  ({row['wall_s']} s)  [target <= 1024 MiB: "
          f"{'met' if row['within_target'] else 'NOT met'}]")
    return row


def memory_benchmark(clients: int = 12, device: str | None = None) -> int:
    t0 = time.perf_counter()
    png = big_png()
    print(f"{SIDE}x{SIDE} PNG ({SIDE * SIDE / 1e6:.0f} MP): {len(png) / 2**20:.1f} MiB, made in "
          f"{time.perf_counter() - t0:.0f} s; {clients} concurrent uploads; cpu_count {os.cpu_count()}")
    warm = min((REPO.parent / "shared" / "data" / "ham10000_dermoscopy_cls" / "images").glob("*.jpg")).read_bytes()
    rows = [measure("default limits (16 MP)", [], png, warm, clients, device),
            measure("--max-pixels 50000000 (decoded)", ["--max-pixels", "50000000"], png, warm, clients, device)]
    print(json.dumps(rows))
    bad_status = rows[0]["statuses"] != {"413": clients} or rows[1]["statuses"] != {"200": clients}
    return 1 if bad_status or not all(r["within_target"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
