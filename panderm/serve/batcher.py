"""Micro-batching: concurrent requests share one model call.

Requests are put on an ``asyncio.Queue``; one worker task takes the first
waiting request, keeps collecting for up to ``window_ms`` (or until
``max_batch`` requests are in hand), then runs the batch function once in a
single dedicated thread, so the event loop stays free to accept uploads while
the model runs, and model calls never overlap (one GPU stream, no races in the
classifier). Each request's future is resolved with its own result, or with
the exception when the batch call failed.

With ``enabled=False`` every request is its own model call (still in the same
single thread): the baseline for the load comparison.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

BatchFn = Callable[[Sequence[Any]], Sequence[Any]]


class MicroBatcher:
    """Collect concurrent ``submit`` calls into batches for ``fn``.

    Args:
        fn: ``fn(items) -> results`` with ``len(results) == len(items)``; runs in
            a worker thread.
        window_ms: How long to wait for more requests after the first arrives.
        max_batch: Largest batch handed to ``fn``.
        enabled: ``False``: one ``fn`` call per request (no batching).
    """

    def __init__(self, fn: BatchFn, *, window_ms: float = 5.0, max_batch: int = 16, enabled: bool = True):
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.fn = fn
        self.window_s = max(0.0, float(window_ms)) / 1000.0
        self.max_batch = int(max_batch)
        self.enabled = bool(enabled)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="panderm-model")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        self.calls = 0          # model calls made
        self.items = 0          # requests served through them
        self.max_seen = 0       # largest batch so far

    # ------------------------------------------------------------------ public
    async def submit(self, item: Any) -> Any:
        """Queue ``item`` and wait for its result (raises what ``fn`` raised)."""
        loop = asyncio.get_running_loop()
        if not self.enabled:
            return (await loop.run_in_executor(self._executor, self._call, [item]))[0]
        self._ensure_worker(loop)
        fut = loop.create_future()
        await self._queue.put((item, fut))
        return await fut

    def stats(self) -> dict:
        return {"enabled": self.enabled, "window_ms": self.window_s * 1000.0, "max_batch": self.max_batch,
                "model_calls": self.calls, "requests": self.items, "largest_batch": self.max_seen}

    async def aclose(self) -> None:
        """Stop the worker task (pending requests get a ``RuntimeError``)."""
        worker, self._worker = self._worker, None
        if worker is not None and not worker.done():
            worker.cancel()
            try:
                await worker
            except (asyncio.CancelledError, Exception):  # noqa: BLE001, S110 - shutting down anyway
                pass
        if self._queue is not None:
            while not self._queue.empty():
                _, fut = self._queue.get_nowait()
                if not fut.done():
                    fut.set_exception(RuntimeError("server shutting down"))

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    # ---------------------------------------------------------------- internal
    def _ensure_worker(self, loop: asyncio.AbstractEventLoop) -> None:
        # One worker per event loop (a test client may run each request on a new loop).
        if self._loop is not loop or self._worker is None or self._worker.done():
            self._loop = loop
            self._queue = asyncio.Queue()
            self._worker = loop.create_task(self._run(self._queue), name="panderm-microbatcher")

    def _call(self, items: list) -> Sequence[Any]:
        results = self.fn(items)
        if len(results) != len(items):
            raise RuntimeError(f"batch function returned {len(results)} results for {len(items)} items")
        self.calls += 1
        self.items += len(items)
        self.max_seen = max(self.max_seen, len(items))
        return results

    async def _run(self, queue: asyncio.Queue) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            deadline = time.monotonic() + self.window_s
            while len(batch) < self.max_batch:
                try:
                    batch.append(queue.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(queue.get(), remaining))
                except TimeoutError:
                    break
            live = [(item, fut) for item, fut in batch if not fut.done()]  # skip requests whose client left
            if not live:
                continue
            try:
                results = await loop.run_in_executor(self._executor, self._call, [item for item, _ in live])
            except Exception as exc:  # noqa: BLE001 - hand the failure to every waiting request
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for (_, fut), result in zip(live, results):
                if not fut.done():
                    fut.set_result(result)
