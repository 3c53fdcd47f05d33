"""Reading proxies.yaml and the secret files it names: regular files only, of bounded size."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from .defaults import MAX_SECRET_BYTES


def read_secret(path: Path) -> str:
    """A mounted secret (Kubernetes, Vault agent): the file's text without its trailing newline."""
    return read_regular_file(path, MAX_SECRET_BYTES).rstrip("\r\n")


def read_regular_file(path: str | os.PathLike, limit: int) -> str:
    """The UTF-8 text of a regular file of at most `limit` bytes. Anything else is an OSError before a byte
    is read: a FIFO (opened without blocking, so a writer that never comes cannot hang the reader), a device
    (/dev/zero never ends), a folder, or a file larger than `limit`."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, f"not a regular file (a {_file_kind(mode)})")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit} bytes")
    return data.decode("utf-8")


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISFIFO, "FIFO"), (stat.S_ISDIR, "folder"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return kind
    return "special file"
