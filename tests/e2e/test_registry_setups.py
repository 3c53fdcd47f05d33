"""Registries as teams configure them: indexes under a path (Artifactory, Kellnr, Cloudsmith, Nexus), several
registries on one host. Real cargo through a real mitmdump; upstreams are local servers."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.e2e.test_faults import proxy_client
from tests.harness import Cargo, Proxy, cli, locked_packages, make_project

CORP = "https://corp.example/artifactory/api/cargo/{repo}/index/"


def registries_config(path, cache_dir, registries: list[dict], **cache) -> object:
    path.write_text(yaml.safe_dump({"cache": {"directory": str(cache_dir), **cache}, "registries": registries}))
    return path


def corp_cargo(home, proxy: Proxy, **repos: str) -> Cargo:
    """Cargo knowing the corp registries by their index URLs, as its configuration would name them."""
    home.mkdir()
    env = {f"CARGO_REGISTRIES_{name.upper().replace('-', '_')}_INDEX": f"sparse+{CORP.format(repo=repo)}"
           for name, repo in repos.items()}
    return Cargo(home, proxy, env)


def test_a_registry_whose_index_is_under_a_path_is_served_staged_and_served_offline(
    secondary, entry, confdir, tmp_path
):
    registries = [{"name": "corp", "index_url": CORP.format(repo="corp"), "proxies": [entry(secondary)]}]
    config = registries_config(tmp_path / "proxies.yaml", tmp_path / "cache", registries)
    project = make_project(tmp_path / "app", 'anyhow = { version = "1", registry = "corp" }\n'
                                             'log = { version = "0.4", registry = "corp" }\n')

    with Proxy(config, confdir, tmp_path / "online.log") as proxy:
        fetched = corp_cargo(tmp_path / "home-1", proxy, corp="corp").fetch(project)
        log = proxy.log()
    assert fetched.returncode == 0, fetched.stderr
    assert "GET corp.example/artifactory/api/cargo/corp/index/config.json 200 secondary miss" in log
    assert "GET corp.example/artifactory/api/cargo/corp/index/an/yh/anyhow 200 secondary miss" in log
    assert "GET corp.example/artifactory/api/cargo/corp/index/crates/anyhow/1.0.69/download 200 secondary miss" in log
    packages = locked_packages(project)
    assert ("anyhow", "1.0.69") in packages and ("cfg-if", "1.0.0") in packages  # log's dependency, same registry
    assert 'source = "sparse+https://corp.example/artifactory/api/cargo/corp/index/"' in (project / "Cargo.lock").read_text()

    # The gateway stages that lockfile into its own cache, and serves it with no upstream at all.
    staging = registries_config(tmp_path / "staging.yaml", tmp_path / "staged", registries)
    staged = cli(staging, "stage", str(project / "Cargo.lock"))
    assert staged.returncode == 0, staged.stdout + staged.stderr
    assert f"fetched {len(packages)}, already cached 0, failed 0, skipped 1" in staged.stdout  # the app itself

    secondary.stop()
    offline = registries_config(tmp_path / "offline.yaml", tmp_path / "staged", registries, offline=True)
    with Proxy(offline, confdir, tmp_path / "offline.log") as proxy:
        built = corp_cargo(tmp_path / "home-2", proxy, corp="corp").run(project, "fetch", "--locked")
        log = proxy.log()
    assert built.returncode == 0, built.stderr
    assert "GET corp.example/artifactory/api/cargo/corp/index/crates/log/0.4.17/download 200 cache hit" in log


def test_two_registries_on_one_host_under_different_paths_each_reach_their_own_upstream(
    primary, secondary, registry, entry, confdir, tmp_path
):
    registries = [
        {"name": "team-a", "index_url": CORP.format(repo="team-a"), "proxies": [entry(secondary)]},
        {"name": "team-b", "index_url": CORP.format(repo="team-b"), "proxies": [entry(primary)]},
    ]
    config = registries_config(tmp_path / "proxies.yaml", tmp_path / "cache", registries)
    project = make_project(tmp_path / "app", 'anyhow = { version = "1", registry = "team-a" }\n'
                                             'log = { version = "0.4", registry = "team-b" }\n')

    with Proxy(config, confdir, tmp_path / "mitmdump.log") as proxy:
        fetched = corp_cargo(tmp_path / "home", proxy, team_a="team-a", team_b="team-b").fetch(project)
        log = proxy.log()

    assert fetched.returncode == 0, fetched.stderr
    assert "/crates/anyhow/1.0.69/download" in secondary.paths()
    assert not any("anyhow" in p for p in primary.paths())
    assert any("log-0.4.17" in p or "/log/0.4.17" in p for p in primary.paths())
    assert not any("/log/" in p for p in secondary.paths())
    assert "GET corp.example/artifactory/api/cargo/team-b/index/3/l/log 200 primary miss" in log


def test_index_lines_cargo_skips_are_accepted_and_a_version_without_a_valid_checksum_is_never_served(
    registry, entry, start_proxy, new_cargo, small_project, tmp_path
):
    import json
    import ssl

    import httpx

    from tests.fixtures.registry import Registry
    from tests.fixtures.upstream import UpstreamServer

    newer_format = {"name": "log", "vers": "0.4.99", "deps": [], "features": {}, "v": 3}  # no cksum
    not_hex = {"name": "log", "vers": "0.3.99", "deps": [], "features": {}, "cksum": "Z" * 64, "yanked": False}
    own = Registry(index_files=dict(registry.index_files), crates=dict(registry.crates))
    own.index_files["log"] += b"".join(json.dumps(x).encode() + b"\n" for x in (newer_format, not_hex))
    own.index_files["nothing"] = b""  # an index file that lists no versions
    empty_project = make_project(tmp_path / "empty", 'nothing = "1"\n')

    with UpstreamServer(own, name="origin") as origin:
        proxy = start_proxy([entry(origin)])
        fetched = new_cargo(proxy).fetch(small_project)
        missing = new_cargo(proxy, CARGO_NET_RETRY="0").run(empty_project, "generate-lockfile")
        with httpx.Client(proxy=proxy.url, verify=ssl.create_default_context(cafile=str(proxy.ca_cert))) as c:
            unverifiable = c.get("https://static.crates.io/crates/log/0.3.99/download")
        log = proxy.log()

    assert fetched.returncode == 0, fetched.stderr  # the file was not refused over lines Cargo skips
    assert ("log", "0.4.17") in locked_packages(small_project)
    assert missing.returncode != 0 and "no matching package named `nothing` found" in missing.stderr
    assert "GET index.crates.io/no/th/nothing 200 origin miss 0B" in log  # not a 502 (and four retries)
    assert unverifiable.status_code == 404
    assert unverifiable.text == ("log 0.3.99: its index line has no valid cksum, so its download cannot be verified "
                                 "and is not served\n")
    assert "/crates/log/0.3.99/download" not in origin.paths()


@pytest.mark.parametrize("multiplexing", ["true", "false"])  # HTTP/2, and HTTP/1.1 with its pool of connections
def test_a_locked_build_finds_a_version_published_after_the_proxy_cached_the_index(
    registry, entry, start_proxy, new_cargo, small_project, tmp_path, multiplexing
):
    from tests.fixtures.registry import Registry
    from tests.fixtures.upstream import UpstreamServer

    own = Registry(index_files=dict(registry.index_files), crates=dict(registry.crates))
    published = own.index_files["log"]
    with UpstreamServer(own, name="origin") as origin:
        locker = start_proxy([entry(origin)], cache_dir=tmp_path / "lock-cache")
        assert new_cargo(locker).run(small_project, "generate-lockfile").returncode == 0  # pins log 0.4.17
        locker.stop()

        # The proxy caches log's index file before 0.4.17 is published (an older version only).
        older = published.replace(b'"vers":"0.4.17"', b'"vers":"0.4.16"')
        assert older != published
        own.index_files["log"] = older
        proxy = start_proxy([entry(origin)])  # index_ttl 300: the cached file stays fresh for the whole test
        with proxy_client(proxy) as c:
            assert b'"vers":"0.4.16"' in c.get("https://index.crates.io/3/l/log").content
        own.index_files["log"] = published  # published upstream
        origin.clear()

        built = new_cargo(proxy, CARGO_HTTP_MULTIPLEXING=multiplexing).run(small_project, "fetch", "--locked")
        log = proxy.log()
        asked = origin.paths().count("/index/3/l/log")
        again = [new_cargo(proxy).run(small_project, "fetch", "--locked") for _ in range(2)]

    assert built.returncode == 0, built.stderr
    # Cargo asked again for the file it had been given; that re-ask was revalidated upstream, once.
    assert asked == 1
    assert "/crates/log/0.4.17/download" in origin.paths()
    assert re.search(r"GET index\.crates\.io/3/l/log 200 origin updated", log)
    assert all(r.returncode == 0 for r in again)  # later builds find 0.4.17 in the cache
