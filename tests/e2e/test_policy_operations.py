"""The supply-chain policy in operation (issue 29), with real processes: first sightings agreed on by two workers
of one proxy and two gateways on one SeaweedFS bucket (and kept across a restart), the advisory database watched
while the proxy serves (a `git pull`, SIGHUP, a refused reload), what an operator observes (the response header,
/metrics, /status.json, the log), and the end of a quarantine seen through a client's conditional request.

Each test runs against a loopback registry of its own (tests/fixtures/versions.py changes it while it is served);
the cargo behaviours of the policy (quarantine, pinned, exempt, advisories, rules, dry_run, audit, stage, bundles)
are in test_policy.py.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.fixtures.registry import build_registry, index_path
from tests.fixtures.rustsec import SNAPSHOT as SNAPSHOT_DIR
from tests.fixtures.upstream import UpstreamServer
from tests.fixtures.versions import add_version, pubtime, seconds
from tests.harness import DOWNLOAD_HOST, INDEX_HOST, ROOT, Cargo, Proxy, free_port, free_ports, make_project, write_proxies

pytestmark = pytest.mark.timeout(240)

SNAPSHOT = SNAPSHOT_DIR  # RustSec's advisory-db at a known commit (see its SNAPSHOT)
SNAPSHOT_ADVISORIES = 1205
POLICY_HEADER = "X-Cargo-Cache-Policy"
LAUNCHER_CA_DIR = ROOT / "certs"  # `make run` (the launcher) makes its CA here
WATCH = ("--set", "cargo_reload_ms=200", "--set", "cargo_advisory_reload_ms=200")


# -- helpers ---------------------------------------------------------------------------------------------------------

def wait_for(predicate: Callable[[], object], what: str, timeout: float = 30) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := predicate():
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def write_config(path: Path, upstream: UpstreamServer, cache_dir: Path, policy: dict | None = None,
                 **cache: object) -> Path:
    """proxies.yaml with one upstream and an optional global `policy:`, written as an operator's tool does (a new
    file renamed over the old one), so a proxy watching it reloads it whole."""
    new = path.with_suffix(".new")
    write_proxies(new, [{"name": upstream.name, "url": upstream.url}], cache_dir, **cache)
    if policy is not None:
        doc = yaml.safe_load(new.read_text())
        new.write_text(yaml.safe_dump({"policy": policy, **doc}, sort_keys=False))
    os.replace(new, path)
    return path


def get(proxy_url: str, ca: Path, url: str, **headers: str) -> httpx.Response:
    """One request through the proxy on a connection of its own (the kernel spreads new connections over the
    workers of a launcher)."""
    trusted = ssl.create_default_context(cafile=str(ca))
    with httpx.Client(proxy=proxy_url, verify=trusted, trust_env=False, timeout=30) as client:
        return client.get(url, headers={"Connection": "close", **headers})


def index_url(name: str) -> str:
    return f"https://{INDEX_HOST}/{index_path(name)}"


def download_url(name: str, version: str) -> str:
    return f"https://{DOWNLOAD_HOST}/crates/{name}/{version}/download"


def lines(response: httpx.Response) -> dict[str, dict]:
    """version -> index line of an index file served."""
    assert response.status_code == 200, (response.status_code, response.text[:300])
    return {line["vers"]: line for line in map(json.loads, response.content.splitlines()) if line}


@pytest.fixture
def run_proxy(confdir: Path, tmp_path: Path) -> Iterator[Callable[..., Proxy]]:
    started: list[Proxy] = []

    def start(config: Path, *args: str, ca_dir: Path = confdir) -> Proxy:
        proxy = Proxy(config, ca_dir, tmp_path / f"mitmdump-{len(started)}.log", tuple(args)).start(timeout=60)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


@contextlib.contextmanager
def launched(config: Path, log: Path, workers: int = 2) -> Iterator[str]:
    """`make run WORKERS=n` on `config` until the block ends (then Ctrl-C, as in a terminal); yields its URL."""
    port, status = free_port(), free_ports(workers)
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and not k.startswith("MAKE")}
    with open(log, "w") as out:
        make = subprocess.Popen(["make", "-s", "run", f"WORKERS={workers}", f"PORT={port}", f"STATUS_PORT={status}",
                                 f"PROXIES={config}"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        wait_for(lambda: log.read_text(errors="replace").count(f"proxy listening at 127.0.0.1:{port}") == workers,
                 "every worker to listen", timeout=90)
        yield f"http://127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(make.pid, signal.SIGINT)
        try:
            make.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(make.pid, signal.SIGKILL)
            make.wait(10)


# -- 1. a first sighting is one time for the whole fleet ----------------------------------------------------------

def test_two_workers_and_two_gateways_on_one_bucket_serve_one_first_sighting_which_survives_a_restart(
        seaweed, run_proxy, tmp_path: Path):
    registry = build_registry(only=["itoa"])
    ca = LAUNCHER_CA_DIR / "mitmproxy-ca-cert.pem"  # `make run`'s CA, which the gateways use too
    s3 = seaweed.yaml(seaweed.new_prefix("policy-sightings"))
    policy = {"quarantine": {"min_age": "1h"}}

    with UpstreamServer(registry, name="origin") as origin:
        def config(name: str) -> Path:  # every gateway: its own local tier, the same bucket and prefix
            return write_config(tmp_path / f"{name}.yaml", origin, tmp_path / f"tier-{name}", policy,
                                index_ttl=1, backend="s3", s3=s3)

        def itoa_through(url: str, times: int = 6) -> list[httpx.Response]:
            return [get(url, ca, index_url("itoa")) for _ in range(times)]

        with launched(config("a"), tmp_path / "a.log") as a:
            b = run_proxy(config("b"), ca_dir=LAUNCHER_CA_DIR)
            first = lines(get(a, ca, index_url("itoa")))
            assert set(first) == {"1.0.1"} and "pubtime" not in first["1.0.1"] and not first["1.0.1"]["yanked"]
            assert lines(get(b.url, ca, index_url("itoa"))) == first  # each holds the first copy and its record

            added = time.time()
            add_version(registry, "itoa", "1.0.2")  # no pubtime: aged from the proxy's first sighting
            # every worker and gateway revalidates at once (index_ttl 1 s), racing to record the first sighting
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                racing = list(pool.map(
                    lambda url: wait_for(lambda: (r := get(url, ca, index_url("itoa"))) and "1.0.2" in lines(r) and r,
                                         "the new version to be seen"),
                    [a, b.url] * 4))
            answers = racing + itoa_through(a) + itoa_through(b.url)
            served = [lines(r)["1.0.2"] for r in answers]
            log_a = (tmp_path / "a.log").read_text(errors="replace")

        kept = {line.get("pubtime") for line in served}
        assert len(kept) == 1, kept  # one first sighting, whoever saw it first
        (sighted,) = kept
        assert sighted is not None and int(added) - 1 <= seconds(sighted) <= time.time()
        assert all(line["yanked"] for line in served)  # young: hidden
        assert all(lines(r)["1.0.1"] == first["1.0.1"] for r in answers)  # the first copy's version: old, untouched
        assert all(r.headers[POLICY_HEADER] == "hide:quarantine" for r in answers)
        for worker in ("w0", "w1"):  # both workers of the launcher answered
            assert re.search(rf"^{worker} \| .*GET index\.crates\.io/it/oa/itoa 200", log_a, re.M), worker
        assert re.search(r"GET index\.crates\.io/it/oa/itoa 200", b.log())
        b.stop()

        # restarted: the launcher on its cache and bucket, and a gateway with an empty local tier (only the bucket)
        with launched(config("a"), tmp_path / "a-again.log") as a:
            c = run_proxy(config("c"), ca_dir=LAUNCHER_CA_DIR)
            again = itoa_through(a) + itoa_through(c.url)
    after = [lines(r)["1.0.2"] for r in again]
    assert {line["pubtime"] for line in after} == {sighted}
    assert all(line["yanked"] for line in after)  # still young, still hidden


# -- 2. the advisory database is watched ----------------------------------------------------------------------------

ADVISORY = '''```toml
[advisory]
id = "RUSTSEC-2099-0001"
package = "ryu"
date = "2099-01-02"
categories = ["malicious"]

[versions]
patched = []
```

# `ryu` was replaced by a malicious copy

Every version of this crate on this test registry is affected.
'''


def git(cwd: Path, *args: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env |= {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid", "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@example.invalid"}
    done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def re_reads(proxy: Proxy, database: Path) -> list[str]:
    return re.findall(rf"advisory database {re.escape(str(database))} re-read: (\d+) advisories", proxy.log())


def unreadable(proxy: Proxy, database: Path) -> list[str]:
    return [line for line in proxy.log().splitlines() if f"advisory database {database} cannot be read" in line]


def test_a_git_pull_in_the_advisory_database_and_sighup_re_read_it_live_and_a_reload_to_a_missing_one_is_refused(
        run_proxy, confdir: Path, tmp_path: Path):
    registry = build_registry(only=["ryu"])
    ca = confdir / "mitmproxy-ca-cert.pem"
    origin_db, database = tmp_path / "advisory-db-origin", tmp_path / "advisory-db"  # RustSec's, and our checkout
    shutil.copytree(SNAPSHOT, origin_db)
    git(origin_db, "init", "-q", "-b", "main")
    git(origin_db, "add", "-A")
    git(origin_db, "commit", "-q", "-m", "snapshot")
    git(tmp_path, "clone", "-q", str(origin_db), str(database))

    with UpstreamServer(registry, name="origin") as origin:
        config = write_config(tmp_path / "proxies.yaml", origin, tmp_path / "cache",
                              {"advisories": {"database": str(database)}})
        proxy = run_proxy(config, *WATCH)
        assert f"advisory database {database} loaded: {SNAPSHOT_ADVISORIES} advisories" in proxy.log()
        before = get(proxy.url, ca, index_url("ryu"))
        assert POLICY_HEADER not in before.headers and not lines(before)["1.0.2"]["yanked"]
        assert get(proxy.url, ca, download_url("ryu", "1.0.2")).status_code == 200

        (origin_db / "crates" / "ryu").mkdir()
        (origin_db / "crates" / "ryu" / "RUSTSEC-2099-0001.md").write_text(ADVISORY)
        git(origin_db, "add", "-A")
        git(origin_db, "commit", "-q", "-m", "ryu is malicious")
        git(database, "pull", "-q")
        pulled = time.monotonic()
        denied = wait_for(lambda: (r := get(proxy.url, ca, index_url("ryu"))).headers.get(POLICY_HEADER) and r,
                          "the new advisory to act", timeout=15)
        took = time.monotonic() - pulled
        by_date = get(proxy.url, ca, index_url("ryu"), **{"If-Modified-Since": before.headers["Last-Modified"]})

        assert took < 10, f"{took:.1f} s"  # within seconds, without a restart
        assert denied.headers[POLICY_HEADER] == "deny:RUSTSEC-2099-0001" and lines(denied)["1.0.2"]["yanked"]
        assert by_date.status_code == 200 and lines(by_date)["1.0.2"]["yanked"]  # a client asking by date sees it too
        refused = get(proxy.url, ca, download_url("ryu", "1.0.2"))
        assert refused.status_code == 403 and refused.text.startswith(
            "cargo-cache policy: ryu 1.0.2: RUSTSEC-2099-0001 (malicious)")
        assert re_reads(proxy, database) == [str(SNAPSHOT_ADVISORIES + 1)]

        proxy.process.send_signal(signal.SIGHUP)  # re-read on SIGHUP too, changed or not
        wait_for(lambda: len(re_reads(proxy, database)) == 2, "the database to be re-read on SIGHUP")
        assert "configuration reloaded (SIGHUP)" in proxy.log()

        write_config(config, origin, tmp_path / "cache", {"advisories": {"database": str(tmp_path / "gone")}})
        refusal = wait_for(lambda: [line for line in proxy.log().splitlines() if "invalid configuration" in line],
                           "the reload to be refused")
        still = get(proxy.url, ca, index_url("ryu"))
        still_refused = get(proxy.url, ca, download_url("ryu", "1.0.2"))
        assert len(re_reads(proxy, database)) == 2

        shutil.rmtree(database)  # the checkout goes away while the proxy runs (an operator cloning it anew)
        wait_for(lambda: unreadable(proxy, database), "the watcher to notice")
        looked_at = time.monotonic()
        while time.monotonic() < looked_at + 2:  # ten more looks (cargo_reload_ms 200), all serving the old copy
            assert get(proxy.url, ca, download_url("ryu", "1.0.2")).status_code == 403
        complaints = unreadable(proxy, database)
        git(tmp_path, "clone", "-q", str(origin_db), str(database))
        wait_for(lambda: len(re_reads(proxy, database)) == 3, "the new checkout to be read")

    assert len(refusal) == 1 and "policy.advisories.database" in refusal[0] and str(tmp_path / "gone") in refusal[0]
    assert still.headers[POLICY_HEADER] == "deny:RUSTSEC-2099-0001" and lines(still)["1.0.2"]["yanked"]
    assert still_refused.status_code == 403  # the old database keeps acting
    said = [line.split("] ", 1)[1] for line in complaints]
    assert len(said) == len(set(said)) <= 2, said  # each state said once (no crates/ folder, then none at all)
    assert said[-1].endswith("no such directory (the copy loaded before stays in use)")


# -- 3. what an operator observes -----------------------------------------------------------------------------------

def newest_advisory_date(database: Path) -> str:
    return max(re.search(r'(?m)^date\s*=\s*"([0-9-]+)"', path.read_text()).group(1)
               for path in (database / "crates").glob("*/RUSTSEC-*.md"))


def test_the_policy_header_metrics_status_page_and_log_say_what_was_decided_and_untouched_files_are_served_as_before(
        run_proxy, confdir: Path, tmp_path: Path):
    registry = build_registry(only=["itoa", "memchr", "ryu"])
    young = pubtime(time.time() - 60)
    add_version(registry, "itoa", "1.0.2", pubtime=young)  # published a minute ago
    ca = confdir / "mitmproxy-ca-cert.pem"
    status = free_port()
    policy = {"quarantine": {"min_age": "3d"},
              "advisories": {"database": str(SNAPSHOT), "vulnerable": "warn"},
              "rules": [{"warn": "memchr", "reason": "memchr is under review"}]}

    with UpstreamServer(registry, name="origin") as origin:
        config = write_config(tmp_path / "proxies.yaml", origin, tmp_path / "cache", policy)
        proxy = run_proxy(config, *WATCH, "--set", f"cargo_status_port={status}")
        served = {name: [get(proxy.url, ca, index_url(name)) for _ in range(2)] for name in ("itoa", "memchr", "ryu")}
        metrics = httpx.get(f"http://127.0.0.1:{status}/metrics", timeout=10).text
        page = httpx.get(f"http://127.0.0.1:{status}/status.json", timeout=10).json()["policy"]

        write_config(config, origin, tmp_path / "cache")  # the same proxy without a policy
        wait_for(lambda: "configuration reloaded" in proxy.log(),
                 "the reload without a policy")
        plain = {name: get(proxy.url, ca, index_url(name)) for name in ("itoa", "memchr", "ryu")}
    log = proxy.log()

    itoa = [lines(r) for r in served["itoa"]]
    assert all(r.headers[POLICY_HEADER] == "hide:quarantine" for r in served["itoa"])
    assert all(v["1.0.2"]["yanked"] and v["1.0.2"]["pubtime"] == young for v in itoa)
    assert all(r.headers[POLICY_HEADER] == "warn:rule" for r in served["memchr"])  # decided about: labelled
    for name in ("memchr", "ryu"):  # bytes unchanged: the same bytes and ETag as without a policy
        assert all(r.content == plain[name].content == registry.index_files[name] for r in served[name])
        assert all(r.headers["ETag"] == plain[name].headers["ETag"] for r in served[name])
    assert all(POLICY_HEADER not in r.headers for r in [*served["ryu"], *plain.values()])  # nothing decided
    assert plain["itoa"].content == registry.index_files["itoa"] != served["itoa"][0].content

    assert 'cargo_cache_policy_decisions_total{action="hide",reason="quarantine"} 2.0' in metrics
    assert 'cargo_cache_policy_decisions_total{action="warn",reason="rule"} 2.0' in metrics
    assert len(re.findall(r"^cargo_cache_policy_decisions_total\{", metrics, re.M)) == 2

    (database,) = page["databases"]
    assert database["path"] == str(SNAPSHOT) and database["advisories"] == SNAPSHOT_ADVISORIES
    assert database["newest"] == newest_advisory_date(SNAPSHOT) and database["error"] is None
    last = {(d["crate"], d["version"], d["decision"]) for d in page["last"]}
    assert last == {("itoa", "1.0.2", "hide:quarantine"), ("memchr", "2.5.0", "warn:rule")}
    assert sorted((c["action"], c["reason"], c["n"]) for c in page["counts"]) == [
        ("hide", "quarantine", 2), ("warn", "rule", 2)]

    # one log line per version and decision, though each was served twice
    assert len(re.findall(r"cargo-cache policy: warn:rule \(registry crates-io\): memchr 2\.5\.0", log)) == 1
    assert len(re.findall(r"cargo-cache policy: hide:quarantine \(registry crates-io\): itoa 1\.0\.2 is in "
                          r"quarantine until ", log)) == 1


# -- 4. the end of a quarantine reaches clients that revalidate ----------------------------------------------------

def locked_version(project: Path, name: str) -> str:
    import tomllib

    return next(p["version"] for p in tomllib.loads((project / "Cargo.lock").read_text())["package"]
                if p["name"] == name)


def test_when_a_quarantine_ends_the_index_files_etag_changes_and_a_conditional_request_gets_the_version_unhidden(
        run_proxy, confdir: Path, tmp_path: Path):
    registry = build_registry(only=["itoa"])
    ca = confdir / "mitmproxy-ca-cert.pem"
    min_age = 20
    project = make_project(tmp_path / "app", 'itoa = "1"\n')
    (tmp_path / "cargo-home").mkdir()

    with UpstreamServer(registry, name="origin") as origin:
        config = write_config(tmp_path / "proxies.yaml", origin, tmp_path / "cache", {"quarantine": {"min_age": min_age}},
                              index_ttl=1)
        proxy = run_proxy(config)
        cargo = Cargo(tmp_path / "cargo-home", proxy)
        assert cargo.run(project, "generate-lockfile").returncode == 0 and locked_version(project, "itoa") == "1.0.1"

        published = time.time() - min_age + 12  # its kept pubtime: in quarantine for 12 more seconds
        add_version(registry, "itoa", "1.0.2", pubtime=pubtime(published))
        ends = seconds(pubtime(published)) + min_age
        hidden = wait_for(lambda: (r := get(proxy.url, ca, index_url("itoa"))) and "1.0.2" in lines(r) and r,
                          "the new version to be served")
        updated_young = cargo.run(project, "update")  # Cargo keeps this copy and its ETag
        locked_young = locked_version(project, "itoa")
        unchanged = get(proxy.url, ca, index_url("itoa"), **{"If-None-Match": hidden.headers["ETag"]})
        assert time.time() < ends, "too slow: the quarantine ended before its copy was checked"

        time.sleep(max(0.0, ends - time.time()) + 0.5)  # until the quarantine has ended, by the proxy's clock too
        released = get(proxy.url, ca, index_url("itoa"), **{"If-None-Match": hidden.headers["ETag"]})
        by_date = get(proxy.url, ca, index_url("itoa"), **{"If-Modified-Since": hidden.headers["Last-Modified"]})
        updated_old = cargo.run(project, "update")

    assert lines(hidden)["1.0.2"]["yanked"] and hidden.headers[POLICY_HEADER] == "hide:quarantine"
    assert updated_young.returncode == 0 and locked_young == "1.0.1", updated_young.stderr  # hidden from a resolve
    assert unchanged.status_code == 304  # while young, the client's copy is current
    assert released.status_code == 200, released.status_code  # never a 304 keeping the old decision
    assert released.headers["ETag"] != hidden.headers["ETag"] and POLICY_HEADER not in released.headers
    assert not lines(released)["1.0.2"]["yanked"] and lines(released)["1.0.2"]["pubtime"] == pubtime(published)
    assert by_date.status_code == 200 and by_date.content == released.content  # nor by date (If-Modified-Since)
    assert updated_old.returncode == 0, updated_old.stderr
    assert locked_version(project, "itoa") == "1.0.2"  # Cargo's next index refresh sees it
