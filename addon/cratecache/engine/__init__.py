"""The engine that knows no protocol: fetch under a lease, coalesce, walk upstreams in priority order with
back-off, verify against an expected digest while streaming, store, revalidate, serve stale on error.

  outcomes.py  `Served` and the errors a resolution ends in
"""

from .outcomes import NotFound, NotStaged, ResolveError, Served, Unavailable

__all__ = ["NotFound", "NotStaged", "ResolveError", "Served", "Unavailable"]
