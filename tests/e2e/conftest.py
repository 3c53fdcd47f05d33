"""Fixtures for end-to-end runs: local upstream registries, the proxy process, cargo."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme
from mitmproxy import certs

from tests.fixtures.registry import Registry
from tests.fixtures.upstream import UpstreamServer
from tests.harness import Cargo, Proxy, make_project, write_proxies

USER, PASSWORD = "ci-runner", "s3cret-token-value"


@pytest.fixture(scope="session")
def confdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """mitmproxy's confdir with a CA generated once for the whole run."""
    path = tmp_path_factory.mktemp("confdir")
    certs.CertStore.from_store(path, "mitmproxy", 2048)
    return path


@pytest.fixture(scope="session")
def upstream_ca_file(tmp_path_factory: pytest.TempPathFactory, upstream_ca: trustme.CA) -> Path:
    path = tmp_path_factory.mktemp("upstream-ca") / "ca.pem"
    upstream_ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture
def primary(registry: Registry, upstream_cert: trustme.LeafCert) -> Iterator[UpstreamServer]:
    """HTTPS with Basic auth and a `dl` template with markers."""
    with UpstreamServer(registry, name="primary", tls=upstream_cert, auth=(USER, PASSWORD), dl_style="markers") as s:
        yield s


@pytest.fixture
def secondary(registry: Registry) -> Iterator[UpstreamServer]:
    """Plain HTTP, no auth, crates.io-style `dl`."""
    with UpstreamServer(registry, name="secondary") as s:
        yield s


@pytest.fixture
def entry(upstream_ca_file: Path) -> Callable[..., dict]:
    """proxies.yaml entry for a test server (credentials and CA filled in for the HTTPS one)."""

    def make(server, name: str | None = None, **fields) -> dict:
        doc = {"name": name or server.name, "url": server.url}
        if getattr(server, "tls", None) is not None:
            doc |= {"username": USER, "password": PASSWORD, "ca_bundle": str(upstream_ca_file)}
        return doc | fields

    return make


@pytest.fixture
def start_proxy(tmp_path: Path, confdir: Path) -> Iterator[Callable[..., Proxy]]:
    started: list[Proxy] = []
    counter = itertools.count()

    def start(upstreams: list[dict], cache_dir: Path | None = None, args: tuple[str, ...] = (),
              toolchains: dict | None = None, **cache) -> Proxy:
        n = next(counter)
        config = write_proxies(tmp_path / f"proxies-{n}.yaml", upstreams, cache_dir or tmp_path / "cache", toolchains,
                               **cache)
        proxy = Proxy(config, confdir, tmp_path / f"mitmdump-{n}.log", tuple(args)).start()
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


@pytest.fixture
def new_cargo(tmp_path: Path) -> Callable[..., Cargo]:
    counter = itertools.count()

    def make(proxy: Proxy, **env: str) -> Cargo:
        home = tmp_path / f"cargo-home-{next(counter)}"
        home.mkdir()
        return Cargo(home, proxy, env)

    return make


@pytest.fixture
def full_project(tmp_path: Path) -> Path:
    from tests.harness import FULL_DEPENDENCIES

    return make_project(tmp_path / "full", FULL_DEPENDENCIES)


@pytest.fixture
def small_project(tmp_path: Path) -> Path:
    from tests.harness import SMALL_DEPENDENCIES

    return make_project(tmp_path / "small", SMALL_DEPENDENCIES)
