"""The small JSON records kept in the bucket (leases, negatives, purges) and the metas of bundles and the bucket,
read defensively."""

from __future__ import annotations

import json
import math
import re
from typing import Any


def load_record(raw: bytes) -> dict[str, Any]:
    """A small JSON object from the bucket; {} if it is not one."""
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def number(record: dict[str, Any], field: str) -> float:
    """The record's numeric field (a time), 0.0 if missing or not a number."""
    value = record.get(field)
    return float(value) if is_number(value) else 0.0


_SHA256 = re.compile(r"[0-9a-f]{64}\Z")
_HEADER_SAFE = re.compile(r"[\x20-\x7e]*\Z")  # printable ASCII: never a CR/LF into a response header
CLOCK_SKEW_SECONDS = 300.0  # how far ahead of this host's clock a recorded time may be (hosts' clocks differ)
MAX_TEXT = 1024
MAX_ENTRY_BYTES = 4 << 30  # no cached file is larger (toolchain components are at most a few hundred MB)


def is_sha256(value: Any) -> bool:
    return isinstance(value, str) and _SHA256.match(value) is not None


def meta_problem(record: Any, now: float, max_size: int) -> str | None:
    """Why `record` (a meta from a bundle or the bucket) cannot be trusted, or None: every field of the right
    type and range, a lowercase hex SHA-256, times not ahead of `now`, strings that are safe in a header."""
    if not isinstance(record, dict):
        return "not an object"
    if not is_sha256(record.get("sha256")):
        return "sha256 is not 64 lowercase hex digits"
    size = record.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= max_size:
        return f"size is not an integer from 0 to {max_size}"
    for field in ("stored_at", "checked_at"):
        value = record.get(field)
        if not is_number(value) or not math.isfinite(value) or value < 0:
            return f"{field} is not a time"
        if value > now + CLOCK_SKEW_SECONDS:
            return f"{field} is in the future"
    upstream = record.get("upstream")
    if not isinstance(upstream, str) or not 0 < len(upstream) <= 128 or not _HEADER_SAFE.match(upstream):
        return "upstream is not a printable name"
    for field in ("etag", "last_modified"):
        value = record.get(field)
        if value is not None and (not isinstance(value, str) or len(value) > MAX_TEXT or not _HEADER_SAFE.match(value)):
            return f"{field} is not a printable header value"
    return None
