"""descriptors.py: an event loop out of file descriptors logs once a minute instead of once per accept."""

from __future__ import annotations

import asyncio
import errno
import logging

from cratecache.boundary.descriptors import DescriptorGuard, is_exhaustion


def accept_failure(code: int = errno.EMFILE) -> dict:
    return {"message": "socket.accept() out of system resource", "exception": OSError(code, "Too many open files")}


def test_only_failed_accepts_for_want_of_resources_are_exhaustion():
    assert is_exhaustion(accept_failure())
    assert is_exhaustion(accept_failure(errno.ENFILE))
    assert not is_exhaustion(accept_failure(errno.ECONNRESET))
    assert not is_exhaustion({"message": "Task exception was never retrieved", "exception": OSError(errno.EMFILE, "x")})


async def test_exhaustion_is_said_once_a_minute_and_other_errors_still_reach_the_previous_handler(caplog):
    now = [1000.0]
    seen = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: seen.append(context["message"]))
    guard = DescriptorGuard(clock=lambda: now[0])
    guard.running()
    with caplog.at_level(logging.WARNING, "cratecache"):
        for _ in range(500):
            loop.call_exception_handler(accept_failure())
        now[0] += 61
        loop.call_exception_handler(accept_failure())
        loop.call_exception_handler({"message": "something else", "exception": ValueError("x")})

    assert guard.refused == 501
    assert caplog.text.count("cargo-cache: out of file descriptors") == 2
    assert "501 refused accepts so far" in caplog.text
    assert seen == ["something else"]
    loop.set_exception_handler(None)
