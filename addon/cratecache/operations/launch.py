"""`cargo-cache run`: what `make run` runs, from an installed package: the CA, then the workers launcher.

    cargo-cache run [--config FILE] [--host H] [--port P] [--workers N] [--status-port S] [-- MITMDUMP ARGS]

The mitmdump arguments are the Makefile's (`-s <the addon file> --listen-host H --set confdir=<the CA's folder>
--set cargo_proxies=FILE --set flow_detail=0`), the CA's folder and the cache's taken from the configuration
(relative paths: to its folder), and MITMDUMP ARGS win over them as they win over `make run`'s (cmdline.py).
`addon_path` is the file mitmdump loads (`mitmdump -s $(cargo-cache addon-path)`), beside the package whether
it runs from a checkout (addon/) or is installed (site-packages).
"""

from __future__ import annotations

import os
from pathlib import Path

from . import cmdline

DEFAULT_HOST, DEFAULT_PORT, DEFAULT_STATUS_PORT = "127.0.0.1", 8080, 8081


def addon_path() -> Path:
    """The addon file mitmdump loads: cargo_cache.py, beside the cratecache package."""
    return Path(__file__).resolve().parents[2] / "cargo_cache.py"


def mitmdump_args(config: Path, confdir: Path, host: str, extra: list[str]) -> list[str]:
    """The Makefile's MITMDUMP_ARGS for `config`, then `extra` (which wins: the launcher keeps the last value)."""
    return ["-s", str(addon_path()), "--listen-host", host, "--set", f"confdir={confdir}",
            "--set", f"cargo_proxies={config}", "--set", "flow_detail=0", *extra]


def launcher_args(workers: int, port: int, status_port: int, args: list[str]) -> list[str]:
    return ["--workers", str(workers), "--port", str(port), "--status-port", str(status_port), "--", *args]


def confdir_of(ca_directory: Path, extra: list[str]) -> Path:
    """The CA's folder mitmdump will use: `--set confdir=` in the extra arguments, else the configuration's."""
    given = cmdline.value(cmdline.merge([], extra), "confdir")
    return Path(given).expanduser().resolve() if given else ca_directory


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
