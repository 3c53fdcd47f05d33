"""dist.py: rustup's dist layout as pure decisions (no sockets)."""

from __future__ import annotations

import hashlib
import json

import pytest
from cratecache.protocols import dist

HOST = "x86_64-unknown-linux-gnu"
DATE = "2026-04-16"


def manifest_text(version: str = "1.95.0", date: str = DATE, *, mingw: bool = False, zst: bool = False) -> str:
    """A small v2 channel manifest in the real layout (rustc, cargo, rust-std for two targets, rust-src, clippy)."""
    ver = version if "-" not in version else version.split("-")[1]  # "1.97.0-nightly" -> file names say "nightly"
    lines = ['manifest-version = "2"', f'date = "{date}"', "[pkg.rust]", f'version = "{version} (abc 2026-04-14)"',
             f"[pkg.rust.target.{HOST}]", "available = true",
             f'url = "https://static.rust-lang.org/dist/{date}/rust-{ver}-{HOST}.tar.gz"', f'hash = "{"0" * 64}"']
    for pkg, target in (("rustc", HOST), ("cargo", HOST), ("rust-std", HOST), ("clippy-preview", HOST)):
        lines += [f"[[pkg.rust.target.{HOST}.components]]", f'pkg = "{pkg}"', f'target = "{target}"']
    for pkg, target in (("rust-std", "wasm32-unknown-unknown"), ("rust-src", "*")):
        lines += [f"[[pkg.rust.target.{HOST}.extensions]]", f'pkg = "{pkg}"', f'target = "{target}"']
    files = [("rustc", HOST), ("cargo", HOST), ("rust-std", HOST), ("rust-std", "wasm32-unknown-unknown"),
             ("clippy-preview", HOST), ("rust-src", "*")]
    for pkg, target in files:
        name = f"{pkg}-{ver}" + ("" if target == "*" else f"-{target}")
        base = f"https://static.rust-lang.org/dist/{date}/{name}"
        lines += [f'[pkg.{pkg}.target."{target}"]', "available = true",
                  f'url = "{base}.tar.gz"', f'hash = "{digest(name + ".tar.gz")}"',
                  f'xz_url = "{base}.tar.xz"', f'xz_hash = "{digest(name + ".tar.xz")}"']
        if zst:
            lines += [f'zst_url = "{base}.tar.zst"', f'zst_hash = "{digest(name + ".tar.zst")}"']
    lines += [f'[pkg.rust-mingw.target."{HOST}"]', f"available = {'true' if mingw else 'false'}"]
    lines += ["[renames.clippy]", 'to = "clippy-preview"', "[profiles]",
              'minimal = ["rustc", "cargo", "rust-std", "rust-mingw"]',
              'default = ["rustc", "cargo", "rust-std", "rust-mingw", "clippy-preview"]']
    return "\n".join(lines) + "\n"


def digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


@pytest.mark.parametrize("path, kind, immutable, checked_by, checksum", [
    ("/dist/channel-rust-stable.toml", "manifest", False, "pair", False),
    ("/dist/channel-rust-stable.toml.sha256", "manifest", False, "pair", True),
    ("/dist/channel-rust-1.95.toml", "manifest", False, "pair", False),
    ("/dist/channel-rust-1.95.0.toml", "manifest", False, "pair", False),
    ("/dist/channel-rust-nightly.toml.asc", "manifest", False, "none", False),
    ("/dist/2026-11-30/channel-rust-nightly.toml", "manifest", True, "pair", False),
    ("/dist/2026-04-16/rustc-1.95.0-x86_64-unknown-linux-gnu.tar.xz", "component", True, "manifest", False),
    ("/dist/2026-04-16/rust-src-1.95.0.tar.gz.sha256", "component", True, "manifest", True),
    ("/dist/2026-04-16/cargo-nightly-aarch64-apple-darwin.tar.zst", "component", True, "manifest", False),
    ("/rustup/release-stable.toml", "rustup", False, "none", False),
    ("/rustup/dist/x86_64-unknown-linux-gnu/rustup-init", "rustup", False, "pair", False),
    ("/rustup/dist/x86_64-pc-windows-msvc/rustup-init.exe.sha256", "rustup", False, "pair", True),
    ("/rustup/archive/1.29.1/x86_64-unknown-linux-gnu/rustup-init", "rustup", True, "pair", False),
])
def test_classify_names_what_each_dist_path_is(path, kind, immutable, checked_by, checksum):
    found = dist.classify(path)
    assert isinstance(found, dist.DistFile)
    assert (found.kind, found.immutable, found.checked_by, found.checksum) == (kind, immutable, checked_by, checksum)
    assert found.path == path.lstrip("/").removesuffix(".sha256")


@pytest.mark.parametrize("path, reason", [
    ("/dist/channel-rust-stable", "v1 channel manifests are not served"),
    ("/dist/2026-13-01/rustc-1.95.0-x86_64-unknown-linux-gnu.tar.xz", "not a dated dist folder"),
    ("/dist/2026-04-16/index.html", "not a rustup dist path"),
    ("/dist/channel-rust-unstable.toml", "not a rustup dist path"),
    ("/", "not a rustup dist path"),
    ("/rustup/archive/latest/x86_64-unknown-linux-gnu/rustup-init", "not a rustup dist path"),
    ("/rustup/dist/x86_64-unknown-linux-gnu/cargo", "not a rustup dist path"),
    ("/rustup.sh", "not a rustup dist path"),
])
def test_anything_else_on_the_dist_host_is_refused_with_a_reason(path, reason):
    found = dist.classify(path)
    assert isinstance(found, dist.Refused) and found.status == 404 and reason in found.reason


def test_a_manifest_lists_every_file_with_its_hash_by_dated_folder():
    manifest = dist.parse_manifest(manifest_text().encode())
    assert (manifest.date, manifest.version) == (DATE, "1.95.0")
    hashes = dist.file_hashes(manifest)
    name = f"rustc-1.95.0-{HOST}.tar.xz"
    assert hashes[f"dist/{DATE}/{name}"] == digest(name)
    assert f"dist/{DATE}/rust-src-1.95.0.tar.gz" in hashes
    assert len(hashes) == 6 * 2 + 1  # two formats of six files, and the combined tarball
    assert dist.parse_listing(manifest_text().encode()).files == hashes


@pytest.mark.parametrize("body, problem", [
    (b"<html><body>Sign in</body></html>", "not a TOML channel manifest"),
    (b'manifest-version = "1"\n', "expected \"2\""),
    (b'manifest-version = "2"\ndate = "yesterday"\n', "is not YYYY-MM-DD"),
    (b'manifest-version = "2"\ndate = "2026-04-16"\n', "no [pkg.rust]"),
    (manifest_text().encode()[:500], "not a TOML channel manifest"),
])
def test_what_is_not_a_v2_manifest_is_refused(body, problem):
    with pytest.raises(ValueError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        dist.parse_manifest(body)


def test_the_minimal_profile_resolves_to_the_files_rustup_downloads_preferring_xz():
    manifest = dist.parse_manifest(manifest_text().encode())
    assert dist.component_files(manifest, HOST) == [
        f"dist/{DATE}/rustc-1.95.0-{HOST}.tar.xz", f"dist/{DATE}/cargo-1.95.0-{HOST}.tar.xz",
        f"dist/{DATE}/rust-std-1.95.0-{HOST}.tar.xz"]  # rust-mingw is unavailable on Linux: skipped, as rustup does


def test_zst_is_preferred_when_offered():
    manifest = dist.parse_manifest(manifest_text(zst=True).encode())
    assert dist.component_files(manifest, HOST)[0].endswith(".tar.zst")


def test_targets_and_components_add_their_files_with_renames():
    manifest = dist.parse_manifest(manifest_text().encode())
    files = dist.component_files(manifest, HOST, ("wasm32-unknown-unknown",), "minimal", ("clippy", "rust-src"))
    assert files[3:] == [f"dist/{DATE}/rust-std-1.95.0-wasm32-unknown-unknown.tar.xz",
                         f"dist/{DATE}/clippy-preview-1.95.0-{HOST}.tar.xz", f"dist/{DATE}/rust-src-1.95.0.tar.xz"]
    assert len(dist.component_files(manifest, HOST, profile="default")) == 4


@pytest.mark.parametrize("args, problem", [
    (dict(host="aarch64-apple-darwin"), "not available for host aarch64-apple-darwin"),
    (dict(host=HOST, profile="complete"), "no profile 'complete'"),
    (dict(host=HOST, targets=("riscv64gc-unknown-none-elf",)), "rust-std is not offered for riscv64gc"),
    (dict(host=HOST, components=("miri",)), "miri is not offered"),
])
def test_what_a_manifest_cannot_give_is_an_error(args, problem):
    with pytest.raises(ValueError, match=problem):
        dist.component_files(dist.parse_manifest(manifest_text().encode()), **args)


@pytest.mark.parametrize("name, path", [
    ("stable", "dist/channel-rust-stable.toml"),
    ("nightly", "dist/channel-rust-nightly.toml"),
    ("1.95", "dist/channel-rust-1.95.toml"),
    ("1.95.0", "dist/channel-rust-1.95.0.toml"),
    ("nightly-2026-11-30", "dist/2026-11-30/channel-rust-nightly.toml"),
    ("stable-2026-04-16", "dist/2026-04-16/channel-rust-stable.toml"),
])
def test_toolchain_names_map_to_manifest_paths_as_rustup_asks(name, path):
    assert dist.manifest_path(name) == path
    assert isinstance(dist.classify(path), dist.DistFile)


@pytest.mark.parametrize("name", ["latest", "1", "nightly-2026-13-40", "stable-x86_64-unknown-linux-gnu", "../x"])
def test_other_toolchain_names_are_refused(name):
    with pytest.raises(ValueError):
        dist.manifest_path(name)


def test_aliases_of_a_stable_release_and_of_a_nightly():
    stable = dist.parse_manifest(manifest_text().encode())
    assert dist.alias_paths(stable) == ["dist/channel-rust-1.95.0.toml", "dist/channel-rust-1.95.toml",
                                        f"dist/{DATE}/channel-rust-stable.toml"]
    nightly = dist.parse_manifest(manifest_text("1.97.0-nightly", "2026-11-30").encode())
    assert dist.alias_paths(nightly) == ["dist/2026-11-30/channel-rust-nightly.toml"]
    assert dist.release_key(stable) == (1, 95, 0) > dist.release_key(nightly)


def test_a_rust_toolchain_file_gives_channel_profile_components_and_targets():
    text = '[toolchain]\nchannel = "1.95.0"\ncomponents = ["clippy", "rust-src"]\ntargets = ["wasm32-unknown-unknown"]\n' \
           'profile = "minimal"\n'
    assert dist.parse_toolchain_file(text) == dist.ToolchainRequest("1.95.0", "minimal", ("clippy", "rust-src"),
                                                                    ("wasm32-unknown-unknown",))
    assert dist.parse_toolchain_file("nightly-2026-11-30\n") == dist.ToolchainRequest("nightly-2026-11-30")
    assert dist.parse_toolchain_file('[toolchain]\nchannel = "stable"\n').profile == "default"
    for bad in ('[toolchain]\npath = "/opt/rust"\n', '[toolchain]\nchannel = "1.95.0"\nprofile = "huge"\n',
                '[toolchain]\nchannel = "1.95.0"\ntargets = "wasm32"\n', "latest\n"):
        with pytest.raises(ValueError):
            dist.parse_toolchain_file(bad)


def test_checksum_files_are_written_and_read_as_upstream_does():
    sha = digest("x")
    assert dist.checksum_body(sha, "channel-rust-stable.toml") == f"{sha}  channel-rust-stable.toml\n".encode()
    assert dist.parse_checksum(dist.checksum_body(sha, "a")) == sha
    assert dist.parse_checksum(sha.upper().encode()) == sha
    for bad in (b"", b"<html>", b"abc  file", "é".encode()):
        with pytest.raises(ValueError):
            dist.parse_checksum(bad)


def test_the_toolchains_host_is_classified_by_the_dist_layout_with_the_common_request_checks():
    from cratecache.boundary.routes import DistRoute, Rejection, classify
    from cratecache.config import Toolchains, Upstream

    src = Toolchains("static.rust-lang.org", (Upstream("rust-lang", "https://static.rust-lang.org/"),))
    route = classify(src, "static.rust-lang.org", "GET", f"/dist/{DATE}/rustc-1.95.0-{HOST}.tar.xz")
    assert isinstance(route, DistRoute) and route.key == f"component/dist/{DATE}/rustc-1.95.0-{HOST}.tar.xz"
    for method, path, status in (("PUT", "/dist/channel-rust-stable.toml", 405),
                                 ("GET", "/dist/channel-rust-stable.toml?x=1", 400),
                                 ("GET", "/dist/../rustup/release-stable.toml", 400),
                                 ("GET", "/dist/%2e%2e/x", 400),
                                 ("GET", "/index.html", 404)):
        refused = classify(src, "static.rust-lang.org", method, path)
        assert isinstance(refused, Rejection) and refused.status == status, (method, path)


STABLE_RUSTC = f"dist/{DATE}/rustc-1.95.0-{HOST}.tar.xz"


@pytest.mark.parametrize("manifest_path, manifest_date, component, vouches", [
    ("dist/channel-rust-stable.toml", DATE, STABLE_RUSTC, True),
    (f"dist/{DATE}/channel-rust-stable.toml", DATE, STABLE_RUSTC, True),
    ("dist/channel-rust-1.95.toml", DATE, STABLE_RUSTC, True),
    ("dist/channel-rust-1.95.0.toml", DATE, STABLE_RUSTC, True),
    ("dist/2020-01-01/channel-rust-beta.toml", "2020-01-01", STABLE_RUSTC, False),  # another day and channel
    (f"dist/{DATE}/channel-rust-beta.toml", DATE, STABLE_RUSTC, False),  # the same day, another channel
    ("dist/channel-rust-stable.toml", "2026-05-28", STABLE_RUSTC, False),  # the channel, another day
    (f"dist/{DATE}/channel-rust-stable.toml", "2020-01-01", STABLE_RUSTC, False),  # its folder is not its date
    (f"dist/{DATE}/channel-rust-nightly.toml", DATE, f"dist/{DATE}/rustc-nightly-{HOST}.tar.xz", True),
    ("dist/channel-rust-1.96.0-beta.2.toml", DATE, f"dist/{DATE}/rustc-beta-{HOST}.tar.xz", True),
    ("dist/channel-rust-stable.toml", DATE, f"dist/{DATE}/rustc-beta-{HOST}.tar.xz", False),
])
def test_a_component_is_vouched_for_only_by_a_manifest_of_its_channel_and_date(manifest_path, manifest_date,
                                                                               component, vouches):
    assert dist.vouches(manifest_path, manifest_date, component) is vouches


def test_what_a_manifest_vouches_for_is_stored_and_read_back_under_the_rule():
    listing = dist.parse_listing(manifest_text().encode())
    own = listing.vouched_by("dist/channel-rust-stable.toml")
    assert own.files == {p: d for p, d in listing.files.items()}  # all of its files are its day's stable files
    foreign = listing.vouched_by("dist/2020-01-01/channel-rust-beta.toml")
    assert foreign.files == {}
    assert dist.read_vouched("dist/channel-rust-stable.toml", DATE, own.record()) == own.files
    legacy = json.dumps(listing.files).encode()  # a table stored before the rule: trusted only from a dated path
    assert dist.read_vouched("dist/channel-rust-stable.toml", DATE, legacy) == {}
    assert dist.read_vouched(f"dist/{DATE}/channel-rust-stable.toml", DATE, legacy) == listing.files
    assert dist.read_vouched(f"dist/{DATE}/channel-rust-beta.toml", DATE, legacy) == {}


def test_manifests_that_disagree_on_a_hash_are_a_conflict_naming_both():
    tables = {"dist/channel-rust-stable.toml": {STABLE_RUSTC: "a" * 64},
              f"dist/{DATE}/channel-rust-stable.toml": {STABLE_RUSTC: "b" * 64}}
    with pytest.raises(dist.ManifestConflict, match="disagree on its hash") as conflict:
        dist.agreed_hash(STABLE_RUSTC, tables)
    assert all(path in str(conflict.value) for path in tables)
    tables[f"dist/{DATE}/channel-rust-stable.toml"][STABLE_RUSTC] = "a" * 64
    assert dist.agreed_hash(STABLE_RUSTC, tables) == "a" * 64
    assert dist.agreed_hash(f"dist/{DATE}/cargo-1.95.0-{HOST}.tar.xz", tables) is None
