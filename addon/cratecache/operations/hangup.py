"""SIGHUP before the addon runs: held, never fatal.

SIGHUP asks for a reload (the configuration addon re-reads proxies.yaml). Its default action ends the process,
and the addon can only install its handler once mitmproxy runs (`running`, on the event loop), so a SIGHUP during
start (a reload asked for while a worker starts, or forwarded by the launcher during a restart) used to kill the
worker. `hold()` is called first thing (by the worker launcher before it imports mitmproxy, and by the
configuration addon's `load`): from then on a SIGHUP is only noted, and `take()` tells the addon, once it runs, to
reload once. The launcher also starts workers with SIGHUP blocked, so one that arrives before `hold()` waits in the
kernel until then.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

_held = threading.Event()


def hold() -> None:
    """Note a SIGHUP from now on instead of dying of it, and let through one the kernel kept blocked."""
    if not hasattr(signal, "SIGHUP") or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGHUP) in (signal.SIG_DFL, None):  # not someone else's handler (the loop's)
        signal.signal(signal.SIGHUP, _note)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})


def take() -> bool:
    """Whether a SIGHUP came while held (and forget it)."""
    came = _held.is_set()
    _held.clear()
    return came


@contextlib.contextmanager
def blocked() -> Iterator[None]:
    """Around starting a child: it starts with SIGHUP blocked (the mask is inherited; its `hold()` unblocks it)."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _note(signum: int, frame: object) -> None:
    _held.set()
