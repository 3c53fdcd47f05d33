"""Whether a failed cache write fails the request: it does not (a full disk, an unwritable folder). The failure is
counted or logged and the write answers None; the caller serves what it fetched anyway."""

from __future__ import annotations

import logging

from ..storage import Storage

logger = logging.getLogger(__name__)


async def best_effort(store: Storage, write, key: str, *args):
    """`await write(key, *args)`, or None if it raised: a fault of the cache folder (full, read-only) is counted and
    warned about once a minute by `store.writability` (storage/faults.py); any other error is logged here."""
    try:
        return await write(key, *args)
    except Exception as e:
        if not store.writability.failed(getattr(write, "__name__", "write"), e, key):
            logger.error("cache write failed for %s (%s: %s) in %s", key, type(e).__name__, e, write.__name__)
        return None
