"""The proxy's log output with the real cargo: JSON lines (cargo_log_format / log_format) from plain mitmdump and from
the workers launcher, and text without mitmproxy's per-connection lines unless -v."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.harness import DOWNLOAD_HOST, INDEX_HOST, ROOT, Cargo, free_port, write_proxies

pytestmark = pytest.mark.timeout(180)

ISO_UTC_MS = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
REQUEST_FIELDS = {"time", "level", "client", "method", "host", "path", "status", "state", "upstream", "bytes", "ms",
                  "reason"}
CONNECTION_LINE = re.compile(r"\] (client connect|client disconnect|server connect |server disconnect )")


def requests(objects: list[dict]) -> list[dict]:
    return [o for o in objects if o.get("logger") == "cratecache.boundary.addon" and "status" in o]


def check_cold_fetch(objects: list[dict], upstream: str) -> None:
    """Every request of a cold fetch: answered by `upstream`, with every field and its right value."""
    lines = requests(objects)
    assert {line["host"] for line in lines} == {INDEX_HOST, DOWNLOAD_HOST}
    for line in lines:
        assert REQUEST_FIELDS <= line.keys(), line
        assert re.fullmatch(ISO_UTC_MS, line["time"]), line
        assert (line["level"], line["client"], line["method"], line["status"], line["state"], line["upstream"],
                line["reason"]) == ("info", "127.0.0.1", "GET", 200, "miss", upstream, None), line
        assert line["path"].startswith("/") and line["bytes"] > 0 and line["ms"] >= 0, line
    downloads = [line for line in lines if line["host"] == DOWNLOAD_HOST]
    assert downloads and all(re.fullmatch(r"/crates/[^/]+/[^/]+/download", d["path"]) for d in downloads)


def test_json_lines_from_plain_mitmdump_carry_every_field(secondary, entry, start_proxy, new_cargo, small_project):
    proxy = start_proxy([entry(secondary)], args=("--set", "cargo_log_format=json"))
    cold = new_cargo(proxy).fetch(small_project)
    assert cold.returncode == 0, cold.stderr
    cold_lines = len(proxy.log().splitlines())
    warm = new_cargo(proxy).fetch(small_project)
    assert warm.returncode == 0, warm.stderr

    first, *rest = proxy.log().splitlines()
    # mitmproxy's own first line comes before any addon is loaded (the workers launcher makes it JSON too, below)
    assert first.endswith(f"Loading script {ROOT / 'addon' / 'cargo_cache.py'}")
    objects = [json.loads(line) for line in rest]  # every other line is one JSON object
    assert all(o.keys() >= {"time", "level", "logger", "message"} and "worker" not in o for o in objects)
    assert any("proxy listening at 127.0.0.1" in o["message"] for o in objects)
    check_cold_fetch(objects[:cold_lines - 1], "secondary")
    warm_lines = requests(objects[cold_lines - 1:])
    assert {line["host"] for line in warm_lines} == {INDEX_HOST, DOWNLOAD_HOST}
    assert all((line["status"], line["state"], line["upstream"]) == (200, "hit", None) for line in warm_lines)


def test_text_lines_leave_out_connections_unless_verbose(secondary, entry, start_proxy, new_cargo, small_project):
    quiet = start_proxy([entry(secondary)])
    assert new_cargo(quiet).fetch(small_project).returncode == 0
    log = quiet.log()
    assert re.search(r"\] 127\.0\.0\.1 GET static\.crates\.io/crates/\S+/download 200 secondary miss \d+B \d+ms HTTP/2\.0$",
                     log, re.M)
    assert not CONNECTION_LINE.search(log)

    verbose = start_proxy([entry(secondary)], args=("-v",))
    (small_project / "Cargo.lock").unlink()
    assert new_cargo(verbose).fetch(small_project).returncode == 0
    shown = CONNECTION_LINE.findall(verbose.log())
    assert shown.count("client connect") >= 1 and shown.count("client disconnect") >= 1


def test_two_workers_in_json_mode_write_only_json_lines_each_naming_its_worker(
        tmp_path: Path, confdir: Path, secondary, entry, small_project):
    port = free_port()
    config = write_proxies(tmp_path / "proxies.yaml", [entry(secondary)], tmp_path / "cache")
    config.write_text("log_format: json\n" + config.read_text())  # the file's setting, no option
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()} | {"PYTHONPATH": str(ROOT / "addon")}
    log = tmp_path / "run.log"
    with open(log, "w") as out:
        run = subprocess.Popen([sys.executable, "-m", "cratecache.operations.workers", "--workers", "2", "--port",
                                str(port), "--status-port", "0", "--", "-s", str(ROOT / "addon" / "cargo_cache.py"),
                                "--listen-host", "127.0.0.1", "--set", f"confdir={confdir}",
                                "--set", f"cargo_proxies={config}", "--set", "flow_detail=0"],
                               cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while log.read_text().count(f"proxy listening at 127.0.0.1:{port}") < 2:
            assert run.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        proxy = SimpleNamespace(url=f"http://127.0.0.1:{port}", ca_cert=confdir / "mitmproxy-ca-cert.pem")
        (tmp_path / "home").mkdir()
        fetched = Cargo(tmp_path / "home", proxy).fetch(small_project)
        assert fetched.returncode == 0, fetched.stderr
        for pid in re.findall(r"worker \d started \(pid (\d+)", log.read_text()):
            maps = Path(f"/proc/{pid}/maps").read_text()  # the SQLite each worker runs: the bundled one, fixed
            assert "/pysqlite3/" in maps and "libsqlite3.so" not in maps  # (sqlitelib.py: the WAL-reset bug)
    finally:
        os.killpg(run.pid, signal.SIGTERM)
        run.wait(30)

    objects = [json.loads(line) for line in log.read_text().splitlines()]  # every line, the launcher's too
    own = [o for o in objects if o["logger"] == "cratecache.operations.workers"]
    assert [o["message"] for o in own[:2]] == [f"worker {i} started (pid {p}, status page port off)" for i, p in
                                                enumerate(re.findall(r"worker \d started \(pid (\d+)", log.read_text()))]
    assert any(o["message"] == "stopping 2 workers" for o in own)
    theirs = [o for o in objects if o not in own]
    assert {o.get("worker") for o in theirs} == {0, 1}
    assert sum(o["message"] == "Loading script " + str(ROOT / "addon" / "cargo_cache.py") for o in theirs) == 2
    check_cold_fetch(theirs, "secondary")
