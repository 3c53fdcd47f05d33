"""proxies.yaml -> typed, validated settings.

Every problem is reported as one `ConfigError` whose message names the file, the
field (as a path such as `registries[0].proxies[1].timeout_ms`) and the problem.
Parsing is pure: the text, the file's location, the environment and the reader of secret files
(`password_file:` and the like) are passed in.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

DEFAULT_TIMEOUT_MS = 5000
DEFAULT_INDEX_TTL = 300
DEFAULT_SIZE_LIMIT = 20 * 1000**3
DEFAULT_NEGATIVE_TTL = 60
DEFAULT_REVALIDATE_AHEAD = 256  # index files revalidated ahead of Cargo per expired one it asks for
DEFAULT_BACKOFF = 30
DEFAULT_BACKOFF_AFTER = 3
DEFAULT_LEASE = 20  # below Cargo's 30 s timeout
DEFAULT_MAX_CRATE_SIZE = 64 * 1024**2
DEFAULT_MAX_INDEX_SIZE = 16 * 1024**2
DEFAULT_DIST_HOST = "static.rust-lang.org"
DEFAULT_DIST_TTL = 3600
DEFAULT_MAX_DIST_FILE_SIZE = 2 * 1024**3  # rustc is ~70 MB, rust-docs ~20 MB; a whole toolchain well below this
MAX_CONFIG_BYTES = 1024**2  # proxies.yaml
MAX_SECRET_BYTES = 64 * 1024  # a password_file and the like: one line
TOOLCHAINS = "toolchains"  # the name of the dist source in logs, metrics and upstream health (not a registry name)
EVICTION_POLICIES = ("least-recently-used", "least-recently-stored", "least-frequently-used", "none")
BACKENDS = ("disk", "s3")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]\Z")

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_HOST = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::\d{1,5})?$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
_INDEX_PATH = re.compile(r"^/(?:[A-Za-z0-9._~-]+/){0,16}\Z")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1000, "KB": 1000, "M": 1000**2, "MB": 1000**2, "G": 1000**3,
          "GB": 1000**3, "T": 1000**4, "TB": 1000**4, "KIB": 1024, "MIB": 1024**2,
          "GIB": 1024**3, "TIB": 1024**4, "KI": 1024, "MI": 1024**2, "GI": 1024**3, "TI": 1024**4}


class ConfigError(ValueError):
    """proxies.yaml is unusable: `file: field: problem`."""

    def __init__(self, file: str | os.PathLike, field: str, problem: str):
        self.file, self.field, self.problem = str(file), field, problem
        super().__init__(f"{self.file}: {field}: {problem}" if field else f"{self.file}: {problem}")


@dataclass(frozen=True)
class Upstream:
    """One upstream sparse registry. `url` is the index base and ends with '/'."""

    name: str
    url: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    priority: int = 0
    ssl_validation: bool = True
    timeout_ms: int = DEFAULT_TIMEOUT_MS
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
    index_ttl: int = DEFAULT_INDEX_TTL
    index_path: str = "/"  # where the index is on index_host (from index_url); downloads live under it too

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
    ttl: int = DEFAULT_DIST_TTL  # seconds a moving name (channel manifest, release-stable.toml) is served unasked
    max_file_size: int = DEFAULT_MAX_DIST_FILE_SIZE
    name: str = TOOLCHAINS

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
class S3Settings:
    """The shared bucket of a fleet (cache.backend: s3). Keys live under `prefix`."""

    bucket: str
    endpoint_url: str | None = None  # None: AWS
    prefix: str = ""
    region: str = "us-east-1"
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    ssl_validation: bool = True
    timeout_ms: int = DEFAULT_TIMEOUT_MS
    ca_bundle: str | None = None  # PEM file of a private CA to trust for the endpoint (besides the public ones)

    @property
    def target(self) -> str:
        """Where the bucket is, for logs and the status page (never credentials)."""
        where = self.endpoint_url.rstrip("/") + "/" if self.endpoint_url else "s3://"
        return f"{where}{self.bucket}/{self.prefix}"


@dataclass(frozen=True)
class CacheSettings:
    directory: Path
    size_limit: int = DEFAULT_SIZE_LIMIT
    index_ttl: int = DEFAULT_INDEX_TTL
    eviction_policy: str = "least-recently-used"
    negative_ttl: int = DEFAULT_NEGATIVE_TTL  # seconds a "no upstream has it" is remembered
    upstream_backoff: int = DEFAULT_BACKOFF  # seconds a repeatedly unreachable upstream is skipped
    backoff_after: int = DEFAULT_BACKOFF_AFTER  # consecutive connection failures before a back-off
    lease_seconds: int = DEFAULT_LEASE  # longest wait for another process fetching the same object
    offline: bool = False  # never contact an upstream; serve what is cached whatever its age
    offline_prune_index: bool = False  # offline: index files list only versions whose .crate is cached
    revalidate_ahead: int = DEFAULT_REVALIDATE_AHEAD  # expired index files revalidated before Cargo asks (ahead.py; 0: off)
    max_crate_size: int = DEFAULT_MAX_CRATE_SIZE  # a larger .crate is refused without buffering it
    max_index_size: int = DEFAULT_MAX_INDEX_SIZE  # likewise for an index file or config.json
    backend: str = "disk"  # disk: diskcache in `directory`; s3: a bucket, `directory` its local tier
    s3: S3Settings | None = None


@dataclass(frozen=True)
class Settings:
    source: str
    cache: CacheSettings
    registries: tuple[Registry, ...]
    toolchains: Toolchains | None = None
    secret_files: tuple[str, ...] = ()  # the files secrets were read from (watched, like the file itself)

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


def load_settings(path: str | os.PathLike, env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate a proxies.yaml file (and the secret files it names)."""
    path = Path(path)
    try:
        text = read_regular_file(path, MAX_CONFIG_BYTES)
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(path, "", f"cannot read file ({getattr(e, 'strerror', None) or e})") from e
    return parse_settings(text, path, os.environ if env is None else env, read_secret)


def read_secret(path: Path) -> str:
    """A mounted secret (Kubernetes, Vault agent): the file's text without its trailing newline."""
    return read_regular_file(path, MAX_SECRET_BYTES).rstrip("\r\n")


def read_regular_file(path: str | os.PathLike, limit: int) -> str:
    """The UTF-8 text of a regular file of at most `limit` bytes. Anything else is an OSError before a byte
    is read: a FIFO (opened without blocking, so a writer that never comes cannot hang the reader), a device
    (/dev/zero never ends), a folder, or a file larger than `limit`."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, f"not a regular file (a {_file_kind(mode)})")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit} bytes")
    return data.decode("utf-8")


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISFIFO, "FIFO"), (stat.S_ISDIR, "folder"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return kind
    return "special file"


def parse_settings(text: str, path: Path, env: Mapping[str, str],
                   read_file: Callable[[Path], str] = read_secret) -> Settings:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(path, "", f"not valid YAML{where}: {getattr(e, 'problem', e)}") from e
    return _Parser(path, env, read_file).settings(doc)


def parse_size(value: Any) -> int:
    """'20GB' / '512MiB' / 1048576 -> bytes. Raises ValueError."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 20GB")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("must not be negative")
        return value
    m = _SIZE.match(str(value)) if isinstance(value, str) else None
    if not m:
        raise ValueError(f"expected a size such as 20GB or 512MiB, got {value!r}")
    unit = (m.group(2) or "").upper()
    if unit not in _UNITS:
        raise ValueError(f"unknown size unit in {value!r}")
    size = float(m.group(1)) * _UNITS[unit]
    if not size < 2**63:
        raise ValueError(f"size {value!r} is too large")
    return int(size)


class _Parser:
    """Walks the YAML document; `where` is the dotted field path used in errors."""

    def __init__(self, path: Path, env: Mapping[str, str], read_file: Callable[[Path], str] = read_secret):
        self.path, self.env, self.read_file = path, env, read_file
        self.secret_files: list[str] = []

    def secret(self, raw: dict, name: str, where: str) -> str | None:
        """`name` given inline (with ${VAR}) or as `{name}_file` (a path read now, and again when it changes)."""
        if raw.get(name) is not None and raw.get(f"{name}_file") is not None:
            raise self.fail(f"{where}.{name}_file", f"set either {name} or {name}_file, not both")
        if raw.get(f"{name}_file") is None:
            return self.string(raw[name], f"{where}.{name}") if raw.get(name) is not None else None
        path = self.path_value(raw[f"{name}_file"], f"{where}.{name}_file")
        try:
            value = self.read_file(path)
        except (OSError, UnicodeDecodeError) as e:
            raise self.fail(f"{where}.{name}_file", f"cannot read {path} ({getattr(e, 'strerror', None) or e})") from None
        if not value or "\n" in value or "\x00" in value:
            raise self.fail(f"{where}.{name}_file", f"{path} must hold one line (the {name})")
        self.secret_files.append(str(path))
        return value

    def fail(self, where: str, problem: str) -> ConfigError:
        return ConfigError(self.path, where, problem)

    def mapping(self, value: Any, where: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict:
        if not isinstance(value, dict):
            raise self.fail(where or "(top level)", f"expected a mapping, got {_type(value)}")
        for key in value:
            if key not in allowed:
                raise self.fail(_join(where, str(key)), f"unknown field (allowed: {', '.join(allowed)})")
        for key in required:
            if value.get(key) is None:
                raise self.fail(_join(where, key), "required field is missing")
        return value

    def string(self, value: Any, where: str) -> str:
        if not isinstance(value, str):
            raise self.fail(where, f"expected a string, got {_type(value)}")

        def expand(m: re.Match) -> str:
            if m.group(1) not in self.env:
                raise self.fail(where, f"environment variable {m.group(1)} is not set")
            return self.env[m.group(1)]

        return _ENV_REF.sub(expand, value)

    def path_value(self, value: Any, where: str) -> Path:
        """A path; relative ones are relative to the configuration file's folder."""
        text = self.string(value, where)
        if not text or "\x00" in text:
            raise self.fail(where, "expected a path")
        try:
            path = Path(text).expanduser()
            return path if path.is_absolute() else (self.path.parent / path).resolve()
        except (OSError, RuntimeError, ValueError) as e:
            raise self.fail(where, f"not a usable path: {e}") from None

    def boolean(self, value: Any, where: str, default: bool) -> bool:
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.fail(where, f"expected true or false, got {_type(value)}")
        return value

    def integer(self, value: Any, where: str, default: int, minimum: int) -> int:
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(where, f"expected an integer, got {_type(value)}")
        if value < minimum:
            raise self.fail(where, f"must be at least {minimum}, got {value}")
        return value

    def settings(self, doc: Any) -> Settings:
        doc = self.mapping(doc, "", ("cache", "registries", "toolchains"))
        cache = self.cache({} if doc.get("cache") is None else doc["cache"])
        regs = doc.get("registries")
        if regs is None and doc.get("toolchains") is not None:
            regs = []  # a proxy for toolchains only
        elif regs is None:
            raise self.fail("registries", "required field is missing")
        elif not isinstance(regs, list) or not regs:
            raise self.fail("registries", "expected a non-empty list of registries")
        registries = tuple(self.registry(r, f"registries[{i}]", cache.index_ttl) for i, r in enumerate(regs))
        _unique(self, [(f"registries[{i}].name", r.name) for i, r in enumerate(registries)], "registry name")
        hosts = []
        for i, r in enumerate(registries):
            field = "index_url" if "index_url" in regs[i] else "index_host"
            under = r.index_path.rstrip("/")  # registries may share a host under different index paths
            hosts.append((f"registries[{i}].{field}", r.index_host + under))
            if r.download_host != r.index_host:
                hosts.append((f"registries[{i}].download_host", r.download_host + under))
        toolchains = self.toolchains(doc["toolchains"]) if doc.get("toolchains") is not None else None
        if toolchains is not None:
            hosts.append(("toolchains.host", toolchains.host))
            for i, r in enumerate(registries):
                if r.name == TOOLCHAINS:
                    raise self.fail(f"registries[{i}].name", f"{TOOLCHAINS!r} is the name of the toolchains section")
        _unique(self, hosts, "host")
        return Settings(source=str(self.path), cache=cache, registries=registries, toolchains=toolchains,
                        secret_files=tuple(dict.fromkeys(self.secret_files)))

    def toolchains(self, raw: Any) -> Toolchains:
        where = "toolchains"
        raw = self.mapping(raw, where, ("host", "ttl", "proxies", "max_file_size"), required=("proxies",))
        host = self.host(raw.get("host", DEFAULT_DIST_HOST), f"{where}.host")
        ups = raw["proxies"]
        if not isinstance(ups, list) or not ups:
            raise self.fail(f"{where}.proxies", "expected a non-empty list of upstream dist roots")
        parsed = [self.upstream(u, f"{where}.proxies[{i}]", dist=True) for i, u in enumerate(ups)]
        _unique(self, [(f"{where}.proxies[{i}].name", u.name) for i, u in enumerate(parsed)], "upstream name")
        try:
            max_size = parse_size(raw.get("max_file_size", DEFAULT_MAX_DIST_FILE_SIZE))
        except ValueError as e:
            raise self.fail(f"{where}.max_file_size", str(e)) from None
        if max_size < 1024**2:
            raise self.fail(f"{where}.max_file_size", "must be at least 1MiB")
        return Toolchains(host=host, upstreams=tuple(sorted(parsed, key=lambda u: u.priority)),
                          ttl=self.integer(raw.get("ttl"), f"{where}.ttl", DEFAULT_DIST_TTL, 0), max_file_size=max_size)

    def cache(self, raw: Any) -> CacheSettings:
        raw = self.mapping(raw, "cache", ("directory", "size_limit", "index_ttl", "eviction_policy", "negative_ttl",
                                          "upstream_backoff", "backoff_after", "lease_seconds", "offline",
                                          "offline_prune_index", "max_crate_size", "max_index_size", "backend",
                                          "s3", "revalidate_ahead"))
        directory = self.path_value(raw.get("directory", ".cache/cargo"), "cache.directory")
        try:
            size_limit = parse_size(raw.get("size_limit", DEFAULT_SIZE_LIMIT))
        except ValueError as e:
            raise self.fail("cache.size_limit", str(e)) from None
        policy = self.string(raw.get("eviction_policy", "least-recently-used"), "cache.eviction_policy")
        if policy not in EVICTION_POLICIES:
            raise self.fail("cache.eviction_policy", f"expected one of {', '.join(EVICTION_POLICIES)}")
        ttl = self.integer(raw.get("index_ttl"), "cache.index_ttl", DEFAULT_INDEX_TTL, 0)
        limits = {}
        for name, default in (("max_crate_size", DEFAULT_MAX_CRATE_SIZE), ("max_index_size", DEFAULT_MAX_INDEX_SIZE)):
            try:
                limits[name] = parse_size(raw.get(name, default))
            except ValueError as e:
                raise self.fail(f"cache.{name}", str(e)) from None
            if limits[name] < 1024:
                raise self.fail(f"cache.{name}", "must be at least 1KiB")
        return CacheSettings(
            directory=directory, size_limit=size_limit, index_ttl=ttl, eviction_policy=policy,
            negative_ttl=self.integer(raw.get("negative_ttl"), "cache.negative_ttl", DEFAULT_NEGATIVE_TTL, 0),
            upstream_backoff=self.integer(raw.get("upstream_backoff"), "cache.upstream_backoff", DEFAULT_BACKOFF, 0),
            backoff_after=self.integer(raw.get("backoff_after"), "cache.backoff_after", DEFAULT_BACKOFF_AFTER, 1),
            lease_seconds=self.integer(raw.get("lease_seconds"), "cache.lease_seconds", DEFAULT_LEASE, 1),
            offline=self.boolean(raw.get("offline"), "cache.offline", False),
            offline_prune_index=self.boolean(raw.get("offline_prune_index"), "cache.offline_prune_index", False),
            revalidate_ahead=self.integer(raw.get("revalidate_ahead"), "cache.revalidate_ahead",
                                          DEFAULT_REVALIDATE_AHEAD, 0),
            **limits, **self.backend(raw),
        )

    def backend(self, raw: dict) -> dict:
        backend = self.string(raw.get("backend", "disk"), "cache.backend")
        if backend not in BACKENDS:
            raise self.fail("cache.backend", f"expected one of {', '.join(BACKENDS)}, got {backend!r}")
        if backend == "disk":
            if raw.get("s3") is not None:
                raise self.fail("cache.s3", "only used with backend: s3")
            return {"backend": backend}
        if raw.get("s3") is None:
            raise self.fail("cache.s3", "required with backend: s3 (at least the bucket)")
        return {"backend": backend, "s3": self.s3(raw["s3"])}

    def s3(self, raw: Any) -> S3Settings:
        where = "cache.s3"
        raw = self.mapping(raw, where, ("endpoint_url", "bucket", "prefix", "region", "access_key_id",
                                        "secret_access_key", "access_key_id_file", "secret_access_key_file",
                                        "ssl_validation", "timeout_ms", "ca_bundle"), required=("bucket",))
        bucket = self.string(raw["bucket"], f"{where}.bucket")
        if not _BUCKET.match(bucket) or ".." in bucket:
            raise self.fail(f"{where}.bucket", f"{bucket!r} is not a bucket name (3-63 of a-z, 0-9, '.', '-')")
        endpoint = None
        if raw.get("endpoint_url") is not None:
            endpoint = self.url(raw["endpoint_url"], f"{where}.endpoint_url").rstrip("/")
            if urlsplit(endpoint).path:
                raise self.fail(f"{where}.endpoint_url", "expected scheme://host[:port] only; the bucket goes in bucket")
        prefix = self.string(raw.get("prefix", ""), f"{where}.prefix").strip("/")
        if any(part in ("", ".", "..") for part in prefix.split("/")) and prefix:
            raise self.fail(f"{where}.prefix", f"{prefix!r} has an empty, '.' or '..' segment")
        region = self.string(raw.get("region", "us-east-1"), f"{where}.region")
        if not re.match(r"^[a-z0-9-]{1,32}\Z", region):
            raise self.fail(f"{where}.region", f"{region!r} is not a region name (e.g. us-east-1)")
        key = self.secret(raw, "access_key_id", where)
        secret = self.secret(raw, "secret_access_key", where)
        if (key is None) != (secret is None):
            missing = "secret_access_key" if secret is None else "access_key_id"
            raise self.fail(f"{where}.{missing}", "set both access_key_id and secret_access_key, or neither")
        return S3Settings(
            bucket=bucket, endpoint_url=endpoint, prefix=f"{prefix}/" if prefix else "", region=region,
            access_key_id=key, secret_access_key=secret,
            ssl_validation=self.boolean(raw.get("ssl_validation"), f"{where}.ssl_validation", True),
            timeout_ms=self.integer(raw.get("timeout_ms"), f"{where}.timeout_ms", DEFAULT_TIMEOUT_MS, 1),
            ca_bundle=self.ca_bundle(raw.get("ca_bundle"), f"{where}.ca_bundle"),
        )

    def ca_bundle(self, value: Any, where: str) -> str | None:
        if value is None:
            return None
        path = self.path_value(value, where)
        if not path.is_file():  # a FIFO or device would hang or flood whoever reads it (ssl, at every new client)
            raise self.fail(where, f"not a regular file: {path}" if path.exists() else f"file not found: {path}")
        return str(path)

    def registry(self, raw: Any, where: str, default_ttl: int) -> Registry:
        raw = self.mapping(raw, where, ("name", "index_host", "index_url", "download_host", "proxies", "index_ttl"),
                           required=("name", "proxies"))
        name = self.name(raw["name"], f"{where}.name")
        if (raw.get("index_host") is None) == (raw.get("index_url") is None):
            raise self.fail(f"{where}.index_host", "set either index_host (an index at the host's root) or index_url "
                                                   "(the index URL as Cargo has it), not both" if "index_url" in raw
                            else "required field is missing (or give index_url)")
        if raw.get("index_url") is not None:
            index_host, index_path = self.index_url(raw["index_url"], f"{where}.index_url")
        else:
            index_host, index_path = self.host(raw["index_host"], f"{where}.index_host"), "/"
        download_host = self.host(raw.get("download_host", index_host), f"{where}.download_host")
        ups = raw["proxies"]
        if not isinstance(ups, list) or not ups:
            raise self.fail(f"{where}.proxies", "expected a non-empty list of upstreams")
        parsed = [self.upstream(u, f"{where}.proxies[{i}]") for i, u in enumerate(ups)]
        _unique(self, [(f"{where}.proxies[{i}].name", u.name) for i, u in enumerate(parsed)], "upstream name")
        ordered = tuple(sorted(parsed, key=lambda u: u.priority))  # stable: list order breaks ties
        ttl = self.integer(raw.get("index_ttl"), f"{where}.index_ttl", default_ttl, 0)
        return Registry(name=name, index_host=index_host, download_host=download_host,
                        upstreams=ordered, index_ttl=ttl, index_path=index_path)

    def index_url(self, value: Any, where: str) -> tuple[str, str]:
        """'[sparse+]https://host[:port]/path/' -> ('host[:port]', '/path/')."""
        url = self.url(self.string(value, where).strip().removeprefix("sparse+"), where)
        parts = urlsplit(url)
        if parts.scheme != "https":
            raise self.fail(where, "expected an https:// index URL (Cargo reaches the proxy's registries over TLS)")
        if not _INDEX_PATH.match(parts.path) or any(s in (".", "..") for s in parts.path.split("/")):
            raise self.fail(where, f"the path of {shown_url(url)!r} is not a usable index path (letters, digits "
                                   "and -._~ between slashes; no '.' or '..' segments)")
        host = parts.hostname + (f":{parts.port}" if parts.port else "")
        return self.host(host, where), parts.path

    def upstream(self, raw: Any, where: str, dist: bool = False) -> Upstream:
        """One upstream; a dist root (`dist`) has no config.json, so no download_hosts."""
        fields = ("name", "url", "username", "password", "username_file", "password_file", "priority",
                  "ssl_validation", "timeout_ms", "active", "ca_bundle") + (() if dist else ("download_hosts",))
        raw = self.mapping(raw, where, fields, required=("name", "url"))
        name = self.name(raw["name"], f"{where}.name")
        url = self.url(raw["url"], f"{where}.url")
        username = self.secret(raw, "username", where)
        password = self.secret(raw, "password", where)
        ca_bundle = self.ca_bundle(raw.get("ca_bundle"), f"{where}.ca_bundle")
        return Upstream(
            name=name, url=url, username=username, password=password,
            priority=self.integer(raw.get("priority"), f"{where}.priority", 0, -(2**31)),
            ssl_validation=self.boolean(raw.get("ssl_validation"), f"{where}.ssl_validation", True),
            timeout_ms=self.integer(raw.get("timeout_ms"), f"{where}.timeout_ms", DEFAULT_TIMEOUT_MS, 1),
            active=self.boolean(raw.get("active"), f"{where}.active", True),
            ca_bundle=ca_bundle,
            download_hosts=self.download_hosts(raw.get("download_hosts"), f"{where}.download_hosts"),
        )

    def download_hosts(self, value: Any, where: str) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self.fail(where, "expected a list of host names")
        return tuple(self.host(v, f"{where}[{i}]") for i, v in enumerate(value))

    def name(self, value: Any, where: str) -> str:
        value = self.string(value, where)
        if not _NAME.match(value):
            raise self.fail(where, f"{value!r} is not a valid name (letters, digits, '-', '_', '.'; at most 64)")
        return value

    def host(self, value: Any, where: str) -> str:
        value = self.string(value, where).strip().lower()
        if not _HOST.match(value):
            raise self.fail(where, f"{value!r} is not a host name (expected e.g. index.crates.io)")
        return value

    def url(self, value: Any, where: str) -> str:
        value = self.string(value, where).strip()
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as e:
            raise self.fail(where, f"not a valid URL: {e}") from None
        # Credentials and query are checked first: the scheme error below echoes the URL.
        if parts.username or parts.password:
            raise self.fail(where, "credentials in the URL are not allowed; use username and password")
        if parts.query or parts.fragment:
            raise self.fail(where, "the index URL must not have a query or fragment")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise self.fail(where, f"expected an http:// or https:// URL, got {shown_url(value)!r}")
        return value if value.endswith("/") else value + "/"


def shown_url(url: str) -> str:
    """A URL as logs and errors show it: scheme://host[:port] and no path, where a token may be (some hosted
    registries put one there); as the status page shows upstreams (activity.origin)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(an unparsable URL)"
    if not parts.netloc:
        return "(no scheme://host)"
    host = parts.netloc.rpartition("@")[2]  # credentials in a URL are refused, and never echoed
    return f"{parts.scheme}://{host}" + ("/…" if parts.path.strip("/") else "/")


def _unique(parser: _Parser, items: list[tuple[str, str]], what: str) -> None:
    seen: set[str] = set()
    for where, value in items:
        if value in seen:
            shown = value.partition("/")[0] + ("/…" if "/" in value else "")  # an index path may hold a token
            raise parser.fail(where, f"duplicate {what} {shown!r}")
        seen.add(value)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _type(value: Any) -> str:
    return {type(None): "nothing", bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)
