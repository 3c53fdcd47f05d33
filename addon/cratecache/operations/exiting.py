"""Leaving the process with its own exit status once obstore's Rust runtime has started.

obstore (through pyo3-async-runtimes) runs its calls on a process-wide Tokio runtime that has no shutdown
call. Its worker threads are still running while `Py_Finalize` tears the interpreter down, and one that
touches Python state then (a finished call handing back its result, a dropped client) panics on a thread
with no Python frame to catch it: Rust aborts the process (SIGABRT, exit 134) after the command has done
all of its work (PyO3/pyo3-async-runtimes#40, lancedb/lancedb#4175). Under CPU load this hit up to 3 in 5
runs of a command on the s3 backend.

So a process that has loaded obstore does not finalize the interpreter: it flushes what it has written
(logging handlers, stdout, stderr) and leaves with `os._exit`. Nothing else is lost: every command closes
its stores before it returns, committed SQLite transactions are on disk, and asyncio.run has already
joined its executor threads. A process that never loaded obstore exits the usual way.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn


def runtime_started() -> bool:
    """True once the s3 backend's client library is loaded (its runtime starts with the first call)."""
    return "obstore" in sys.modules


def leave(status: int) -> NoReturn:
    """Exit with `status`, past the interpreter's finalization if obstore is loaded."""
    if not runtime_started():
        sys.exit(status)
    flush()
    os._exit(status)


def flush() -> None:
    """Write out what is buffered: what a normal exit would have written."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`| head`), a closed stream: nothing more to write
            pass
