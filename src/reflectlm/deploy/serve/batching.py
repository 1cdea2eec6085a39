"""Micro-batching: requests from concurrent callers are joined into one forward pass, so the CPU
works on full batches instead of one text at a time.

One asyncio task collects requests from a queue until it holds `max_batch` texts or `max_wait`
seconds have passed since the first one, then runs the batch on a single worker thread (the
model is not re-entrant and one forward already uses every core); while a batch computes, the
next one fills. The queue is bounded in texts: a request that would exceed it is refused at once
(Overloaded -> 503 with Retry-After) instead of waiting until it times out.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from dataclasses import dataclass, field
from typing import Callable


class Overloaded(Exception):
    def __init__(self, retry_after_s: float):
        super().__init__(f"the queue is full; retry in {retry_after_s:.1f} s")
        self.retry_after_s = retry_after_s


@dataclass
class _Request:
    texts: list[str]
    context: dict
    future: asyncio.Future
    queued: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    """run_batch(texts, contexts) -> one result per text, called on the worker thread; contexts
    holds each text's request context (e.g. the API key name)."""

    def __init__(self, run_batch: Callable[[list[str], list[dict]], list], max_batch: int, max_wait_s: float,
                 max_queue_texts: int, on_batch: Callable[[int, float], None] | None = None):
        self.run_batch, self.max_batch, self.max_wait_s = run_batch, max_batch, max_wait_s
        self.max_queue_texts, self.on_batch = max_queue_texts, on_batch
        self.pending = 0  # texts queued or computing
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="reflectlm-batch")
        self._texts_per_s = 200.0  # running estimate, for Retry-After

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._pool.shutdown(wait=True)

    def retry_after_s(self) -> float:
        return max(1.0, self.pending / max(self._texts_per_s, 1.0))

    async def submit(self, texts: list[str], context: dict | None = None, timeout_s: float = 30.0) -> list:
        if not self.running:
            raise Overloaded(1.0)
        if self.pending + len(texts) > self.max_queue_texts:
            raise Overloaded(self.retry_after_s())
        fut = asyncio.get_running_loop().create_future()
        self.pending += len(texts)
        self._queue.put_nowait(_Request(list(texts), context or {}, fut))
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout_s)
        except asyncio.TimeoutError:
            raise Overloaded(self.retry_after_s()) from None

    def run_alone(self, job: Callable[[], object], texts: int = 1) -> asyncio.Future:
        """Run job() on the worker thread between batches: work that cannot join a batch (a streamed
        generation hands out its tokens while it runs). Refused at once with Overloaded when the
        queue is full, as submit is; its texts count as pending until it returns."""
        if not self.running:
            raise Overloaded(1.0)
        if self.pending + texts > self.max_queue_texts:
            raise Overloaded(self.retry_after_s())
        self.pending += texts
        fut = asyncio.get_running_loop().run_in_executor(self._pool, job)

        def release(_):
            self.pending -= texts

        fut.add_done_callback(release)
        return fut

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            n = len(batch[0].texts)
            deadline = loop.time() + self.max_wait_s
            while n < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(self._queue.get(), left)
                    except asyncio.TimeoutError:
                        break
                batch.append(item)
                n += len(item.texts)
            texts = [t for r in batch for t in r.texts]
            contexts = [r.context for r in batch for _ in r.texts]
            t0 = time.perf_counter()
            try:
                results = await loop.run_in_executor(self._pool, self.run_batch, texts, contexts)
                error = None
            except Exception as e:  # noqa: BLE001 - handed to every waiting request; the loop goes on
                results, error = None, e
            took = time.perf_counter() - t0
            self._texts_per_s = 0.8 * self._texts_per_s + 0.2 * (len(texts) / max(took, 1e-6))
            pos = 0
            for r in batch:
                k = len(r.texts)
                if not r.future.done():
                    if error is not None:
                        r.future.set_exception(error)
                    else:
                        r.future.set_result(results[pos:pos + k])
                pos += k
                self.pending -= k
            if self.on_batch is not None:
                self.on_batch(len(texts), took)
