"""Upstream redirects seen by a client of a real mitmdump: a mirror that redirects downloads to object storage keeps
working when that storage is one of its download_hosts, and a redirect anywhere else is a 502 whose body names the
upstream and the reason (the other host never asked)."""

from __future__ import annotations

import ssl

import httpx
import pytest

from tests.fixtures.upstream import UpstreamServer

STORED, INSIDE = "anyhow", "log"  # one crate redirected to storage, one to an internal service


@pytest.fixture
def storage(registry):
    with UpstreamServer(registry, name="storage") as server:
        yield server


@pytest.fixture
def internal(registry):
    """Another service on the proxy's loopback that no upstream was configured with."""
    with UpstreamServer(registry, name="internal") as server:
        yield server


def test_a_download_redirected_to_storage_is_served_and_a_redirect_elsewhere_is_a_502_with_the_reason(
    registry, secondary, storage, internal, entry, start_proxy
):
    crate = registry.crate(STORED, registry.versions(STORED)[-1])
    stored = f"/crates/{STORED}/{crate.version}/download"
    inside = f"/crates/{INSIDE}/{registry.versions(INSIDE)[-1]}/download"
    secondary.redirects[stored] = f"http://localhost:{storage.port}{stored}"
    secondary.redirects[inside] = f"{internal.root}{inside}"
    proxy = start_proxy([entry(secondary, name="mirror", download_hosts=[f"localhost:{storage.port}"])])

    with httpx.Client(proxy=proxy.url, verify=ssl.create_default_context(cafile=str(proxy.ca_cert)),
                      trust_env=False, timeout=20) as client:
        served = client.get(f"https://static.crates.io{stored}")
        refused = client.get(f"https://static.crates.io{inside}")

    assert (served.status_code, served.content) == (200, crate.data)
    assert [r.path for r in storage.requests] == [stored]
    assert refused.status_code == 502
    assert (f"mirror: redirect to http://127.0.0.1:{internal.port} refused: neither its own host, a sibling of it "
            "under the same parent domain, nor in its download_hosts") in refused.text, refused.text
    assert internal.requests == []
