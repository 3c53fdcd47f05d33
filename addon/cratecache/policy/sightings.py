"""The publish times the proxy keeps, per crate (pure: the record's format and how an index file updates it).

A version's times are kept from the first index file the proxy saw it in and never moved by a later one:
`pubtime` the upstream's publish time then (None if its line had none), `seen` when the proxy first saw it (the
`stored_at` of that index file's entry, so every worker and gateway reading the same copy records the same time;
None for the versions of the first copy ever seen: their age is unknown and they count as old, so that turning
the policy on does not hide a registry's whole history).

The record is JSON: {"upto": <stored_at of the newest index copy merged>, "versions": {"1.2.3": [pubtime, seen]}}.
"""

from __future__ import annotations

import calendar
import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

_PUBTIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z\Z")


@dataclass(frozen=True)
class Sightings:
    upto: float | None = None  # None: no index copy seen yet
    versions: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)  # version -> (pubtime, seen)

    def covers(self, lines: Iterable[tuple[str, float | None]]) -> bool:
        """Every version of these (version, pubtime) lines is kept already."""
        return self.upto is not None and all(version in self.versions for version, _ in lines)

    def published(self, version: str, first_seen: bool) -> float | None:
        """When `version` counts as published: its kept pubtime, else (with `missing_pubtime: first-seen`) its first
        sighting; None: unknown (old)."""
        pubtime, seen = self.versions.get(version, (None, None))
        return pubtime if pubtime is not None else (seen if first_seen else None)


def parse_pubtime(value: object) -> float | None:
    """An index line's `pubtime` ("2026-08-20T12:34:56Z") as seconds, or None if absent or not in that form."""
    if not isinstance(value, str) or not _PUBTIME.match(value):
        return None
    try:
        return float(calendar.timegm(time.strptime(value, "%Y-%m-%dT%H:%M:%SZ")))
    except ValueError:
        return None


def merge(record: Sightings, stored_at: float, lines: Iterable[tuple[str, float | None]]) -> Sightings:
    """`record` after the index copy stored at `stored_at` with these (version, pubtime) lines: versions not kept
    yet are added (seen at `stored_at`, or None if this is the first copy ever seen); kept ones never change."""
    first = record.upto is None
    versions = dict(record.versions)
    for version, pubtime in lines:
        if version not in versions:
            versions[version] = (pubtime, None if first else stored_at)
    return Sightings(max(stored_at, record.upto or stored_at), versions)


def encode(record: Sightings) -> bytes:
    return json.dumps({"upto": record.upto, "versions": {v: list(t) for v, t in record.versions.items()}},
                      separators=(",", ":"), sort_keys=True).encode()


def decode(body: bytes) -> Sightings:
    """A stored record; ValueError if it is not one."""
    obj = json.loads(body)
    if not isinstance(obj, dict) or not isinstance(obj.get("versions"), dict):
        raise ValueError("not a sightings record")
    upto = obj.get("upto")
    versions = {}
    for version, times in obj["versions"].items():
        if not (isinstance(times, list) and len(times) == 2 and all(t is None or isinstance(t, (int, float))
                                                                     for t in times)):
            raise ValueError(f"bad times for version {version!r}")
        versions[str(version)] = (times[0], times[1])
    return Sightings(float(upto) if isinstance(upto, (int, float)) else None, versions)
