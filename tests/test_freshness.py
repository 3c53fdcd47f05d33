"""freshness.py: fresh / revalidate / miss over a fake clock, validators, and client 304 decisions."""

from __future__ import annotations

import hashlib

import pytest
from cratecache.engine import freshness
from cratecache.engine.freshness import FRESH, MISS, REVALIDATE, decide

T0 = 1_700_000_000.0
TTL = 300


class FakeClock:
    def __init__(self, now: float = T0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.mark.parametrize("kind", ["index", "config", "crate"])
def test_not_cached_is_a_miss(kind):
    assert decide(kind, None, TTL, T0) == MISS


@pytest.mark.parametrize("age, ttl", [(0, TTL), (TTL, TTL), (10 * 365 * 86400, TTL), (10**6, 0)])
def test_cached_crate_is_always_fresh(age, ttl):
    assert decide("crate", T0, ttl, T0 + age) == FRESH


@pytest.mark.parametrize("kind", ["index", "config"])
@pytest.mark.parametrize(
    "age, expected",
    [(0, FRESH), (1, FRESH), (TTL - 0.001, FRESH), (TTL, REVALIDATE), (TTL + 0.001, REVALIDATE),
     (10 * TTL, REVALIDATE)],
)
def test_index_fresh_within_ttl_then_revalidated(kind, age, expected):
    assert decide(kind, T0, TTL, T0 + age) == expected


@pytest.mark.parametrize("age", [0, 1, 3600])
def test_ttl_zero_always_revalidates(age):
    assert decide("index", T0, 0, T0 + age) == REVALIDATE


def test_revalidation_restarts_the_ttl():
    clock = FakeClock()
    checked_at = clock()
    clock.advance(TTL - 1)
    assert decide("index", checked_at, TTL, clock()) == FRESH
    clock.advance(1)
    assert decide("index", checked_at, TTL, clock()) == REVALIDATE
    checked_at = clock()  # an upstream confirmed the entry (200 or 304)
    assert decide("index", checked_at, TTL, clock()) == FRESH
    clock.advance(TTL)
    assert decide("index", checked_at, TTL, clock()) == REVALIDATE


@pytest.mark.parametrize(
    "etag, last_modified, expected",
    [
        ('"abc"', "Tue, 14 Nov 2023 22:13:20 GMT",
         {"If-None-Match": '"abc"', "If-Modified-Since": "Tue, 14 Nov 2023 22:13:20 GMT"}),
        ('"abc"', None, {"If-None-Match": '"abc"'}),
        (None, "Tue, 14 Nov 2023 22:13:20 GMT", {"If-Modified-Since": "Tue, 14 Nov 2023 22:13:20 GMT"}),
        (None, None, {}),
        ("", "", {}),
    ],
)
def test_conditional_headers(etag, last_modified, expected):
    assert freshness.conditional_headers(etag, last_modified) == expected


def test_etag_is_strong_quoted_and_stable():
    sha = hashlib.sha256(b"serde index file").hexdigest()
    etag = freshness.etag_for(sha)
    assert etag == f'"{sha[:32]}"'
    assert not etag.startswith("W/")
    assert freshness.etag_for(sha) == etag
    assert freshness.etag_for(hashlib.sha256(b"another body").hexdigest()) != etag


def test_http_date():
    assert freshness.http_date(0) == "Thu, 01 Jan 1970 00:00:00 GMT"
    assert freshness.http_date(T0) == "Tue, 14 Nov 2023 22:13:20 GMT"


ETAG = freshness.etag_for(hashlib.sha256(b"body").hexdigest())
LAST_MODIFIED = freshness.http_date(T0)
EARLIER = freshness.http_date(T0 - 1)
LATER = freshness.http_date(T0 + 3600)


@pytest.mark.parametrize(
    "if_none_match, if_modified_since, expected",
    [
        # If-None-Match
        (ETAG, None, True),
        ('"something-else"', None, False),
        (f'"a", {ETAG}, "b"', None, True),
        (f'"a",{ETAG}', None, True),
        ("*", None, True),
        (f"W/{ETAG}", None, True),
        (ETAG.strip('"'), None, False),
        ("", None, False),
        # If-None-Match wins over If-Modified-Since, either way round
        ('"something-else"', LAST_MODIFIED, False),
        ('"something-else"', LATER, False),
        (ETAG, EARLIER, True),
        # If-Modified-Since alone
        (None, LAST_MODIFIED, True),
        (None, LATER, True),
        (None, EARLIER, False),
        (None, "yesterday", False),
        (None, "Thu, 16 Apr 99999999999999999999 00:00:00 GMT", False),  # no clock holds that year
        (None, "Thu, 16 Apr 0 00:00:00 GMT", False),
        (None, "", False),
        (None, None, False),
    ],
)
def test_client_not_modified(if_none_match, if_modified_since, expected):
    assert freshness.client_not_modified(if_none_match, if_modified_since, ETAG, LAST_MODIFIED) is expected


@pytest.mark.parametrize(
    ("has_cached", "outcomes", "expected"),
    [
        (True, ["failed", "failed"], freshness.SERVE_STALE),
        (True, ["not_found", "failed"], freshness.SERVE_STALE),
        (True, [], freshness.SERVE_STALE),  # no active upstream: the cache is all there is
        (True, ["not_found", "not_found"], freshness.NOT_FOUND),
        (False, ["not_found", "not_found"], freshness.NOT_FOUND),
        (False, ["not_found", "failed"], freshness.UNAVAILABLE),
        (False, [], freshness.UNAVAILABLE),
    ],
)
def test_without_answer(has_cached, outcomes, expected):
    assert freshness.without_answer(has_cached, outcomes) == expected
