"""What anyone who can reach the proxy port may send: bodies, Host headers, registry hosts with a port.

Real mitmdump, clients through it as Cargo connects (CONNECT, TLS with the proxy's CA).
"""

from __future__ import annotations

import ssl

import httpx
import pytest
import yaml

from tests.e2e.test_faults import proxy_client
from tests.harness import Proxy


def test_a_body_sent_to_a_registry_host_is_refused_before_it_is_read(secondary, entry, start_proxy):
    proxy = start_proxy([entry(secondary)])
    sent = 0

    def body():
        nonlocal sent
        for _ in range(256):  # 256 MiB offered of the 800 MB announced
            sent += 1 << 20
            yield b"\0" * (1 << 20)

    with proxy_client(proxy, timeout=10) as c:
        with pytest.raises(httpx.TransportError):  # closed (or no longer read): the upload cannot go on
            c.post("https://index.crates.io/config.json", content=body(), headers={"Content-Length": "800000000"})
        after = c.get("https://index.crates.io/config.json")  # a new connection is served as usual

    assert sent < 64 << 20, f"{sent >> 20} MiB were taken before the proxy closed the connection"
    assert "POST index.crates.io/config.json refused: a request body on a read-only registry" in proxy.log()
    assert after.status_code == 200
    assert secondary.paths().count("/index/config.json") == 1  # the refused request reached no upstream


def test_a_host_header_that_does_not_match_the_connection_gets_421_and_goes_nowhere(secondary, entry, start_proxy):
    proxy = start_proxy([entry(secondary)])
    with proxy_client(proxy) as c:
        other = c.get("https://index.crates.io/config.json", headers={"Host": "example.org"})
        crossed = c.get("https://index.crates.io/crates/anyhow/1.0.69/download", headers={"Host": "static.crates.io"})

    assert other.status_code == 421
    assert "Host header 'example.org' does not match the connection's target index.crates.io:443" in other.text
    assert crossed.status_code == 421
    assert secondary.requests == []


def test_a_registry_host_with_a_port_is_intercepted_on_that_port(secondary, entry, confdir, tmp_path):
    config = tmp_path / "proxies.yaml"
    config.write_text(yaml.safe_dump({
        "cache": {"directory": str(tmp_path / "cache")},
        "registries": [{"name": "corp", "index_host": "corp.example:8443", "proxies": [entry(secondary)]}],
    }))
    with Proxy(config, confdir, tmp_path / "mitmdump.log") as proxy:
        with httpx.Client(proxy=proxy.url, verify=ssl.create_default_context(cafile=str(proxy.ca_cert)),
                          trust_env=False, timeout=20) as c:
            served = c.get("https://corp.example:8443/config.json")
            index = c.get("https://corp.example:8443/an/yh/anyhow")

    assert served.status_code == 200 and served.json()["dl"] == "https://corp.example:8443/crates"
    assert index.status_code == 200 and b'"name":"anyhow"' in index.content.replace(b" ", b"")
    assert "GET corp.example:8443/an/yh/anyhow 200" in proxy.log()
