"""What the proxy runs with: the settings built from a valid proxies.yaml, frozen (hashable, compared field by
field by reload.py). Secrets are read, relative paths resolved, upstreams sorted by priority."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from . import defaults as d
from .policy import Policy


@dataclass(frozen=True)
class Upstream:
    """One upstream sparse registry. `url` is the index base and ends with '/'."""

    name: str
    url: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    priority: int = 0
    ssl_validation: bool = True
    timeout_ms: int = d.DEFAULT_TIMEOUT_MS
    active: bool = True
    ca_bundle: str | None = None
    download_hosts: tuple[str, ...] = ()  # hosts (host or host:port) its config.json's dl may name, besides its own

    @property
    def auth(self) -> tuple[str, str] | None:
        if self.username is None and self.password is None:
            return None
        return (self.username or "", self.password or "")


@dataclass(frozen=True)
class Registry:
    """A registry whose hosts are intercepted; `upstreams` are sorted by priority."""

    name: str
    index_host: str
    download_host: str
    upstreams: tuple[Upstream, ...]
    index_ttl: int = d.DEFAULT_INDEX_TTL
    index_path: str = "/"  # where the index is on index_host (from index_url); downloads live under it too
    policy: Policy = Policy()  # effective: the global policy with this registry's own part merged over it

    @property
    def index_url(self) -> str:
        """The index URL as Cargo has it in its configuration (without `sparse+`)."""
        return f"https://{self.index_host}{self.index_path}"

    @property
    def download_root(self) -> str:
        """The `dl` the proxy gives Cargo: downloads come back to the download host, under the index path."""
        return f"https://{self.download_host}{self.index_path}crates"

    @property
    def active_upstreams(self) -> tuple[Upstream, ...]:
        return tuple(u for u in self.upstreams if u.active)

    def upstream(self, name: str) -> Upstream | None:
        return next((u for u in self.upstreams if u.name == name), None)


@dataclass(frozen=True)
class Toolchains:
    """rustup's dist server (`toolchains:`): the intercepted host and its upstream dist roots by priority.
    Each upstream's `url` is a dist root that serves `dist/` and `rustup/` and ends with '/'."""

    host: str
    upstreams: tuple[Upstream, ...]
    ttl: int = d.DEFAULT_DIST_TTL  # seconds a moving name (channel manifest, release-stable.toml) is served unasked
    max_file_size: int = d.DEFAULT_MAX_DIST_FILE_SIZE
    name: str = d.TOOLCHAINS

    @property
    def index_ttl(self) -> int:
        """The engine's name for how long a moving entry stays fresh (as for a registry's index files)."""
        return self.ttl

    @property
    def active_upstreams(self) -> tuple[Upstream, ...]:
        return tuple(u for u in self.upstreams if u.active)

    def upstream(self, name: str) -> Upstream | None:
        return next((u for u in self.upstreams if u.name == name), None)


Source = Registry | Toolchains  # what the proxy answers for on an intercepted host


@dataclass(frozen=True)
class Mirror:
    """The mirror listener (`mirror:`): registries at `<public_url>/<name>/index/`, toolchains at `<public_url>/rustup/`."""

    listen_host: str  # '' for every address
    listen_port: int
    public_url: str  # without a trailing '/'
    tls_cert: str | None = None  # PEM files (paths resolved); None: plain HTTP
    tls_key: str | None = None
    auth: str = "none"  # none | tokens
    tokens_file: str | None = None

    @property
    def listen(self) -> str:
        host = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
        return f"{host}:{self.listen_port}"

    @property
    def tokens(self) -> bool:
        return self.auth == "tokens"


@dataclass(frozen=True)
class S3Settings:
    """The shared bucket of a fleet (cache.backend: s3). Keys live under `prefix`."""

    bucket: str
    endpoint_url: str | None = None  # None: AWS
    prefix: str = ""
    region: str = d.DEFAULT_REGION
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    ssl_validation: bool = True
    timeout_ms: int = d.DEFAULT_TIMEOUT_MS
    ca_bundle: str | None = None  # PEM file of a private CA to trust for the endpoint (besides the public ones)

    @property
    def target(self) -> str:
        """Where the bucket is, for logs and the status page (never credentials)."""
        where = self.endpoint_url.rstrip("/") + "/" if self.endpoint_url else "s3://"
        return f"{where}{self.bucket}/{self.prefix}"


@dataclass(frozen=True)
class CacheSettings:
    directory: Path
    size_limit: int = d.DEFAULT_SIZE_LIMIT
    index_ttl: int = d.DEFAULT_INDEX_TTL
    eviction_policy: str = d.DEFAULT_EVICTION_POLICY
    negative_ttl: int = d.DEFAULT_NEGATIVE_TTL  # seconds a "no upstream has it" is remembered
    upstream_backoff: int = d.DEFAULT_BACKOFF  # seconds a repeatedly unreachable upstream is skipped
    backoff_after: int = d.DEFAULT_BACKOFF_AFTER  # consecutive connection failures before a back-off
    lease_seconds: int = d.DEFAULT_LEASE  # longest wait for another process fetching the same object
    offline: bool = False  # never contact an upstream; serve what is cached whatever its age
    offline_prune_index: bool = False  # offline: index files list only versions whose .crate is cached
    revalidate_ahead: int = d.DEFAULT_REVALIDATE_AHEAD  # expired index files revalidated before Cargo asks (ahead.py; 0: off)
    max_crate_size: int = d.DEFAULT_MAX_CRATE_SIZE  # a larger .crate is refused without buffering it
    max_index_size: int = d.DEFAULT_MAX_INDEX_SIZE  # likewise for an index file or config.json
    backend: str = d.DEFAULT_BACKEND  # disk: diskcache in `directory`; s3: a bucket, `directory` its local tier
    s3: S3Settings | None = None


@dataclass(frozen=True)
class Settings:
    source: str
    cache: CacheSettings
    registries: tuple[Registry, ...]
    toolchains: Toolchains | None = None
    secret_files: tuple[str, ...] = ()  # the files secrets were read from (watched, like the file itself)
    policy: Policy = Policy()  # the global `policy:` section (each registry's effective one: Registry.policy)
    log_format: str = d.DEFAULT_LOG_FORMAT  # text | json (operations/logs.py; the cargo_log_format option wins)
    ca_directory: Path | None = None  # the CA's folder (mitmproxy's confdir); None: settings not read from a file
    mirror: Mirror | None = None  # the mirror listener, if configured

    @property
    def sources(self) -> tuple[Source, ...]:
        """Every registry, then the toolchains' dist source if configured."""
        return self.registries + ((self.toolchains,) if self.toolchains else ())

    def match_host(self, host: str, port: int | None = None, path: str = "/") -> tuple[Source | None, str]:
        """The registry one of whose hosts is `host` (with `port`, when the configured host names one) and whose
        index path `path` is under (the longest such path when several registries share a host), and that
        configured host; (None, "") if none is. Case and a trailing dot of the host do not matter."""
        host = host.lower().removesuffix(".")
        if self.toolchains is not None and _same_host(self.toolchains.host, host, port):
            return self.toolchains, self.toolchains.host
        found: tuple[Source | None, str] = (None, "")
        for reg in self.registries:
            if not path.startswith(reg.index_path) or (found[0] and len(found[0].index_path) >= len(reg.index_path)):
                continue
            for configured in (reg.index_host, reg.download_host):
                if _same_host(configured, host, port):
                    found = (reg, configured)
                    break
        return found

    def registry_at(self, index_url: str) -> Registry | None:
        """The registry whose index is exactly at `index_url` (as a lockfile's `sparse+` source names it)."""
        try:
            parts = urlsplit(index_url)
            port = parts.port
        except ValueError:
            return None
        path = parts.path if parts.path.endswith("/") else parts.path + "/"
        registry, configured = self.match_host(parts.hostname or "", port or {"https": 443, "http": 80}.get(parts.scheme),
                                               path)
        if not isinstance(registry, Registry) or registry.index_path != path or configured != registry.index_host:
            return None
        return registry

    @property
    def hosts(self) -> list[str]:
        seen: dict[str, None] = {}
        for reg in self.registries:
            seen[reg.index_host] = None
            seen[reg.download_host] = None
        if self.toolchains is not None:
            seen[self.toolchains.host] = None
        return list(seen)


def _same_host(configured: str, host: str, port: int | None) -> bool:
    """`host` (lowercase) with `port` is the configured 'host[:port]' (any port when it names none)."""
    name, _, want = configured.partition(":")
    return name == host and (not want or port is None or int(want) == port)
