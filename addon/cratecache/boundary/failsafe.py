"""The last addon in the list: a request on an intercepted host that no hook answered is answered here.

mitmproxy logs an exception raised in a hook ("Addon error") and then carries on with the flow as if nothing
had happened: it would connect to the real registry host and forward the client's request (headers and
credentials included), even in offline mode. The cache addon answers every failure itself; this guard is the
second line for whatever still slips past (another addon's error, a path no one thought of): it runs after
every other `request` hook and turns an unanswered flow on a registry or toolchains host into a 502 with a
reason. A flow it cannot classify (the routing itself raised) counts as intercepted: refused, not forwarded.
Every request on the mirror listener is the cache's to answer: one left unanswered gets the 502 too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from mitmproxy import http

from ..config import Settings
from .mirror_listener import is_mirror
from .routes import intercept

logger = logging.getLogger(__name__)

REASON = "cargo-cache produced no answer for this request (an internal error: see the proxy's log); not forwarded"


class FailClosed:
    def __init__(self, settings: Callable[[], Settings | None]) -> None:
        self.settings = settings  # the settings in force (runtime.py; None until they are applied)

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live or flow.metadata.get("cargo_cache_streamed"):
            return
        settings = self.settings()
        if settings is None or not _intercepted(settings, flow):
            return
        logger.error("cargo-cache: %s %s was not answered by the cache addon: refused with 502, not forwarded",
                     flow.request.method, flow.request.pretty_url)
        flow.response = http.Response.make(502, (REASON + "\n").encode(), {"Content-Type": "text/plain; charset=utf-8"})


def _intercepted(settings: Settings, flow: http.HTTPFlow) -> bool:
    request = flow.request
    try:
        if is_mirror(flow.client_conn):
            return True
        return intercept(settings, request.host, request.port, request.host_header, request.path) is not None
    except Exception:  # undecidable: treat it as ours
        logger.exception("cargo-cache: cannot tell whether %s is intercepted; refusing it", request.pretty_url)
        return True
