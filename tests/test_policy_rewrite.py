"""The index file served under the policy (rewrite.py) and the publish times it keeps (sightings.py): pure."""

import json

import pytest
from cratecache.policy import rewrite, sightings
from cratecache.policy.sightings import Sightings


def line(version, **extra):
    obj = {"name": "coolcrate", "vers": version, "deps": [], "cksum": "a" * 64, "features": {}, "yanked": False}
    return json.dumps({**obj, **extra}, separators=(",", ":")).encode() + b"\n"


BODY = line("1.0.0", pubtime="2026-01-01T00:00:00Z") + line("1.1.0") + line("1.2.0", yanked=True)


def test_untouched_file_is_the_same_bytes():
    assert rewrite.rewrite(BODY, set(), {}) is BODY
    # a pubtime the line already has, a hidden version already yanked: nothing changes
    assert rewrite.rewrite(BODY, {"1.2.0"}, {"1.0.0": "2026-01-01T00:00:00Z"}) is BODY


def test_hidden_version_is_yanked_and_nothing_else_changes():
    out = rewrite.rewrite(BODY, {"1.1.0"}, {})
    before, after = BODY.splitlines(), out.splitlines()
    assert before[0] == after[0] and before[2] == after[2]  # other lines byte for byte
    assert json.loads(after[1]) == {**json.loads(before[1]), "yanked": True}


def test_kept_pubtime_replaces_or_adds_the_lines():
    out = rewrite.rewrite(BODY, set(), {"1.0.0": "2026-03-03T00:00:00Z", "1.1.0": "2026-12-01T10:00:00Z"})
    lines = [json.loads(x) for x in out.splitlines()]
    assert [x.get("pubtime") for x in lines] == ["2026-03-03T00:00:00Z", "2026-12-01T10:00:00Z", None]
    assert list(lines[1])[-1] == "pubtime"  # added at the end, the other keys in their order
    assert list(lines[0]) == list(json.loads(BODY.splitlines()[0]))


def test_lines_skip_what_cargo_skips():
    body = b"not json\n\n" + line("1.0.0") + b'{"name":"x"}\n[1]\n'
    assert [v for v, _ in rewrite.lines(body)] == ["1.0.0"]
    assert rewrite.rewrite(body, {"1.0.0"}, {}).splitlines()[0] == b"not json"


def test_first_copy_is_old_later_versions_are_seen_at_their_copy():
    first = sightings.merge(Sightings(), 1000.0, [("1.0.0", None), ("1.1.0", 900.0)])
    assert first.versions == {"1.0.0": (None, None), "1.1.0": (900.0, None)}
    later = sightings.merge(first, 2000.0, [("1.0.0", 50.0), ("1.1.0", 10.0), ("1.2.0", None), ("1.3.0", 1500.0)])
    # kept times never move, even when the upstream later sends an earlier pubtime
    assert later.versions["1.0.0"] == (None, None) and later.versions["1.1.0"] == (900.0, None)
    assert later.versions["1.2.0"] == (None, 2000.0) and later.versions["1.3.0"] == (1500.0, 2000.0)
    assert later.upto == 2000.0
    # an older copy merged afterwards moves nothing back
    assert sightings.merge(later, 1500.0, [("1.2.0", None)]).upto == 2000.0


def test_records_of_racing_processes_combine_to_each_versions_earliest_sighting_in_either_order():
    a = Sightings(2000.0, {"1.0.0": (None, None), "1.2.0": (None, 2000.0), "1.3.0": (1500.0, 2000.0)})
    b = Sightings(2010.0, {"1.0.0": (None, None), "1.2.0": (None, 2010.0), "1.3.0": (1500.0, 2010.0),
                           "1.4.0": (None, 2010.0)})
    combined = sightings.combine(a, b)
    assert combined == sightings.combine(b, a)
    assert combined == Sightings(2010.0, {"1.0.0": (None, None), "1.2.0": (None, 2000.0), "1.3.0": (1500.0, 2000.0),
                                          "1.4.0": (None, 2010.0)})
    assert sightings.combine(Sightings(), a) == a


def test_published_follows_missing_pubtime():
    record = Sightings(10.0, {"1.0.0": (None, None), "1.1.0": (None, 500.0), "1.2.0": (400.0, 500.0)})
    assert record.published("1.0.0", True) is None
    assert record.published("1.1.0", True) == 500.0 and record.published("1.1.0", False) is None
    assert record.published("1.2.0", False) == 400.0
    assert record.published("9.9.9", True) is None


def test_record_round_trip_and_damage():
    record = Sightings(2000.0, {"1.0.0": (None, None), "1.2.0": (1500.0, 2000.0)})
    assert sightings.decode(sightings.encode(record)) == record
    for bad in (b"{", b"[]", b'{"versions": {"1.0.0": [1]}}', b'{"versions": {"1.0.0": ["x", null]}}'):
        with pytest.raises(ValueError):
            sightings.decode(bad)


@pytest.mark.parametrize("text, seconds", [("2026-08-20T12:34:56Z", 1787229296.0), ("1970-01-01T00:00:00Z", 0.0)])
def test_pubtime(text, seconds):
    assert sightings.parse_pubtime(text) == seconds


@pytest.mark.parametrize("text", [None, 5, "2026-08-20 12:34:56", "2026-08-20T12:34:56+00:00", "2026-13-40T00:00:00Z"])
def test_pubtime_not_in_cargo_form(text):
    assert sightings.parse_pubtime(text) is None
