"""Prometheus metrics (prometheus-client), one registry per addon instance.

- cargo_cache_requests_total{registry,kind,outcome}           outcome: hit, miss, revalidated, updated,
                                                              stale, not_found, error, rejected
- cargo_cache_mirror_requests_total{registry,user,outcome}   the mirror listener's requests (also counted above),
                                                              by the owner of the token ('-' without tokens;
                                                              outcome unauthorized: no or an unknown token)
- cargo_cache_upstream_requests_total{registry,upstream,outcome}   ok, not_modified, not_found, failed, skipped
- cargo_cache_request_duration_seconds{registry,kind}         total time to answer the client
- cargo_cache_upstream_duration_seconds{registry,upstream}     time of each upstream attempt
- cargo_cache_served_bytes_total{registry,kind}
- cargo_cache_bytes, cargo_cache_entries{kind}                 this host's cache folder, read at scrape time
- cargo_cache_storage_requests_total{backend,operation,outcome}  calls to a shared store (s3): ok, error
- cargo_cache_storage_duration_seconds{backend,operation}     their latency
- cargo_cache_storage_up{backend}                             1, or 0 while the shared store is unreachable
- cargo_cache_storage_pending                                 entries waiting to be uploaded to it
- cargo_cache_store_writable                                  1, or 0 while this host's cache folder refuses writes
                                                              (disk full, read-only): answers are passed through
- cargo_cache_store_errors_total{op}                          writes the cache folder refused, per operation (put,
                                                              put_file, spool, lease, upkeep, probe, ...)
- cargo_cache_corrupt_entries_total{kind}                     stored bytes found not to match their digest (bit rot):
                                                              not served, evicted, fetched again
- cargo_cache_policy_decisions_total{action,reason}           the policy's decisions on what was served: action
                                                              warn, hide, deny (would-… in dry_run); reason
                                                              quarantine, malicious, vulnerable, informational, rule
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily

from ..storage.local import KINDS

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class PolicyDecisions:
    """A collector of the policy journal's counts, read at scrape time."""

    def __init__(self) -> None:
        self.counts: Callable[[], Mapping[tuple[str, str], int]] = dict

    def collect(self):
        family = CounterMetricFamily("cargo_cache_policy_decisions", "Decisions of the supply-chain policy on what "
                                     "was served (per version in an index file, per refused download)",
                                     labels=["action", "reason"])
        for (action, reason), n in sorted(self.counts().items()):
            family.add_metric([action, reason], n)
        yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.policy = PolicyDecisions()
        r.register(self.policy)
        self.requests = Counter("cargo_cache_requests", "Requests answered on registry hosts",
                                ["registry", "kind", "outcome"], registry=r)
        self.mirror_requests = Counter("cargo_cache_mirror_requests", "Requests answered on the mirror listener, by "
                                       "the owner of their token", ["registry", "user", "outcome"], registry=r)
        self.upstream_requests = Counter("cargo_cache_upstream_requests", "Attempts on upstream registries",
                                         ["registry", "upstream", "outcome"], registry=r)
        self.request_duration = Histogram("cargo_cache_request_duration_seconds", "Time to answer a client",
                                          ["registry", "kind"], buckets=LATENCY_BUCKETS, registry=r)
        self.upstream_duration = Histogram("cargo_cache_upstream_duration_seconds", "Time of an upstream attempt",
                                           ["registry", "upstream"], buckets=LATENCY_BUCKETS, registry=r)
        self.served_bytes = Counter("cargo_cache_served_bytes", "Bytes of bodies served to clients",
                                    ["registry", "kind"], registry=r)
        self.cache_bytes = Gauge("cargo_cache_bytes", "Bytes stored in the cache folder", registry=r)
        self.cache_entries = Gauge("cargo_cache_entries", "Cached objects", ["kind"], registry=r)
        self.storage_requests = Counter("cargo_cache_storage_requests", "Calls to the shared store",
                                        ["backend", "operation", "outcome"], registry=r)
        self.storage_duration = Histogram("cargo_cache_storage_duration_seconds", "Time of a call to the shared store",
                                          ["backend", "operation"], buckets=LATENCY_BUCKETS, registry=r)
        self.storage_up = Gauge("cargo_cache_storage_up", "1 when the storage backend answers", ["backend"],
                                registry=r)
        self.store_writable = Gauge("cargo_cache_store_writable", "1 when this host's cache folder takes writes, 0 "
                                    "while it refuses them (disk full, read-only)", registry=r)
        self.store_errors = Counter("cargo_cache_store_errors", "Writes the cache folder refused (disk full, "
                                    "read-only)", ["op"], registry=r)
        self.storage_pending = Gauge("cargo_cache_storage_pending", "Entries waiting to be uploaded to the shared "
                                     "store", registry=r)
        self.corrupt_entries = Counter("cargo_cache_corrupt_entries", "Stored entries whose bytes no longer match their "
                                       "digest (bit rot): not served, evicted, fetched again", ["kind"], registry=r)
        for kind in KINDS:
            self.corrupt_entries.labels(kind)  # 0 from the start, so that an alert on its increase sees the first

    def request(self, registry: str, kind: str, outcome: str, seconds: float, size: int) -> None:
        self.requests.labels(registry, kind, outcome).inc()
        self.request_duration.labels(registry, kind).observe(seconds)
        if size:
            self.served_bytes.labels(registry, kind).inc(size)

    def upstream(self, registry: str, upstream: str, outcome: str, seconds: float) -> None:
        self.upstream_requests.labels(registry, upstream, outcome).inc()
        if outcome != "skipped":
            self.upstream_duration.labels(registry, upstream).observe(seconds)

    def storage_call(self, backend: str, operation: str, seconds: float, ok: bool) -> None:
        self.storage_requests.labels(backend, operation, "ok" if ok else "error").inc()
        self.storage_duration.labels(backend, operation).observe(seconds)

    def store_error(self, op: str) -> None:
        self.store_errors.labels(op).inc()

    def corrupt_entry(self, kind: str) -> None:
        self.corrupt_entries.labels(kind).inc()

    def render(self, figures: dict, storage: dict) -> bytes:
        """The exposition text, with the cache's `figures` and the storage's `health()` of now."""
        self.cache_bytes.set(figures["bytes"])
        for kind in KINDS:
            self.cache_entries.labels(kind).set(figures["entries"].get(kind, 0))
        self.storage_up.labels(storage["backend"]).set(1 if storage["state"] == "ok" else 0)
        self.storage_pending.set(storage.get("pending", 0))
        self.store_writable.set(1 if storage.get("folder", {}).get("writable", True) else 0)
        return generate_latest(self.registry)
