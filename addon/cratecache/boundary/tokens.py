"""The mirror's per-user tokens: which owner a token a client sends belongs to, from `mirror.tokens_file`.

The file holds one `NAME:sha256:<hex of SHA-256 of the token>` a line (blank lines and `#` comments allowed):
hashes, never the tokens themselves. A token is compared by its SHA-256, in constant time against every line.
`TokenFile` re-reads the file when it changes (its size, mtime or inode; looked at no more than once a second,
a small bounded file), so an added or removed line takes effect without a reload; a file that cannot be read or
parsed keeps the last good lines and is reported once per change. Tokens are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..config import read_regular_file

logger = logging.getLogger(__name__)

MAX_TOKENS_BYTES = 1024 * 1024  # ~10,000 lines; read on the event loop, once per change
CHECK_SECONDS = 1.0  # the file is looked at (stat) at most this often
TOKEN_PREFIX = "ccm_"  # made tokens start with it, so a leaked one is recognisable (secret scanners)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,127}\Z")
_LINE = re.compile(r"^([^:\s]+):sha256:([0-9a-f]{64})\Z")


@dataclass(frozen=True)
class TokenLine:
    owner: str
    digest: bytes  # SHA-256 of the token


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def name_problem(name: str) -> str | None:
    if not _NAME.match(name):
        return f"{name!r} is not a token name (letters, digits, '.', '_', '-', '@', '+'; at most 128)"
    return None


def parse_tokens(text: str) -> tuple[TokenLine, ...]:
    """The lines of a tokens file. Raises ValueError naming the first bad line (never echoing it: it may be a
    token pasted by mistake)."""
    found = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if m is None or name_problem(m.group(1)):
            raise ValueError(f"line {number}: expected NAME:sha256:<64 lowercase hex digits>")
        found.append(TokenLine(m.group(1), bytes.fromhex(m.group(2))))
    return tuple(found)


def owner(lines: tuple[TokenLine, ...], authorization: str | None) -> str | None:
    """The owner of the token in an `Authorization` header (Cargo sends the token verbatim; `Bearer <token>` is
    accepted too), or None. Every line is compared, in constant time, whatever matched."""
    if not authorization:
        return None
    token = authorization.strip()
    if token[:7].lower() == "bearer ":
        token = token[7:].strip()
    wanted, found = digest(token), None
    for line in lines:
        if hmac.compare_digest(line.digest, wanted) and found is None:
            found = line.owner
    return found


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_line(name: str, token: str) -> str:
    return f"{name}:sha256:{digest(token).hex()}"


class TokenFile:
    """The lines of one tokens file, re-read when it changes."""

    def __init__(self, path: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.path, self.clock = path, clock
        self.lines: tuple[TokenLine, ...] = ()
        self._seen: tuple | None = None  # (inode, size, mtime) of what `lines` came from, or the failure reported
        self._checked = float("-inf")

    def owner(self, authorization: str | None) -> str | None:
        self._refresh()
        return owner(self.lines, authorization)

    def _refresh(self) -> None:
        now = self.clock()
        if now - self._checked < CHECK_SECONDS:
            return
        self._checked = now
        try:
            st = os.stat(self.path)
            seen: tuple = (st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError as e:
            seen = ("missing", e.strerror)
        if seen == self._seen:
            return
        self._seen = seen
        try:
            self.lines = parse_tokens(read_regular_file(self.path, MAX_TOKENS_BYTES))
        except FileNotFoundError:
            self.lines = ()
            logger.warning("cargo-cache: mirror tokens file %s does not exist: every token is refused (add one with "
                           "python -m cratecache token add NAME)", self.path)
        except (OSError, UnicodeDecodeError, ValueError) as e:
            logger.error("cargo-cache: mirror tokens file %s not applied (%s); keeping the %d tokens read before",
                         self.path, getattr(e, "strerror", None) or e, len(self.lines))
        else:
            logger.info("cargo-cache: mirror tokens file %s: %d tokens (%s)", self.path, len(self.lines),
                        ", ".join(dict.fromkeys(line.owner for line in self.lines)) or "none")
