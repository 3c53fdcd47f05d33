"""An older Cargo through the proxy: Debian's own `cargo` package (Cargo 1.65 on bookworm, /usr/bin/cargo, installed
by scripts/install-test-deps), a real client from before the sparse protocol was the default, against the local
registry of real crates through a real mitmdump.

With `CARGO_UNSTABLE_SPARSE_REGISTRY=true` it reads index.crates.io like a current Cargo: cold, warm from the cache,
the same Cargo.lock. Without it, it fetches the git index from github.com through a tunnel the proxy does not serve
(and cannot reach here), fails, and the proxy's log names the host and says what to set.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.harness import FULL_DEPENDENCIES, Cargo, locked_packages, make_project

pytestmark = pytest.mark.timeout(240)

DEBIAN_CARGO = Path("/usr/bin/cargo")
DEBIAN_RUSTC = Path("/usr/bin/rustc")  # what the package pulls in; rustup's rustc may come first on PATH
SPARSE = {"CARGO_UNSTABLE_SPARSE_REGISTRY": "true"}  # Debian builds Cargo with no release channel: allowed as is
#: A git fetch that fails fails once and soon (Cargo retries network errors, with waits, by default).
BOUNDED = {"CARGO_NET_RETRY": "0", "CARGO_HTTP_TIMEOUT": "5"}


def why_debian_cargo_cannot_be_installed() -> str | None:
    """Why scripts/install-test-deps could not have installed Debian's cargo here (None: it could)."""
    if shutil.which("apt-get") is None or shutil.which("apt-cache") is None:
        return "this is no Debian-like system (no apt-get)"
    policy = subprocess.run(["apt-cache", "policy", "cargo"], capture_output=True, text=True, timeout=60)
    if "Candidate:" not in policy.stdout or "Candidate: (none)" in policy.stdout:
        return "apt knows no `cargo` package to install"
    if os.geteuid() != 0 and shutil.which("sudo") is None:
        return "installing Debian packages needs root or sudo"
    return None


@pytest.fixture
def debian_cargo_binary() -> Path:
    """/usr/bin/cargo; the test fails when it is missing though it could be installed, and skips saying why not."""
    if not DEBIAN_CARGO.exists():
        if why := why_debian_cargo_cannot_be_installed():
            pytest.skip(f"Debian's cargo package is not installed and cannot be: {why}")
        pytest.fail(f"{DEBIAN_CARGO} is missing: Debian's `cargo` package is installed by `make test` "
                    "(scripts/install-test-deps)")
    return DEBIAN_CARGO


@pytest.fixture
def debian_cargo(tmp_path: Path, debian_cargo_binary: Path):
    """Debian's cargo with a fresh CARGO_HOME per call."""
    homes = iter(range(100))

    def make(proxy, **env: str) -> Cargo:
        home = tmp_path / f"debian-cargo-home-{next(homes)}"
        home.mkdir()
        return Cargo(home, proxy, {"RUSTC": str(DEBIAN_RUSTC)} | env, binary=str(debian_cargo_binary))

    return make


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """42 real packages; `rust-version` keeps a current Cargo at the lockfile version 3 that Cargo 1.65 reads."""
    path = make_project(tmp_path / "older", FULL_DEPENDENCIES)
    manifest = path / "Cargo.toml"
    manifest.write_text(manifest.read_text().replace('edition = "2021"\n', 'edition = "2021"\nrust-version = "1.65"\n'))
    return path


def downloads(server) -> list[str]:
    return [p for p in server.paths() if p.startswith("/crates/")]


def cached_crates(cargo: Cargo) -> set[tuple[str, str]]:
    """(name, version) of every .crate in CARGO_HOME's download cache of the crates.io sparse index."""
    found = set()
    for crate in (cargo.home / "registry" / "cache").glob("index.crates.io-*/*.crate"):
        name, _, version = crate.stem.rpartition("-")
        found.add((name, version))
    return found


def test_debian_cargo_is_an_older_client_that_needs_the_flag(debian_cargo_binary):
    version = subprocess.run([str(debian_cargo_binary), "--version"], capture_output=True, text=True, timeout=30)
    assert version.returncode == 0, version.stderr
    minor = int(re.match(r"cargo 1\.(\d+)\.", version.stdout).group(1))
    assert 63 <= minor <= 67, f"{version.stdout.strip()}: not a Cargo that needs the unstable sparse flag"


def test_cold_then_warm_through_the_proxy_with_the_unstable_sparse_flag(
    registry, secondary, entry, start_proxy, debian_cargo, new_cargo, project, tmp_path
):
    proxy = start_proxy([entry(secondary)])

    cold = debian_cargo(proxy, **SPARSE)
    result = cold.fetch(project)

    assert result.returncode == 0, result.stderr
    locked = locked_packages(project)
    assert len(locked) >= 40
    for (name, version), checksum in locked.items():
        assert checksum == registry.crate(name, version).cksum
    assert cached_crates(cold) == set(locked)  # every crate landed in CARGO_HOME, from index.crates.io
    assert len(downloads(secondary)) == len(set(downloads(secondary))) == len(locked)
    assert "github.com" not in proxy.log()  # no git index: the sparse one only
    assert re.search(r"GET static\.crates\.io/crates/serde/1\.0\.152/download 200 secondary miss", proxy.log())
    lockfile = (project / "Cargo.lock").read_text()

    secondary.clear()
    (project / "Cargo.lock").unlink()
    warm = debian_cargo(proxy, **SPARSE)
    again = warm.fetch(project)

    assert again.returncode == 0, again.stderr
    assert secondary.requests == []  # the upstream was not asked: index files and crates came from the cache
    assert cached_crates(warm) == set(locked)
    assert (project / "Cargo.lock").read_text() == lockfile
    assert re.search(r"GET index\.crates\.io/se/rd/serde 200 cache hit", proxy.log())
    assert re.search(r"GET static\.crates\.io/crates/serde/1\.0\.152/download 200 cache hit", proxy.log())

    # A current Cargo (rustup's) makes the same Cargo.lock, byte for byte.
    (project / "Cargo.lock").unlink()
    current = new_cargo(proxy).run(project, "generate-lockfile")
    assert current.returncode == 0, current.stderr
    assert (project / "Cargo.lock").read_text() == lockfile


def test_without_the_flag_it_wants_the_git_index_which_is_not_served_and_the_log_says_so(
    secondary, entry, start_proxy, debian_cargo, project
):
    proxy = start_proxy([entry(secondary)])

    result = debian_cargo(proxy, **BOUNDED).run(project, "generate-lockfile", timeout=90)

    assert result.returncode != 0
    assert "failed to fetch `https://github.com/rust-lang/crates.io-index`" in result.stderr
    assert secondary.requests == []  # the sparse index was never asked
    [line, *_] = [ln for ln in proxy.log().splitlines() if "connection to github.com:443 failed" in ln]
    assert "the proxy does not serve the git index" in line
    assert "github.com/rust-lang/crates.io-index" in line and "CARGO_UNSTABLE_SPARSE_REGISTRY=true" in line
