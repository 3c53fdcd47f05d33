"""The synthetic dist tree (tests.fixtures.dist) and its server (tests.fixtures.dist_server), proved with the
real rustup 1.29 (tests.fixtures.rustup), no proxy involved: rustup is pointed straight at the local server with
RUSTUP_DIST_SERVER / RUSTUP_UPDATE_ROOT.

What rustup 1.29.1 was seen to do here (asserted below where it matters to the proxy):
* `toolchain install stable`: GET dist/channel-rust-stable.toml.sha256, then the .toml, then one GET per
  component, two at a time, all `.tar.xz` when the manifest has xz_url (`.tar.gz` only without it); the
  combined rust-{ver}-{host} tarball, the .asc and the components' own .sha256 files are never fetched.
  Every request is `Accept: */*`, `User-Agent: rustup/1.29.1 (reqwest; rustls)`, on a new connection.
* a second install of an unchanged channel: the .sha256 only ("unchanged").
* `--no-self-update`: no rustup/release-stable.toml; without it, rustup asks for it after the components, but
  only when it is installed in CARGO_HOME/bin: otherwise the toolchain is installed and rustup exits 1
  ("rustup is not installed at ...") without asking.
* a manifest .sha256 answered 404 (also 401 and 403) is taken as "no such release": rustup then asks for the
  v1 name (dist/channel-rust-stable.sha256) and fails "no release found"; a 5xx is an error at once, no retry.
* a channel that moves between the .sha256 and the .toml: "checksum failed" for the manifest.
* a broken component download (connection reset) is retried within the run from byte 0 (no Range), 4 tries in
  all; a run killed mid-download leaves downloads/<sha256>.partial and the next run resumes it with
  `Range: bytes=<size>-`.
"""

from __future__ import annotations

import hashlib
import signal
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.fixtures.dist import RUSTUP_VERSION, ToolchainSpec, write_toolchain
from tests.fixtures.dist_server import DistServer
from tests.fixtures.rustup import Rustup

pytestmark = pytest.mark.timeout(120)

WASM = "wasm32-unknown-unknown"
STABLE = ToolchainSpec(targets=(WASM,))
UA_PREFIX = "rustup/1.29"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return tmp_path / "tree"


@pytest.fixture
def server(tree: Path):
    tree.mkdir()
    with DistServer(tree) as s:
        yield s


@pytest.fixture
def rustup(tmp_path: Path, server: DistServer) -> Rustup:
    return Rustup(tmp_path / "rustup", server.rustup_env())


def component_requests(server: DistServer) -> list[str]:
    return [p.lstrip("/") for p in server.paths() if p.endswith((".tar.xz", ".tar.gz"))]


def get(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers), error.read()


# -- the tree itself ------------------------------------------------------------------------------------------


def test_tree_is_deterministic_and_laid_out_like_upstream(tmp_path: Path) -> None:
    one = write_toolchain(tmp_path / "one", STABLE)
    two = write_toolchain(tmp_path / "two", STABLE)
    assert one.files == two.files and one.manifest_bytes == two.manifest_bytes
    names = sorted(p.relative_to(tmp_path / "one").as_posix() for p in (tmp_path / "one").rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(tmp_path / "two").as_posix() for p in (tmp_path / "two").rglob("*") if p.is_file())
    for name in names:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name

    root = one.root
    assert "dist/2026-04-16/rustc-1.95.0-x86_64-unknown-linux-gnu.tar.xz" in one.files
    assert "dist/2026-04-16/rust-src-1.95.0.tar.gz" in one.files
    assert f"dist/2026-04-16/rust-std-1.95.0-{WASM}.tar.xz" in one.files
    for rel, digest in one.files.items():
        data = (root / rel).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest
        assert (root / f"{rel}.sha256").read_text() == f"{digest}  {rel.rsplit('/', 1)[1]}\n"
    for alias in ("stable", "1.95.0", "1.95"):
        rel = f"dist/channel-rust-{alias}.toml"
        assert (root / rel).read_bytes() == one.manifest_bytes
        assert (root / f"{rel}.sha256").read_text() == f"{one.manifest_sha256}  channel-rust-{alias}.toml\n"
        assert (root / f"{rel}.asc").is_file()
    assert (root / "dist/2026-04-16/channel-rust-stable.toml.sha256").is_file()
    assert f'version = "{RUSTUP_VERSION}"' in (root / "rustup/release-stable.toml").read_text()
    assert (root / f"rustup/archive/{RUSTUP_VERSION}/x86_64-unknown-linux-gnu/rustup-init.sha256").is_file()
    assert (root / "rustup/dist/x86_64-unknown-linux-gnu/rustup-init.sha256").is_file()

    manifest = one.manifest
    assert manifest["manifest-version"] == "2" and manifest["date"] == "2026-04-16"
    rustc = manifest["pkg"]["rustc"]["target"]["x86_64-unknown-linux-gnu"]
    assert rustc["xz_url"] == one.url(one.component_path("rustc")) and rustc["xz_hash"] == one.files[one.component_path("rustc")]
    assert manifest["pkg"]["rust-src"]["target"]["*"]["available"] is True
    assert "x86_64-unknown-linux-gnu" not in manifest["pkg"]["rust-mingw"]["target"]
    assert manifest["renames"]["clippy"]["to"] == "clippy-preview"
    assert one.profile_packages("minimal") == [(p, "x86_64-unknown-linux-gnu") for p in ("rustc", "cargo", "rust-std")]

    # rust-installer v3, with a directory entry for every folder
    with tarfile.open(root / one.component_path("rustc")) as tar:
        members = {m.name: m for m in tar.getmembers()}
    top = "rustc-1.95.0-x86_64-unknown-linux-gnu"
    for name, member in members.items():
        parent = name.rpartition("/")[0]
        assert not parent or members[parent].isdir(), name
        assert member.mtime == members[top].mtime
    expected = {f"{top}/rust-installer-version", f"{top}/components", f"{top}/rustc/manifest.in", f"{top}/rustc/bin/rustc"}
    assert expected <= set(members)

    # a padded package is big and incompressible; the others stay small
    big = write_toolchain(tmp_path / "big", ToolchainSpec(big={"rustc": 2_000_000}))
    assert (big.root / big.component_path("rustc")).stat().st_size > 2_000_000
    assert (big.root / big.component_path("cargo")).stat().st_size < 10_000


def test_a_later_release_moves_the_aliases(tmp_path: Path) -> None:
    first = write_toolchain(tmp_path, ToolchainSpec(version="1.95.0", date="2026-04-16"))
    point = write_toolchain(tmp_path, ToolchainSpec(version="1.95.1", date="2026-05-07"))
    assert (tmp_path / "dist/channel-rust-stable.toml").read_bytes() == point.manifest_bytes
    assert (tmp_path / "dist/channel-rust-1.95.toml").read_bytes() == point.manifest_bytes
    assert (tmp_path / "dist/channel-rust-1.95.0.toml").read_bytes() == first.manifest_bytes
    assert (tmp_path / first.manifest_path).read_bytes() == first.manifest_bytes  # dated files stay
    late = write_toolchain(tmp_path, ToolchainSpec(version="1.94.1", date="2026-05-08"), move_aliases=False)
    assert (tmp_path / "dist/channel-rust-stable.toml").read_bytes() == point.manifest_bytes
    assert (tmp_path / late.manifest_path).is_file() and not (tmp_path / "dist/channel-rust-1.94.1.toml").exists()


# -- the server, without rustup -------------------------------------------------------------------------------


def test_server_ranges_validators_and_knobs(tree: Path, server: DistServer) -> None:
    built = write_toolchain(tree, ToolchainSpec(big={"rustc": 300_000}))
    rel = built.component_path("rustc")
    data = (tree / rel).read_bytes()
    url = server.url + rel

    status, headers, body = get(url)
    assert (status, body, headers["Content-Length"], headers["Accept-Ranges"]) == (200, data, str(len(data)), "bytes")
    assert get(url, **{"If-None-Match": headers["ETag"]})[0] == 304
    status, headers, body = get(url, Range="bytes=100-199")
    assert (status, body, headers["Content-Range"]) == (206, data[100:200], f"bytes 100-199/{len(data)}")
    assert get(url, Range="bytes=1000-")[2] == data[1000:]
    assert get(url, Range="bytes=-10")[2] == data[-10:]
    assert get(url, Range=f"bytes={len(data)}-")[0] == 416
    head = urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=10)
    assert head.status == 200 and head.headers["Content-Length"] == str(len(data)) and head.read() == b""

    server.corrupt.add(rel)
    body = get(url)[2]
    assert len(body) == len(data) and body != data
    assert get(url, Range="bytes=0-9")[2] == data[:10]  # only the middle byte is flipped
    server.corrupt.clear()
    server.missing.add(rel)
    assert get(url)[0] == 404
    server.missing.clear()
    server.fail_status = 503
    assert get(url)[0] == 503
    server.fail_status = None
    assert get(server.url + "dist/../../etc/passwd")[0] == 404
    assert get(server.url + "dist/")[0] == 404

    seen: list[str] = []
    server.before_serve.append(seen.append)
    assert get(server.url + "dist/channel-rust-stable.toml.sha256")[0] == 200
    assert seen == ["dist/channel-rust-stable.toml.sha256"]
    assert server.count(rel) == 11 and server.count("/" + rel) == 11  # HEAD included
    assert server.requests[0].headers["user-agent"].startswith("Python-urllib")
    server.clear()
    assert server.paths() == []


def test_server_over_tls_with_auth(tmp_path: Path, upstream_cert, upstream_ca) -> None:
    import ssl

    built = write_toolchain(tmp_path, ToolchainSpec())
    ctx = ssl.create_default_context()
    upstream_ca.configure_trust(ctx)
    with DistServer(tmp_path, tls=upstream_cert, auth=("user", "pw")) as server:
        assert server.url.startswith("https://127.0.0.1:")
        url = server.url + built.manifest_path
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, context=ctx, timeout=10)
        assert refused.value.code == 401
        refused.value.close()
        request = urllib.request.Request(url, headers={"Authorization": "Basic dXNlcjpwdw=="})
        with urllib.request.urlopen(request, context=ctx, timeout=10) as response:
            assert response.read() == built.manifest_bytes


# -- the real rustup ------------------------------------------------------------------------------------------


def test_rustup_installs_stable_minimal(tree: Path, server: DistServer, rustup: Rustup) -> None:
    built = write_toolchain(tree, STABLE)
    rustup.install("stable")
    assert rustup.rustc_version("stable") == "rustc 1.95.0 (synthetic 2026-04-16)"
    assert rustup.run("run", "stable", "cargo", "--version", check=True).stdout.strip() == "cargo 1.95.0 (synthetic)"

    paths = [p.lstrip("/") for p in server.paths()]
    # the .sha256 first, then the manifest, then the profile's components: xz, since the manifest offers it
    assert paths[:2] == ["dist/channel-rust-stable.toml.sha256", "dist/channel-rust-stable.toml"]
    assert sorted(paths[2:]) == sorted(built.minimal_paths)
    assert all(p.endswith(".tar.xz") for p in paths[2:])
    assert "rustup/release-stable.toml" not in paths  # --no-self-update
    for record in server.requests:
        assert record.headers["user-agent"].startswith(UA_PREFIX) and "range" not in record.headers
    assert not (rustup.cargo_home / "bin").exists()

    server.clear()
    again = rustup.install("stable")
    assert "unchanged" in again.stdout
    assert server.paths() == ["/dist/channel-rust-stable.toml.sha256"]


def test_rustup_checks_for_a_self_update_when_installed(tmp_path: Path, tree: Path, server: DistServer) -> None:
    write_toolchain(tree, STABLE)
    rustup = Rustup(tmp_path / "installed", server.rustup_env(), installed=True)
    rustup.run("toolchain", "install", "stable", "--profile", "minimal", check=True, timeout=120)
    assert server.paths()[-1] == "/rustup/release-stable.toml"  # after the toolchain
    server.clear()
    assert "unchanged" in rustup.run("self", "update", check=True).stdout  # release-stable.toml: the same version
    assert server.paths() == ["/rustup/release-stable.toml"]


def test_rustup_installs_a_pinned_version_with_an_extra_target(tree: Path, server: DistServer, rustup: Rustup) -> None:
    built = write_toolchain(tree, STABLE)
    rustup.install("1.95.0", targets=(WASM,))
    assert rustup.rustc_version("1.95.0") == "rustc 1.95.0 (synthetic 2026-04-16)"
    paths = [p.lstrip("/") for p in server.paths()]
    assert paths[:2] == ["dist/channel-rust-1.95.0.toml.sha256", "dist/channel-rust-1.95.0.toml"]
    assert sorted(paths[2:]) == sorted(built.profile_paths("minimal", [WASM]))
    toolchain = rustup.rustup_home / "toolchains/1.95.0-x86_64-unknown-linux-gnu"
    assert (toolchain / f"lib/rustlib/{WASM}/lib/libstd-synthetic.rlib").is_file()
    installed = rustup.run("target", "list", "--installed", "--toolchain", "1.95.0", check=True).stdout.split()
    assert sorted(installed) == sorted(["x86_64-unknown-linux-gnu", WASM])


def test_rustup_follows_a_moving_channel_and_other_names(tree: Path, server: DistServer, rustup: Rustup) -> None:
    write_toolchain(tree, STABLE)
    rustup.install("stable", profile="default")
    assert "warn" not in rustup.install("1.95", profile="default").stderr  # no "missing parent" or other warning

    point = write_toolchain(tree, ToolchainSpec(version="1.95.1", date="2026-05-07"))
    server.clear()
    rustup.run("update", "stable", "--no-self-update", check=True, timeout=120)
    assert rustup.rustc_version("stable") == "rustc 1.95.1 (synthetic 2026-05-07)"
    assert sorted(c for c in component_requests(server)) == sorted(point.default_paths)

    nightly = write_toolchain(tree, ToolchainSpec(channel="nightly", version="1.97.0", date="2026-11-29", formats=("gz",)))
    server.clear()
    rustup.install("nightly-2026-11-29")
    assert rustup.rustc_version("nightly-2026-11-29") == "rustc 1.97.0-nightly (synthetic 2026-11-29)"
    assert server.paths()[0] == "/dist/2026-11-29/channel-rust-nightly.toml.sha256"
    # without xz_url in the manifest, rustup takes the .tar.gz
    assert sorted(component_requests(server)) == sorted(nightly.profile_paths("minimal", fmt="gz"))
    assert "dist/2026-11-29/rustc-nightly-x86_64-unknown-linux-gnu.tar.gz" in component_requests(server)

    server.clear()
    missing = rustup.install("nightly-2026-11-30", check=False)
    assert missing.returncode != 0 and "no release found" in missing.stderr
    # after the v2 .sha256's 404, rustup tries the v1 name
    assert server.paths() == ["/dist/2026-11-30/channel-rust-nightly.toml.sha256", "/dist/2026-11-30/channel-rust-nightly.sha256"]


def test_rustup_rejects_a_channel_that_moves_between_sha256_and_manifest(tree: Path, server: DistServer,
                                                                          rustup: Rustup) -> None:
    write_toolchain(tree, STABLE)
    moved: list[str] = []

    def move(path: str) -> None:
        if path == "dist/channel-rust-stable.toml" and not moved:
            moved.append(path)
            write_toolchain(tree, ToolchainSpec(version="1.96.0", date="2026-05-28"))

    server.before_serve.append(move)
    result = rustup.install("stable", check=False)
    assert result.returncode != 0 and "checksum failed" in result.stderr
    assert component_requests(server) == []


def _size(path: Path) -> int:
    """A file's size, 0 if it is gone (a small component's .partial is renamed when it completes)."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def test_rustup_resumes_an_interrupted_download_with_range(tree: Path, server: DistServer, rustup: Rustup) -> None:
    built = write_toolchain(tree, ToolchainSpec(big={"rustc": 4_000_000}))
    rustc = built.component_path("rustc")
    server.rate = 2_000_000  # bytes/s: rustc takes ~2 s
    process = subprocess.Popen([str(rustup.binary), "toolchain", "install", "stable", "--profile", "minimal",
                                "--no-self-update"], env=rustup.environ(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    partial: list[Path] = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not partial:
            partial = [p for p in (rustup.rustup_home / "downloads").glob("*.partial") if _size(p) > 1_000_000]
            time.sleep(0.01)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    assert partial, "rustup never got 1 MB into the rustc download"
    kept = partial[0].stat().st_size
    server.rate = None
    server.clear()
    rustup.install("stable")
    assert rustup.rustc_version("stable") == "rustc 1.95.0 (synthetic 2026-04-16)"
    ranges = [(r.path, r.headers.get("range")) for r in server.requests if r.path == "/" + rustc]
    assert ranges == [("/" + rustc, f"bytes={kept}-")]
