"""The store thread's batches (storage/batches.py): calls that queue up while it works share one transaction."""

from __future__ import annotations

import asyncio
import contextlib
import threading

import pytest
from cratecache.storage.batches import StoreThread
from cratecache.storage.disk import DiskStorage
from cratecache.storage.local import LocalStore


class Recorder:
    """A transaction that records which calls ran inside it."""

    def __init__(self):
        self.batches: list[list[str]] = []
        self.inside: list[str] | None = None

    @contextlib.contextmanager
    def transaction(self):
        self.inside = []
        try:
            yield
        finally:
            self.batches.append(self.inside)
            self.inside = None

    def call(self, name: str):
        if self.inside is not None:
            self.inside.append(name)
        return name.upper()


async def _queued_behind_a_busy_thread(thread: StoreThread, calls):
    """Occupy the thread, queue `calls` (coroutine factories) behind it, then let it go; their outcomes."""
    gate = threading.Event()
    blocker = asyncio.ensure_future(thread.run(gate.wait, 5))
    await asyncio.sleep(0.05)  # the blocker is on the thread now
    tasks = [asyncio.ensure_future(make()) for make in calls]
    await asyncio.sleep(0.01)
    gate.set()
    assert await blocker is True
    return await asyncio.gather(*tasks, return_exceptions=True)


def test_calls_queued_while_the_thread_works_run_in_one_transaction_each_with_its_own_result():
    recorder = Recorder()
    thread = StoreThread(recorder.transaction)
    try:
        results = asyncio.run(_queued_behind_a_busy_thread(
            thread, [lambda n=n: thread.run(recorder.call, f"call{n}") for n in range(5)]))
    finally:
        thread.shutdown()
    assert results == [f"CALL{n}" for n in range(5)]
    assert recorder.batches == [[f"call{n}" for n in range(5)]]  # the blocker ran alone, outside any transaction


def test_a_batch_is_at_most_the_limit_and_calls_marked_alone_never_join_one():
    recorder = Recorder()
    thread = StoreThread(recorder.transaction, limit=2)
    calls = [lambda n=n: thread.run(recorder.call, f"call{n}") for n in range(3)]
    calls.append(lambda: thread.run(recorder.call, "scan", batch=False))
    calls.append(lambda: thread.run(recorder.call, "after"))
    try:
        results = asyncio.run(_queued_behind_a_busy_thread(thread, calls))
    finally:
        thread.shutdown()
    assert results == ["CALL0", "CALL1", "CALL2", "SCAN", "AFTER"]
    # call2 alone (the scan cannot join it), then the scan alone, then `after` alone: none in a transaction
    assert recorder.batches == [["call0", "call1"]]


def test_one_failing_call_rolls_its_batch_back_and_every_call_gets_its_own_outcome(tmp_path):
    store = DiskStorage(LocalStore(tmp_path / "cache", 10**9))

    def broken(key: str):
        store.local.set_negative(key, "written, then rolled back with the batch", 60)
        raise OSError(f"{key}: disk on fire")

    async def scenario():
        thread = store._thread
        results = await _queued_behind_a_busy_thread(thread, [
            lambda: store.put("index/crates-io/se/rd/serde", b"serde's index\n", "upstream-a"),
            lambda: thread.run(broken, "crate/crates-io/bad/1.0.0"),
            lambda: store.claim("crate/crates-io/libc/0.2.0", 30),
        ])
        return results, await store.get("index/crates-io/se/rd/serde"), await store.negative("crate/crates-io/bad/1.0.0")

    results, stored, negative = asyncio.run(scenario())
    put, failed, claimed = results
    assert put.body == b"serde's index\n" and put.meta.upstream == "upstream-a"
    assert isinstance(failed, OSError) and "disk on fire" in str(failed)
    assert claimed[0] is True  # the lease was taken (again, after the rollback)
    assert stored.body == b"serde's index\n"
    # the failed call's own write was done again on its own, outside a batch, and stays: only its error is its own
    assert negative == "written, then rolled back with the batch"
    assert store.local.lease_holder("crate/crates-io/libc/0.2.0") is not None


def test_a_cancelled_caller_does_not_stop_the_others_of_its_batch():
    recorder = Recorder()
    thread = StoreThread(recorder.transaction)

    async def scenario():
        gate = threading.Event()
        blocker = asyncio.ensure_future(thread.run(gate.wait, 5))
        await asyncio.sleep(0.05)
        first = asyncio.ensure_future(thread.run(recorder.call, "gone"))
        second = asyncio.ensure_future(thread.run(recorder.call, "kept"))
        await asyncio.sleep(0.01)
        first.cancel()
        gate.set()
        await blocker
        with pytest.raises(asyncio.CancelledError):
            await first
        return await second

    try:
        assert asyncio.run(scenario()) == "KEPT"
    finally:
        thread.shutdown()
