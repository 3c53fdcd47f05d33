"""What this worker has been doing: recent requests, counts and metrics, and the status snapshot.

The snapshot never contains credentials: upstreams are shown by name, URL (which may not carry
credentials, see config/), priority and health.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter, deque
from typing import Any
from urllib.parse import urlsplit

from ..config import Settings
from ..upstreams.client import Attempt, UpstreamClient
from ..upstreams.health import Health
from .metrics import KINDS, Metrics

RECENT = 50


class Activity:
    def __init__(self) -> None:
        self.started = time.time()
        self.metrics = Metrics()
        self.recent: deque[dict] = deque(maxlen=RECENT)
        self.served: Counter[str] = Counter()  # "kind:state" since start
        self.unflushed: Counter[str] = Counter()  # the same, not yet added to the store's counters

    def request(self, registry: str, client: str, method: str, host: str, path: str, status: int, source: str,
                state: str, kind: str, size: int, seconds: float, reason: str = "", user: str | None = None) -> None:
        """`user`: a request on the mirror listener, by the owner of its token ('-' without tokens)."""
        self.recent.appendleft({"time": time.time(), "client": client, "method": method, "host": host,
                                "path": path, "status": status, "source": source, "state": state,
                                "bytes": size, "ms": round(seconds * 1000, 1), "reason": reason,
                                **({"user": user} if user is not None else {})})
        if user is not None:
            self.metrics.mirror_requests.labels(registry, user, state).inc()
        self.served[f"{kind}:{state}"] += 1
        self.unflushed[f"{kind}:{state}"] += 1
        self.metrics.request(registry, kind, state, seconds, size)

    def upstream_attempt(self, client: UpstreamClient, attempt: Attempt) -> None:
        outcome = "skipped" if attempt.detail.startswith("skipped:") else attempt.outcome
        self.metrics.upstream(client.registry, client.name, outcome, attempt.ms / 1000)

    def take_unflushed(self) -> dict[str, int]:
        counts, self.unflushed = dict(self.unflushed), Counter()
        return counts

    def snapshot(self, settings: Settings, health: Health, cache: dict[str, Any],
                 storage: dict[str, Any]) -> dict[str, Any]:
        """The status page's data; `cache` is the storage's figures, `storage` its health (no credentials)."""
        now = time.time()
        return {
            "started": self.started,
            "now": now,
            "offline": settings.cache.offline,
            "registries": [
                {"name": reg.name, "index_host": reg.index_host, "download_host": reg.download_host,
                 "index_url": reg.index_url,
                 "upstreams": [_upstream(up, health.of(f"{reg.name}/{up.name}"), now) for up in reg.upstreams]}
                for reg in settings.registries
            ] + ([{"name": t.name, "index_host": t.host, "download_host": t.host, "index_url": f"https://{t.host}/",
                   "ttl": t.ttl, "upstreams": [_upstream(up, health.of(f"{t.name}/{up.name}"), now) for up in t.upstreams]}]
                 if (t := settings.toolchains) else []),
            "cache": {
                "directory": str(settings.cache.directory),
                "size_limit": settings.cache.size_limit,
                "requests": {kind: self._ratio(kind) for kind in KINDS},
                **cache,
            },
            "storage": storage,
            "mirror": {"listen": m.listen, "public_url": m.public_url, "tls": m.tls_cert is not None, "auth": m.auth}
            if (m := settings.mirror) else None,
            "recent": list(self.recent),
        }

    def _ratio(self, kind: str) -> dict:
        by_state = {k.split(":", 1)[1]: n for k, n in self.served.items() if k.startswith(f"{kind}:")}
        return {"requests": sum(by_state.values()), "hits": by_state.get("hit", 0), "by_state": by_state}


def origin(url: str) -> str:
    """scheme://host[:port] only: a path may carry a token (some hosted registries put one there)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" + ("/…" if parts.path.strip("/") else "/")


def _upstream(up, state, now: float) -> dict:
    latencies = sorted(state.latencies_ms)
    backing_off = state.backoff_until > now
    return {
        "name": up.name,
        "url": origin(up.url),
        "priority": up.priority,
        "active": up.active,
        "health": "backing off" if backing_off else ("failing" if state.consecutive_failures else "ok"),
        "backoff_until": state.backoff_until if backing_off else None,
        "last_error": state.last_error,
        "last_error_at": state.last_error_at,
        "last_success_at": state.last_success_at,
        "requests": state.requests,
        "failures": state.failures,
        "p50_ms": round(statistics.median(latencies), 1) if latencies else None,
        "p95_ms": round(latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))], 1) if latencies else None,
    }
