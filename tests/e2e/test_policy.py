"""The supply-chain policy (issue 29) as a user sees it: real cargo through a real mitmdump against loopback
registries of real crates, where the tests publish young versions, take publish times away, or add advisories.

What is asserted is what people see: cargo's exit status, error text and Cargo.lock; an index file or a download
fetched through the proxy (status, body, `X-Cargo-Cache-Policy`); mitmdump's log; the command line's output.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.e2e.test_faults import proxy_client
from tests.fixtures.registry import Registry, build_registry
from tests.fixtures.rustsec import SNAPSHOT
from tests.fixtures.upstream import UpstreamServer
from tests.fixtures.versions import add_version, pubtime, seconds, set_pubtimes
from tests.harness import DOWNLOAD_HOST, INDEX_HOST, Proxy, cli, free_port, locked_packages, make_project

HEADER = "X-Cargo-Cache-Policy"
DAY = 86400
CRATES_IO = "registry+https://github.com/rust-lang/crates.io-index"
CORP = "https://corp.example/api/cargo/corp/index/"


# -- helpers -----------------------------------------------------------------------------------------------------


def own_registry(*names: str) -> Registry:
    """A registry of these Debian crates, whose versions get a publish time a month ago."""
    registry = build_registry(only=names)
    for name in names:
        set_pubtimes(registry, name, dict.fromkeys(registry.versions(name), pubtime(time.time() - 30 * DAY)))
    return registry


def registry_doc(upstream: UpstreamServer, name: str = "crates-io", policy: dict | None = None,
                 index_url: str | None = None) -> dict:
    doc = {"name": name, "proxies": [{"name": upstream.name, "url": upstream.url}]}
    doc |= {"index_url": index_url} if index_url else {"index_host": INDEX_HOST, "download_host": DOWNLOAD_HOST}
    return doc | ({"policy": policy} if policy is not None else {})


def write_config(path: Path, cache_dir: Path, registries: list[dict], policy: dict | None = None,
                 **cache: object) -> Path:
    doc: dict = {"cache": {"directory": str(cache_dir), "size_limit": "1GB", **cache}}
    if policy is not None:
        doc["policy"] = policy
    doc["registries"] = registries
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture
def proxies(confdir: Path, tmp_path: Path) -> Iterator[Callable[[Path], Proxy]]:
    """Start mitmdump on a proxies.yaml (re-read every 200 ms); every one started is stopped at the end."""
    started: list[Proxy] = []

    def start(config: Path, status_page: bool = False) -> Proxy:
        args = ("--set", "cargo_reload_ms=200", "--set", "cargo_advisory_reload_ms=200")
        port = free_port() if status_page else None
        if port is not None:
            args += ("--set", f"cargo_status_port={port}")
        proxy = Proxy(config, confdir, tmp_path / f"mitmdump-{len(started)}.log", args)
        proxy.status_url = f"http://127.0.0.1:{port}"
        started.append(proxy)
        return proxy.start()

    yield start
    for proxy in started:
        proxy.stop()


def index_url(name: str) -> str:
    return f"https://{INDEX_HOST}/{Registry.index_path(name)}"


def download_url(name: str, version: str) -> str:
    return f"https://{DOWNLOAD_HOST}/crates/{name}/{version}/download"


def lines(body: bytes) -> dict[str, dict]:
    """version -> index line."""
    return {obj["vers"]: obj for obj in map(json.loads, body.splitlines())}


def raw_lines(body: bytes) -> dict[str, bytes]:
    return {json.loads(line)["vers"]: line for line in body.splitlines()}


def locked_project(path: Path, registry: Registry, dependencies: str, packages: list[tuple[str, str]]) -> Path:
    """A project whose Cargo.lock (written here, as cargo writes it) pins these crates.io packages."""
    make_project(path, dependencies)
    body = 'version = 3\n\n[[package]]\nname = "app"\nversion = "0.1.0"\ndependencies = [\n'
    body += "".join(f' "{name}",\n' for name, _ in sorted(packages)) + "]\n"
    for name, version in sorted(packages):
        body += (f'\n[[package]]\nname = "{name}"\nversion = "{version}"\nsource = "{CRATES_IO}"\n'
                 f'checksum = "{registry.crate(name, version).cksum}"\n')
    (path / "Cargo.lock").write_text(body)
    return path


def wait_for(condition: Callable[[], object], timeout: float, what: str, step: float = 0.1):
    """Poll `condition` until it returns something true (returned), or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if result := condition():
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(step)


def reload(proxy: Proxy, config: Path, registries: list[dict], policy: dict, cache_dir: Path, **cache) -> None:
    """Rewrite proxies.yaml with another policy and wait until the running proxy says it took it."""
    before = proxy.log().count("policy changed")
    write_config(config, cache_dir, registries, policy, **cache)
    wait_for(lambda: proxy.log().count("policy changed") > before, 15, "the proxy reloads proxies.yaml")


# -- the quarantine ----------------------------------------------------------------------------------------------


def test_quarantine_hides_young_versions_exempts_some_and_keeps_the_first_publish_time(proxies, new_cargo, tmp_path):
    registry = own_registry("itoa", "cfg-if", "either")
    young = pubtime(time.time() - 3600)
    add_version(registry, "itoa", "1.0.2", young)
    add_version(registry, "cfg-if", "1.0.1", young)  # exempt by name
    add_version(registry, "either", "1.6.2", young)  # exempt as either@1.6.2
    add_version(registry, "either", "1.6.3", young)  # not exempt
    upstream_itoa = registry.index_files["itoa"]
    policy = {"quarantine": {"min_age": "3d", "pinned": "allow", "exempt": ["cfg-if", "either@1.6.2"]}}
    project = make_project(tmp_path / "fresh", 'itoa = "1"\ncfg-if = "1"\neither = "1"\n')
    pinned = locked_project(tmp_path / "pinned", registry, 'itoa = "1"\n', [("itoa", "1.0.2")])

    with UpstreamServer(registry, name="origin") as origin:
        regs = [registry_doc(origin)]
        config = write_config(tmp_path / "proxies.yaml", tmp_path / "cache", regs, policy, index_ttl=0)
        proxy = proxies(config)

        resolved = new_cargo(proxy).run(project, "generate-lockfile")
        with proxy_client(proxy) as c:
            itoa, cfg_if, either = (c.get(index_url(n)) for n in ("itoa", "cfg-if", "either"))
        allowed = new_cargo(proxy).run(pinned, "fetch", "--locked")

        # The upstream now says 1.0.2 was published ten days ago: the time the proxy kept first stays.
        set_pubtimes(registry, "itoa", {"1.0.2": pubtime(time.time() - 10 * DAY)})
        with proxy_client(proxy) as c:
            earlier = c.get(index_url("itoa"))

        reload(proxy, config, regs, policy | {"quarantine": policy["quarantine"] | {"pinned": "deny"}},
               tmp_path / "cache", index_ttl=0)
        denied = new_cargo(proxy, CARGO_NET_RETRY="0").run(pinned, "fetch", "--locked")
        with proxy_client(proxy) as c:
            refused = c.get(download_url("itoa", "1.0.2"))
        log = proxy.log()

    # A fresh resolve picks the older itoa; the exempt cfg-if and either@1.6.2 are the newest ones it can take.
    assert resolved.returncode == 0, resolved.stderr
    assert {(n, v) for n, v in locked_packages(project)} == {("itoa", "1.0.1"), ("cfg-if", "1.0.1"),
                                                             ("either", "1.6.2")}
    # The young line is served yanked, the rest of it and the other lines as published.
    assert itoa.status_code == 200 and itoa.headers[HEADER] == "hide:quarantine"
    served = lines(itoa.content)
    assert served["1.0.2"]["yanked"] is True and served["1.0.2"]["pubtime"] == young
    assert {**served["1.0.2"], "yanked": False} == lines(upstream_itoa)["1.0.2"]
    assert raw_lines(itoa.content)["1.0.1"] == raw_lines(upstream_itoa)["1.0.1"]
    assert cfg_if.status_code == 200 and HEADER not in cfg_if.headers
    assert cfg_if.content == registry.index_files["cfg-if"]  # nothing decided: the very bytes of the upstream
    assert either.headers[HEADER] == "hide:quarantine"
    assert lines(either.content)["1.6.3"]["yanked"] is True and lines(either.content)["1.6.2"]["yanked"] is False
    until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds(young) + 3 * DAY))
    assert f"cargo-cache policy: hide:quarantine (registry crates-io): itoa 1.0.2 is in quarantine until {until} " \
           "(min_age 3d)" in log
    # pinned: allow -- a Cargo.lock that asks for the young version still gets it.
    assert allowed.returncode == 0, allowed.stderr
    # An earlier pubtime from the upstream does not release it.
    assert earlier.headers[HEADER] == "hide:quarantine"
    assert lines(earlier.content)["1.0.2"]["yanked"] is True and lines(earlier.content)["1.0.2"]["pubtime"] == young
    # pinned: deny -- the same lockfile now fails with the reason in cargo's error.
    assert denied.returncode != 0
    body = f"cargo-cache policy: itoa 1.0.2 is in quarantine until {until} (min_age 3d)"
    assert "403" in denied.stderr and body in denied.stderr, denied.stderr
    assert refused.status_code == 403 and refused.text.strip() == body
    assert refused.headers[HEADER] == "deny:quarantine"


def test_a_version_without_pubtime_is_aged_from_its_first_sighting_and_appears_without_a_restart(
    proxies, new_cargo, tmp_path
):
    registry = build_registry(only=["scopeguard"])  # no pubtime anywhere, as most private registries
    add_version(registry, "scopeguard", "1.0.0")
    first_copy = registry.index_files["scopeguard"]
    policy = {"quarantine": {"min_age": "5s", "missing_pubtime": "first-seen"}}
    project = make_project(tmp_path / "app", 'scopeguard = "1"\n')

    with UpstreamServer(registry, name="origin") as origin:
        config = write_config(tmp_path / "proxies.yaml", tmp_path / "cache", [registry_doc(origin)], policy,
                              index_ttl=0)
        proxy = proxies(config)
        cargo = new_cargo(proxy)  # one CARGO_HOME throughout: its cached index copy must not keep a decision
        with proxy_client(proxy) as c:
            first = c.get(index_url("scopeguard"))

        before = time.time()
        add_version(registry, "scopeguard", "1.2.0")  # published while the proxy runs, still without pubtime
        with proxy_client(proxy) as c:
            sighted = c.get(index_url("scopeguard"))
        seen_at = time.time()
        held = cargo.run(project, "generate-lockfile")
        held_lock = locked_packages(project)

        def released():
            with proxy_client(proxy) as c:
                response = c.get(index_url("scopeguard"))
            return response if not lines(response.content)["1.2.0"]["yanked"] else None

        appeared = wait_for(released, 20, "scopeguard 1.2.0 leaves its quarantine", step=0.25)
        appeared_at = time.time()
        fresh = cargo.run(project, "generate-lockfile")
        log = proxy.log()
        proxy.stop()
        with proxy_client(proxies(config)) as c:  # the same cache: the kept first sighting survives a restart
            restarted = c.get(index_url("scopeguard"))

    # The versions of the first copy the proxy saw count as old: served as published, no pubtime added.
    assert first.status_code == 200 and first.content == first_copy and HEADER not in first.headers
    # The later one is hidden, served with its first sighting as its pubtime, and cargo resolves around it.
    assert sighted.headers[HEADER] == "hide:quarantine"
    line = lines(sighted.content)["1.2.0"]
    assert line["yanked"] is True
    assert int(before) <= seconds(line["pubtime"]) <= seen_at
    assert all("pubtime" not in lines(sighted.content)[v] for v in ("1.0.0", "1.1.0"))
    assert held.returncode == 0, held.stderr
    assert held_lock.keys() == {("scopeguard", "1.1.0")}
    # Once that sighting is 5 s old it appears, with the same pubtime, without a restart; cargo then takes it.
    assert seconds(line["pubtime"]) + 5 <= appeared_at < seconds(line["pubtime"]) + 5 + 10
    assert HEADER not in appeared.headers and lines(appeared.content)["1.2.0"]["pubtime"] == line["pubtime"]
    assert fresh.returncode == 0, fresh.stderr
    assert locked_packages(project).keys() == {("scopeguard", "1.2.0")}
    assert "scopeguard 1.2.0 is in quarantine until" in log and "(min_age 5s)" in log
    assert log.count("proxy listening at") == 1
    assert restarted.content == appeared.content


def test_a_registrys_own_policy_overrides_the_global_one(proxies, new_cargo, tmp_path):
    registry = own_registry("itoa")
    add_version(registry, "itoa", "1.0.2", pubtime(time.time() - 60))
    project = make_project(tmp_path / "app", 'itoa = "1"\ncorp-itoa = { package = "itoa", version = "1", '
                                             'registry = "corp" }\n')

    with UpstreamServer(registry, name="origin") as origin:
        regs = [registry_doc(origin), registry_doc(origin, "corp", {"quarantine": {"min_age": 0}}, index_url=CORP)]
        config = write_config(tmp_path / "proxies.yaml", tmp_path / "cache", regs, {"quarantine": {"min_age": "3d"}})
        proxy = proxies(config)
        cargo = new_cargo(proxy, CARGO_REGISTRIES_CORP_INDEX=f"sparse+{CORP}")
        fetched = cargo.run(project, "generate-lockfile")
        with proxy_client(proxy) as c:
            public, corp = c.get(index_url("itoa")), c.get(CORP + Registry.index_path("itoa"))

    assert fetched.returncode == 0, fetched.stderr
    lock = (project / "Cargo.lock").read_text()
    assert re.search(rf'name = "itoa"\nversion = "1\.0\.1"\nsource = "{re.escape(CRATES_IO)}"', lock), lock
    assert re.search(rf'name = "itoa"\nversion = "1\.0\.2"\nsource = "sparse\+{re.escape(CORP)}"', lock), lock
    assert public.headers[HEADER] == "hide:quarantine" and lines(public.content)["1.0.2"]["yanked"] is True
    assert HEADER not in corp.headers and corp.content == registry.index_files["itoa"]


# -- advisories ----------------------------------------------------------------------------------------------------

MALICIOUS = "RUSTSEC-2026-9001"  # an id the snapshot does not use
VULNERABLE = "RUSTSEC-2026-0007"  # bytes: patched >= 1.11.1, unaffected < 1.2.1; Debian's bytes is 1.2.1
BYTES_TITLE = "Integer overflow in `BytesMut::reserve`"


def advisory_db(tmp_path: Path) -> Path:
    """A copy of the real snapshot, plus a malicious advisory for itoa: a real one of the snapshot (the
    acceptxmr-rs typosquat) with its crate and id changed."""
    db = tmp_path / "advisory-db"
    shutil.copytree(SNAPSHOT, db)
    assert not (db / "crates" / "itoa").exists() and not list(db.glob(f"crates/*/{MALICIOUS}.md"))
    real = (SNAPSHOT / "crates" / "acceptxmr-rs" / "RUSTSEC-2023-0115.md").read_text()
    (db / "crates" / "itoa").mkdir()
    (db / "crates" / "itoa" / f"{MALICIOUS}.md").write_text(
        real.replace("RUSTSEC-2023-0115", MALICIOUS).replace("acceptxmr-rs", "itoa"))
    return db


def advisory_registry(*extra: str) -> Registry:
    """itoa (malicious in `advisory_db`), bytes 1.2.1 (in RUSTSEC-2026-0007's range) and 1.1.0 (before it)."""
    registry = own_registry("itoa", "bytes", *extra)
    add_version(registry, "bytes", "1.1.0", pubtime(time.time() - 60 * DAY))
    return registry


def malicious_body(version: str = "1.0.1") -> str:
    return (f"cargo-cache policy: itoa {version}: {MALICIOUS} (malicious): `itoa` was removed from crates.io for "
            "malicious code")


def test_advisories_deny_the_malicious_and_hide_the_vulnerable_until_ignored_or_allowed(proxies, new_cargo, tmp_path):
    db = advisory_db(tmp_path)
    registry = advisory_registry()
    set_pubtimes(registry, "itoa", {"1.0.1": pubtime(time.time() - 3600)})  # young, too: allow beats both
    policy = {"quarantine": {"min_age": "3d"},
              "advisories": {"database": str(db), "malicious": "deny", "vulnerable": "hide"}}
    project = make_project(tmp_path / "app", 'bytes = "1"\n')
    pinned = locked_project(tmp_path / "pinned", registry, 'itoa = "1"\n', [("itoa", "1.0.1")])

    with UpstreamServer(registry, name="origin") as origin:
        regs = [registry_doc(origin)]
        config = write_config(tmp_path / "proxies.yaml", tmp_path / "cache", regs, policy, index_ttl=0)
        proxy = proxies(config)
        cargo = new_cargo(proxy)  # kept: its cached index copies must not keep a lifted decision
        resolved = cargo.run(project, "generate-lockfile")
        resolved_lock = locked_packages(project)
        refused = new_cargo(proxy, CARGO_NET_RETRY="0").run(pinned, "fetch", "--locked")
        with proxy_client(proxy) as c:
            itoa, bytes_index = c.get(index_url("itoa")), c.get(index_url("bytes"))
            itoa_crate, bytes_crate = c.get(download_url("itoa", "1.0.1")), c.get(download_url("bytes", "1.2.1"))

        reload(proxy, config, regs, policy | {"advisories": policy["advisories"] | {"ignore": [VULNERABLE]},
                                              "rules": [{"allow": "itoa"}]}, tmp_path / "cache", index_ttl=0)
        (project / "Cargo.lock").unlink()
        lifted = cargo.run(project, "generate-lockfile")
        allowed = new_cargo(proxy).run(pinned, "fetch", "--locked")
        with proxy_client(proxy) as c:
            itoa_after, bytes_after = c.get(index_url("itoa")), c.get(index_url("bytes"))
        log = proxy.log()

    # The vulnerable bytes 1.2.1 is hidden: a fresh resolve takes 1.1.0; a lockfile pinning it still downloads it.
    assert resolved.returncode == 0, resolved.stderr
    assert resolved_lock.keys() == {("bytes", "1.1.0")}
    assert bytes_index.headers[HEADER] == f"hide:{VULNERABLE}"
    assert lines(bytes_index.content)["1.2.1"]["yanked"] is True
    assert lines(bytes_index.content)["1.1.0"]["yanked"] is False
    assert bytes_crate.status_code == 200 and bytes_crate.content == registry.crate("bytes", "1.2.1").data
    # The malicious itoa is hidden and its download refused, with the advisory in cargo's error.
    assert itoa.headers[HEADER] == f"deny:{MALICIOUS}, hide:quarantine"
    assert lines(itoa.content)["1.0.1"]["yanked"] is True
    assert refused.returncode != 0
    assert "403" in refused.stderr and malicious_body() in refused.stderr, refused.stderr
    assert itoa_crate.status_code == 403 and itoa_crate.text.strip() == malicious_body()
    assert itoa_crate.headers[HEADER] == f"deny:{MALICIOUS}"
    assert f"cargo-cache policy: deny:{MALICIOUS} (registry crates-io): itoa 1.0.1: {MALICIOUS} (malicious)" in log
    assert f"cargo-cache policy: hide:{VULNERABLE} (registry crates-io): bytes 1.2.1: {VULNERABLE} (vulnerable): " \
           f"{BYTES_TITLE}" in log
    # `ignore` lifts the vulnerability; a rule's allow beats both the advisory and the quarantine.
    assert lifted.returncode == 0, lifted.stderr
    assert locked_packages(project).keys() == {("bytes", "1.2.1")}
    assert HEADER not in bytes_after.headers and bytes_after.content == registry.index_files["bytes"]
    assert HEADER not in itoa_after.headers and itoa_after.content == registry.index_files["itoa"]
    assert allowed.returncode == 0, allowed.stderr


def test_dry_run_serves_everything_as_without_a_policy_and_says_what_it_would_do(proxies, new_cargo, tmp_path):
    db = advisory_db(tmp_path)
    registry = advisory_registry()
    add_version(registry, "itoa", "1.0.2", pubtime(time.time() - 60))
    policy = {"dry_run": True, "quarantine": {"min_age": "3d", "pinned": "deny"},  # database: relative to the file
              "advisories": {"database": db.name, "malicious": "deny", "vulnerable": "hide"}}
    project = make_project(tmp_path / "app", 'itoa = "1"\nbytes = "1"\n')

    with UpstreamServer(registry, name="origin") as origin:
        proxy = proxies(write_config(tmp_path / "proxies.yaml", tmp_path / "cache", [registry_doc(origin)], policy),
                        status_page=True)
        fetched = new_cargo(proxy).fetch(project)
        with proxy_client(proxy) as c:
            itoa, bytes_index = c.get(index_url("itoa")), c.get(index_url("bytes"))
            young, malicious = c.get(download_url("itoa", "1.0.2")), c.get(download_url("itoa", "1.0.1"))
        log = proxy.log()
        metrics = httpx.get(proxy.status_url + "/metrics", timeout=10).text
        status = httpx.get(proxy.status_url + "/status.json", timeout=10).json()["policy"]

    assert fetched.returncode == 0, fetched.stderr
    assert locked_packages(project).keys() == {("itoa", "1.0.2"), ("bytes", "1.2.1")}
    assert itoa.content == registry.index_files["itoa"] and bytes_index.content == registry.index_files["bytes"]
    assert itoa.headers[HEADER] == f"would-deny:{MALICIOUS}, would-deny:quarantine"
    assert bytes_index.headers[HEADER] == f"would-hide:{VULNERABLE}"
    for version, response in (("1.0.2", young), ("1.0.1", malicious)):
        assert response.status_code == 200 and response.content == registry.crate("itoa", version).data
    assert malicious.headers[HEADER] == f"would-deny:{MALICIOUS}"
    assert young.headers[HEADER] == f"would-deny:{MALICIOUS}"  # the advisory refuses first; quarantine too
    assert f"cargo-cache policy: would-deny:{MALICIOUS} (registry crates-io): itoa 1.0.1" in log
    assert "cargo-cache policy: would-deny:quarantine (registry crates-io): itoa 1.0.2 is in quarantine" in log
    assert f"cargo-cache policy: would-hide:{VULNERABLE} (registry crates-io): bytes 1.2.1" in log
    # What an operator watches: the counters and the status page say the same.
    counted = {m.group(1, 2): float(m.group(3)) for m in re.finditer(
        r'^cargo_cache_policy_decisions_total\{action="([^"]+)",reason="([^"]+)"\} (\S+)$', metrics, re.M)}
    assert counted.keys() == {("would-deny", "malicious"), ("would-deny", "quarantine"), ("would-hide", "vulnerable")}
    assert all(n >= 1 for n in counted.values())
    assert status["registries"][0]["dry_run"] is True
    assert status["databases"][0]["path"] == str(db) and status["databases"][0]["advisories"] == 1206
    assert {(d["crate"], d["version"], d["decision"]) for d in status["last"]} >= {
        ("itoa", "1.0.1", f"would-deny:{MALICIOUS}"), ("itoa", "1.0.2", "would-deny:quarantine"),
        ("bytes", "1.2.1", f"would-hide:{VULNERABLE}")}


def lockfile(folder: Path, registry: Registry, packages: list[tuple[str, str]]) -> Path:
    """A Cargo.lock naming these crates.io packages (with their checksums), as the commands read it."""
    return locked_project(folder, registry, "", packages) / "Cargo.lock"


def crates_in_cache(config: Path) -> set[tuple[str, str]]:
    listed = cli(config, "ls", "--kind", "crate", "--json")
    assert listed.returncode == 0, listed.stderr
    return {(row["name"], row["version"]) for row in map(json.loads, listed.stdout.splitlines())}


def test_audit_and_stage_report_what_the_policy_denies_and_stage_never_caches_it(tmp_path):
    db = advisory_db(tmp_path)
    registry = advisory_registry("anyhow", "cfg-if", "either")  # anyhow 1.0.69: RUSTSEC-2026-0190 (unsound)
    young = pubtime(time.time() - 60)
    add_version(registry, "either", "1.6.2", young)
    policy = {"quarantine": {"min_age": "3d", "pinned": "allow"},
              "advisories": {"database": db.name, "malicious": "deny", "vulnerable": "hide",
                             "informational": "warn"},  # the database relative to proxies.yaml's folder
              "rules": [{"deny": "cfg-if@<2", "reason": "cfg-if is not welcome here"}]}
    denied = lockfile(tmp_path / "denied", registry, [("itoa", "1.0.1"), ("bytes", "1.2.1"), ("cfg-if", "1.0.0")])
    flagged = lockfile(tmp_path / "flagged", registry, [("bytes", "1.2.1"), ("anyhow", "1.0.69"), ("either", "1.6.2")])

    with UpstreamServer(registry, name="origin") as origin:
        config = write_config(tmp_path / "proxies.yaml", tmp_path / "cache", [registry_doc(origin)], policy)
        failing = cli(config, "audit", str(denied))
        passing = cli(config, "audit", str(flagged))
        staged = cli(config, "stage", str(denied))
    cached = crates_in_cache(config)

    assert failing.returncode == 1, failing.stdout + failing.stderr
    assert f"DENY itoa 1.0.1 (crates-io): itoa 1.0.1: {MALICIOUS} (malicious): `itoa` was removed from crates.io " \
           "for malicious code" in failing.stdout
    assert "DENY cfg-if 1.0.0 (crates-io): cfg-if 1.0.0: cfg-if is not welcome here" in failing.stdout
    assert f"HIDE bytes 1.2.1 (crates-io): bytes 1.2.1: {VULNERABLE} (vulnerable): {BYTES_TITLE}" in failing.stdout
    assert "audited 3 crates from 1 lockfile(s): 2 denied, 1 hidden, 0 warned" in failing.stdout
    assert passing.returncode == 0, passing.stdout + passing.stderr
    assert f"HIDE bytes 1.2.1 (crates-io): bytes 1.2.1: {VULNERABLE} (vulnerable)" in passing.stdout
    assert "WARN anyhow 1.0.69 (crates-io): anyhow 1.0.69: RUSTSEC-2026-0190 (unsound)" in passing.stdout
    until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds(young) + 3 * DAY))
    assert f"HIDE either 1.6.2 (crates-io): either 1.6.2 is in quarantine until {until} (min_age 3d)" in passing.stdout
    assert "audited 3 crates from 1 lockfile(s): 0 denied, 2 hidden, 1 warned" in passing.stdout

    assert staged.returncode == 1, staged.stdout + staged.stderr
    assert f"FAILED itoa 1.0.1: cargo-cache policy: itoa 1.0.1: {MALICIOUS} (malicious)" in staged.stdout
    assert "FAILED cfg-if 1.0.0: cargo-cache policy: cfg-if 1.0.0: cfg-if is not welcome here" in staged.stdout
    assert "fetched 1, already cached 0, failed 2" in staged.stdout
    assert cached == {("bytes", "1.2.1")}  # hidden, not denied: a lockfile may still ask for it
    assert not any("/itoa/" in p or "/cfg-if/" in p for p in origin.paths() if p.startswith("/crates/"))


def test_a_bundle_is_served_under_the_importing_sites_policy(proxies, new_cargo, tmp_path):
    registry = own_registry("itoa", "cfg-if")
    packages = [("itoa", "1.0.1"), ("cfg-if", "1.0.0")]
    project = locked_project(tmp_path / "app", registry, 'itoa = "1"\ncfg-if = "1"\n', packages)
    bundle = tmp_path / "crates.bundle"
    with UpstreamServer(registry, name="origin") as origin:
        upstream = registry_doc(origin)
        connected = write_config(tmp_path / "connected.yaml", tmp_path / "connected-cache", [upstream])  # no policy
        staged = cli(connected, "stage", str(project / "Cargo.lock"))
        exported = cli(connected, "export", str(bundle), "--lockfile", str(project / "Cargo.lock"))
    assert staged.returncode == 0 and exported.returncode == 0, staged.stdout + exported.stdout + exported.stderr

    site = write_config(tmp_path / "site.yaml", tmp_path / "site-cache", [upstream],
                        {"rules": [{"deny": "itoa", "reason": "itoa is not allowed at this site"}]}, offline=True)
    imported = cli(site, "import", str(bundle))
    proxy = proxies(site)
    built = new_cargo(proxy, CARGO_NET_RETRY="0").run(project, "fetch", "--locked")
    with proxy_client(proxy) as c:
        index, itoa, cfg_if = c.get(index_url("itoa")), c.get(download_url("itoa", "1.0.1")), \
            c.get(download_url("cfg-if", "1.0.0"))

    assert imported.returncode == 0, imported.stdout + imported.stderr
    body = "cargo-cache policy: itoa 1.0.1: itoa is not allowed at this site"
    assert built.returncode != 0 and "403" in built.stderr and body in built.stderr, built.stderr
    assert index.headers[HEADER] == "deny:rule" and lines(index.content)["1.0.1"]["yanked"] is True
    assert itoa.status_code == 403 and itoa.text.strip() == body
    assert cfg_if.status_code == 200 and cfg_if.content == registry.crate("cfg-if", "1.0.0").data


def test_a_broken_advisory_file_is_skipped_with_a_warning_and_a_new_one_acts_within_seconds(proxies, tmp_path):
    db = advisory_db(tmp_path)
    (db / "crates" / "itoa" / f"{MALICIOUS}.md").unlink()  # added later, as a `git pull` would
    broken = db / "crates" / "bytes" / "RUSTSEC-2026-9002.md"
    broken.write_text('```toml\n[advisory]\nid = "RUSTSEC-2026-9002"\npackage = "bytes\n```\n\n# Broken\n')
    registry = advisory_registry("anyhow")
    policy = {"advisories": {"database": str(db), "vulnerable": "hide", "informational": "warn"}}

    with UpstreamServer(registry, name="origin") as origin:
        config = write_config(tmp_path / "proxies.yaml", tmp_path / "cache", [registry_doc(origin)], policy,
                              index_ttl=0)
        proxy = proxies(config)
        with proxy_client(proxy) as c:
            bytes_index, itoa_before = c.get(index_url("bytes")), c.get(index_url("itoa"))
            anyhow = c.get(index_url("anyhow"))
            (db / "crates" / "itoa" / f"{MALICIOUS}.md").write_text(
                (SNAPSHOT / "crates" / "acceptxmr-rs" / "RUSTSEC-2023-0115.md").read_text()
                .replace("RUSTSEC-2023-0115", MALICIOUS).replace("acceptxmr-rs", "itoa"))
            itoa_after = wait_for(lambda: (r := c.get(index_url("itoa"))).headers.get(HEADER) and r, 15,
                                  "the added advisory takes effect")
        log = proxy.log()

    assert re.search(rf"advisory database: skipped {re.escape(str(broken))}: bad TOML", log), log
    assert "1205 advisories" in log  # the snapshot's own, all loaded
    assert bytes_index.headers[HEADER] == f"hide:{VULNERABLE}" and lines(bytes_index.content)["1.2.1"]["yanked"]
    assert anyhow.headers[HEADER] == "warn:RUSTSEC-2026-0190" and anyhow.content == registry.index_files["anyhow"]
    assert "cargo-cache policy: warn:RUSTSEC-2026-0190 (registry crates-io): anyhow 1.0.69: RUSTSEC-2026-0190 " \
           "(unsound): Unsoundness in `Error::downcast_mut()`" in log
    assert HEADER not in itoa_before.headers
    assert itoa_after.headers[HEADER] == f"deny:{MALICIOUS}" and lines(itoa_after.content)["1.0.1"]["yanked"]


def test_a_rule_whose_version_requirement_does_not_parse_is_a_configuration_error_naming_it(confdir, tmp_path):
    registry = own_registry("itoa")
    policy = {"rules": [{"allow": "cfg-if"}, {"deny": "itoa@>=1.0, <<2", "reason": "never"}]}
    with UpstreamServer(registry, name="origin") as origin:
        config = write_config(tmp_path / "proxies.yaml", tmp_path / "cache", [registry_doc(origin)], policy)
        proxy = Proxy(config, confdir, tmp_path / "mitmdump.log")
        try:
            proxy.start()
        except RuntimeError:
            pass  # exited before it said it listens
        try:
            exited = proxy.process.wait(timeout=30)
        finally:
            proxy.stop()
        audited = cli(config, "audit", str(lockfile(tmp_path / "app", registry, [("itoa", "1.0.1")])))

    assert exited != 0 and "Error logged during startup, exiting" in proxy.log()
    errors = [line for line in proxy.log().splitlines() if "invalid configuration" in line]
    assert len(errors) == 1
    assert errors[0].split("] ", 1)[1].startswith(
        f"cargo-cache: invalid configuration: {config}: policy.rules[1].deny: 'itoa@>=1.0, <<2': the version "
        "requirement does not parse (invalid version requirement '>=1.0, <<2': unexpected character '<'")
    assert audited.returncode == 2
    assert audited.stderr.startswith(f"cargo-cache: invalid configuration: {config}: policy.rules[1].deny: "
                                     "'itoa@>=1.0, <<2': the version requirement does not parse")


def test_a_first_sighting_stays_when_a_full_cache_evicts_its_record(proxies, tmp_path):
    """The kept publish times live in the cache, which evicts the least recently used entries when full; a record
    gone that way must not turn the next copy into a "first copy" whose new versions count as old."""
    registry = build_registry(only=["scopeguard", "libc", "syn", "tokio"])
    policy = {"quarantine": {"min_age": "1h", "missing_pubtime": "first-seen"}}

    with UpstreamServer(registry, name="origin") as origin:
        config = write_config(tmp_path / "proxies.yaml", tmp_path / "cache", [registry_doc(origin)], policy,
                              index_ttl=0, size_limit="600KB")
        proxy = proxies(config)
        with proxy_client(proxy) as c:
            first = c.get(index_url("scopeguard"))
            for name, version in (("libc", "0.2.139"), ("syn", "1.0.107"), ("tokio", "1.24.2")):  # 1.5 MB
                assert c.get(download_url(name, version)).status_code == 200
        # Untouched (a listing would read, so refresh, every entry) until the cache has evicted a crate: the
        # oldest entries, scopeguard's index file and the record of its versions, are gone before the first crate.
        crates = sum(len(registry.crate(n, v).data) for n, v in (("libc", "0.2.139"), ("syn", "1.0.107"),
                                                                 ("tokio", "1.24.2")))
        wait_for(lambda: sum(f.stat().st_size for f in (tmp_path / "cache").rglob("*.val")) < crates, 30,
                 "the cache evicts its oldest entries", step=0.5)
        add_version(registry, "scopeguard", "1.2.0")  # no pubtime: aged from its first sighting
        with proxy_client(proxy) as c:
            later = c.get(index_url("scopeguard"))

    assert first.status_code == 200 and HEADER not in first.headers
    assert later.headers.get(HEADER) == "hide:quarantine", later.content
    assert lines(later.content)["1.2.0"]["yanked"] is True and "pubtime" in lines(later.content)["1.2.0"]
    assert all("pubtime" not in lines(later.content)[v] for v in registry.versions("scopeguard") if v != "1.2.0")
