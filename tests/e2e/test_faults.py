"""Upstream faults survived: real cargo -> real mitmdump -> a faulty upstream and a good one.

Each fault is injected by `UpstreamServer.faults` on one index file (`log`) and one `.crate`
(`anyhow`) of the upstream tried first. The proxy must warn, naming the upstream and the reason,
fail over to the next upstream, and cache only the good copy: afterwards, with every upstream
stopped, a fresh cargo gets everything from the cache. With no other upstream, cargo gets a 502
that says what went wrong, and nothing is cached. A proxy killed in the middle of filling the
cache restarts on the same folder and serves only complete entries.

The first test checks the faults themselves, without the proxy, so that a passing failover test
cannot come from a fault that quietly stopped misbehaving.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.fixtures.upstream import UpstreamServer
from tests.harness import Proxy, cargo_binary, cli, locked_packages

ANYHOW_CRATE, LOG_INDEX = "anyhow/crate", "log/index"
CRATE_URL = "https://static.crates.io/crates/{name}/{version}/download"
INDEX_URL = "https://index.crates.io/3/l/log"
TIMEOUT_MS = 500  # the faulty upstream's timeout: `trickle` pauses longer than this

#: What the proxy's warning must give as the reason, per fault (index file or .crate).
REASONS = {
    "reset": r"ReadError\b.*|.*reset.*",  # see test_a_reset_is_reported_as_a_reset
    "truncate": r"RemoteProtocolError: peer closed connection without sending complete message body",
    "trickle": rf"timed out after {TIMEOUT_MS} ms \(ReadTimeout\)",
    # An HTML page is not an index file, and not the crate whose checksum the index gives.
    "html": r"invalid index file: .*|checksum mismatch for anyhow .*|.*text/html.*",
    "status:429": r"HTTP 429",
    "status:500": r"HTTP 500",
    "status:503": r"HTTP 503",
    "status:401": r"HTTP 401",
}


def downloads(server) -> list[str]:
    return [p for p in server.paths() if p.startswith(("/crates/", "/files/"))]


def proxy_client(proxy: Proxy, timeout: float = 20) -> httpx.Client:
    return httpx.Client(proxy=proxy.url, verify=ssl.create_default_context(cafile=str(proxy.ca_cert)),
                        trust_env=False, timeout=timeout)


def warnings_for(log: str, upstream: str, reason: str) -> list[str]:
    return re.findall(rf"upstream {upstream} failed: (?:{reason})", log)


def version_of(locked: dict[tuple[str, str], str | None], name: str) -> str:
    return next(version for (crate, version) in locked if crate == name)


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def cached_crates(config: Path) -> set[tuple[str, str]]:
    """(name, version) of every .crate in the cache, read with the `cache-ls` command."""
    listed = cli(config, "ls", "--kind", "crate", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    return {(row["name"], row["version"]) for row in rows}


def raw_get(server: UpstreamServer, path: str) -> tuple[bytes, type[Exception] | None]:
    """Everything a plain-HTTP GET receives before the connection ends, and how it ended."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: up\r\nConnection: close\r\n\r\n".encode())
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except OSError as e:
            return received, type(e)
        return received, None


def test_the_faults_misbehave_as_documented(registry, secondary):
    index = registry.index_files["log"]
    secondary.trickle_pause = 0.3
    secondary.faults.update({"log/index": "reset", "LOG/crate": "status:429", "anyhow": "truncate",
                             "cfg-if": "html"})
    with pytest.raises(ValueError, match="unknown fault"):
        secondary.faults["serde"] = "slow"
    with pytest.raises(ValueError, match="bad fault key"):
        secondary.faults["serde/readme"] = "reset"

    reset, reset_error = raw_get(secondary, "/index/3/l/log")
    truncated, truncate_error = raw_get(secondary, "/index/an/yh/anyhow")
    secondary.faults["log/index"] = "trickle"
    with httpx.Client(timeout=0.2) as c:
        with c.stream("GET", secondary.url + "3/l/log") as trickling, pytest.raises(httpx.ReadTimeout):
            trickling.read()
        throttled = c.get(f"{secondary.root}/crates/log/{registry.versions('log')[-1]}/download")
        portal = c.get(secondary.url + "cf/g-/cfg-if")
        untouched = c.get(secondary.url + "se/rd/serde")

    head, _, body = reset.partition(b"\r\n\r\n")
    assert reset_error is ConnectionResetError
    assert f"Content-Length: {len(index)}".encode() in head and 0 < len(body) < len(index)
    head, _, body = truncated.partition(b"\r\n\r\n")
    assert truncate_error is None and 0 < len(body) < int(re.search(rb"Content-Length: (\d+)", head)[1])
    assert trickling.status_code == 200 and trickling.headers["content-length"] == str(len(index))
    assert throttled.status_code == 429
    assert portal.status_code == 200 and portal.headers["content-type"].startswith("text/html")
    assert b"<form" in portal.content
    assert untouched.status_code == 200 and untouched.content == registry.index_files["serde"]


@pytest.mark.parametrize("fault", list(REASONS))
def test_a_faulty_first_upstream_is_survived_and_only_good_bytes_are_cached(
    fault, registry, secondary, primary, entry, start_proxy, new_cargo, small_project
):
    secondary.faults.update({LOG_INDEX: fault, ANYHOW_CRATE: fault})
    proxy = start_proxy([entry(secondary, name="faulty", priority=1, timeout_ms=TIMEOUT_MS),
                         entry(primary, name="good", priority=2)])

    result = new_cargo(proxy).fetch(small_project)

    assert result.returncode == 0, result.stderr
    locked = locked_packages(small_project)
    anyhow_version, log_version = version_of(locked, "anyhow"), version_of(locked, "log")
    # The faulty upstream was asked first for both objects; the good one then served them.
    assert "/index/3/l/log" in secondary.paths() and "/index/3/l/log" in primary.paths()
    assert f"/crates/anyhow/{anyhow_version}/download" in downloads(secondary)
    assert f"/files/an/yh/anyhow/anyhow-{anyhow_version}.crate" in downloads(primary)
    assert f"/files/3/l/log/log-{log_version}.crate" in downloads(primary)  # log's index came from it
    log = proxy.log()
    assert len(warnings_for(log, "faulty", REASONS[fault])) == 2, log  # one per faulted object
    assert "GET index.crates.io/3/l/log 200 good miss" in log
    assert f"GET static.crates.io/crates/anyhow/{anyhow_version}/download 200 good miss" in log

    # Only the good copies were cached: every upstream down, a fresh cargo gets them all.
    secondary.stop()
    primary.stop()
    (small_project / "Cargo.lock").unlink()
    again = new_cargo(proxy).fetch(small_project)

    assert again.returncode == 0, again.stderr
    assert locked_packages(small_project) == locked
    with proxy_client(proxy) as c:
        index = c.get(INDEX_URL)
        crate = c.get(CRATE_URL.format(name="anyhow", version=anyhow_version))
    assert (index.status_code, index.headers["x-cache"], index.headers["x-cache-upstream"]) == (200, "HIT", "good")
    assert index.content == registry.index_files["log"]
    assert (crate.status_code, crate.headers["x-cache"], crate.headers["x-cache-upstream"]) == (200, "HIT", "good")
    assert crate.content == registry.crate("anyhow", anyhow_version).data


@pytest.mark.parametrize(("fault", "target"), [
    ("html", LOG_INDEX), ("html", ANYHOW_CRATE), ("truncate", LOG_INDEX), ("truncate", ANYHOW_CRATE),
])
def test_a_fault_on_the_only_upstream_is_a_clear_502_and_nothing_is_cached(
    fault, target, registry, secondary, entry, start_proxy, new_cargo, small_project
):
    secondary.faults[target] = fault
    proxy = start_proxy([entry(secondary, name="faulty", timeout_ms=TIMEOUT_MS)])

    result = new_cargo(proxy, CARGO_NET_RETRY="0").fetch(small_project)

    assert result.returncode != 0
    assert "got 502" in result.stderr, result.stderr
    assert re.search(rf"faulty: (?:{REASONS[fault]})", result.stderr), result.stderr
    assert warnings_for(proxy.log(), "faulty", REASONS[fault])

    # Fixed upstream: the object comes from it, not from the cache.
    secondary.faults.clear()
    if target == LOG_INDEX:  # cargo stopped at resolving
        url, path, body = INDEX_URL, "/index/3/l/log", registry.index_files["log"]
    else:  # cargo resolved, then failed to download
        version = version_of(locked_packages(small_project), "anyhow")
        url, path = CRATE_URL.format(name="anyhow", version=version), f"/crates/anyhow/{version}/download"
        body = registry.crate("anyhow", version).data
    asked_before = secondary.paths().count(path)
    with proxy_client(proxy) as c:
        fixed = c.get(url)

    assert asked_before == 1
    assert (fixed.status_code, fixed.headers["x-cache"], fixed.headers["x-cache-upstream"]) == (200, "MISS", "faulty")
    assert fixed.content == body
    assert secondary.paths().count(path) == 2


def test_a_reset_is_reported_as_a_reset(secondary, entry, start_proxy):
    secondary.faults[LOG_INDEX] = "reset"
    proxy = start_proxy([entry(secondary, name="faulty")])

    with proxy_client(proxy) as c:
        answer = c.get(INDEX_URL)

    assert answer.status_code == 502
    assert re.search(r"faulty: .*reset by peer", answer.text), answer.text
    assert re.search(r"upstream faulty failed: .*reset by peer", proxy.log())


def test_an_untrusted_certificate_is_a_tls_error_and_the_next_upstream_serves(
    registry, primary, secondary, entry, start_proxy, new_cargo, small_project
):
    untrusted = entry(primary, name="untrusted", priority=1)  # ssl_validation stays true
    del untrusted["ca_bundle"]
    proxy = start_proxy([untrusted, entry(secondary, name="good", priority=2)])

    result = new_cargo(proxy).fetch(small_project)

    assert result.returncode == 0, result.stderr
    assert primary.requests == []  # no request ever got past the handshake
    locked = locked_packages(small_project)
    assert sorted(downloads(secondary)) == sorted(f"/crates/{n}/{v}/download" for n, v in locked)
    assert re.search(r"upstream untrusted failed: TLS error: .*CERTIFICATE_VERIFY_FAILED", proxy.log())
    with proxy_client(proxy) as c:
        crate = c.get(CRATE_URL.format(name="anyhow", version=version_of(locked, "anyhow")))
    assert crate.status_code == 200 and crate.headers["x-cache-upstream"] == "good"


def test_a_proxy_killed_while_filling_the_cache_restarts_and_serves_complete_entries(
    tmp_path, registry, secondary, entry, start_proxy, new_cargo, full_project
):
    # The default lease_seconds: a dead worker's leases are noticed through its PID, not waited out.
    cache = {"cache_dir": tmp_path / "shared-cache"}
    upstreams = [entry(secondary, name="origin")]
    first = start_proxy(upstreams, **cache)
    # Without multiplexing cargo downloads two crates at a time, so the cache fills over a
    # second or two instead of all at once.
    cargo = new_cargo(first, CARGO_HTTP_MULTIPLEXING="false")
    assert cargo.run(full_project, "generate-lockfile").returncode == 0
    locked = locked_packages(full_project)
    secondary.delay = 0.05

    fetch = subprocess.Popen([cargo_binary(), "fetch"], cwd=full_project, env=cargo.env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: len(downloads(secondary)) >= len(locked) // 3, 60, "a third of the downloads")
        first.process.kill()
        first.process.wait(10)
    finally:
        fetch.kill()
        fetch.wait(10)
    requested = {tuple(p.split("/")[2:4]) for p in downloads(secondary)}
    cached = cached_crates(first.config)

    assert cached and cached < set(locked)  # killed in the middle of filling the cache
    assert cached <= requested

    secondary.delay = 0.0
    secondary.clear()
    second = start_proxy(upstreams, **cache)
    (full_project / "Cargo.lock").unlink()
    again = new_cargo(second).fetch(full_project)

    assert again.returncode == 0, again.stderr
    assert locked_packages(full_project) == locked  # cargo checked every .crate against these
    for (name, version), checksum in locked.items():
        assert checksum == registry.crate(name, version).cksum
    refetched = {tuple(p.split("/")[2:4]) for p in downloads(secondary)}
    assert refetched == set(locked) - cached  # complete entries served from the cache, the rest fetched once
    assert len(downloads(secondary)) == len(refetched)


def test_a_lease_left_by_a_killed_proxy_does_not_block_its_successor(tmp_path, registry, secondary, entry, start_proxy):
    cache_dir = tmp_path / "shared-cache"
    first = start_proxy([entry(secondary, name="origin")], cache_dir=cache_dir)  # default lease_seconds
    secondary.delay = 5.0  # the first proxy is still fetching log's index when it is killed

    def ask_the_doomed_proxy() -> None:
        with proxy_client(first) as c, contextlib.suppress(httpx.HTTPError):  # it dies before answering
            c.get(INDEX_URL)

    doomed = threading.Thread(target=ask_the_doomed_proxy)
    doomed.start()
    wait_until(lambda: "/index/3/l/log" in secondary.paths(), 10, "the first proxy to ask the upstream")
    first.process.kill()
    first.process.wait(10)
    doomed.join(10)
    secondary.delay = 0.0
    second = start_proxy([entry(secondary, name="origin")], cache_dir=cache_dir)

    started = time.monotonic()
    with proxy_client(second, timeout=5) as c:
        answer = c.get(INDEX_URL)

    assert answer.status_code == 200 and answer.content == registry.index_files["log"]
    assert time.monotonic() - started < 3
