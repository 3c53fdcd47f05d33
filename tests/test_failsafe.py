"""failsafe.py: a request on an intercepted host that no hook answered is refused, never forwarded."""

from __future__ import annotations

from pathlib import Path

import pytest
from cratecache.boundary.failsafe import FailClosed
from cratecache.config import load_settings
from mitmproxy.test import tflow, tutils

from tests.harness import write_proxies


@pytest.fixture
def settings(tmp_path: Path):
    return load_settings(str(write_proxies(tmp_path / "proxies.yaml", [{"name": "up", "url": "http://127.0.0.1:9/"}],
                                           tmp_path / "cache")))


def flow(host: str, path: str = "/config.json"):
    return tflow.tflow(req=tutils.treq(host=host, port=443, scheme=b"https", path=path.encode(),
                                       headers=((b"host", host.encode()),)))


def test_an_unanswered_request_on_a_registry_host_gets_a_502_with_the_reason(settings, caplog):
    unanswered = flow("index.crates.io")
    FailClosed(lambda: settings).request(unanswered)

    assert unanswered.response.status_code == 502
    assert b"cargo-cache produced no answer for this request" in unanswered.response.content
    assert "was not answered by the cache addon: refused with 502, not forwarded" in caplog.text


def test_other_hosts_answered_and_streamed_flows_are_left_alone(settings):
    other, answered, streamed = flow("example.com"), flow("index.crates.io"), flow("static.crates.io")
    answered.response = tutils.tresp()
    streamed.metadata["cargo_cache_streamed"] = True
    guard = FailClosed(lambda: settings)
    for f in (other, answered, streamed):
        guard.request(f)

    assert other.response is None and streamed.response is None
    assert answered.response.content == tutils.tresp().content


def test_a_request_that_cannot_be_classified_is_refused(settings):
    class Broken:
        def match_host(self, *args):
            raise RuntimeError("bug in routing")

    f = flow("index.crates.io")
    FailClosed(lambda: Broken()).request(f)
    assert f.response.status_code == 502


def test_an_unanswered_request_on_the_mirror_listener_gets_a_502_whatever_its_host(settings):
    from cratecache.operations.mirror_modes import TARGET
    from mitmproxy.proxy import mode_specs

    unanswered = flow("cargo-cache-mirror.invalid", "/anything")
    unanswered.client_conn.proxy_mode = mode_specs.ProxyMode.parse(f"reverse:{TARGET}@127.0.0.1:8090")
    FailClosed(lambda: settings).request(unanswered)

    assert unanswered.response.status_code == 502
