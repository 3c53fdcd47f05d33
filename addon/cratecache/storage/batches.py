"""The store thread: one thread for a process's SQLite work, whose calls are batched.

Calls that arrive while the thread is busy run together when it is free, in one SQLite transaction: a burst of
misses (a cold `cargo fetch` asks for ~100 crates at once) costs one hand-off between the event loop and the thread,
and one commit, per batch instead of per call. A call arriving while the thread is idle runs at once, alone.
If any call of a batch fails, the batch is rolled back and each of its calls runs again on its own, so that each
gets its own result or error (BENCHMARKS.md, "Issue 14, fifth pass").
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import Any

BATCH_LIMIT = 64  # calls per batch: a batch holds SQLite's write lock, which other workers wait for


class StoreThread:
    def __init__(self, transaction: Callable[[], AbstractContextManager], limit: int = BATCH_LIMIT):
        self._transaction, self._limit = transaction, limit
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cargo-cache-store")
        self._queue: deque[tuple[Callable, tuple, bool, asyncio.Future]] = deque()
        self._busy = False  # only read and written on the event loop

    async def run(self, fn: Callable, *args, batch: bool = True) -> Any:
        """`fn(*args)` on the store thread. `batch=False`: a long call (a scan, a purge) that runs alone, never
        inside a batch's transaction."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.append((fn, args, batch, future))
        if not self._busy:
            self._start(loop)
        return await future

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        calls = [self._queue.popleft()]
        while calls[0][2] and self._queue and self._queue[0][2] and len(calls) < self._limit:
            calls.append(self._queue.popleft())
        self._busy = True
        work = loop.run_in_executor(self._executor, self._work, [(fn, args) for fn, args, _, _ in calls])
        work.add_done_callback(lambda done: self._finish(loop, calls, done))

    def _finish(self, loop: asyncio.AbstractEventLoop, calls: list, done: asyncio.Future) -> None:
        self._busy = False
        outcomes = done.result() if not done.cancelled() else [(False, asyncio.CancelledError())] * len(calls)
        for (_, _, _, future), (ok, value) in zip(calls, outcomes, strict=True):
            if future.done():  # its caller was cancelled
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
        if self._queue:
            self._start(loop)

    def _work(self, calls: list[tuple[Callable, tuple]]) -> list[tuple[bool, Any]]:
        """On the store thread; never raises: (True, result) or (False, exception) per call."""
        if len(calls) > 1:
            try:
                with self._transaction():
                    return [(True, fn(*args)) for fn, args in calls]
            except Exception:
                pass  # rolled back; each call again on its own below
        return [_one(fn, args) for fn, args in calls]

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True)


def _one(fn: Callable, args: tuple) -> tuple[bool, Any]:
    try:
        return True, fn(*args)
    except Exception as e:
        return False, e
