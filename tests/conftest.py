"""Shared fixtures: the real-crate registry, TLS material, and a clean environment."""

from __future__ import annotations

import atexit

import cratecache  # noqa: F401  (first: it makes `sqlite3` the bundled, fixed SQLite for this process, sqlitelib.py)
import pytest
import trustme

from tests.fixtures.registry import Registry, build_registry


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The s3 tests load obstore into this process too: leave with pytest's own status, past the interpreter's
    finalization that its runtime can abort (cratecache.operations.exiting)."""
    from cratecache.operations import exiting

    if exiting.runtime_started():
        atexit.register(exiting.leave, int(exitstatus))


PROXY_ENV = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may reach past loopback through an inherited proxy setting."""
    for name in PROXY_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def clock():
    """A clock the test moves by hand (tests.fake_registry.Clock)."""
    from tests.fake_registry import Clock

    return Clock()


@pytest.fixture(scope="session")
def registry() -> Registry:
    """A sparse registry built from the real crate sources Debian installs."""
    return build_registry()


@pytest.fixture(scope="session")
def upstream_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def upstream_cert(upstream_ca: trustme.CA) -> trustme.LeafCert:
    return upstream_ca.issue_cert("127.0.0.1", "localhost")


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory):
    """A real S3 server (SeaweedFS) on loopback for the whole session; tests isolate themselves by prefix."""
    from tests.fixtures.seaweed import SeaweedFS

    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    yield server
    server.stop()
