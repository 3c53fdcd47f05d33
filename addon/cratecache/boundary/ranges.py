"""HTTP Range requests on a stored file (RFC 9110 §14), as pure functions.

One range is served as `206`; a range that starts beyond the file is `416`; a multi-range request, a
syntax the proxy does not know, or an `If-Range` whose validator is not the file's current one gets the
whole file (`200`), which the RFC allows and every client handles.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*\Z", re.IGNORECASE)


@dataclass(frozen=True)
class Slice:
    start: int
    end: int  # inclusive

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end}/{size}"


UNSATISFIABLE = "unsatisfiable"
_BEYOND_ANY_FILE = 10**18  # a position with more digits than this is past the end of every file


def requested(range_header: str | None, if_range: str | None, size: int, etag: str, last_modified: str) -> Slice | str | None:
    """What a GET asks for: a `Slice` (206), UNSATISFIABLE (416), or None (the whole file, 200)."""
    if range_header is None:
        return None
    if if_range is not None and if_range.strip() not in (etag, last_modified):
        return None  # the client's partial copy is of other bytes: start over with the whole file
    m = _RANGE.match(range_header)
    if m is None:
        return None  # several ranges, or another unit
    first, last = m.group(1), m.group(2)
    if not first and not last:
        return None
    if not first:  # the last n bytes
        n = _position(last)
        if n == 0:
            return UNSATISFIABLE
        return Slice(max(0, size - n), size - 1) if size else UNSATISFIABLE
    start = _position(first)
    end = min(_position(last), size - 1) if last else size - 1
    if last and _position(last) < start:
        return None  # invalid: ignored, as the RFC says
    if start >= size:
        return UNSATISFIABLE
    return Slice(start, end)


def _position(digits: str) -> int:
    """A byte position as written; an absurdly long one (Python refuses to parse over 4300 digits) is simply
    beyond every file."""
    return int(digits) if len(digits) <= 18 else _BEYOND_ANY_FILE
