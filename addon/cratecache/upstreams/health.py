"""Upstream health: back off from an upstream that keeps failing to connect (pure; clock passed in).

Rule: after `threshold` consecutive transport failures (connection refused, timeout, TLS error),
an upstream is skipped for `backoff` seconds instead of costing every request its timeout.
When the back-off is over, the next request tries it again; one success clears the record (and ends a back-off).
HTTP answers, even 5xx, prove the upstream is reachable and do not count here. Nor does the failure of an attempt
that began before the latest success ended (a request stuck in a timeout while the upstream came back): it says
nothing about the upstream now, and would leave a recovered upstream shown as failing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)


@dataclass
class UpstreamHealth:
    consecutive_failures: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    last_success_at: float | None = None
    backoff_until: float = 0.0
    requests: int = 0
    failures: int = 0
    latencies_ms: list[float] = field(default_factory=list)


class Health:
    def __init__(self, backoff: float = 30.0, threshold: int = 3):
        self.backoff, self.threshold = backoff, threshold
        self._upstreams: dict[str, UpstreamHealth] = {}

    def of(self, name: str) -> UpstreamHealth:
        return self._upstreams.setdefault(name, UpstreamHealth())

    def skip_reason(self, name: str, now: float) -> str | None:
        """Why `name` must be skipped now, or None if it may be tried."""
        state = self.of(name)
        if state.backoff_until and now < state.backoff_until:
            return f"backing off for {state.backoff_until - now:.0f} s more (last error: {state.last_error})"
        if state.backoff_until:
            state.backoff_until = 0.0
            logger.info("upstream %s: back-off over, trying it again", name.split("/", 1)[-1])
        return None

    def succeeded(self, name: str, ms: float, now: float | None = None) -> None:
        state = self.of(name)
        state.requests += 1
        state.consecutive_failures = 0
        state.backoff_until = 0.0  # reachable: an attempt begun before the back-off has just proved it
        state.last_success_at = now if now is not None else state.last_success_at
        _keep_latency(state, ms)

    def failed(self, name: str, error: str, now: float, transport: bool, ms: float = 0.0,
               started: float | None = None) -> None:
        """Record a failed attempt (begun at `started`); transport failures count towards a back-off, unless the
        attempt began before the latest success."""
        state = self.of(name)
        state.requests += 1
        state.failures += 1
        state.last_error, state.last_error_at = error, now
        _keep_latency(state, ms)
        if not transport or (started is not None and state.last_success_at is not None
                             and started < state.last_success_at):
            return
        state.consecutive_failures += 1
        if self.backoff > 0 and state.consecutive_failures >= self.threshold and now >= state.backoff_until:
            state.backoff_until = now + self.backoff
            logger.warning("upstream %s: %d consecutive failures (%s); skipping it for %.0f s",
                           name.split("/", 1)[-1], state.consecutive_failures, error, self.backoff)


def _keep_latency(state: UpstreamHealth, ms: float, keep: int = 512) -> None:
    state.latencies_ms.append(ms)
    if len(state.latencies_ms) > keep:
        del state.latencies_ms[: len(state.latencies_ms) - keep]
