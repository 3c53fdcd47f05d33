"""What operators see and control: status page, metrics, health, client auth, and no credential leaks."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import ssl
import struct
import subprocess
import sys
import zlib

import httpx

from tests.e2e.conftest import PASSWORD, USER
from tests.fixtures.upstream import dead_url
from tests.harness import ROOT, free_port, write_proxies

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def status_proxy(start_proxy, upstreams, **cache):
    port = free_port()
    proxy = start_proxy(upstreams, args=("--set", f"cargo_status_port={port}"), **cache)
    proxy.status_url = f"http://127.0.0.1:{port}"
    return proxy


def test_status_json_metrics_and_healthz(primary, secondary, entry, start_proxy, new_cargo, small_project):
    proxy = status_proxy(start_proxy, [{"name": "dead", "url": dead_url(), "priority": 1},
                                       entry(secondary, priority=2), entry(primary, priority=3, active=False)])
    assert new_cargo(proxy).fetch(small_project).returncode == 0

    health = httpx.get(proxy.status_url + "/healthz")
    status = httpx.get(proxy.status_url + "/status.json").json()
    metrics = httpx.get(proxy.status_url + "/metrics").text

    assert health.status_code == 200 and health.json() == {"status": "ok"}
    upstreams = {u["name"]: u for u in status["registries"][0]["upstreams"]}
    assert upstreams["dead"]["failures"] >= 1 and upstreams["dead"]["last_error"].startswith("connection failed")
    assert upstreams["secondary"]["requests"] >= 5 and upstreams["secondary"]["p95_ms"] is not None
    assert upstreams["primary"]["active"] is False and upstreams["primary"]["requests"] == 0
    assert status["cache"]["entries"] == {"config": 1, "index": 3, "crate": 3, "manifest": 0, "component": 0, "rustup": 0}
    assert any(r["path"] == "/crates/anyhow/1.0.69/download" and r["source"] == "secondary"
               for r in status["recent"])
    assert 'cargo_cache_requests_total{kind="crate",outcome="miss",registry="crates-io"} 3.0' in metrics
    assert re.search(r'cargo_cache_upstream_requests_total\{outcome="failed",registry="crates-io",upstream="dead"\} '
                     r'[1-9]', metrics)
    assert 'cargo_cache_upstream_duration_seconds_bucket{le="0.5",registry="crates-io",upstream="secondary"}' in metrics
    assert 'cargo_cache_entries{kind="crate"} 3.0' in metrics
    assert status["storage"]["backend"] == "disk" and status["storage"]["state"] == "ok"
    assert 'cargo_cache_storage_up{backend="disk"} 1.0' in metrics
    assert re.search(r"cargo_cache_served_bytes_total\{kind=\"crate\",registry=\"crates-io\"\} [1-9]", metrics)


def test_status_page_renders_on_a_phone_in_chromium(secondary, entry, start_proxy, new_cargo, small_project, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is installed by `make test` (scripts/install-test-deps)"
    proxy = status_proxy(start_proxy, [entry(secondary)])
    assert new_cargo(proxy).fetch(small_project).returncode == 0
    common = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium'}", "--virtual-time-budget=5000"]

    dom = subprocess.run([*common, "--dump-dom", proxy.status_url + "/"], capture_output=True, text=True, timeout=60)
    shot = tmp_path / "status.png"
    subprocess.run([*common, "--window-size=390,844", f"--screenshot={shot}", proxy.status_url + "/"],
                   capture_output=True, timeout=60)

    assert "<td>secondary </td>" in dom.stdout  # the upstream table was rendered by the page's script
    assert "<td>disk</td>" in dom.stdout  # the storage table names the backend
    assert "GET static.crates.io/crates/anyhow/1.0.69/download" in dom.stdout
    assert "3 · 100%" not in dom.stdout and "3 · 0%" in dom.stdout  # crate entries · hit ratio after 3 misses
    assert "component entries" in dom.stdout  # each kind the cache counts has its card, toolchain kinds too
    width, height, distinct = png_summary(shot.read_bytes())
    assert (width, height) == (390, 844)
    assert distinct > 50  # text and tables, not a blank or error page


def test_client_authentication_uses_mitmproxys_proxyauth(secondary, entry, start_proxy, new_cargo, small_project):
    proxy = start_proxy([entry(secondary)], args=("--set", "proxyauth=ci:letmein"))

    refused = new_cargo(proxy, CARGO_NET_RETRY="0").fetch(small_project)
    allowed = new_cargo(proxy, HTTPS_PROXY=proxy.url.replace("http://", "http://ci:letmein@")).fetch(small_project)

    assert refused.returncode != 0 and "407" in refused.stderr
    assert allowed.returncode == 0, allowed.stderr


def test_credentials_never_appear_in_logs_status_metrics_errors_or_cache(
    primary, secondary, entry, start_proxy, new_cargo, small_project, tmp_path
):
    wrong = "wrong-" + PASSWORD
    proxy = status_proxy(start_proxy, [entry(primary, name="bad-creds", password=wrong, priority=1),
                                       entry(primary, priority=2), entry(secondary, priority=3)],
                         cache_dir=tmp_path / "cache")
    assert new_cargo(proxy).fetch(small_project).returncode == 0
    with httpx.Client(proxy=proxy.url, verify=ssl.create_default_context(cafile=str(proxy.ca_cert))) as c:
        error = c.get("https://index.crates.io/no/-s/no-such-crate").text

    seen = {
        "log": proxy.log(),
        "status": httpx.get(proxy.status_url + "/status.json").text,
        "page": httpx.get(proxy.status_url + "/").text,
        "metrics": httpx.get(proxy.status_url + "/metrics").text,
        "error": error,
    }
    seen |= {str(p): p.read_bytes().decode("latin-1") for p in (tmp_path / "cache").rglob("*") if p.is_file()}
    assert "upstream bad-creds failed: config.json: HTTP 401" in seen["log"]
    tokens = [base64.b64encode(f"{USER}:{p}".encode()).decode() for p in (PASSWORD, wrong)]
    for where, text in seen.items():
        for secret in (PASSWORD, wrong, f"{USER}:", *tokens):
            assert secret not in text, f"{secret!r} leaked into {where}"


def png_summary(data: bytes) -> tuple[int, int, int]:
    """Width, height and the number of distinct byte values in the decoded pixel rows."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", chunk[:8])
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    return width, height, len(set(zlib.decompress(idat)))


def test_make_cli_targets_print_only_the_commands_output(secondary, entry, tmp_path):
    """`make cache-ls ARGS=--json | jq` used to choke on make echoing the command line first."""
    config = write_proxies(tmp_path / "proxies.yaml", [entry(secondary)], tmp_path / "cache")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE") and "proxy" not in k.lower()}
    for target in ("cache-stats", "cache-ls"):
        made = subprocess.run(["make", target, "ARGS=--json", f"PROXIES={config}"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)
        assert made.returncode == 0, made.stderr
        if target == "cache-stats":
            assert "kinds" in json.loads(made.stdout)
        else:
            assert all(json.loads(line) for line in made.stdout.splitlines())
        assert "cratecache" not in made.stdout


def test_the_cli_takes_proxies_after_the_command_too(secondary, entry, tmp_path):
    config = write_proxies(tmp_path / "proxies.yaml", [entry(secondary)], tmp_path / "cache")
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()} | {"PYTHONPATH": str(ROOT / "addon")}
    listed = subprocess.run([sys.executable, "-m", "cratecache", "ls", "--proxies", str(config)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == ["KIND", "REGISTRY", "NAME", "VERSION", "SIZE", "UPSTREAM", "AGE"]
