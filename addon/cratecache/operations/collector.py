"""Python's cycle collector, set for a long-running proxy.

What mitmproxy, the addon and their libraries create while starting (about 100 000 objects: modules, classes,
functions, option tables) lives as long as the process, yet every full collection walks all of it again: some
130 ms each on a 2-core CI machine, and a cold `cargo fetch` of a hundred crates allocates enough to set one off
(BENCHMARKS.md, "Issue 14, fourth pass"). Once the proxy runs, `freeze_startup` moves those objects to the
permanent generation, so that a collection looks only at what was made since: flows, tasks, cache entries.
"""

from __future__ import annotations

import gc
import logging

logger = logging.getLogger(__name__)


def freeze_startup() -> int:
    """Collect startup's garbage (not to keep it forever), then freeze what is left; returns how many objects."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    logger.debug("cargo-cache: %d objects from startup frozen out of the cycle collector", frozen)
    return frozen
