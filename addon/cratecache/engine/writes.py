"""Whether a failed cache write fails the request: it does not (a full disk, an unwritable folder). The failure is
logged and the write answers None; the caller serves what it fetched anyway."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


async def best_effort(write, key: str, *args):
    """`await write(key, *args)`, or None (logged) if it raised."""
    try:
        return await write(key, *args)
    except Exception as e:
        logger.error("cache write failed for %s (%s: %s) in %s", key, type(e).__name__, e, write.__name__)
        return None
