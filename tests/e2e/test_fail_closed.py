"""Failing closed, seen through a real mitmdump: whatever goes wrong on an intercepted host, the client gets the
proxy's own answer; descriptors live no longer than their flow; the proxy's own loopback is not a tunnel target."""

from __future__ import annotations

import os
import resource
import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.harness import free_port

CRATE = "/crates/anyhow/1.0.69/download"


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def tunnel(proxy, host: str, ca: Path) -> ssl.SSLSocket:
    """A TLS connection to `host` through the proxy's CONNECT, speaking HTTP/1.1."""
    raw = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    raw.sendall(f"CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = raw.recv(4096)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 200"), head
    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols(["http/1.1"])
    return context.wrap_socket(raw, server_hostname=host)


def connect_status(proxy, target: str) -> bytes:
    """The status line the proxy answers a CONNECT to `target` with."""
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as raw:
        raw.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        return raw.recv(4096).split(b"\r\n", 1)[0]


def ask_and_reset(proxy, path: str, clients: int) -> None:
    """`clients` connections send a GET together, then all go away with a TCP reset before reading any of the
    answer: a burst, so that many of them are gone before the proxy has answered."""
    with ThreadPoolExecutor(8) as pool:
        conns = list(pool.map(lambda _: tunnel(proxy, "static.crates.io", proxy.ca_cert), range(clients)))
    for conn in conns:
        conn.sendall(f"GET {path} HTTP/1.1\r\nHost: static.crates.io\r\n\r\n".encode())
    for conn in conns:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        conn.close()


def wait_for(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


@pytest.fixture
def streamed(monkeypatch):
    """Every cached file above 1 KiB is served from its file through the blob server (as 2 MiB+ ones are)."""
    monkeypatch.setenv("CARGO_CACHE_FILE_THRESHOLD", "1024")


def test_downloads_abandoned_before_their_body_leave_no_descriptor_open_under_a_real_ulimit(
    streamed, secondary, entry, start_proxy
):
    status = free_port()
    proxy = start_proxy([entry(secondary)], args=("--set", f"cargo_status_port={status}"))
    pid = proxy.process.pid
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (512, 512))  # a real limit that 450 leaked files would exhaust
    ca = str(proxy.ca_cert)
    with httpx.Client(proxy=proxy.url, verify=ca, trust_env=False, timeout=20) as c:
        assert c.get("https://static.crates.io" + CRATE).status_code == 200  # now cached, and streamed from its file
    baseline = open_fds(pid)

    for _ in range(3):
        ask_and_reset(proxy, CRATE, 150)
        # Each abandoned flow's file is closed when the flow ends, not when some later download comes along.
        assert wait_for(lambda: open_fds(pid) <= baseline + 8, 15), f"{open_fds(pid)} open, {baseline} before"
    with httpx.Client(proxy=proxy.url, verify=ca, trust_env=False, timeout=20) as c:
        again = c.get("https://static.crates.io" + CRATE)
    assert again.status_code == 200 and again.headers["x-cache"] == "HIT"
    assert httpx.get(f"http://127.0.0.1:{status}/healthz", timeout=10).status_code == 200
    assert "Too many open files" not in proxy.log()


def test_running_out_of_descriptors_refuses_connections_briefly_and_recovers(streamed, secondary, entry, start_proxy):
    status = free_port()
    proxy = start_proxy([entry(secondary)], args=("--set", f"cargo_status_port={status}"))
    pid = proxy.process.pid
    ca = str(proxy.ca_cert)
    with httpx.Client(proxy=proxy.url, verify=ca, trust_env=False, timeout=20) as c:
        assert c.get("https://static.crates.io" + CRATE).status_code == 200
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (open_fds(pid) + 40, 1024))
    log_before = len(proxy.log())

    held = []
    try:  # idle connections hold every descriptor the proxy has left (and then some)
        for _ in range(80):
            held.append(socket.create_connection(("127.0.0.1", proxy.port), timeout=5))
        time.sleep(3)  # the proxy now meets EMFILE at every accept, for a few seconds
        cpu_before = _cpu_seconds(pid)
        time.sleep(3)
        cpu_spent = _cpu_seconds(pid) - cpu_before
    finally:
        for s in held:
            s.close()

    # Degraded, not spinning: the loop was not busy retrying, and the log says it once, not per attempt.
    assert cpu_spent < 1.5, f"{cpu_spent:.1f} s of CPU in 3 s while out of descriptors"
    exhausted_log = proxy.log()[log_before:]
    assert len(exhausted_log) < 20_000, exhausted_log[-2000:]
    assert exhausted_log.count("cargo-cache: out of file descriptors (Too many open files; limit") == 1
    assert wait_for(lambda: _healthy(status), 15)
    with httpx.Client(proxy=proxy.url, verify=ca, trust_env=False, timeout=20) as c:
        assert c.get("https://static.crates.io" + CRATE).status_code == 200


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.parametrize(("header", "value", "status"), [
    ("Range", "bytes=" + "9" * 5000 + "-", 416),
    ("If-Modified-Since", "Thu, 16 Apr 99999999999999999999 00:00:00 GMT", 200),
])
def test_odd_request_headers_are_answered_by_the_proxy_never_passed_on(secondary, entry, start_proxy, header, value,
                                                                       status):
    proxy = start_proxy([entry(secondary)])
    with httpx.Client(proxy=proxy.url, verify=str(proxy.ca_cert), trust_env=False, timeout=20) as c:
        assert c.get("https://static.crates.io" + CRATE).status_code == 200
        odd = c.get("https://static.crates.io" + CRATE, headers={header: value})

    assert odd.status_code == status and odd.headers["x-cache"] == "HIT"
    assert "Addon error" not in proxy.log()


def test_the_proxys_own_loopback_is_no_destination_for_its_clients(secondary, entry, start_proxy):
    status = free_port()
    proxy = start_proxy([entry(secondary)], args=("--set", f"cargo_status_port={status}"))
    with httpx.Client(proxy=proxy.url, trust_env=False, timeout=20) as c:
        plain = c.get(f"http://127.0.0.1:{status}/status.json")
        by_name = c.get(f"http://localhost:{status}/status.json")
        metadata = c.get("http://169.254.169.254/latest/meta-data/")
        with pytest.raises(httpx.ProxyError, match="403"):
            c.get(f"https://127.0.0.1:{status}/status.json")  # CONNECT refused
    with httpx.Client(proxy=proxy.url, verify=str(proxy.ca_cert), trust_env=False, timeout=20) as c:
        registry = c.get("https://index.crates.io/config.json")

    assert plain.status_code == 403 and "127.0.0.1:%d is a loopback address" % status in plain.text
    assert by_name.status_code == 403
    for target in (f"[::1]:{status}", f"[::ffff:127.0.0.1]:{status}", f"127.1:{status}", f"0.0.0.0:{status}"):
        assert connect_status(proxy, target).startswith(b"HTTP/1.1 403"), target
    assert metadata.status_code == 403 and "link-local" in metadata.text
    assert registry.status_code == 200  # the intercepted hosts are answered as before
    assert secondary.paths() == ["/index/config.json"]  # and the proxy's own requests to a loopback upstream go
    assert "refused: cargo-cache: 127.0.0.1:%d is a loopback address" % status in proxy.log()


def test_tunnelling_to_loopback_is_allowed_when_configured(secondary, entry, start_proxy):
    status = free_port()
    proxy = start_proxy([entry(secondary)], args=("--set", f"cargo_status_port={status}",
                                                  "--set", "cargo_tunnel_loopback=true"))
    with httpx.Client(proxy=proxy.url, trust_env=False, timeout=20) as c:
        answer = c.get(f"http://127.0.0.1:{status}/healthz")
    assert answer.status_code == 200


def test_a_failed_tunnelled_connection_is_logged_with_its_host(secondary, entry, start_proxy):
    proxy = start_proxy([entry(secondary)])
    with httpx.Client(proxy=proxy.url, trust_env=False, timeout=20) as c:
        answer = c.get("http://no-such-host.invalid/some/path")

    assert answer.status_code == 502
    assert wait_for(lambda: "connection to no-such-host.invalid:80 failed: " in
                    proxy.log(), 5), proxy.log()
