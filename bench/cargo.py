"""The Cargo workload: a project locking all 114 crates of the registry, fetched with a fresh CARGO_HOME.

`fetch()` times `cargo generate-lockfile && cargo fetch` in a fresh copy of the project (no
Cargo.lock) with a fresh CARGO_HOME, either through a proxy (only HTTPS_PROXY and
CARGO_HTTP_CAINFO, as a CI runner would) or straight to the upstream by source replacement.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from tests.harness import FULL_DEPENDENCIES, cargo_binary, locked_packages, make_project

#: Every crate of the registry, directly or through dependencies (checked by `fetch`).
ALL_DEPENDENCIES = FULL_DEPENDENCIES.replace(  # the test suite's project, with tokio's every feature
    '"rt-multi-thread", "macros", "net", "io-util", "sync", "time"', '"full"') + """\
rayon = "1"
petgraph = "0.6"
quickcheck = { version = "1", default-features = false }
addr2line = { version = "0.19", default-features = false }
adler = "1"
ahash = "0.7"
arbitrary = "1"
backtrace = "0.3"
bumpalo = "3"
compiler_builtins = "0.1"
const-random = "0.1"
crc32fast = "1"
ctor = "0.1"
derive_arbitrary = "1"
erased-serde = "0.3"
errno = "0.2"
flate2 = "1"
io-lifetimes = "0.7"
linux-raw-sys = "0.0.46"
os_pipe = "1"
owning_ref = "0.4"
ppv-lite86 = "0.2"
print_bytes = "0.5"
rand_chacha = "0.3"
rustc-std-workspace-core = "1"
rustix = "0.35"
serde_fmt = "1"
spin = "0.9"
sval = "=1.0.0-alpha.5"
terminal_size = "0.2"
thread-id = "4"
tracing = "0.1"
unicase = "2"
unicode-segmentation = "1"
unicode-width = "0.1"
uniquote = "3"
valuable = "0.1"
valuable-derive = "0.1"
value-bag = "=1.0.0-alpha.9"
"""

SOURCE_REPLACEMENT = """\
[source.crates-io]
replace-with = "bench-upstream"

[source.bench-upstream]
registry = "sparse+{index_url}"
"""


def project_template(path: Path) -> Path:
    return make_project(path, ALL_DEPENDENCIES)


def cargo_version() -> str:
    return subprocess.run([cargo_binary(), "--version"], capture_output=True, text=True).stdout.strip()


def _env(home: Path, proxy_url: str | None, ca: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARGO_") and "proxy" not in k.lower()}
    env.update(CARGO_HOME=str(home), CARGO_TERM_COLOR="never")
    if proxy_url is not None:
        env.update(HTTPS_PROXY=proxy_url, CARGO_HTTP_CAINFO=str(ca))
    return env


def fetch(template: Path, work: Path, expected: int, *, proxy_url: str | None = None, ca: Path | None = None,
          direct_index_url: str | None = None, timeout: float = 300) -> float:
    """Seconds for `cargo generate-lockfile && cargo fetch` with a fresh CARGO_HOME and project copy.

    Raises if Cargo fails or the lockfile does not hold `expected` registry packages.
    """
    shutil.rmtree(work, ignore_errors=True)
    home, project = work / "cargo-home", work / "project"
    home.mkdir(parents=True)
    shutil.copytree(template, project)
    (project / "Cargo.lock").unlink(missing_ok=True)
    if direct_index_url is not None:
        (home / "config.toml").write_text(SOURCE_REPLACEMENT.format(index_url=direct_index_url))
    env, cargo = _env(home, proxy_url, ca), cargo_binary()
    began = time.perf_counter()
    for step in ("generate-lockfile", "fetch"):
        done = subprocess.run([cargo, step], cwd=project, env=env, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"cargo {step} failed:\n{done.stderr[-3000:]}")
    elapsed = time.perf_counter() - began
    locked = locked_packages(project)
    downloaded = list((home / "registry" / "cache").glob("*/*.crate"))
    if len(locked) != expected or len(downloaded) != expected:
        raise RuntimeError(f"expected {expected} packages, locked {len(locked)}, downloaded {len(downloaded)}")
    shutil.rmtree(work, ignore_errors=True)
    return elapsed
