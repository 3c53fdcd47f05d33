"""A configuration re-read while serving: what changed, what applies live, what waits for a restart (pure).

Live: the registries and the toolchains section (hosts, upstreams, their order, credentials, timeouts, TLS
settings, active switches), every TTL, the back-off settings, the lease time, offline mode, the size limits, the
supply-chain policy (global and per registry), the mirror listener (moved, started or stopped).
At restart only: where and how the cache is kept (`cache.directory`, `size_limit`, `eviction_policy`,
`backend`, `s3` but its keys) and the CA's folder (`ca.directory`: mitmproxy's confdir, read at start), because
moving a cache under running requests is not something to half-do; and `log_format`, which the workers
launcher's own lines follow too (a log shipper reads one format a process). A reload that
changes one of those keeps the running value and says so. (`fingerprint` is the one stat call that tells a
changed file; `read` reads the file and its secrets, off the event loop once the proxy runs; `ConfigState`
holds the reloads asked for, by SIGHUP or a changed option, until the watcher does them one at a time.)
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, replace
from pathlib import Path

from ..config import CacheSettings, ConfigError, Policy, Registry, Settings, Source, Toolchains, Upstream, load_settings
from ..config.discovery import ConfigNotFound, find_config

RESTART_FIELDS = ("directory", "size_limit", "eviction_policy", "backend", "s3")
LIVE_CACHE_FIELDS = ("index_ttl", "negative_ttl", "upstream_backoff", "backoff_after", "lease_seconds", "offline",
                     "offline_prune_index", "max_crate_size", "max_index_size", "revalidate_ahead")
UPSTREAM_FIELDS = ("url", "priority", "ssl_validation", "timeout_ms", "ca_bundle", "download_hosts")


@dataclass(frozen=True)
class Reload:
    settings: Settings  # what to run with: the new file, with the restart-only fields as they run
    changes: tuple[str, ...]  # one phrase per change, never a credential
    needs_restart: tuple[str, ...]  # fields changed in the file that take effect at the next start


def plan(running: Settings, new: Settings) -> Reload:
    changed = [f for f in RESTART_FIELDS if getattr(running.cache, f) != getattr(new.cache, f)]
    changes = [f"cache.{f} {getattr(running.cache, f)} -> {getattr(new.cache, f)}"
               for f in LIVE_CACHE_FIELDS if getattr(running.cache, f) != getattr(new.cache, f)]
    s3 = running.cache.s3
    if changed == ["s3"] and s3 and new.cache.s3 and replace(new.cache.s3, access_key_id=s3.access_key_id,
                                                              secret_access_key=s3.secret_access_key) == s3:
        changed, s3 = [], new.cache.s3  # rotated keys: live
        changes.append("cache.s3 credentials changed")
    restart = tuple(f"cache.{f}" for f in changed) + (("log_format",) if running.log_format != new.log_format else ())
    if new.ca_directory != running.ca_directory:  # mitmproxy reads its confdir at start
        restart += ("ca.directory",)
    kept = replace(new.cache, **{f: getattr(running.cache, f) for f in RESTART_FIELDS if f != "s3"}, s3=s3)
    changes += _policy("policy", running.policy, new.policy)
    changes += _sources(running, new)
    if running.mirror != new.mirror:  # the listener moves with it (mirror_listener.listen); tokens_file is re-read
        changes.append(f"mirror {_mirror(running.mirror)} -> {_mirror(new.mirror)}")
    return Reload(replace(new, cache=kept, log_format=running.log_format, ca_directory=running.ca_directory),
                  tuple(changes), restart)


def _mirror(mirror) -> str:
    if mirror is None:
        return "off"
    return f"{mirror.listen} {mirror.public_url} ({'HTTPS' if mirror.tls_cert else 'HTTP'}, auth {mirror.auth})"


def _sources(running: Settings, new: Settings) -> list[str]:
    old = {_label(s): s for s in running.sources}
    now = {_label(s): s for s in new.sources}
    out = [f"{label} added ({', '.join(u.name for u in now[label].upstreams)})" for label in now if label not in old]
    out += [f"{label} removed" for label in old if label not in now]
    for label in now.keys() & old.keys():
        out += [f"{label}: {change}" for change in _source(old[label], now[label])]
        if isinstance(now[label], Registry) and (old[label].policy != running.policy or
                                                 now[label].policy != new.policy):  # its own policy: say so
            out += [f"{label}: {change}" for change in _policy("policy", old[label].policy, now[label].policy)]
    return out


def _policy(label: str, old: Policy, new: Policy) -> list[str]:
    """'policy changed (quarantine, rules)': the parts of a policy that changed, never their values."""
    parts = [f for f in ("dry_run", "quarantine", "advisories", "rules") if getattr(old, f) != getattr(new, f)]
    return [f"{label} changed ({', '.join(parts)})"] if parts else []


def _label(source: Source) -> str:
    return "toolchains" if isinstance(source, Toolchains) else f"registry {source.name}"


def _source(old: Source, new: Source) -> list[str]:
    out = []
    for field in ("index_host", "download_host", "index_path", "index_ttl", "host", "ttl", "max_file_size"):
        if getattr(old, field, None) != getattr(new, field, None):
            out.append(f"{field} {getattr(old, field, None)} -> {getattr(new, field, None)}")
    before = {u.name: u for u in old.upstreams}
    after = {u.name: u for u in new.upstreams}
    out += [f"upstream {name} added" for name in after if name not in before]
    out += [f"upstream {name} removed" for name in before if name not in after]
    for name in after.keys() & before.keys():
        out += [f"upstream {name} {change}" for change in _upstream(before[name], after[name])]
    order_before = [u.name for u in old.active_upstreams if u.name in after]
    order_after = [u.name for u in new.active_upstreams if u.name in before]
    if [n for n in order_before if n in order_after] != [n for n in order_after if n in order_before]:
        out.append(f"reordered: {', '.join(u.name for u in new.active_upstreams)}")
    return out


def _upstream(old: Upstream, new: Upstream) -> list[str]:
    out = []
    if old.active != new.active:
        out.append("activated" if new.active else "deactivated")
    if (old.username, old.password) != (new.username, new.password):
        out.append("credentials changed")
    out += [f"{field} changed" for field in UPSTREAM_FIELDS if getattr(old, field) != getattr(new, field)]
    return out


def fingerprint(paths: list[str]) -> tuple:
    """What tells a changed file: where it resolves to (a ConfigMap's symlink swap), its inode (an atomic
    rename), its size and modification time (an editor's write in place). A missing file is part of it too."""
    out = []
    for path in paths:
        try:
            stat = os.stat(path)
            out.append((str(Path(path).resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns))
        except OSError as e:
            out.append((path, type(e).__name__))
    return tuple(out)


@dataclass(frozen=True)
class Read:
    """proxies.yaml as read (with its secret files): the settings or the error, and the files' fingerprint."""

    settings: Settings | None
    error: ConfigError | None
    fingerprint: tuple


def read(path: str) -> Read:
    """Read and check proxies.yaml (blocking file I/O: off the event loop, but at start). "": none given (the
    addon's default when discovery found none), an error saying where one was looked for."""
    if not path:
        try:
            path = str(find_config(os.environ, Path.cwd()))
        except ConfigNotFound as e:
            return Read(None, ConfigError("cargo_proxies", "", f"{e} (give one with --set cargo_proxies=FILE)"), ())
    try:
        settings = load_settings(path)
    except ConfigError as e:
        return Read(None, e, fingerprint([path]))
    return Read(settings, None, fingerprint([path, *settings.secret_files]))


def same_cache(a: CacheSettings, b: CacheSettings) -> bool:
    return all(getattr(a, f) == getattr(b, f) for f in RESTART_FIELDS)


class ConfigState:
    """When the configuration was last loaded and what the last failed reload said (for the status page), and
    the reloads asked for (SIGHUP, a changed option) that the watcher has not done yet."""

    def __init__(self) -> None:
        self._asked: list[str] = []
        self._wake = asyncio.Event()
        self.loaded_at: float | None = None
        self.needs_restart: tuple[str, ...] = ()
        self.last_error: str | None = None
        self.last_error_at: float | None = None

    def loaded(self, now: float, needs_restart: tuple[str, ...]) -> None:
        self.loaded_at, self.needs_restart, self.last_error, self.last_error_at = now, needs_restart, None, None

    def failed(self, error: str, now: float) -> None:
        self.last_error, self.last_error_at = error, now

    def ask(self, why: str) -> None:
        """Ask for a reload (safe from a signal handler on the loop: it only notes it)."""
        self._asked.append(why)
        self._wake.set()

    async def asked(self, seconds: float | None) -> str | None:
        """Why a reload was asked for (several asks at once: one reload), or None once `seconds` passed first."""
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except TimeoutError:
            return None
        self._wake.clear()
        why, self._asked = ", ".join(dict.fromkeys(self._asked)), []
        return why

    def snapshot(self, source: str) -> dict:
        return {"source": source, "loaded_at": self.loaded_at, "needs_restart": list(self.needs_restart),
                "last_error": self.last_error, "last_error_at": self.last_error_at}
