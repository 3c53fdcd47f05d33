"""proxies.yaml changed while the proxy serves (real mitmdump, real cargo): reordered, deactivated, rotated
credentials, broken edits, SIGHUP, several workers; and a status server that is safe to expose."""

from __future__ import annotations

import base64
import hashlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import PASSWORD, USER
from tests.fixtures.registry import Registry
from tests.fixtures.upstream import UpstreamServer
from tests.harness import Proxy, cargo_binary, free_port, make_project, write_proxies

pytestmark = pytest.mark.timeout(120)
POLL = ("--set", "cargo_reload_ms=200")


@pytest.fixture
def first(registry: Registry):
    with UpstreamServer(registry, name="first") as server:
        yield server


@pytest.fixture
def second(registry: Registry):
    with UpstreamServer(registry, name="second") as server:
        yield server


@pytest.fixture
def config(tmp_path: Path) -> Callable[..., Path]:
    path = tmp_path / "proxies.yaml"

    def write(upstreams: list[dict], **cache) -> Path:
        """Rewrite proxies.yaml as an operator's tool does: a new file renamed over the old one."""
        write_proxies(path.with_suffix(".new"), upstreams, tmp_path / "cache", **cache)
        os.replace(path.with_suffix(".new"), path)
        return path

    return write


@pytest.fixture
def run_proxy(confdir: Path, tmp_path: Path):
    started: list[Proxy] = []

    def start(config: Path, *args: str) -> Proxy:
        proxy = Proxy(config, confdir, tmp_path / f"mitmdump-{len(started)}.log", tuple(args)).start()
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


def up(server: UpstreamServer, **fields) -> dict:
    return {"name": server.name, "url": server.url, **fields}


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def reloads(proxy: Proxy) -> list[str]:
    return [line for line in proxy.log().splitlines() if "configuration reloaded" in line]


def wait_reload(proxy: Proxy, count: int) -> str:
    wait_for(lambda: len(reloads(proxy)) >= count, f"reload #{count} in the log")
    return reloads(proxy)[count - 1]


def project(tmp_path: Path, name: str, dependencies: str) -> Path:
    return make_project(tmp_path / name, dependencies)


def test_a_download_in_progress_survives_a_reorder_and_the_next_miss_goes_to_the_new_first(
        config, run_proxy, first, second, new_cargo, tmp_path):
    proxy = run_proxy(config([up(first, priority=1), up(second, priority=2)]), *POLL)
    first.faults["anyhow/crate"] = "trickle"  # ~3 s for anyhow's .crate
    first.trickle_chunk, first.trickle_pause = 4 * 1024, 0.2
    cargo = new_cargo(proxy)
    slow = project(tmp_path, "slow", 'anyhow = "=1.0.69"\n')
    assert cargo.run(slow, "generate-lockfile").returncode == 0
    fetch = subprocess.Popen([cargo_binary(), "fetch"], cwd=slow, env=cargo.env(), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: any("/crates/anyhow/" in p for p in first.paths()), "the slow download to start")
        config([up(second, priority=1), up(first, priority=2)])
        line = wait_reload(proxy, 1)
        assert "registry crates-io: reordered: second, first" in line
        assert fetch.wait(60) == 0, fetch.stdout.read()
    finally:
        fetch.kill()
    assert any("/crates/anyhow/" in p for p in first.paths()) and not any("/crates/anyhow/" in p for p in second.paths())
    log = proxy.log()
    done = log.index("static.crates.io/crates/anyhow/1.0.69/download 200 first miss")
    assert log.index("configuration reloaded") < done  # the reload came while the download was in flight

    fresh = project(tmp_path, "fresh", 'log = "0.4"\n')
    asked = len(first.requests)
    assert new_cargo(proxy).fetch(fresh).returncode == 0
    assert len(first.requests) == asked  # the cold request went to the new first upstream
    assert any(p.endswith("/3/l/log") for p in second.paths())


def test_deactivating_an_upstream_live_stops_all_traffic_to_it(config, run_proxy, first, second, new_cargo, tmp_path):
    proxy = run_proxy(config([up(first, priority=1), up(second, priority=2)], index_ttl=0), *POLL)
    warm = project(tmp_path, "warm", 'log = "0.4"\n')
    assert new_cargo(proxy).fetch(warm).returncode == 0
    config([up(first, priority=1, active=False), up(second, priority=2)], index_ttl=0)
    assert "registry crates-io: upstream first deactivated" in wait_reload(proxy, 1)
    asked = len(first.requests)
    assert new_cargo(proxy).fetch(warm).returncode == 0  # revalidations (index_ttl 0) too
    assert new_cargo(proxy).fetch(project(tmp_path, "cold", 'anyhow = "1"\n')).returncode == 0
    assert len(first.requests) == asked


def test_rotating_a_password_file_turns_401_into_200_without_a_restart(
        config, run_proxy, primary, upstream_ca_file, new_cargo, tmp_path):
    secret = tmp_path / "secrets" / "password"
    secret.parent.mkdir()
    secret.write_text("expired-token\n")
    entry = {"name": "primary", "url": primary.url, "username": USER, "password_file": str(secret),
             "ca_bundle": str(upstream_ca_file)}
    proxy = run_proxy(config([entry]), *POLL)
    small = project(tmp_path, "small", 'log = "0.4"\n')
    refused = new_cargo(proxy, CARGO_NET_RETRY="0").fetch(small)
    assert refused.returncode != 0 and "(primary: config.json: HTTP 401)" in refused.stderr

    rotated = secret.with_suffix(".new")  # as a Vault agent or kubelet writes it: a new file, renamed
    rotated.write_text(PASSWORD + "\n")
    os.replace(rotated, secret)
    assert "registry crates-io: upstream primary credentials changed" in wait_reload(proxy, 1)
    assert new_cargo(proxy).fetch(small).returncode == 0
    assert PASSWORD not in proxy.log()


def test_a_broken_edit_keeps_the_old_settings_and_shows_its_error(config, run_proxy, first, new_cargo, tmp_path):
    port = free_port()
    path = config([up(first)])
    proxy = run_proxy(path, *POLL, "--set", f"cargo_status_port={port}")
    path.write_text(path.read_text().replace("proxies:", "proxies: [oops", 1))  # an editor saving a typo
    wait_for(lambda: "invalid configuration" in proxy.log(), "the error in the log")
    assert "not valid YAML" in proxy.log()
    status = httpx.get(f"http://127.0.0.1:{port}/status.json", timeout=10).json()
    assert "not valid YAML" in status["config"]["last_error"]
    assert new_cargo(proxy).fetch(project(tmp_path, "p", 'log = "0.4"\n')).returncode == 0  # the old settings serve

    config([up(first, timeout_ms=900)])
    wait_reload(proxy, 1)
    assert httpx.get(f"http://127.0.0.1:{port}/status.json", timeout=10).json()["config"]["last_error"] is None


def test_sighup_reloads_and_a_change_needing_a_restart_says_so(config, run_proxy, first, second, tmp_path):
    proxy = run_proxy(config([up(first)]), "--set", "cargo_reload_ms=0")
    config([up(first), up(second)], negative_ttl=5, directory=str(tmp_path / "elsewhere"))
    time.sleep(1)
    assert reloads(proxy) == []  # no polling: only the signal
    proxy.process.send_signal(signal.SIGHUP)
    line = wait_reload(proxy, 1)
    assert "(SIGHUP)" in line and "upstream second added" in line and "cache.negative_ttl 60 -> 5" in line
    assert "cache.directory changed" in proxy.log() and "takes effect at the next start" in proxy.log()
    assert proxy.process.poll() is None


def test_every_worker_picks_up_the_change(config, run_proxy, first, second):
    path = config([up(first)])
    workers = [run_proxy(path, *POLL) for _ in range(2)]
    config([up(second)])
    for worker in workers:
        assert "upstream second added" in wait_reload(worker, 1) and "upstream first removed" in reloads(worker)[0]


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def test_the_status_server_stays_on_loopback_and_asks_for_its_credentials(config, run_proxy, first, tmp_path):
    port = free_port()
    proxy = run_proxy(config([up(first)]), "--listen-host", "0.0.0.0", "--set", f"cargo_status_port={port}",
                      "--set", "cargo_status_auth=ops:s3cret", "--set", "cargo_status_open=/healthz")
    assert reachable("127.0.0.2", proxy.port)  # the proxy listens on every address
    assert not reachable("127.0.0.2", port)  # its status server on loopback only
    base = f"http://127.0.0.1:{port}"
    for path in ("/", "/status.json", "/metrics"):
        refused = httpx.get(base + path, timeout=10)
        assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Basic")
        assert httpx.get(base + path, auth=("ops", "wrong"), timeout=10).status_code == 401
        assert httpx.get(base + path, auth=("ops", "s3cret"), timeout=10).status_code == 200
    assert httpx.get(base + "/healthz", timeout=10).status_code == 200  # left open for load balancers

    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("ops:{SHA}" + base64.b64encode(hashlib.sha1(b"hashed").digest()).decode() + "\n")
    exposed = free_port()
    other = run_proxy(config([up(first)]), "--set", f"cargo_status_port={exposed}", "--set", "cargo_status_host=0.0.0.0",
                      "--set", f"cargo_status_auth=@{htpasswd}", "--set", "cargo_status_open=")
    assert reachable("127.0.0.2", exposed)  # told to
    assert httpx.get(f"http://127.0.0.2:{exposed}/healthz", timeout=10).status_code == 401
    assert httpx.get(f"http://127.0.0.2:{exposed}/metrics", auth=("ops", "hashed"), timeout=10).status_code == 200
    assert other.process.poll() is None


def test_a_password_file_swapped_for_a_fifo_is_refused_and_the_proxy_serves_on(
        config, run_proxy, first, new_cargo, tmp_path):
    """A FIFO read on the event loop used to hang the whole proxy at the next reload."""
    secret = tmp_path / "password"
    secret.write_text("token\n")
    port = free_port()
    proxy = run_proxy(config([up(first, username="ci", password_file=str(secret))]), *POLL,
                      "--set", f"cargo_status_port={port}")
    secret.unlink()
    os.mkfifo(secret)  # no writer ever comes
    wait_for(lambda: "invalid configuration" in proxy.log(), "the reload's error")
    assert "password_file: cannot read" in proxy.log() and "not a regular file (a FIFO)" in proxy.log()
    status = httpx.get(f"http://127.0.0.1:{port}/status.json", timeout=10).json()
    assert "not a regular file" in status["config"]["last_error"]
    assert new_cargo(proxy).fetch(project(tmp_path, "p", 'log = "0.4"\n')).returncode == 0  # the old settings serve


def test_a_reload_error_never_shows_a_token_in_a_urls_path(config, run_proxy, first, tmp_path):
    port = free_port()
    path = config([up(first)])
    proxy = run_proxy(path, *POLL, "--set", f"cargo_status_port={port}")
    path.write_text(path.read_text().replace(first.url, "ftp://registry.example/T0KEN-s3cr3t/index/"))
    wait_for(lambda: "invalid configuration" in proxy.log(), "the reload's error")
    error = httpx.get(f"http://127.0.0.1:{port}/status.json", timeout=10).json()["config"]["last_error"]
    assert "expected an http:// or https:// URL, got 'ftp://registry.example/…'" in error
    assert "T0KEN" not in error and "T0KEN" not in proxy.log()
