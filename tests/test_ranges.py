"""ranges.py: which bytes a Range request asks for."""

from __future__ import annotations

import pytest
from cratecache.boundary.ranges import UNSATISFIABLE, Slice, requested

ETAG, DATE = '"sha256-abc"', "Tue, 01 Dec 2026 10:00:00 GMT"


@pytest.mark.parametrize(("header", "expected"), [
    ("bytes=0-99", Slice(0, 99)),
    ("bytes=100-", Slice(100, 999)),
    ("bytes=-10", Slice(990, 999)),
    ("bytes=-5000", Slice(0, 999)),  # more than the file: all of it, as a 206
    ("bytes=990-5000", Slice(990, 999)),  # the end is clipped to the file
    ("BYTES = 5 - 6", Slice(5, 6)),
    ("bytes=1000-", UNSATISFIABLE),
    ("bytes=5000-6000", UNSATISFIABLE),
    ("bytes=-0", UNSATISFIABLE),
    ("bytes=0-1,5-6", None),  # several ranges: the whole file
    ("bytes=9-2", None),  # invalid: ignored
    ("items=0-1", None),
    ("bytes=-", None),
    ("bytes=" + "9" * 5000 + "-", UNSATISFIABLE),  # more digits than Python parses: past every file
    ("bytes=0-" + "9" * 5000, Slice(0, 999)),
    ("bytes=-" + "9" * 5000, Slice(0, 999)),
])
def test_a_range_header_names_one_slice_of_the_file(header, expected):
    assert requested(header, None, 1000, ETAG, DATE) == expected


def test_no_range_is_the_whole_file():
    assert requested(None, None, 1000, ETAG, DATE) is None


@pytest.mark.parametrize(("if_range", "expected"), [
    (ETAG, Slice(10, 999)), (DATE, Slice(10, 999)), ('"sha256-other"', None), ("Mon, 30 Nov 2026 10:00:00 GMT", None),
])
def test_if_range_with_another_validator_gets_the_whole_file(if_range, expected):
    assert requested("bytes=10-", if_range, 1000, ETAG, DATE) == expected


def test_content_range():
    assert Slice(0, 99).content_range(1000) == "bytes 0-99/1000" and Slice(0, 99).length == 100
