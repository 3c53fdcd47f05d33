"""What the policy gate serves for one index copy (policy/gate.py's pure part, `_make`): the validators a client
revalidates with follow what is served."""

from __future__ import annotations

import json

from cratecache.config.policy import Policy, Quarantine
from cratecache.engine import freshness
from cratecache.policy.decide import timestamp
from cratecache.policy.gate import _make
from cratecache.policy.sightings import Sightings
from cratecache.storage.local import make_entry

STORED_AT = 1_000_000.0
UPSTREAM_LAST_MODIFIED = freshness.http_date(STORED_AT - 500)
POLICY = Policy(quarantine=Quarantine(min_age=100))


def index(**pubtimes: float | None) -> bytes:
    """itoa's index file with versions 1_0_1=... (a pubtime or None)."""
    return b"".join(json.dumps({"name": "itoa", "vers": v.replace("_", "."), "deps": [], "cksum": "0" * 64,
                                "features": {}, "yanked": False} | ({"pubtime": timestamp(t)} if t else {}),
                               separators=(",", ":")).encode() + b"\n" for v, t in pubtimes.items())


def served(body: bytes, record: Sightings, now: float):
    entry = make_entry(body, "origin", '"up"', UPSTREAM_LAST_MODIFIED, STORED_AT)
    return _make(POLICY, None, "itoa", entry, record, (), now), entry


def last_modified(answer) -> str:
    meta = answer.entry.meta
    return meta.last_modified or freshness.http_date(meta.stored_at)


def test_when_a_quarantine_ends_while_a_copy_is_served_its_last_modified_moves_to_that_time():
    body = index(**{"1_0_1": None, "1_0_2": None})
    record = Sightings(STORED_AT, {"1.0.1": (None, None), "1.0.2": (None, STORED_AT)})  # 1.0.2 first seen in it
    young, _ = served(body, record, STORED_AT + 50)
    released, _ = served(body, record, STORED_AT + 100.5)

    assert "1.0.2" in young.verdicts and b'"yanked":true' in young.entry.body
    assert not released.verdicts and b'"yanked":true' not in released.entry.body
    assert last_modified(released) == freshness.http_date(STORED_AT + 100)
    assert not freshness.client_not_modified(None, last_modified(young), freshness.etag_for(released.entry.meta.sha256),
                                             last_modified(released))  # a client's copy of the young one: 200


def test_a_copy_whose_versions_were_never_in_quarantine_while_it_was_served_keeps_its_validators():
    body = index(**{"1_0_1": STORED_AT - 900, "1_0_2": STORED_AT - 200})
    record = Sightings(STORED_AT, {"1.0.1": (STORED_AT - 900, None), "1.0.2": (STORED_AT - 200, None)})
    answer, entry = served(body, record, STORED_AT + 50)

    assert answer.entry is entry and last_modified(answer) == UPSTREAM_LAST_MODIFIED
