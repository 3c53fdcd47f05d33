"""Running out of file descriptors degrades the proxy; it does not make it spin.

When the process has no descriptor left, asyncio's accept loop stops listening for a second at a time
(connections wait in the kernel's backlog: new clients are refused briefly, never forwarded), but it reports
every failed `accept()` to the loop's exception handler, and mitmproxy writes each as a traceback: hundreds a
second per listening socket, which is what kept the loop busy and filled the disk with log. This addon
replaces that with one warning a minute naming the limit, and counts the refusals.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)

EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
WARN_EVERY_SECONDS = 60.0

Handler = Callable[[asyncio.AbstractEventLoop, dict], object]


def is_exhaustion(context: dict) -> bool:
    """Whether an event-loop error report is a failed accept() for want of descriptors or memory."""
    exc = context.get("exception")
    return isinstance(exc, OSError) and exc.errno in EXHAUSTED and "accept" in str(context.get("message", ""))


class DescriptorGuard:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.refused = 0  # failed accepts since start
        self._warned_at: float | None = None
        self._previous: Handler | None = None

    def running(self) -> None:
        loop = asyncio.get_running_loop()
        self._previous = loop.get_exception_handler()
        loop.set_exception_handler(self.handle)

    def handle(self, loop: asyncio.AbstractEventLoop, context: dict) -> None:
        if not is_exhaustion(context):
            if self._previous is not None:
                self._previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        self.refused += 1
        now = self.clock()
        if self._warned_at is None or now - self._warned_at >= WARN_EVERY_SECONDS:
            self._warned_at = now
            soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
            logger.warning("cargo-cache: out of file descriptors (%s; limit %d): new connections wait until some "
                           "close (%d refused accepts so far; said once a minute). Raise the limit (ulimit -n, "
                           "systemd LimitNOFILE=)", context["exception"].strerror, soft, self.refused)
