"""`make run WORKERS=2`: two mitmdump workers on one port (SO_REUSEPORT) and one cache, with the real cargo."""

from __future__ import annotations

import os
import re
import signal
import ssl
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from tests.harness import ROOT, Cargo, free_port, free_ports, write_proxies

pytestmark = pytest.mark.timeout(180)


def wait_for(predicate, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_two_workers_share_the_port_serve_cargo_reload_on_sighup_are_replaced_when_killed_and_stop_on_ctrl_c(
        tmp_path: Path, secondary, entry, small_project):
    port, status = free_port(), free_ports(2)  # worker i's status page: status + i
    config = write_proxies(tmp_path / "proxies.yaml", [entry(secondary)], tmp_path / "cache")
    log = tmp_path / "run.log"
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and not k.startswith("MAKE")}
    with open(log, "w") as out:
        make = subprocess.Popen(["make", "-s", "run", "WORKERS=2", f"PORT={port}", f"STATUS_PORT={status}",
                                 f"PROXIES={config}"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    text = lambda: log.read_text(errors="replace")  # noqa: E731
    try:
        wait_for(lambda: text().count(f"proxy listening at 127.0.0.1:{port}") == 2, "both workers to listen")
        for i in (0, 1):
            wait_for(lambda i=i: f"status page at http://127.0.0.1:{status + i}/" in text(), f"worker {i}'s status page")
        proxy = SimpleNamespace(url=f"http://127.0.0.1:{port}", ca_cert=ROOT / "certs" / "mitmproxy-ca-cert.pem")
        cargo = Cargo(tmp_path / "home-1", proxy)
        (tmp_path / "home-1").mkdir()
        fetched = cargo.fetch(small_project)
        assert fetched.returncode == 0, fetched.stderr

        trusted = ssl.create_default_context(cafile=str(proxy.ca_cert))
        with httpx.Client(proxy=proxy.url, verify=trusted, trust_env=False) as client:
            for _ in range(24):  # each on a new connection, which the kernel spreads over the workers
                assert client.get("https://index.crates.io/config.json", headers={"Connection": "close"}).status_code == 200
        served = {w: len(re.findall(rf"^{w} \| .*GET index\.crates\.io/config\.json 200", text(), re.M)) for w in ("w0", "w1")}
        assert served["w0"] and served["w1"], served
        for i in (0, 1):  # a status page per worker
            assert httpx.get(f"http://127.0.0.1:{status + i}/healthz", timeout=10).status_code == 200

        found = subprocess.run(["pgrep", "-f", f"cratecache.operations.workers --workers 2 --port {port}"],
                               capture_output=True, text=True)
        supervisor = next(int(p) for p in found.stdout.split())
        os.kill(supervisor, signal.SIGHUP)  # passed on: every worker re-reads proxies.yaml
        wait_for(lambda: len(re.findall(r"^w\d \| .*configuration reloaded \(SIGHUP\)", text(), re.M)) == 2,
                 "both workers to reload")

        pids = [int(p) for p in re.findall(r"worker \d started \(pid (\d+)", text())]
        os.kill(pids[1], signal.SIGKILL)
        wait_for(lambda: "worker 1 (pid %d) exited (signal 9); starting a new one" % pids[1] in text(), "a replacement")
        wait_for(lambda: text().count(f"proxy listening at 127.0.0.1:{port}") == 3, "the new worker to listen")
        again = Cargo(tmp_path / "home-2", proxy)
        (tmp_path / "home-2").mkdir()
        assert again.fetch(small_project).returncode == 0

        workers = [int(p) for p in re.findall(r"worker \d started \(pid (\d+)", text())]
        os.killpg(make.pid, signal.SIGINT)  # Ctrl-C in the terminal: the whole foreground process group
        make.wait(30)
        wait_for(lambda: not any(alive(p) for p in workers), "every worker to exit", timeout=15)
        assert "stopping 2 workers" in text()
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
            make.wait(10)
