"""Purges reach every gateway. A gateway serves crates from its local tier without asking the bucket, so
`cache-purge` also leaves a record in the bucket, and each gateway's upkeep drops what it names:

- `purged/<key>`  {"at": t}: the entry was purged at t;
- `purged-all`    {"at": t}: everything was (`cache-purge --all`).

A local copy stored at or before t is deleted; one stored later (fetched again after the purge) stays.
So applying a record twice changes nothing, and a gateway that was stopped during a purge applies it when
it starts. Gateways look every `SCAN_SECONDS`; records older than `KEEP_SECONDS` are removed by whoever
finds them (a gateway stopped for longer keeps what it had). Times compare across hosts (NTP).
"""

from __future__ import annotations

import json
import logging
import time

from .bucket import Bucket
from .disk import DiskStorage
from .records import load_record, number

logger = logging.getLogger(__name__)

SCAN_SECONDS = 30.0
KEEP_SECONDS = 7 * 86400
ALL = "purged-all"


class Purges:
    def __init__(self, bucket: Bucket, tier: DiskStorage):
        self.bucket, self.tier = bucket, tier
        self._scan_at = 0.0
        self._applied: dict[str, float] = {}  # record -> when it was written, once applied by this process

    async def record(self, key: str | None) -> None:
        """Tell the other gateways that `key` (None: everything) was purged now."""
        body = json.dumps({"at": time.time()}).encode()
        await self.bucket.put(ALL if key is None else f"purged/{key}", body)

    async def purged_at(self, key: str) -> float:
        """When `key` (or everything) was last purged; 0 if never (as far as the records go)."""
        times = [0.0]
        for path in (f"purged/{key}", ALL):
            got = await self.bucket.get(path)
            times.append(_time(got[0]) if got is not None else 0.0)
        return max(times)

    async def apply(self) -> int:
        """Drop local copies the records say were purged (at most every SCAN_SECONDS). BucketDown passes up."""
        if time.monotonic() < self._scan_at:
            return 0
        self._scan_at = time.monotonic() + SCAN_SECONDS
        records = {o["path"]: o for o in await self.bucket.list("purged")}
        dropped = 0
        got = await self.bucket.get(ALL)
        if got is not None and self._applied.get(ALL) != (at := _time(got[0])):
            for key in await self.tier.keys():
                dropped += await self._drop(key, at)
            self._applied[ALL] = at
        for path, listed in records.items():
            written = listed["last_modified"].timestamp()  # the store's clock, to the second
            if self._applied.get(path) == written:
                continue  # applied already, and not purged again since
            if time.time() - written > KEEP_SECONDS:
                await self.bucket.delete(path)
            elif (got := await self.bucket.get(path)) is not None:
                dropped += await self._drop(path.removeprefix("purged/"), _time(got[0]))
            self._applied[path] = written
        if dropped:
            logger.info("cargo-cache: dropped %d purged entries from the local tier", dropped)
        return dropped

    async def _drop(self, key: str, at: float) -> int:
        meta = await self.tier.meta(key)  # this gateway's copy
        if meta is None or meta.stored_at > at:
            return 0
        await self.tier.delete(key)
        return 1


def _time(raw: bytes) -> float:
    return number(load_record(raw), "at")
