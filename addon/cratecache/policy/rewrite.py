"""The index file served under the policy (pure): a hidden version's line says "yanked": true, and a line's `pubtime`
is the one the proxy keeps. Nothing else in a line changes; a line the policy does not touch is kept byte for byte,
and a file it does not touch at all is the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping

from ..protocols import sparse


def lines(body: bytes) -> Iterator[tuple[str, dict]]:
    """(version, the line's object) of each index line naming a version (others are skipped, as Cargo does)."""
    for line in body.splitlines():
        obj = _object(line)
        if obj is not None:
            yield obj["vers"], obj


def rewrite(body: bytes, hidden: set[str], pubtimes: Mapping[str, str]) -> bytes:
    """`body` with the versions in `hidden` yanked and `pubtime` set to `pubtimes[version]` where it says otherwise.
    Returns `body` itself when no line changes."""
    out, changed = [], False
    for line in body.splitlines(keepends=True):
        obj = _object(line)
        if obj is not None:
            version = obj["vers"]
            hide = version in hidden and obj.get("yanked") is not True
            pubtime = pubtimes.get(version)
            retime = pubtime is not None and obj.get("pubtime") != pubtime
            if hide or retime:
                if hide:
                    obj["yanked"] = True
                if retime:
                    obj["pubtime"] = pubtime
                line = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
                changed = True
        out.append(line)
    return b"".join(out) if changed else body


def _object(line: bytes) -> dict | None:
    obj = sparse.line_object(line)
    return obj if obj is not None and isinstance(obj.get("vers"), str) else None
