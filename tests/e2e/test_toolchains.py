"""Rust toolchains through the proxy: the real rustup 1.29, with only HTTPS_PROXY and SSL_CERT_FILE, against
local dist servers serving toolchains the suite builds (tests.fixtures.dist), through a real mitmdump."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
import time
from pathlib import Path

import httpx
import pytest

from tests.fixtures.dist import ToolchainSpec, write_toolchain
from tests.fixtures.dist_server import DistServer
from tests.fixtures.rustup import Rustup
from tests.harness import ROOT, cli, free_port, write_proxies

pytestmark = pytest.mark.timeout(180)

WASM = "wasm32-unknown-unknown"
DIST_HOST = "static.rust-lang.org"
STABLE = ToolchainSpec(targets=(WASM,), big={"rustc": 3_000_000})  # rustc above FILE_THRESHOLD: the streamed path
NEXT = ToolchainSpec(version="1.96.0", date="2026-05-28", targets=(WASM,))


def toolchains(*servers: DistServer, ttl: int = 3600) -> dict:
    return {"host": DIST_HOST, "ttl": ttl,
            "proxies": [{"name": s.name, "url": s.url, "priority": i} for i, s in enumerate(servers)]}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "tree").mkdir()
    write_toolchain(tmp_path / "tree", STABLE)
    return tmp_path / "tree"


@pytest.fixture
def origin(tree: Path):
    with DistServer(tree, name="origin") as server:
        yield server


@pytest.fixture
def new_rustup(tmp_path: Path):
    made = iter(range(100))

    def make(proxy) -> Rustup:
        return Rustup(tmp_path / f"rustup-{next(made)}", {"HTTPS_PROXY": proxy.url, "SSL_CERT_FILE": str(proxy.ca_cert)})

    return make


def test_cold_warm_and_upstream_down_installs_are_verified_and_served_from_the_cache(start_proxy, origin, new_rustup):
    status_port = free_port()
    proxy = start_proxy([], toolchains=toolchains(origin), args=("--set", f"cargo_status_port={status_port}"))
    first = new_rustup(proxy)
    first.install("stable")
    assert first.rustc_version("stable") == STABLE.rustc_output
    components = [p.lstrip("/") for p in origin.paths() if p.endswith(".tar.xz")]
    assert sorted(components) == sorted(write_toolchain(origin.root, STABLE).minimal_paths)
    assert all(origin.count(p) == 1 for p in components)
    assert origin.count("dist/channel-rust-stable.toml") == 1

    asked = len(origin.requests)
    second = new_rustup(proxy)
    second.install("stable")
    assert second.rustc_version("stable") == STABLE.rustc_output
    assert len(origin.requests) == asked  # within the TTL nothing at all goes upstream

    origin.stop()
    third = new_rustup(proxy)
    third.install("stable")
    assert third.rustc_version("stable") == STABLE.rustc_output
    log = proxy.log()
    assert f"GET {DIST_HOST}/{STABLE.component_path('rustc')} 200 origin miss" in log
    assert f"GET {DIST_HOST}/{STABLE.component_path('rustc')} 200 cache hit" in log
    dist_lines = [line for line in log.splitlines() if f" {DIST_HOST}/" in line]
    assert dist_lines and all(line.endswith("HTTP/1.1") for line in dist_lines)  # rustup offers h2; it gets HTTP/1.1

    status = f"http://127.0.0.1:{status_port}"
    metrics = httpx.get(status + "/metrics", timeout=10).text
    assert 'cargo_cache_requests_total{kind="component",outcome="miss",registry="toolchains"} 3.0' in metrics
    assert 'cargo_cache_requests_total{kind="component",outcome="hit",registry="toolchains"} 6.0' in metrics
    assert 'cargo_cache_entries{kind="component"} 3.0' in metrics
    listed = httpx.get(status + "/status.json", timeout=10).json()["registries"]
    assert [(r["name"], r["index_host"], [u["name"] for u in r["upstreams"]]) for r in listed] == \
        [("toolchains", DIST_HOST, ["origin"])]


def test_a_pinned_version_with_the_default_profile_and_an_extra_target(start_proxy, origin, new_rustup):
    proxy = start_proxy([], toolchains=toolchains(origin))
    rustup = new_rustup(proxy)
    rustup.install("1.95.0", profile="default", targets=(WASM,))
    assert rustup.rustc_version("1.95.0") == STABLE.rustc_output
    built = write_toolchain(origin.root, STABLE)
    assert origin.count(built.target_std_path(WASM)) == 1
    assert all(origin.count(p) == 1 for p in built.default_paths)
    assert origin.count("dist/channel-rust-1.95.0.toml") == 1


def test_a_corrupted_component_from_the_first_upstream_is_rejected_and_the_seconds_served(
        start_proxy, tree, origin, new_rustup):
    rustc = STABLE.component_path("rustc")
    with DistServer(tree, name="broken") as broken:
        broken.corrupt.add(rustc)
        proxy = start_proxy([], toolchains=toolchains(broken, origin))
        rustup = new_rustup(proxy)
        rustup.install("stable")
        assert rustup.rustc_version("stable") == STABLE.rustc_output
        assert (broken.count(rustc), origin.count(rustc)) == (1, 1)
        assert "upstream broken failed: checksum mismatch for rustc-1.95.0" in proxy.log()
        again = new_rustup(proxy)
        again.install("stable")  # the good copy was kept; the bad one never was
        assert (broken.count(rustc), origin.count(rustc)) == (1, 1)


def test_an_upstream_moving_between_its_sha256_and_its_manifest_still_installs(start_proxy, tree, origin, new_rustup):
    moved = []

    def publish_next(path: str) -> None:  # the release lands right after the proxy read the old .sha256
        if path == "dist/channel-rust-stable.toml" and not moved:
            moved.append(write_toolchain(tree, NEXT))

    origin.before_serve.append(publish_next)
    proxy = start_proxy([], toolchains=toolchains(origin))
    rustup = new_rustup(proxy)
    rustup.install("stable")
    assert moved and rustup.rustc_version("stable") == NEXT.rustc_output
    assert origin.count("dist/channel-rust-stable.toml.sha256") == 2  # asked again when the pair disagreed


def test_rustup_update_gets_the_moved_channel_once_the_ttl_has_passed(start_proxy, tree, origin, new_rustup):
    proxy = start_proxy([], toolchains=toolchains(origin, ttl=2))
    rustup = new_rustup(proxy)
    rustup.install("stable")
    write_toolchain(tree, NEXT)
    rustup.run("update", "stable", "--no-self-update", check=True)
    assert rustup.rustc_version("stable") == STABLE.rustc_output  # within the TTL: the proxy's copy stands
    time.sleep(2.2)
    rustup.run("update", "stable", "--no-self-update", check=True)
    assert rustup.rustc_version("stable") == NEXT.rustc_output
    log = proxy.log()
    assert "dist/channel-rust-stable.toml.sha256 200 origin updated" in log  # the .sha256 revalidates
    assert "dist/channel-rust-stable.toml 200 cache hit" in log  # and its manifest comes with it


def test_the_dist_host_answers_only_its_layout_and_ranges_on_cached_components(start_proxy, origin, new_rustup):
    proxy = start_proxy([], toolchains=toolchains(origin))
    new_rustup(proxy).install("stable")
    rustc = STABLE.component_path("rustc")
    whole = (origin.root / rustc).read_bytes()

    def curl(path: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["curl", "-sS", "--proxy", proxy.url, "--cacert", str(proxy.ca_cert), *args,
                               f"https://{DIST_HOST}/{path}"], capture_output=True, timeout=30)

    part = curl(rustc, "-H", "Range: bytes=1000-1999", "-w", "\n%{http_code}")
    body, status = part.stdout.rsplit(b"\n", 1)
    assert (status, body) == (b"206", whole[1000:2000])
    asked = len(origin.requests)
    refused = curl("index.html", "-w", "\n%{http_code}")
    assert refused.stdout.endswith(b"\n404") and b"not a rustup dist path: /index.html" in refused.stdout
    assert len(origin.requests) == asked  # never passed on


def tamper(bundle: Path, out: Path, name: str) -> None:
    """A copy of `bundle` whose blob for the component `name` is other bytes, the bundle's own manifest updated
    to match them: only the channel manifest's hash can tell."""
    import hashlib
    with tarfile.open(bundle) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    manifest = json.loads(members[0][1])
    entry = next(e for e in manifest["entries"] if e["key"].endswith(name))
    bad = b"tampered" * 100
    old_blob, entry["sha256"], entry["size"] = entry["sha256"], hashlib.sha256(bad).hexdigest(), len(bad)
    with tarfile.open(out, "w") as tar:
        for member, data in members:
            if member.name == "manifest.json":
                data = json.dumps(manifest).encode()
            elif member.name == f"blobs/{old_blob}":
                member.name, data = f"blobs/{entry['sha256']}", bad
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))


def test_stage_from_a_toolchain_file_export_import_and_install_offline(tmp_path, origin, start_proxy, new_rustup):
    project = tmp_path / "project"
    project.mkdir()
    (project / "rust-toolchain.toml").write_text(
        f'[toolchain]\nchannel = "1.95.0"\nprofile = "minimal"\ntargets = ["{WASM}"]\n')
    section = toolchains(origin)
    connected = write_proxies(tmp_path / "connected.yaml", [], tmp_path / "connected-cache", section)
    staged = cli(connected, "stage", "--toolchain-file", str(project / "rust-toolchain.toml"))
    assert staged.returncode == 0, staged.stdout + staged.stderr
    assert "toolchains: fetched 5, already cached 0, failed 0" in staged.stdout  # the manifest and 4 components
    by_make = subprocess.run(["make", "-s", "stage", f"PROXIES={connected}", "TOOLCHAIN=stable",
                              f"TARGETS={STABLE.host} {WASM}", "PROFILE=minimal", "COMPONENTS=rust-src"],
                             cwd=ROOT, capture_output=True, text=True, timeout=120)
    # stable is 1.95.0 too: its manifest is one more name, rust-src the one more file; the rest is cached
    assert "toolchains: fetched 2, already cached 4, failed 0" in by_make.stdout, by_make.stdout + by_make.stderr
    exported = cli(connected, "export", str(tmp_path / "site.bundle"))
    assert exported.returncode == 0, exported.stderr
    assert "9 toolchain files" in exported.stdout  # the manifest under 4 names, and 5 components
    origin.stop()

    tampered = tmp_path / "tampered.bundle"
    tamper(tmp_path / "site.bundle", tampered, STABLE.component_filename("rust-std", WASM))
    site = write_proxies(tmp_path / "site.yaml", [], tmp_path / "site-cache", section, offline=True)
    refused = cli(site, "import", str(tampered))
    assert refused.returncode == 1 and "does not match the hash its channel manifest lists" in refused.stderr
    assert "toolchain" not in cli(site, "ls").stdout.split("\n", 1)[1]  # nothing imported

    imported = cli(site, "import", str(tmp_path / "site.bundle"))
    assert imported.returncode == 0, imported.stderr
    listing = cli(site, "ls", "--kind", "manifest").stdout
    for name in ("1.95.0", "stable", "1.95", "stable-2026-04-16"):  # staged, and the names a pinned client may use
        assert f" {name} " in listing
    proxy = start_proxy([], cache_dir=tmp_path / "site-cache", toolchains=section, offline=True)
    rustup = new_rustup(proxy)
    rustup.install("1.95", targets=(WASM,))
    assert rustup.rustc_version("1.95") == STABLE.rustc_output
    missing = new_rustup(proxy).install("nightly", check=False)
    assert missing.returncode != 0
    assert "dist/channel-rust-nightly.toml.sha256 503" in proxy.log() and "was not staged" in proxy.log()
    assert "panicked" not in missing.stderr  # not a 4xx, on which rustup walks back from a date it never got

    purged = cli(site, "purge", "--toolchain", "1.95.0")
    assert purged.returncode == 0 and "removed 9 entries" in purged.stdout, purged.stdout  # 4 names, 5 components
    assert cli(site, "ls").stdout.strip().count("\n") == 0


def test_without_the_ca_rustup_dist_server_over_plain_http_through_the_proxy(start_proxy, origin, tmp_path):
    """RUSTUP_DIST_SERVER=http://static.rust-lang.org with http_proxy (lowercase: rustup ignores HTTP_PROXY, as
    curl does): rustup rewrites the manifest's URLs to it and sends every request as plain HTTP to the proxy,
    which answers them like the HTTPS ones: no CA to trust."""
    proxy = start_proxy([], toolchains=toolchains(origin))
    rustup = Rustup(tmp_path / "plain", {"http_proxy": proxy.url, "RUSTUP_DIST_SERVER": f"http://{DIST_HOST}",
                                         "SSL_CERT_FILE": None})
    rustup.install("stable")
    assert rustup.rustc_version("stable") == STABLE.rustc_output
    assert f"GET {DIST_HOST}/{STABLE.component_path('rustc')} 200 origin miss" in proxy.log()


def test_rustups_self_update_check_and_rustup_init_go_through_the_proxy(start_proxy, tree, origin, tmp_path):
    proxy = start_proxy([], toolchains=toolchains(origin))
    rustup = Rustup(tmp_path / "installed", {"HTTPS_PROXY": proxy.url, "SSL_CERT_FILE": str(proxy.ca_cert)},
                    installed=True)
    rustup.run("toolchain", "install", "stable", "--profile", "minimal", check=True)  # with its self-update check
    assert origin.count("rustup/release-stable.toml") == 1
    assert f"GET {DIST_HOST}/rustup/release-stable.toml 200 origin miss" in proxy.log()

    init = f"rustup/dist/{STABLE.host}/rustup-init"
    got = subprocess.run(["curl", "-sS", "--fail", "--proxy", proxy.url, "--cacert", str(proxy.ca_cert),
                          f"https://{DIST_HOST}/{init}", f"https://{DIST_HOST}/{init}.sha256"],
                         capture_output=True, timeout=30)
    body = (tree / init).read_bytes()
    assert got.returncode == 0 and got.stdout == body + (tree / f"{init}.sha256").read_bytes()
    archived = next(p for p in origin.root.glob("rustup/archive/*/*/rustup-init")).relative_to(origin.root)
    (tree / archived).write_bytes(b"#!/bin/sh\necho tampered\n")  # no longer matches its .sha256 upstream
    refused = subprocess.run(["curl", "-sS", "--proxy", proxy.url, "--cacert", str(proxy.ca_cert), "-w", "\n%{http_code}",
                              f"https://{DIST_HOST}/{archived}"], capture_output=True, timeout=30)
    assert refused.stdout.endswith(b"\n502") and b"origin: checksum mismatch for rustup/archive/" in refused.stdout


def test_a_mirrors_manifest_of_another_channel_and_date_cannot_rewrite_a_components_hash(start_proxy, tree, origin,
                                                                                         tmp_path):
    """Issue 27, item 2: a priority-2 mirror serving only dist/2020-01-01/channel-rust-beta.toml, which lists the
    stable clippy path with the hash of its own bytes, must neither make the genuine file fail nor get its bytes
    served."""
    import hashlib
    import ssl

    from tests.fixtures.dist import write_file, write_with_sha256

    clippy = STABLE.component_path("clippy-preview")
    genuine = (tree / clippy).read_bytes()
    evil = b"not clippy" * 1000
    manifest = (tree / STABLE.manifest_path).read_text()
    foreign = manifest.replace(f'date = "{STABLE.date}"', 'date = "2020-01-01"').replace(
        hashlib.sha256(genuine).hexdigest(), hashlib.sha256(evil).hexdigest())
    assert foreign.count(hashlib.sha256(evil).hexdigest()) == 1
    (tmp_path / "mirror").mkdir()
    write_with_sha256(tmp_path / "mirror", "dist/2020-01-01/channel-rust-beta.toml", foreign.encode())
    write_file(tmp_path / "mirror" / clippy, evil)
    with DistServer(tmp_path / "mirror", name="mirror") as mirror:
        proxy = start_proxy([], toolchains=toolchains(origin, mirror))
        verify = ssl.create_default_context(cafile=str(proxy.ca_cert))
        with httpx.Client(proxy=proxy.url, verify=verify, timeout=30) as client:
            planted = client.get(f"https://{DIST_HOST}/dist/2020-01-01/channel-rust-beta.toml")
            served = client.get(f"https://{DIST_HOST}/{clippy}")
            checksum = client.get(f"https://{DIST_HOST}/{clippy}.sha256")
            client.get(f"https://{DIST_HOST}/dist/channel-rust-stable.toml")
            again = client.get(f"https://{DIST_HOST}/{clippy}")
        assert planted.status_code == 200 and planted.headers["x-cache-upstream"] == "mirror"
        assert (served.status_code, served.headers["x-cache-upstream"], served.content) == (200, "origin", genuine)
        assert checksum.text.split()[0] == hashlib.sha256(genuine).hexdigest()
        assert again.content == genuine
        assert mirror.count(clippy) == 0 and origin.count(clippy) == 1
        assert "checksum mismatch" not in proxy.log()


def test_a_bundle_cannot_replace_a_staged_component_through_a_manifest_of_another_channel_and_date(
        start_proxy, origin, tree, tmp_path):
    """Issue 27, item 2, the bundle variant (it imported with exit 0 and replaced the cached good component)."""
    import hashlib
    import ssl

    from tests.test_bundle import item, write_bundle

    site = write_proxies(tmp_path / "site.yaml", [], tmp_path / "site-cache", toolchains(origin))
    staged = cli(site, "stage", "--toolchain", "stable", "--component", "clippy")
    assert staged.returncode == 0, staged.stdout + staged.stderr
    clippy = STABLE.component_path("clippy-preview")
    genuine = (tree / clippy).read_bytes()
    evil = b"not clippy" * 1000
    foreign = (tree / STABLE.manifest_path).read_bytes().replace(f'date = "{STABLE.date}"'.encode(),
                                                                 b'date = "2020-01-01"').replace(
        hashlib.sha256(genuine).hexdigest().encode(), hashlib.sha256(evil).hexdigest().encode())
    now = {"stored_at": time.time(), "checked_at": time.time()}
    entries = [item("manifest/dist/2020-01-01/channel-rust-beta.toml", foreign, **now),
               item(f"component/{clippy}", evil, **now)]
    bundle = write_bundle(tmp_path / "forged.bundle", entries,
                          {hashlib.sha256(b).hexdigest(): b for b in (foreign, evil)})

    imported = cli(site, "import", str(bundle))

    assert imported.returncode == 1, imported.stdout
    assert "import rejected, nothing imported" in imported.stderr
    # only the staged stable manifests of its day may vouch for it, and they list the genuine hash
    assert f"toolchain file {clippy} does not match the hash its channel manifest lists" in imported.stderr
    listing = cli(site, "ls", "--json").stdout
    assert "channel-rust-beta" not in listing and "2020-01-01" not in listing
    section = toolchains(origin)
    origin.stop()
    proxy = start_proxy([], cache_dir=tmp_path / "site-cache", toolchains=section, offline=True)
    with httpx.Client(proxy=proxy.url, verify=ssl.create_default_context(cafile=str(proxy.ca_cert))) as client:
        served = client.get(f"https://{DIST_HOST}/{clippy}")
    assert (served.status_code, served.content) == (200, genuine)
