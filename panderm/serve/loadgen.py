"""A small closed-loop load generator for ``panderm serve`` (tests and ``benchmarks/serve.py``).

``clients`` threads, each with its own ``httpx.Client``, POST the same image
until ``total`` requests have been sent; returns requests/s and latency
percentiles. Needs ``httpx`` (a dev dependency).
"""

from __future__ import annotations

import threading
import time


def run_load(url: str, image: bytes, *, clients: int = 16, total: int = 400, token: str | None = None,
             neighbours: int = 0) -> dict:
    """Returns ``{"n", "errors", "wall_s", "rps", "p50_ms", "p95_ms"}``; errors are short strings."""
    import httpx

    headers = {"X-Panderm-Token": token} if token else {}
    lock = threading.Lock()
    state = {"next": 0, "lat": [], "errors": []}
    endpoint = f"{url}/api/v1/predict?neighbours={int(neighbours)}"

    def worker():
        with httpx.Client(timeout=120.0) as client:
            while True:
                with lock:
                    if state["next"] >= total:
                        return
                    state["next"] += 1
                t0 = time.perf_counter()
                try:
                    r = client.post(endpoint, files={"image": ("lesion.jpg", image, "image/jpeg")}, headers=headers)
                    ok = r.status_code == 200 and abs(sum(r.json()["probabilities"]) - 1) < 1e-4
                    err = None if ok else f"{r.status_code} {r.text[:100]}"
                except Exception as exc:  # noqa: BLE001 - connection errors count as failures
                    err = repr(exc)[:200]
                dt = time.perf_counter() - t0
                with lock:
                    state["lat"].append(dt)
                    if err:
                        state["errors"].append(err)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = sorted(state["lat"]) or [float("nan")]
    return {"n": len(state["lat"]), "errors": state["errors"], "wall_s": wall, "rps": len(state["lat"]) / wall,
            "p50_ms": 1000 * lat[len(lat) // 2], "p95_ms": 1000 * lat[min(len(lat) - 1, int(0.95 * len(lat)))]}
