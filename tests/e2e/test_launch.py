"""Starting the proxy (real mitmdump, real launcher, real signals): never a plain proxy without the addon's
configuration, never a second instance sharing a port, never killed by a reload asked for during start."""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness import ADDON, MITMDUMP, ROOT, free_port, free_ports, write_proxies

pytestmark = pytest.mark.timeout(180)


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and not k.startswith("MAKE")}
    return env | {"PYTHONPATH": str(ROOT / "addon")}


class Run:
    """A process started in its own session, its output in a file; stopped (the whole group) at the end."""

    def __init__(self, command: list[str], log: Path):
        self.log_path = log
        with open(log, "w") as out:
            self.process = subprocess.Popen(command, cwd=ROOT, env=clean_env(), stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def exit_status(self, timeout: float = 60) -> int:
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Callable[..., Run]]:
    started: list[Run] = []

    def start(*command: str) -> Run:
        started.append(Run(list(command), tmp_path / f"run-{len(started)}.log"))
        return started[-1]

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def config(tmp_path: Path, secondary, entry) -> Path:
    return write_proxies(tmp_path / "proxies.yaml", [entry(secondary)], tmp_path / "cache")


def mitmdump_args(config: Path, confdir: Path, port: int) -> list[str]:
    return ["-s", str(ADDON), "--listen-host", "127.0.0.1", "--listen-port", str(port), "--set", f"confdir={confdir}",
            "--set", f"cargo_proxies={config}", "--set", "flow_detail=0"]


def launcher(workers: int, port: int, status_port: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "cratecache.operations.workers", "--workers", str(workers), "--port", str(port),
            "--status-port", str(status_port), "--", *args]


def healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_cargo_option_given_twice_stops_mitmdump_with_one_line(run, config: Path, confdir: Path):
    """mitmproxy drops all of a script's options when one is given twice: mitmdump used to run on as a plain
    forwarding proxy, intercepting nothing and saying nothing."""
    status = free_ports(2)
    proxy = run(str(MITMDUMP), *mitmdump_args(config, confdir, free_port()),
                "--set", f"cargo_status_port={status}", "--set", f"cargo_status_port={status + 1}")
    assert proxy.exit_status() != 0
    assert "cargo-cache: not starting: --set cargo_status_port given more than once" in proxy.log()


def test_make_runs_own_options_yield_to_args(tmp_path: Path, config: Path):
    """`make run ARGS="--set cargo_status_port=…"` (make run sets it too) serves with the addon, on ARGS' port."""
    port, status = free_port(), free_port()
    make = Run(["make", "-s", "run", "WORKERS=1", f"PORT={port}", f"STATUS_PORT={free_port()}", f"PROXIES={config}",
                f"ARGS=--set cargo_status_port={status} --set flow_detail=1"], tmp_path / "make.log")
    try:
        wait_for(lambda: f"status page at http://127.0.0.1:{status}/" in make.log() or make.process.poll() is not None,
                 "the status page on ARGS' port")
        assert healthy(status), make.log()
        trusted = ssl.create_default_context(cafile=str(ROOT / "certs" / "mitmproxy-ca-cert.pem"))
        with httpx.Client(proxy=f"http://127.0.0.1:{port}", verify=trusted, trust_env=False) as client:
            assert client.get("https://index.crates.io/config.json", timeout=30).status_code == 200
        wait_for(lambda: "GET index.crates.io/config.json 200" in make.log(), "the addon's log line")
    finally:
        make.stop()


def make_run(workers: int, port: int, status_port: int, config: Path) -> list[str]:
    return ["make", "-s", "run", f"WORKERS={workers}", f"PORT={port}", f"STATUS_PORT={status_port}",
            f"PROXIES={config}"]


def test_a_second_launch_on_a_port_in_use_refuses_and_the_first_serves_on(run, config: Path):
    """Two `make run`s used to share the port (SO_REUSEPORT) with different configurations and caches."""
    port, status = free_port(), free_ports(4)
    first = run(*make_run(2, port, status, config))
    wait_for(lambda: first.log().count("status page at") == 2, "the first launch's workers")
    for workers in (2, 1):
        second = run(*make_run(workers, port, status + 2, config))
        assert second.exit_status() == 2  # make's status for a recipe that failed (the launcher's is 1)
        assert f"not starting: 127.0.0.1:{port} is already in use" in second.log()
        assert "worker 0 started" not in second.log()
    assert first.process.poll() is None and healthy(status) and healthy(status + 1)
    assert first.log().count("started (pid") == 2  # no worker of the first launch was disturbed


def test_a_status_port_held_by_another_program_stops_the_start(run, config: Path, confdir: Path):
    """The proxy used to run on without /healthz, or with another process answering it."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        held = holder.getsockname()[1]
        plain = run(str(MITMDUMP), *mitmdump_args(config, confdir, free_port()), "--set", f"cargo_status_port={held}")
        assert plain.exit_status() != 0
        assert f"cargo-cache: the status page cannot listen on 127.0.0.1:{held} (Address already in use)" in plain.log()

        port = free_port()
        launched = run(*launcher(2, port, held - 1, *mitmdump_args(config, confdir, port)))
        assert launched.exit_status() == 1
        assert f"not starting: 127.0.0.1:{held} is already in use" in launched.log()


def test_sighup_during_start_and_in_a_burst_reloads_and_never_stops_a_worker(run, config: Path, confdir: Path):
    """A SIGHUP reaching a worker before its handler was installed killed it, and a few of them in a row used up
    the restart budget and stopped every worker. Sent here straight to the workers' pids while they start, and
    to the launcher (which passes it on) in bursts during and after start."""
    port, status = free_port(), free_ports(2)
    launch = run(*launcher(2, port, status, *mitmdump_args(config, confdir, port)))
    wait_for(lambda: "worker 1 started (pid" in launch.log(), "both workers to be started")
    workers = [int(pid) for pid in re.findall(r"worker \d started \(pid (\d+)", launch.log())]
    for pid in workers:
        os.kill(pid, signal.SIGHUP)  # before mitmproxy is even imported
    for _ in range(4):
        os.kill(launch.process.pid, signal.SIGHUP)
        time.sleep(0.1)
    wait_for(lambda: launch.log().count("status page at") == 2, "both workers to serve")
    for i in range(2):
        wait_for(lambda i=i: re.search(rf"^w{i} \| .*configuration reloaded \(SIGHUP during start", launch.log(), re.M),
                 f"worker {i}'s reload asked during start")
    reloads = lambda i: len(re.findall(rf"^w{i} \| .*configuration reloaded \(SIGHUP\)", launch.log(), re.M))  # noqa: E731
    before = [reloads(i) for i in range(2)]
    for _ in range(4):
        os.kill(launch.process.pid, signal.SIGHUP)
        time.sleep(0.4)
    wait_for(lambda: all(reloads(i) > before[i] for i in range(2)), "every worker to reload after start")
    assert "exited" not in launch.log() and re.findall(r"worker \d started \(pid (\d+)", launch.log()) == list(
        map(str, workers))
    assert healthy(status) and healthy(status + 1)
