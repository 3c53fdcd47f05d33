"""Which proxies.yaml a command runs with when none is given (pure: the environment, the working folder and the
system path are passed in).

In order: `$CARGO_CACHE_CONFIG` (or its older name `$CARGO_CACHE_PROXIES`), then `./proxies.yaml`, then
`/etc/cargo-cache/proxies.yaml`. A variable that is set wins even when its file is missing (the read then says
so); the two files count only where they exist. None of them: `ConfigNotFound`, naming all three places.
Every other path of the configuration (the cache folder, the CA folder, secret files) is relative to the
folder of the file found, never to the package's install location or the working folder (load.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

ENV = "CARGO_CACHE_CONFIG"
OLD_ENV = "CARGO_CACHE_PROXIES"  # the name `python -m cratecache` read before `cargo-cache` existed
LOCAL = "proxies.yaml"
SYSTEM = Path("/etc/cargo-cache/proxies.yaml")


class ConfigNotFound(LookupError):
    """No configuration file was given and none is where one is looked for."""


def from_env(env: Mapping[str, str]) -> str | None:
    """The file the environment names, or None."""
    return env.get(ENV) or env.get(OLD_ENV) or None


def find_config(env: Mapping[str, str], cwd: Path, system: Path = SYSTEM) -> Path:
    """The configuration file to use when none was given (see the module's docstring)."""
    if named := from_env(env):
        return Path(named).expanduser()
    for candidate in (cwd / LOCAL, system):
        if candidate.is_file():
            return candidate
    raise ConfigNotFound(f"no configuration file: none given, ${ENV} is not set, and neither {cwd / LOCAL} nor "
                         f"{system} exists")
