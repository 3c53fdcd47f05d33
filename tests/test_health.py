"""health.py: when an upstream is skipped, with the clock passed in."""

from __future__ import annotations

from cratecache.health import Health


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
    from cratecache.status import StatusAuth

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
