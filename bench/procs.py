"""Processes under test: `mitmdump` with the addon, plain `mitmdump` with map_remote, and their cleanup.

Every process started here is registered so that `stop_all()` (run from `atexit` and from the
entry point's `finally`) ends it even when a scenario fails; so is any other server that stops by a
function of its own (`track_stopper`: e.g. SeaweedFS, which runs in its own process group).
"""

from __future__ import annotations

import atexit
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mitmproxy import certs

from tests.harness import DOWNLOAD_HOST, INDEX_HOST, MITMDUMP, ROOT, free_port, wait_until_listening

_running: list[subprocess.Popen] = []
_stoppers: list[Callable[[], None]] = []


def clean_env() -> dict[str, str]:
    """The environment without proxy variables, so nothing loops back into a proxy by accident."""
    return {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}


def stop(process: subprocess.Popen | None, timeout: float = 10) -> None:
    if process is None:
        return
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    if process in _running:
        _running.remove(process)


def track(process: subprocess.Popen) -> subprocess.Popen:
    _running.append(process)
    return process


def track_stopper(stopper: Callable[[], None]) -> None:
    """`stop_all` calls `stopper` too, unless `untrack_stopper` took it back (it must be safe to call twice)."""
    _stoppers.append(stopper)


def untrack_stopper(stopper: Callable[[], None]) -> None:
    if stopper in _stoppers:
        _stoppers.remove(stopper)


@atexit.register
def stop_all() -> None:
    for process in list(_running):
        stop(process, timeout=5)
    for stopper in list(_stoppers):
        untrack_stopper(stopper)
        try:
            stopper()
        except Exception as e:  # the others must still be stopped
            print(f"bench: stopping {stopper!r} failed: {e}", flush=True)


def make_confdir(path: Path) -> Path:
    """A mitmproxy confdir with a CA, shared by every proxy of the run (Cargo and httpx trust it)."""
    path.mkdir(parents=True, exist_ok=True)
    certs.CertStore.from_store(path, "mitmproxy", 2048)
    return path


def addon_args(script: Path, config: Path) -> list[str]:
    """`mitmdump -s script` (the addon's entry file) with `config` as its proxies.yaml."""
    args = ["-s", str(script), "--set", f"cargo_proxies={config}"]
    if any("cargo_status_port" in f.read_text() for f in (script.parent / "cratecache").rglob("*.py")):
        # The status page stays on, as deployed, but on a free port: several proxies run at once.
        args += ["--set", f"cargo_status_port={free_port()}"]
    return args


def plain_args(nginx_root_url: str) -> list[str]:
    """mitmproxy's own map_remote sending crates.io's two hosts to nginx; no addon.

    `nginx_root_url` is e.g. http://127.0.0.1:PORT (no slash). The index is mapped to /mitm-index/,
    whose config.json keeps crates.io's `dl`, so downloads come back through this proxy too.
    """
    index, static = INDEX_HOST.replace(".", r"\."), DOWNLOAD_HOST.replace(".", r"\.")
    return [
        "--set", f"map_remote=|^https://{index}/|{nginx_root_url}/mitm-index/",
        "--set", f"map_remote=|^https://{static}/crates/|{nginx_root_url}/crates/",
        # What the addon sets for itself: decrypt only the registry hosts, connect upstream lazily
        # (index.crates.io is not resolvable here).
        "--set", f"allow_hosts=^{index}(:\\d+)?$", "--set", f"allow_hosts=^{static}(:\\d+)?$",
        "--set", "connection_strategy=lazy",
    ]


def plain_dist_args(dist_origin: str, host: str = "static.rust-lang.org") -> list[str]:
    """mitmproxy's own map_remote sending rustup's dist host to a local dist server; no addon.

    `dist_origin` is e.g. http://127.0.0.1:PORT (no slash): every https://HOST/... becomes ORIGIN/...
    """
    escaped = host.replace(".", r"\.")
    return [
        "--set", f"map_remote=|^https://{escaped}/|{dist_origin}/",
        "--set", f"allow_hosts=^{escaped}(:\\d+)?$",  # as the addon does for its hosts
        "--set", "connection_strategy=lazy",  # static.rust-lang.org is not resolvable here
    ]


@dataclass
class Mitmdump:
    """One mitmdump process listening on 127.0.0.1 (`args` choose the addon or map_remote)."""

    label: str
    args: list[str]
    confdir: Path
    log_path: Path
    port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=dict)  # added to the (proxy-free) environment
    process: subprocess.Popen | None = None
    _log_start: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ca_cert(self) -> Path:
        return self.confdir / "mitmproxy-ca-cert.pem"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 30) -> Mitmdump:
        cmd = [str(MITMDUMP), "--listen-host", "127.0.0.1", "--listen-port", str(self.port),
               "--set", f"confdir={self.confdir}", "--set", "flow_detail=0", *self.args]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.process = track(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                                  env=clean_env() | self.env,
                                                  cwd=ROOT))
        try:
            wait_until_listening(self.process, self.log, timeout, self.label)
        except TimeoutError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        stop(self.process)

    def log(self) -> str:
        """This run's part of the log file."""
        if not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as f:
            f.seek(self._log_start)
            return f.read().decode(errors="replace")

    def __enter__(self) -> Mitmdump:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
