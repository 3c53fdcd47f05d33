"""The engine that knows no protocol: fetch under a lease, coalesce, walk upstreams in priority order with
back-off, verify against an expected digest while streaming, store, revalidate, serve stale on error.

  item.py      what a protocol says about one entry (`Item`) and what a download must hash to (`Expected`)
  core.py      `Engine`: read, freshness, the walk, downloads, stores, serve-stale
  flights.py   one fetch per entry at a time: in-process single-flight and the store's leases
  writes.py    a cache write whose failure does not fail the request (logged, None)
  outcomes.py  `Served` and the errors a resolution ends in
  freshness.py fresh / revalidate / serve stale, validators, client conditional requests (pure)
"""

from .core import Engine
from .item import Expected, Item
from .outcomes import NotFound, NotStaged, Refused, ResolveError, Served, Unavailable

__all__ = ["Engine", "Expected", "Item", "NotFound", "NotStaged", "Refused", "ResolveError", "Served", "Unavailable"]
