"""Air-gap staging: stage from Cargo.lock, export, import, serve offline; cache inspection."""

from __future__ import annotations

import re
import ssl
import time

import httpx
import pytest

from tests.fixtures.registry import Registry
from tests.fixtures.upstream import UpstreamServer
from tests.harness import cli, locked_packages, write_proxies

GIT_PACKAGE = '\n[[package]]\nname = "private-tool"\nversion = "0.3.0"\nsource = "git+https://git.example.com/tool#0123abcd"\n'


SMALL_LOCK = [("anyhow", "1.0.69"), ("log", "0.4.17"), ("cfg-if", "1.0.0")]


def lockfile_of(folder, packages) -> object:
    """A hand-written Cargo.lock naming crates.io packages."""
    path = folder / "Cargo.lock"
    path.write_text("version = 3\n" + "".join(
        f'\n[[package]]\nname = "{n}"\nversion = "{v}"\nsource = "registry+https://github.com/rust-lang/crates.io-index"\n'
        for n, v in packages))
    return path


def lock(project, secondary, entry, start_proxy, new_cargo, tmp_path):
    """A Cargo.lock made by real cargo (through a throwaway proxy and cache), plus a git package."""
    proxy = start_proxy([entry(secondary)], cache_dir=tmp_path / "lock-cache")
    assert new_cargo(proxy).run(project, "generate-lockfile").returncode == 0
    proxy.stop()
    lockfile = project / "Cargo.lock"
    lockfile.write_text(lockfile.read_text() + GIT_PACKAGE)
    return lockfile


def test_stage_export_import_and_serve_offline(secondary, entry, start_proxy, new_cargo, full_project, tmp_path):
    lockfile = lock(full_project, secondary, entry, start_proxy, new_cargo, tmp_path)
    packages = locked_packages(full_project)
    connected = write_proxies(tmp_path / "connected.yaml", [entry(secondary)], tmp_path / "connected-cache")
    secondary.clear()

    staged = cli(connected, "stage", str(lockfile))
    again = cli(connected, "stage", str(full_project))  # a folder of lockfiles
    bundle = tmp_path / "crates.bundle"
    exported = cli(connected, "export", str(bundle), "--lockfile", str(lockfile))

    assert staged.returncode == 0, staged.stdout + staged.stderr
    assert f"fetched {len(packages)}, already cached 0, failed 0, skipped 2" in staged.stdout  # git + the project itself
    assert "skipped private-tool 0.3.0: git source" in staged.stdout
    assert again.returncode == 0 and f"fetched 0, already cached {len(packages)}, failed 0" in again.stdout
    assert sorted(p for p in secondary.paths() if p.startswith("/crates/")) == sorted(
        f"/crates/{n}/{v}/download" for n, v in packages)
    assert exported.returncode == 0, exported.stderr
    assert f"({len(packages)} crates, {len(packages)} index files" in exported.stdout

    isolated = write_proxies(tmp_path / "isolated.yaml", [entry(secondary)], tmp_path / "isolated-cache",
                             offline=True)
    imported = cli(isolated, "import", str(bundle))
    twice = cli(isolated, "import", str(bundle))
    assert imported.returncode == 0 and twice.returncode == 0, imported.stderr + twice.stderr
    assert imported.stdout.split(" into ")[0] == twice.stdout.split(" into ")[0]
    entries = 2 * len(packages) + 1  # each crate, its index file, and the registry's config.json
    assert imported.stdout.rstrip().endswith(f": {entries} new, 0 already present"), imported.stdout
    assert twice.stdout.rstrip().endswith(f": 0 new, {entries} already present"), twice.stdout

    upstream = entry(secondary)
    secondary.stop()
    proxy = start_proxy([upstream], cache_dir=tmp_path / "isolated-cache", offline=True)
    fetched = new_cargo(proxy).run(full_project, "fetch")
    (full_project / "Cargo.lock").unlink()
    resolved = new_cargo(proxy).fetch(full_project)

    assert fetched.returncode == 0, fetched.stderr
    assert resolved.returncode == 0, resolved.stderr
    assert "offline mode: serving only what is cached" in proxy.log()
    assert "upstream" not in proxy.log().split("proxy listening")[1]  # no upstream was ever tried


def test_an_offline_miss_says_it_was_not_staged(secondary, entry, start_proxy, new_cargo, small_project, tmp_path):
    from tests.e2e.test_operations import status_proxy

    proxy = status_proxy(start_proxy, [entry(secondary)], offline=True)

    result = new_cargo(proxy, CARGO_NET_RETRY="0").fetch(small_project)
    with httpx.Client(proxy=proxy.url, verify=ssl.create_default_context(cafile=str(proxy.ca_cert))) as c:
        index = c.get("https://index.crates.io/an/yh/anyhow")
        crate = c.get("https://static.crates.io/crates/anyhow/1.0.69/download")

    assert result.returncode != 0
    assert index.status_code == 403 and "the index file of crate anyhow was not staged" in index.text
    assert crate.status_code == 404 and "crate anyhow 1.0.69 was not staged" in crate.text
    assert secondary.requests == []
    # Where an operator looks: the proxy's log line and the status page's recent requests give the reason.
    assert re.search(r"GET static\.crates\.io/crates/anyhow/1\.0\.69/download 404 - not_found \d+B \d+ms HTTP/\S+: "
                     r"crate anyhow 1\.0\.69 was not staged \(offline mode", proxy.log())
    assert re.search(r"GET index\.crates\.io/\S+ 403 - not_found .*: the index file of crate \S+ was not staged",
                     proxy.log())  # cargo's own request
    recent = httpx.get(proxy.status_url + "/status.json").json()["recent"]
    reasons = {r["path"]: r["reason"] for r in recent}
    assert reasons["/crates/anyhow/1.0.69/download"].startswith("crate anyhow 1.0.69 was not staged (offline mode")
    from tests.e2e.test_fleet import status_page_dom
    assert "crate anyhow 1.0.69 was not staged (offline mode" in status_page_dom(proxy, tmp_path)


def test_offline_index_lists_only_staged_versions_when_pruning(
    registry, entry, start_proxy, new_cargo, small_project, tmp_path
):
    newer = b'{"name":"log","vers":"0.4.99","deps":[],"cksum":"' + b"ab" * 32 + b'","features":{},"yanked":false}\n'
    own = Registry(index_files=dict(registry.index_files), crates=dict(registry.crates))
    own.index_files["log"] = own.index_files["log"] + newer
    with UpstreamServer(own, name="origin") as origin:
        config = write_proxies(tmp_path / "p.yaml", [entry(origin)], tmp_path / "staged")
        assert cli(config, "stage", str(lockfile_of(tmp_path, SMALL_LOCK))).returncode == 0

    stopped = {"name": "origin", "url": "http://127.0.0.1:9/index/"}
    pruned = start_proxy([stopped], cache_dir=tmp_path / "staged", offline=True, offline_prune_index=True)
    plain = start_proxy([stopped], cache_dir=tmp_path / "staged", offline=True)
    versions = {}
    for label, proxy in (("pruned", pruned), ("plain", plain)):
        with httpx.Client(proxy=proxy.url, verify=ssl.create_default_context(cafile=str(proxy.ca_cert))) as c:
            body = c.get("https://index.crates.io/3/l/log").text
        versions[label] = re.findall(r'"vers":"([^"]+)"', body)
    resolved = new_cargo(pruned).fetch(small_project)

    assert versions == {"pruned": ["0.4.17"], "plain": ["0.4.17", "0.4.99"]}
    assert resolved.returncode == 0, resolved.stderr
    assert locked_packages(small_project)[("log", "0.4.17")]


def test_a_corrupted_or_truncated_bundle_imports_nothing(secondary, entry, tmp_path):
    connected = write_proxies(tmp_path / "c.yaml", [entry(secondary)], tmp_path / "c-cache")
    assert cli(connected, "stage", str(lockfile_of(tmp_path, [("anyhow", "1.0.69")]))).returncode == 0
    bundle = tmp_path / "b.bundle"
    assert cli(connected, "export", str(bundle)).returncode == 0
    data = bundle.read_bytes()
    corrupted, truncated = tmp_path / "corrupted.bundle", tmp_path / "truncated.bundle"
    flip = data.rindex(b"\x1f\x8b") + 100  # inside the .crate's bytes
    corrupted.write_bytes(data[:flip] + bytes([data[flip] ^ 0xFF]) + data[flip + 1:])
    truncated.write_bytes(data[: len(data) // 2])
    target = write_proxies(tmp_path / "t.yaml", [entry(secondary)], tmp_path / "t-cache")

    bad = cli(target, "import", str(corrupted))
    short = cli(target, "import", str(truncated))
    listing = cli(target, "ls")

    assert bad.returncode == 1 and "import rejected, nothing imported" in bad.stderr and "corrupted" in bad.stderr
    assert short.returncode == 1 and "import rejected, nothing imported" in short.stderr
    assert listing.stdout.strip().splitlines()[1:] == []


def test_inspect_and_purge(secondary, entry, tmp_path):
    config = write_proxies(tmp_path / "c.yaml", [entry(secondary)], tmp_path / "cache")
    assert cli(config, "stage", str(lockfile_of(tmp_path, SMALL_LOCK))).returncode == 0

    listed = cli(config, "ls", "--kind", "crate").stdout
    stats = cli(config, "stats").stdout
    purged = cli(config, "purge", "--crate", "log").stdout
    after = cli(config, "ls").stdout
    emptied = cli(config, "purge", "--all").stdout

    assert re.search(r"crate\s+crates-io\s+anyhow\s+1\.0\.69\s+[\d.]+ (?:B|KiB|MiB)\s+secondary\s+\d+s", listed)
    assert len(listed.strip().splitlines()) == 4
    assert re.search(r"crate\s+3 entries", stats) and re.search(r"index\s+3 entries", stats)
    assert purged == "removed 2 entries\n" and " log " not in after and " anyhow " in after
    assert emptied.startswith("removed ") and cli(config, "ls").stdout.strip().count("\n") == 0


def test_listing_keeps_a_crates_own_spelling_and_purge_matches_names_as_cargo_does(registry, entry, tmp_path):
    import hashlib

    from tests.fixtures.registry import CrateFile, encode_index, index_entry, pack_crate

    source = tmp_path / "Inflector"
    (source / "src").mkdir(parents=True)
    (source / "src" / "lib.rs").write_text("")
    manifest = {"package": {"name": "Inflector", "version": "0.11.4", "edition": "2015"}}
    (source / "Cargo.toml").write_text('[package]\nname = "Inflector"\nversion = "0.11.4"\nedition = "2015"\n')
    data = pack_crate(source, "Inflector", "0.11.4")
    cksum = hashlib.sha256(data).hexdigest()
    own = Registry(index_files={**registry.index_files, "inflector": encode_index([index_entry(manifest, cksum)])},
                   crates={**registry.crates, ("Inflector", "0.11.4"): CrateFile("Inflector", "0.11.4", data, cksum)})

    with UpstreamServer(own, name="origin") as origin:
        config = write_proxies(tmp_path / "c.yaml", [entry(origin)], tmp_path / "cache")
        staged = cli(config, "stage", str(lockfile_of(tmp_path, [("Inflector", "0.11.4"), ("cfg-if", "1.0.0")])))
    listed = cli(config, "ls").stdout
    underscore = cli(config, "purge", "--crate", "cfg_if")
    absent = cli(config, "purge", "--crate", "not-cached")

    assert staged.returncode == 0, staged.stdout
    assert re.search(r"crate\s+crates-io\s+Inflector\s+0\.11\.4", listed)
    assert re.search(r"index\s+crates-io\s+Inflector\s+-", listed)
    assert underscore.returncode == 0 and underscore.stdout == "removed 2 entries\n"  # cfg-if's index and crate
    assert " cfg-if " not in cli(config, "ls").stdout
    assert absent.returncode == 1
    assert "nothing cached for crate not-cached (names are matched ignoring case and '-'/'_')" in absent.stderr


def test_stage_reports_failures_with_a_nonzero_exit(secondary, entry, tmp_path):
    secondary.missing.add("log")
    config = write_proxies(tmp_path / "c.yaml", [entry(secondary)], tmp_path / "cache")

    result = cli(config, "stage", str(lockfile_of(tmp_path, [("log", "0.4.17")])))

    assert result.returncode == 1
    assert result.stdout.count("FAILED") == 1  # one missing crate is one failure, not its index and itself
    assert "FAILED log 0.4.17: crate log not found on any upstream" in result.stdout
    assert "fetched 0, already cached 0, failed 1, skipped 0" in result.stdout
    assert "/index/3/l/log" in secondary.paths() and not any("/crates/" in p for p in secondary.paths())


def test_a_version_1_lockfile_has_its_metadata_checksums_checked(secondary, entry, registry, tmp_path):
    config = write_proxies(tmp_path / "c.yaml", [entry(secondary)], tmp_path / "cache")
    source = "registry+https://github.com/rust-lang/crates.io-index"
    good, wrong = registry.crate("log", "0.4.17").cksum, "0" * 64
    lockfile = tmp_path / "Cargo.lock"  # the format Cargo wrote before 1.41: checksums under [metadata]
    results = []
    for checksum in (wrong, good):
        lockfile.write_text(f'[[package]]\nname = "log"\nversion = "0.4.17"\nsource = "{source}"\n\n'
                            f'[metadata]\n"checksum log 0.4.17 ({source})" = "{checksum}"\n')
        results.append(cli(config, "stage", str(lockfile)))

    assert results[0].returncode == 1
    assert "FAILED log 0.4.17: lockfile checksum 0000000000000000… differs from the registry's" in results[0].stdout
    assert results[1].returncode == 0, results[1].stdout


def test_a_lockfile_name_that_is_a_path_trick_is_refused_before_any_upstream_request(secondary, entry, tmp_path):
    config = write_proxies(tmp_path / "c.yaml", [entry(secondary)], tmp_path / "cache")
    before = len(secondary.requests)

    result = cli(config, "stage", str(lockfile_of(tmp_path, [("log", "0.4.17"), ("../../admin/api/delete-all", "1.0.0")])))

    assert result.returncode == 2
    assert "package '../../admin/api/delete-all' '1.0.0': invalid crate name" in result.stderr
    assert secondary.requests[before:] == []  # not even the valid package: the lockfile is refused whole


def test_stage_fails_for_registry_crates_no_configured_registry_serves(secondary, entry, tmp_path):
    config = write_proxies(tmp_path / "c.yaml", [entry(secondary)], tmp_path / "cache")
    lockfile = lockfile_of(tmp_path, [("log", "0.4.17")])
    lockfile.write_text(lockfile.read_text() + '\n[[package]]\nname = "inhouse"\nversion = "1.0.0"\n'
                        'source = "sparse+https://cargo.corp.example/index/"\n')

    result = cli(config, "stage", str(lockfile))

    assert result.returncode == 1  # the offline build would fail on it
    assert "FAILED inhouse 1.0.0: registry not configured (sparse+https://cargo.corp.example/index/)" in result.stdout
    assert "fetched 1, already cached 0, failed 1, skipped 0" in result.stdout


def test_purge_names_a_bad_age_in_its_own_words(secondary, entry, tmp_path):
    config = write_proxies(tmp_path / "c.yaml", [entry(secondary)], tmp_path / "cache")
    result = cli(config, "purge", "--older-than", "30days")
    assert result.returncode == 2
    assert "expected an age such as 30d, 12h or 90m, got '30days'" in result.stderr


@pytest.mark.parametrize("how", [("--crate", "anyhow"), ("--older-than", "1s"), ("--all",)])
def test_a_purge_takes_entries_out_of_a_running_proxys_memory_too(secondary, entry, start_proxy, how):
    proxy = start_proxy([entry(secondary)])
    url = "https://static.crates.io/crates/anyhow/1.0.69/download"
    with httpx.Client(proxy=proxy.url, verify=ssl.create_default_context(cafile=str(proxy.ca_cert))) as c:
        assert c.get(url).headers["x-cache"] == "MISS"
        assert c.get(url).headers["x-cache"] == "HIT"  # from the memory tier
        time.sleep(6)  # an upkeep passes: the hit is no longer "recently served" (the case that was missed)
        assert cli(proxy.config, "purge", *how).returncode == 0
        time.sleep(6)  # the README's promise: within 5 s
        again = c.get(url)
    assert again.status_code == 200 and again.headers["x-cache"] == "MISS"
    assert [p for p in secondary.paths() if p.endswith("/download")] == ["/crates/anyhow/1.0.69/download"] * 2


# -- what a user sees in the terminal when something was not staged (issue 27, item 13) -----------------------


def test_cargo_prints_why_a_crate_it_needs_is_missing_offline(secondary, entry, start_proxy, new_cargo, small_project,
                                                              tmp_path):
    """An index file not staged is a 403 with the reason (Cargo shows the body of any failed answer but a 404,
    which it takes for "no such crate" and reports as `no matching package named ... found`)."""
    config = write_proxies(tmp_path / "c.yaml", [entry(secondary)], tmp_path / "staged")
    assert cli(config, "stage", str(lockfile_of(tmp_path, [("log", "0.4.17"), ("cfg-if", "1.0.0")]))).returncode == 0
    proxy = start_proxy([entry(secondary)], cache_dir=tmp_path / "staged", offline=True)

    result = new_cargo(proxy).fetch(small_project)  # Cargo's default retries: a 403 is not retried

    assert result.returncode == 101
    assert "no matching package" not in result.stderr
    assert "failed to get successful HTTP response from `https://index.crates.io/an/yh/anyhow` (127.0.0.1), got 403" \
        in result.stderr
    assert "the index file of crate anyhow was not staged (offline mode: no upstream is contacted)" in result.stderr
    assert "spurious network error" not in result.stderr


def test_rustup_reports_a_toolchain_not_staged_offline_without_panicking(start_proxy, tmp_path):
    from tests.fixtures.rustup import Rustup

    section = {"host": "static.rust-lang.org", "proxies": [{"name": "origin", "url": "http://127.0.0.1:9/"}]}
    proxy = start_proxy([], toolchains=section, offline=True)
    rustup = Rustup(tmp_path / "rustup", {"HTTPS_PROXY": proxy.url, "SSL_CERT_FILE": str(proxy.ca_cert)})

    nightly = rustup.install("nightly", check=False)
    beta = rustup.install("beta", check=False)

    # nightly: any 4xx makes rustup look for an older nightly from a date it never got (a panic: "Malformed
    # manifest date"); a 503 is a download it reports as failed
    assert nightly.returncode == 1 and "panicked" not in nightly.stderr, nightly.stderr
    assert ("could not download file from 'https://static.rust-lang.org/dist/channel-rust-nightly.toml.sha256'"
            in nightly.stderr and "unsuccessful status code: 503" in nightly.stderr)
    assert beta.returncode == 1 and "error: no release found for 'beta'" in beta.stderr, beta.stderr
    log = proxy.log()
    assert "GET static.rust-lang.org/dist/channel-rust-nightly.toml.sha256 503 - not_found" in log
    assert "dist/channel-rust-nightly.toml was not staged (offline mode" in log
