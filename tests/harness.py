"""Real processes for end-to-end tests: a `mitmdump` running the addon, and the `cargo` binary.

Everything listens on 127.0.0.1; every process is bounded by a timeout and stopped by the fixture
that started it.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
MITMDUMP = Path(sys.executable).parent / "mitmdump"
ADDON = ROOT / "addon" / "cargo_cache.py"
INDEX_HOST, DOWNLOAD_HOST = "index.crates.io", "static.crates.io"

#: The Debian-packaged crates this project resolves to 42 packages.
FULL_DEPENDENCIES = """\
serde = { version = "1", features = ["derive"] }
serde_json = "1"
regex = { version = "1", default-features = false, features = ["std", "unicode", "perf-cache", "perf-dfa", "perf-inline"] }
clap = { version = "4", features = ["derive"] }
anyhow = "1"
log = "0.4"
tokio = { version = "1", features = ["rt-multi-thread", "macros", "net", "io-util", "sync", "time"] }
"""
#: A few packages, for scenarios that cost a timeout per object.
SMALL_DEPENDENCIES = """\
anyhow = "1"
log = "0.4"
"""


def free_port() -> int:
    """A port free now, below the kernel's ephemeral range (see `free_ports`)."""
    return free_ports(1)


def free_ports(count: int) -> int:
    """The first of `count` consecutive free ports, below the kernel's ephemeral range (32768 up), so that
    no outgoing connection takes one of them between this check and the server binding it."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 32000 - count)
        try:
            for port in range(base, base + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError(f"no {count} consecutive free ports")


def write_proxies(path: Path, upstreams: list[dict], cache_dir: Path, toolchains: dict | None = None,
                  **cache: object) -> Path:
    """A proxies.yaml intercepting crates.io's hosts, with the given upstream entries (and a `toolchains:`
    section, if given)."""
    doc = {
        "cache": {"directory": str(cache_dir), "size_limit": "1GB", **cache},
        "registries": [
            {"name": "crates-io", "index_host": INDEX_HOST, "download_host": DOWNLOAD_HOST, "proxies": upstreams}
        ],
    }
    if toolchains is not None:
        doc["toolchains"] = toolchains
        if not upstreams:
            del doc["registries"]  # a proxy for toolchains only
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def wait_until_listening(process: subprocess.Popen, read_log, timeout: float, label: str = "mitmdump",
                         status_page: bool = False) -> None:
    """Until mitmdump logs that it listens (and, with `status_page`, that its status page started or could not);
    RuntimeError if it exits, TimeoutError if it takes too long."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{label}: mitmdump exited with {process.returncode}:\n{read_log()}")
        log = read_log()
        if "proxy listening at" in log and (not status_page or "cargo-cache: status page " in log):
            return
        time.sleep(0.05)
    raise TimeoutError(f"{label}: mitmdump did not start within {timeout}s:\n{read_log()}")


@dataclass
class Proxy:
    """A `mitmdump -s addon/cargo_cache.py` process."""

    config: Path
    confdir: Path
    log_path: Path
    extra_args: tuple[str, ...] = ()
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    command_prefix: tuple[str, ...] = ()  # runs mitmdump through it (e.g. setpriv, to drop a privilege)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ca_cert(self) -> Path:
        return self.confdir / "mitmproxy-ca-cert.pem"

    def start(self, timeout: float = 30) -> Proxy:
        args = [*self.command_prefix, str(MITMDUMP), "-s", str(ADDON), "--listen-host", "127.0.0.1",
                "--listen-port", str(self.port),
                "--set", f"confdir={self.confdir}", "--set", f"cargo_proxies={self.config}",
                "--set", "flow_detail=0", *self.extra_args]
        if not any("cargo_status_port" in a for a in self.extra_args):
            args += ["--set", "cargo_status_port=0"]  # tests run several proxies at once
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        try:
            status = any(a.startswith("cargo_status_port=") and a != "cargo_status_port=0" for a in self.extra_args)
            wait_until_listening(self.process, self.log, timeout, status_page=status)
        except TimeoutError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if getattr(self, "_log", None):
            self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> Proxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def cargo_binary() -> str:
    """The real cargo: rustup's toolchain binary if there is one, else the one on PATH."""
    if rustup := shutil.which("rustup"):
        found = subprocess.run([rustup, "which", "cargo"], capture_output=True, text=True)
        if found.returncode == 0 and found.stdout.strip():
            return found.stdout.strip()
    cargo = shutil.which("cargo")
    if cargo is None:
        raise RuntimeError("cargo is not installed (make test installs it)")
    return cargo


@dataclass
class Cargo:
    """The real cargo binary with a fresh CARGO_HOME, configured only through the proxy variables."""

    home: Path
    proxy: Proxy
    extra_env: dict[str, str] = field(default_factory=dict)
    binary: str | None = None  # another cargo than `cargo_binary()` (Debian's /usr/bin/cargo)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CARGO_") and "proxy" not in k.lower()}
        env.update(CARGO_HOME=str(self.home), CARGO_TERM_COLOR="never", HTTPS_PROXY=self.proxy.url,
                   CARGO_HTTP_CAINFO=str(self.proxy.ca_cert))
        env.update(self.extra_env)
        return env

    def run(self, project: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        return subprocess.run([self.binary or cargo_binary(), *args], cwd=project, env=self.env(), capture_output=True,
                              text=True, timeout=timeout)

    def fetch(self, project: Path) -> subprocess.CompletedProcess:
        """`cargo generate-lockfile && cargo fetch`; returns the failing step or the fetch."""
        lock = self.run(project, "generate-lockfile")
        return lock if lock.returncode != 0 else self.run(project, "fetch")


def make_project(path: Path, dependencies: str) -> Path:
    (path / "src").mkdir(parents=True, exist_ok=True)
    (path / "src" / "main.rs").write_text("fn main() {}\n")
    (path / "Cargo.toml").write_text(
        f'[package]\nname = "app"\nversion = "0.1.0"\nedition = "2021"\n\n[dependencies]\n{dependencies}'
    )
    return path


def locked_packages(project: Path) -> dict[tuple[str, str], str | None]:
    """(name, version) -> checksum for every registry package in Cargo.lock."""
    import tomllib

    lock = tomllib.loads((project / "Cargo.lock").read_text())
    return {(p["name"], p["version"]): p.get("checksum") for p in lock["package"]
            if p.get("source", "").startswith(("registry+", "sparse+"))}


def cli(config: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """`python -m cratecache --proxies CONFIG ...`, the command behind the make targets."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["PYTHONPATH"] = str(ROOT / "addon")
    return subprocess.run([sys.executable, "-m", "cratecache", "--proxies", str(config), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
