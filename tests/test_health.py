"""health.py: when an upstream is skipped, with the clock passed in."""

from __future__ import annotations

from cratecache.upstreams.health import Health


def test_backs_off_after_threshold_consecutive_transport_failures():
    health = Health(backoff=30, threshold=3)
    for now in (0, 1):
        health.failed("a", "connection failed", now, transport=True)
        assert health.skip_reason("a", now) is None
    health.failed("a", "connection failed", 2, transport=True)
    assert health.skip_reason("a", 2) == "backing off for 30 s more (last error: connection failed)"
    assert health.skip_reason("a", 31.9) is not None
    assert health.skip_reason("a", 32) is None  # tried again once the back-off is over


def test_http_errors_prove_the_upstream_is_reachable():
    health = Health(backoff=30, threshold=1)
    health.failed("a", "HTTP 503", 0, transport=False)
    assert health.skip_reason("a", 0) is None
    assert health.of("a").failures == 1 and health.of("a").last_error == "HTTP 503"


def test_a_success_resets_the_count_and_a_failed_retry_backs_off_again():
    health = Health(backoff=10, threshold=2)
    health.failed("a", "timeout", 0, transport=True)
    health.succeeded("a", 5.0)
    health.failed("a", "timeout", 1, transport=True)
    assert health.skip_reason("a", 1) is None
    health.failed("a", "timeout", 2, transport=True)
    assert health.skip_reason("a", 2) is not None
    assert health.skip_reason("a", 12) is None
    health.failed("a", "timeout", 12, transport=True)  # the retry fails: straight back to skipping
    assert health.skip_reason("a", 12) is not None


def test_zero_backoff_never_skips():
    health = Health(backoff=0, threshold=1)
    for now in range(5):
        health.failed("a", "timeout", now, transport=True)
    assert health.skip_reason("a", 5) is None


def test_status_auth_checks_basic_credentials_and_leaves_open_paths_open(tmp_path):
    import base64
    import hashlib

    import pytest
    from cratecache.operations.status import StatusAuth

    def basic(user: str, password: str) -> str:
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    auth = StatusAuth.parse("ops:s3cret", "/healthz,/metrics")
    assert auth.allows("/healthz", None) and auth.allows("/metrics", None)
    assert not auth.allows("/status.json", None) and not auth.allows("/", basic("ops", "wrong"))
    assert auth.allows("/", basic("ops", "s3cret")) and not auth.allows("/", "Basic !!!")
    assert StatusAuth.parse("").allows("/status.json", None)
    (tmp_path / "htpasswd").write_text("ops:{SHA}" + base64.b64encode(hashlib.sha1(b"pw").digest()).decode() + "\n")
    hashed = StatusAuth.parse(f"@{tmp_path / 'htpasswd'}", "")
    assert hashed.allows("/healthz", basic("ops", "pw")) and not hashed.allows("/healthz", None)
    for bad in ("justauser", "@/nonexistent/htpasswd"):
        with pytest.raises(ValueError):
            StatusAuth.parse(bad)


def test_a_failure_begun_before_the_latest_success_does_not_count():
    """A request stuck in a timeout while the upstream came back ends after a newer success: it says nothing about
    the upstream now (issue 27: a recovered upstream stayed amber on the status page)."""
    health = Health(backoff=30, threshold=1)
    health.succeeded("a", 5.0, now=10)
    health.failed("a", "timed out after 5000 ms (ReadTimeout)", 11, transport=True, started=6)
    assert health.of("a").consecutive_failures == 0 and health.skip_reason("a", 11) is None
    assert health.of("a").last_error == "timed out after 5000 ms (ReadTimeout)"  # still shown as the last error
    health.failed("a", "connection failed", 12, transport=True, started=11)  # begun after it: counts
    assert health.skip_reason("a", 12) is not None


def test_a_success_ends_a_back_off():
    health = Health(backoff=30, threshold=1)
    health.failed("a", "connection failed", 0, transport=True, started=0)
    assert health.skip_reason("a", 1) is not None
    health.succeeded("a", 5.0, now=2)  # an attempt begun before the back-off
    assert health.skip_reason("a", 2) is None


async def test_a_recovered_upstream_is_shown_ok_after_its_success_whatever_ends_last():
    import asyncio
    import itertools
    from types import SimpleNamespace

    import httpx
    from cratecache.operations.activity import _upstream
    from cratecache.upstreams.client import Attempt, walk

    health, clock = Health(backoff=30, threshold=3), itertools.count(100).__next__
    client = SimpleNamespace(name="a", key="reg/a", upstream=SimpleNamespace(timeout_ms=100, username=None,
                                                                             password=None))
    for _ in range(2):  # failing while it was down
        await walk([client], refused, health, clock)
    stuck_until_it_is_back = asyncio.Event()

    async def stuck(c):
        await stuck_until_it_is_back.wait()
        raise httpx.ConnectTimeout("connect")

    async def answered(c):
        return Attempt(c.name, "ok", "HTTP 200"), "body"

    old = asyncio.create_task(walk([client], stuck, health, clock))
    await asyncio.sleep(0)  # the old attempt has begun
    assert (await walk([client], answered, health, clock))[0] == "body"
    stuck_until_it_is_back.set()
    await old

    row = _upstream(SimpleNamespace(name="a", url="http://a.test/", priority=0, active=True), health.of("reg/a"), 200)
    assert row["health"] == "ok" and row["last_error"].startswith("ConnectTimeout")
    assert health.skip_reason("reg/a", clock()) is None


async def refused(client):
    import httpx

    raise httpx.ConnectError("refused")
