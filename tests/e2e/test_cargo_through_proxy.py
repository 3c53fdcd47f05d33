"""Real cargo -> real mitmdump with the addon -> local upstream registries of real crates."""

from __future__ import annotations

import re

from tests.e2e.conftest import PASSWORD, USER
from tests.fixtures.upstream import basic_auth_header
from tests.harness import locked_packages


def downloads(server) -> list[str]:
    return [p for p in server.paths() if p.startswith(("/crates/", "/files/"))]


def test_cold_fetch_then_served_with_every_upstream_down(
    registry, primary, secondary, entry, start_proxy, new_cargo, full_project
):
    proxy = start_proxy([entry(primary, priority=1), entry(secondary, priority=2)])

    result = new_cargo(proxy).fetch(full_project)
    assert result.returncode == 0, result.stderr

    locked = locked_packages(full_project)
    assert len(locked) >= 40
    for (name, version), checksum in locked.items():
        assert checksum == registry.crate(name, version).cksum
    # Priority 1 answered everything, with its credentials, exactly once per object.
    assert secondary.requests == []
    assert all(r.headers.get("authorization") == basic_auth_header(USER, PASSWORD) for r in primary.requests)
    assert len(downloads(primary)) == len(set(downloads(primary))) == len(locked)
    assert all(p.startswith("/files/") for p in downloads(primary))  # the upstream's own dl template
    log = proxy.log()
    assert re.search(r"GET static\.crates\.io/crates/serde/1\.0\.152/download 200 primary miss \d+B \d+ms", log)
    assert PASSWORD not in log

    primary.stop()
    secondary.stop()
    (full_project / "Cargo.lock").unlink()
    again = new_cargo(proxy).fetch(full_project)

    assert again.returncode == 0, again.stderr
    assert locked_packages(full_project) == locked
    assert re.search(r"GET index\.crates\.io/se/rd/serde 200 cache hit", proxy.log())
    assert re.search(r"GET static\.crates\.io/crates/serde/1\.0\.152/download 200 cache hit", proxy.log())


def test_failover_past_dead_and_silent_upstreams_never_contacting_inactive(
    registry, primary, secondary, entry, start_proxy, new_cargo, small_project
):
    from tests.fixtures.upstream import SilentServer, dead_url

    with SilentServer() as silent:
        proxy = start_proxy([
            entry(primary, name="inactive", priority=0, active=False),
            {"name": "dead", "url": dead_url(), "priority": 1},
            {"name": "silent", "url": silent.url, "priority": 2, "timeout_ms": 300},
            entry(secondary, name="good", priority=3),
        ])
        result = new_cargo(proxy).fetch(small_project)
        accepted = silent.accepted

    assert result.returncode == 0, result.stderr
    assert primary.requests == []  # inactive: never contacted
    assert accepted >= 1
    assert len(downloads(secondary)) == len(locked_packages(small_project))
    log = proxy.log()
    assert "upstream dead failed: connection failed" in log
    assert "upstream silent failed: timed out after 300 ms" in log
    assert re.search(r"GET static\.crates\.io/crates/anyhow/1\.0\.69/download 200 good miss", log)


def test_wrong_credentials_fail_over_and_are_reported(primary, secondary, entry, start_proxy, new_cargo, small_project):
    proxy = start_proxy([entry(primary, password="wrong-password", priority=1), entry(secondary, priority=2)])

    result = new_cargo(proxy).fetch(small_project)

    assert result.returncode == 0, result.stderr
    assert primary.requests and all(
        r.headers.get("authorization") == basic_auth_header(USER, "wrong-password") for r in primary.requests
    )
    assert downloads(primary) == []
    assert "upstream primary failed: config.json: HTTP 401" in proxy.log()
    assert "wrong-password" not in proxy.log()


def test_wrong_credentials_on_the_only_upstream_give_cargo_a_502_naming_it(
    primary, entry, start_proxy, new_cargo, small_project
):
    proxy = start_proxy([entry(primary, password="wrong-password")])

    result = new_cargo(proxy, CARGO_NET_RETRY="0").fetch(small_project)

    assert result.returncode != 0
    assert "502" in result.stderr
    assert "primary: config.json: HTTP 401" in result.stderr


def test_corrupted_crate_is_rejected_and_fetched_from_the_next_upstream(
    registry, primary, secondary, entry, start_proxy, new_cargo, small_project
):
    primary.corrupt.add("anyhow")
    proxy = start_proxy([entry(primary, priority=1), entry(secondary, priority=2)])

    result = new_cargo(proxy).fetch(small_project)

    assert result.returncode == 0, result.stderr
    assert downloads(secondary) == ["/crates/anyhow/1.0.69/download"]
    assert "checksum mismatch for anyhow 1.0.69" in proxy.log()
    # What was cached is the good copy: it is served again with every upstream down.
    primary.stop()
    secondary.stop()
    (small_project / "Cargo.lock").unlink()
    assert new_cargo(proxy).fetch(small_project).returncode == 0


def test_corrupted_crate_on_the_only_upstream_is_never_served(primary, entry, start_proxy, new_cargo, small_project):
    primary.corrupt.add("anyhow")
    proxy = start_proxy([entry(primary)])
    cargo = new_cargo(proxy, CARGO_NET_RETRY="0")

    result = cargo.fetch(small_project)

    assert result.returncode != 0
    assert "502" in result.stderr and "checksum mismatch for anyhow 1.0.69" in result.stderr
    assert "anyhow" not in (cargo.home / "registry" / "cache").glob("*/*").__str__()
    assert not list((cargo.home / "registry" / "cache").glob("*/anyhow-*.crate"))


def test_crate_missing_on_the_first_upstream_comes_from_the_next(
    primary, secondary, entry, start_proxy, new_cargo, small_project
):
    primary.missing.add("log")
    proxy = start_proxy([entry(primary, priority=1), entry(secondary, priority=2)])

    result = new_cargo(proxy).fetch(small_project)

    assert result.returncode == 0, result.stderr
    assert "/index/3/l/log" in primary.paths() and "/index/3/l/log" in secondary.paths()
    assert downloads(secondary) == ["/crates/log/0.4.17/download"]
    assert "upstream primary failed" not in proxy.log()  # a 404 is "not here", not a failure


def test_crate_missing_everywhere_is_a_404_cargo_understands(
    primary, secondary, entry, start_proxy, new_cargo, small_project
):
    primary.missing.add("log")
    secondary.missing.add("log")
    proxy = start_proxy([entry(primary, priority=1), entry(secondary, priority=2)])

    result = new_cargo(proxy).fetch(small_project)

    assert result.returncode != 0
    assert "no matching package named `log` found" in result.stderr
    assert re.search(r"GET index\.crates\.io/3/l/log 404 - not_found", proxy.log())
