"""Freshness decisions over plain data; the clock is passed in (pure).

Rules:
- A .crate never changes once published, nor does a file of a dated dist folder: a cached one is always served
  (kind "crate" or "immutable").
- An index file or config.json is served from cache for `ttl` seconds after an upstream last
  confirmed it; after that it is revalidated (conditionally) before being served.
- If revalidation fails on every upstream, the stale copy is served (stale-if-error); if every
  upstream said "not here" the answer is not found; otherwise the upstreams are unavailable.
- A client's If-None-Match / If-Modified-Since matching the entry gets 304.
"""

from __future__ import annotations

import functools
from email.utils import formatdate, parsedate_to_datetime

FRESH, REVALIDATE, MISS = "fresh", "revalidate", "miss"
IMMUTABLE_KINDS = ("crate", "immutable")
SERVE_STALE, NOT_FOUND, UNAVAILABLE = "serve_stale", "not_found", "unavailable"


def decide(kind: str, checked_at: float | None, ttl: int, now: float) -> str:
    """What to do with a request for an entry last confirmed at `checked_at` (None: not cached)."""
    if checked_at is None:
        return MISS
    if kind in IMMUTABLE_KINDS:
        return FRESH  # rule: published crates and dated dist files are immutable
    if now - checked_at < ttl:
        return FRESH  # rule: within the TTL no upstream is contacted
    return REVALIDATE  # rule: after the TTL, ask the upstream that served it


def without_answer(has_cached: bool, outcomes: list[str]) -> str:
    """No upstream gave an answer: what to tell the client, from each attempt's outcome."""
    failed = "failed" in outcomes
    if has_cached and (failed or not outcomes):
        return SERVE_STALE  # rule: stale-if-error (and no active upstream at all)
    if outcomes and not failed:
        return NOT_FOUND  # rule: every upstream said "not here"
    return UNAVAILABLE  # rule: something failed and nothing is cached


def conditional_headers(etag: str | None, last_modified: str | None) -> dict[str, str]:
    """Validators to send upstream when revalidating a stored entry."""
    headers = {}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    return headers


def etag_for(sha256: str) -> str:
    """Strong ETag from the bytes served: stable across restarts and upstreams."""
    return f'"{sha256[:32]}"'


def http_date(timestamp: float) -> str:
    return _http_date(int(timestamp))  # HTTP dates have whole seconds


@functools.lru_cache(maxsize=1024)
def _http_date(seconds: int) -> str:
    """Most answers name one of a few recent seconds (the entries a burst of misses stored)."""
    return formatdate(seconds, usegmt=True)


def client_not_modified(
    if_none_match: str | None, if_modified_since: str | None, etag: str, last_modified: str
) -> bool:
    """RFC 9110 §13.2.2: If-None-Match wins; If-Modified-Since only when it is absent."""
    if if_none_match is not None:
        tags = [t.strip() for t in if_none_match.split(",")]
        return "*" in tags or etag in tags or f"W/{etag}" in tags
    if if_modified_since:
        try:
            return parsedate_to_datetime(last_modified) <= parsedate_to_datetime(if_modified_since)
        except (TypeError, ValueError, OverflowError, IndexError):  # a date no clock can hold is no validator
            return False
    return False
