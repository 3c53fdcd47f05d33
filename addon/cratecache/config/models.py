"""proxies.yaml as declared: one model per section, each field with its type, default and a one-line description.

The models check only what the file says (types, bounds, forms, fields that exclude or need each other); they do
no I/O: secret files, CA bundles and relative paths are dealt with by load.py. A `null` value is the same as a
missing field. The JSON Schema shipped as proxies.schema.json is `schema()`.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from . import defaults as d
from . import policy as p
from .errors import problem, type_name
from .fields import (
    AdvisoryId,
    Bucket,
    CrateMatchText,
    Duration,
    Endpoint,
    FilePath,
    Host,
    Hosts,
    IndexUrl,
    Listen,
    Name,
    OneLine,
    Prefix,
    Region,
    Seconds,
    Size,
    Text,
    Url,
    at_least,
    index_location,
    listed,
    non_empty,
    one_of,
)


class Section(BaseModel):
    """A mapping with only the declared fields (unknown ones are an error naming the allowed ones)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _mapping(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            raise problem(f"expected a mapping, got {type_name(value)}")
        for key in value:
            if key not in cls.model_fields:
                raise problem(f"unknown field (allowed: {', '.join(cls.model_fields)})", str(key))
        return {key: v for key, v in value.items() if v is not None}

    def _inline_or_file(self, name: str) -> None:
        """A secret is given inline (`password`) or as a file (`password_file`), not both."""
        if getattr(self, name) is not None and getattr(self, f"{name}_file") is not None:
            raise problem(f"set either {name} or {name}_file, not both", f"{name}_file")


class DistUpstream(Section):
    """An upstream of the toolchains section: a dist root serving dist/ and rustup/."""

    name: Name = Field(description="unique within its section; used in logs, metrics and errors")
    url: Url = Field(description="the upstream's root (a missing trailing / is added; no credentials in it)")
    username: Text | None = Field(None, description="HTTP Basic user, sent only to the upstream's own origin")
    password: Text | None = Field(None, description="HTTP Basic password (${VAR} reads the environment)")
    username_file: FilePath | None = Field(None, description="instead of username: a file holding it (one line)")
    password_file: FilePath | None = Field(None, description="instead of password: a file holding it (one line)")
    priority: Annotated[int, Field(ge=-(2**31))] = Field(0, description="lower is tried first; list order breaks ties")
    ssl_validation: bool = Field(True, description="false accepts any certificate")
    timeout_ms: Annotated[int, Field(ge=1)] = Field(d.DEFAULT_TIMEOUT_MS, description="connect and read timeout")
    active: bool = Field(True, description="false: never contacted")
    ca_bundle: FilePath | None = Field(None, description="a PEM file of the CA(s) to trust for this upstream")

    @model_validator(mode="after")
    def _secrets(self) -> DistUpstream:
        self._inline_or_file("username")
        self._inline_or_file("password")
        return self


class Upstream(DistUpstream):
    """An upstream sparse registry of a registry (`registries[].proxies[]`)."""

    url: Url = Field(description="the upstream's sparse index root (its config.json gives its dl)")
    download_hosts: Hosts = Field([], description="hosts (host[:port]) its config.json's dl may name besides its own")


class Quarantine(Section):
    """The cooldown of new versions (`policy.quarantine`)."""

    min_age: Duration = Field(0, description="a version younger than this is hidden (3d, 12h, 90m, 30s or seconds; "
                                             "0: off)")
    pinned: one_of(p.PINNED) = Field("allow", description="a hidden young version a Cargo.lock still asks for: allow "
                                                          "(downloads) or deny (refused)")
    exempt: Annotated[list[CrateMatchText], listed("crate matches")] = Field(
        [], description="never quarantined: names, name@version, globs")
    missing_pubtime: one_of(p.MISSING_PUBTIME) = Field(
        "first-seen", description="a version without pubtime: first-seen (aged from the proxy's first sighting) or "
                                  "allow")


class Advisories(Section):
    """What RustSec advisories do (`policy.advisories`)."""

    database: FilePath | None = Field(None, description="a checkout of the RustSec advisory database (relative: to "
                                                        "this file's folder); none: no advisories")
    malicious: one_of(p.MALICIOUS) = Field("deny", description="a version with a malicious advisory: hide or deny")
    vulnerable: one_of(p.VULNERABLE) = Field("hide", description="a version with a vulnerability: warn, hide or deny")
    informational: one_of(p.INFORMATIONAL) = Field("warn", description="unmaintained, unsound, notice: warn or hide")
    ignore: Annotated[list[AdvisoryId], listed("advisory ids")] = Field(
        [], description="advisory ids (RUSTSEC-YYYY-NNNN) that affect nothing")


class Rule(Section):
    """An explicit decision (`policy.rules[]`): exactly one of allow, warn, hide, deny, and an optional reason."""

    model_config = ConfigDict(json_schema_extra={"oneOf": [{"required": [a]} for a in p.ACTIONS]})

    allow: CrateMatchText | None = Field(None, description="these crates are served whatever advisories and the "
                                                           "quarantine say")
    warn: CrateMatchText | None = Field(None, description="served, logged and counted")
    hide: CrateMatchText | None = Field(None, description="served yanked: a fresh resolve skips them")
    deny: CrateMatchText | None = Field(None, description="hidden, and their download refused")
    reason: OneLine | None = Field(None, description="said in the log and in a refused download's body")

    @model_validator(mode="after")
    def _one_action(self) -> Rule:
        given = [a for a in p.ACTIONS if getattr(self, a) is not None]
        if not given:
            raise problem(f"expected one of {', '.join(p.ACTIONS)} (with the crates it is about)")
        if len(given) > 1:
            raise problem(f"set one of {' and '.join(given)} per rule, not both", given[1])
        return self


class Policy(Section):
    """The supply-chain policy (`policy:`): applied to every registry, unless a registry overrides part of it."""

    dry_run: bool = Field(False, description="decide, log, count and label, but serve as if there were no policy")
    quarantine: Quarantine = Field(default_factory=Quarantine, description="the cooldown of new versions")
    advisories: Advisories = Field(default_factory=Advisories, description="what RustSec advisories do")
    rules: Annotated[list[Rule], listed("rules")] = Field(
        [], description="explicit decisions, first match wins; allow beats advisories and quarantine")


def partial(model: type[Section], name: str) -> type[Section]:
    """`model` with every field optional and unset by default: a part of the section, to merge over it (a section
    within it becomes partial too). Unknown fields stay errors; the checks of the fields are the section's."""
    fields: dict[str, Any] = {}
    for key, f in model.model_fields.items():
        kind = f.annotation
        if isinstance(kind, type) and issubclass(kind, Section):
            kind = partial(kind, kind.__name__ + "Override")
        elif f.metadata:
            kind = Annotated[(kind, *f.metadata)]
        fields[key] = (kind | None, Field(None, description=f.description))
    return create_model(name, __base__=Section, __doc__=f"A part of {model.__name__}, merged over it.", **fields)


PolicyOverride = partial(Policy, "PolicyOverride")


class Registry(Section):
    """A registry whose hosts are intercepted (`registries[]`)."""

    name: Name = Field(description="unique; used in logs, metrics and errors")
    index_host: Host | None = Field(None, description="intercepted sparse-index host (an index at its root); "
                                                      "or index_url")
    index_url: IndexUrl | None = Field(None, description="the index URL as Cargo has it, for an index under a path; "
                                                         "or index_host")
    download_host: Host | None = Field(None, description="intercepted download host (default: the index host)")
    index_ttl: Seconds | None = Field(None, description="seconds an index file is fresh (default: cache.index_ttl)")
    proxies: Annotated[list[Upstream], non_empty("upstreams"), Field(min_length=1)] = Field(
        description="upstream sparse registries, tried by priority")
    policy: PolicyOverride | None = Field(None, description="this registry's own policy: any part of the policy "
                                                            "section, merged over it key by key (a list replaces)")

    @model_validator(mode="after")
    def _checks(self) -> Registry:
        if self.index_host is None and self.index_url is None:
            raise problem("required field is missing (or give index_url)", "index_host")
        if self.index_host is not None and self.index_url is not None:
            raise problem("set either index_host (an index at the host's root) or index_url (the index URL as Cargo "
                          "has it), not both", "index_host")
        unique([(("proxies", i, "name"), u.name) for i, u in enumerate(self.proxies)], "upstream name")
        return self

    @property
    def location(self) -> tuple[str, str]:
        """('host[:port]', '/index/path/') of the index."""
        return index_location(self.index_url) if self.index_url else (self.index_host, "/")


class Toolchains(Section):
    """rustup's dist server (`toolchains:`); without this section nothing about toolchains is intercepted."""

    host: Host = Field(d.DEFAULT_DIST_HOST, description="the intercepted dist host (rustup's RUSTUP_DIST_SERVER)")
    ttl: Seconds = Field(d.DEFAULT_DIST_TTL, description="seconds a moving name (channel manifest) is served unasked")
    max_file_size: Annotated[Size, at_least(1024**2, "1MiB")] = Field(
        d.DEFAULT_MAX_DIST_FILE_SIZE, description="a larger component is refused without buffering it")
    proxies: Annotated[list[DistUpstream], non_empty("upstream dist roots"), Field(min_length=1)] = Field(
        description="upstream dist roots (each serves dist/ and rustup/), tried by priority")

    @model_validator(mode="after")
    def _checks(self) -> Toolchains:
        unique([(("proxies", i, "name"), u.name) for i, u in enumerate(self.proxies)], "upstream name")
        return self


class Mirror(Section):
    """The mirror listener (`mirror:`): the same cache as plain registry URLs, for clients without the proxy's CA."""

    listen: Listen = Field(description="host:port it listens on (0.0.0.0:8090; [::]:8090)")
    public_url: Url = Field(description="how clients reach it (https://cargo-gw.corp.example:8090); config.json's dl "
                                        "and the 401's login_url are built on it")
    tls_cert: FilePath | None = Field(None, description="PEM certificate (chain) it serves HTTPS with; none: plain "
                                                        "HTTP, for a trusted network")
    tls_key: FilePath | None = Field(None, description="the certificate's private key (PEM)")
    auth: one_of(("none", "tokens")) = Field("none", description="tokens: Cargo must send a token of tokens_file "
                                                                  "(config.json says auth-required)")
    tokens_file: FilePath | None = Field(None, description="with auth: tokens, one NAME:sha256:<hex> a line "
                                                           "(python -m cratecache token add NAME); re-read live")

    @model_validator(mode="after")
    def _checks(self) -> Mirror:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise problem("set both tls_cert and tls_key, or neither", "tls_key" if self.tls_cert else "tls_cert")
        if self.auth == "tokens" and self.tokens_file is None:
            raise problem("required with auth: tokens", "tokens_file")
        if self.auth == "none" and self.tokens_file is not None:
            raise problem("only used with auth: tokens", "tokens_file")
        return self


class S3(Section):
    """The shared bucket of a fleet (`cache.s3`, with backend: s3)."""

    bucket: Bucket = Field(description="the bucket name (3-63 of a-z, 0-9, '.', '-')")
    endpoint_url: Endpoint | None = Field(None, description="scheme://host[:port] of MinIO, Ceph RGW, SeaweedFS, R2, "
                                                            "...; omit for AWS")
    prefix: Prefix = Field("", description="every object goes under it, so fleets can share a bucket")
    region: Region = Field(d.DEFAULT_REGION, description="the bucket's region")
    access_key_id: Text | None = Field(None, description="with secret_access_key; neither: AWS's own variables or "
                                                         "the instance's role")
    secret_access_key: Text | None = Field(None, description="with access_key_id")
    access_key_id_file: FilePath | None = Field(None, description="instead of access_key_id: a file holding it")
    secret_access_key_file: FilePath | None = Field(None, description="instead of secret_access_key: a file holding it")
    ssl_validation: bool = Field(True, description="false accepts any certificate from the endpoint")
    timeout_ms: Annotated[int, Field(ge=1)] = Field(d.DEFAULT_TIMEOUT_MS, description="connect timeout")
    ca_bundle: FilePath | None = Field(None, description="a PEM file of a private CA for the endpoint (besides the "
                                                         "public ones)")

    @model_validator(mode="after")
    def _keys(self) -> S3:
        self._inline_or_file("access_key_id")
        self._inline_or_file("secret_access_key")
        key = self.access_key_id is not None or self.access_key_id_file is not None
        secret = self.secret_access_key is not None or self.secret_access_key_file is not None
        if key != secret:
            raise problem("set both access_key_id and secret_access_key, or neither",
                          "secret_access_key" if key else "access_key_id")
        return self


class Cache(Section):
    """Where and how the cache is kept, and how long what it holds is served (`cache:`)."""

    directory: FilePath = Field(d.DEFAULT_DIRECTORY, description="the cache folder (relative: to this file's folder)")
    size_limit: Size = Field(d.DEFAULT_SIZE_LIMIT, description="beyond it the least recently used entries are evicted")
    index_ttl: Seconds = Field(d.DEFAULT_INDEX_TTL, description="seconds an index file / config.json is served "
                                                                "without asking upstream")
    eviction_policy: one_of(d.EVICTION_POLICIES) = Field(d.DEFAULT_EVICTION_POLICY, description="a diskcache policy")
    negative_ttl: Seconds = Field(d.DEFAULT_NEGATIVE_TTL, description="seconds 'no upstream has it' is remembered")
    upstream_backoff: Seconds = Field(d.DEFAULT_BACKOFF, description="seconds an unreachable upstream is skipped")
    backoff_after: Annotated[int, Field(ge=1)] = Field(d.DEFAULT_BACKOFF_AFTER, description="consecutive connection "
                                                       "failures before a back-off")
    lease_seconds: Annotated[int, Field(ge=1)] = Field(d.DEFAULT_LEASE, description="longest wait for another worker "
                                                       "fetching the same object")
    offline: bool = Field(False, description="never contact an upstream; serve what is cached whatever its age")
    offline_prune_index: bool = Field(False, description="offline: index files list only versions whose .crate is "
                                                         "cached")
    revalidate_ahead: Seconds = Field(d.DEFAULT_REVALIDATE_AHEAD, description="expired index files revalidated "
                                                                              "before Cargo asks (0: off)")
    max_crate_size: Annotated[Size, at_least(1024, "1KiB")] = Field(
        d.DEFAULT_MAX_CRATE_SIZE, description="a larger .crate is refused without buffering it")
    max_index_size: Annotated[Size, at_least(1024, "1KiB")] = Field(
        d.DEFAULT_MAX_INDEX_SIZE, description="likewise for an index file or config.json")
    backend: one_of(d.BACKENDS, echo=True) = Field(d.DEFAULT_BACKEND, description="disk: the cache is directory; "
                                                   "s3: a shared bucket, directory its local tier")
    s3: S3 | None = Field(None, description="the bucket, with backend: s3")

    @model_validator(mode="after")
    def _backend(self) -> Cache:
        if self.backend == "disk" and self.s3 is not None:
            raise problem("only used with backend: s3", "s3")
        if self.backend == "s3" and self.s3 is None:
            raise problem("required with backend: s3 (at least the bucket)", "s3")
        return self


class Ca(Section):
    """The proxy's own CA, which signs the intercepted hosts' certificates (`ca:`)."""

    directory: FilePath = Field(d.DEFAULT_CA_DIRECTORY, description="the CA's folder (mitmproxy's confdir; relative: to "
                                                                    "this file's folder); created with the CA if absent")


class ProxiesFile(Section):
    """proxies.yaml: the cache, the registries whose hosts are intercepted, and rustup's dist server."""

    model_config = ConfigDict(title="cargo-cache proxies.yaml")

    cache: Cache = Field(default_factory=Cache, description="where and how the cache is kept")
    registries: Annotated[list[Registry], non_empty("registries"), Field(min_length=1)] | None = Field(
        None, description="the registries whose hosts are intercepted (required without toolchains)")
    toolchains: Toolchains | None = Field(None, description="rustup's dist server; without it toolchains are not "
                                                            "intercepted")
    policy: Policy = Field(default_factory=Policy, description="the supply-chain policy of every registry: quarantine, "
                                                               "advisories, rules")
    log_format: one_of(d.LOG_FORMATS, echo=True) = Field(d.DEFAULT_LOG_FORMAT, description="text: mitmdump's lines; "
                                                         "json: one JSON object a line (--set cargo_log_format wins)")
    ca: Ca = Field(default_factory=Ca, description="where the proxy's CA is kept")
    mirror: Mirror | None = Field(None, description="a listener serving the same cache as plain registry URLs "
                                                    "(source replacement, RUSTUP_DIST_SERVER); none: no mirror")

    @model_validator(mode="after")
    def _checks(self) -> ProxiesFile:
        if self.registries is None and self.toolchains is None:
            raise problem("required field is missing", "registries")
        registries = self.registries or []
        unique([(("registries", i, "name"), r.name) for i, r in enumerate(registries)], "registry name")
        hosts = []
        for i, r in enumerate(registries):
            host, path = r.location
            under = path.rstrip("/")  # registries may share a host under different index paths
            hosts.append((("registries", i, "index_url" if r.index_url else "index_host"), host + under))
            if r.download_host is not None and r.download_host != host:
                hosts.append((("registries", i, "download_host"), r.download_host + under))
        if self.toolchains is not None:
            hosts.append((("toolchains", "host"), self.toolchains.host))
            for i, r in enumerate(registries):
                if r.name == d.TOOLCHAINS:
                    raise problem(f"{d.TOOLCHAINS!r} is the name of the toolchains section", "registries", i, "name")
        unique(hosts, "host")
        if self.mirror is not None:
            for i, r in enumerate(registries):
                if r.name == d.MIRROR_TOOLCHAINS_PATH:
                    raise problem(f"the mirror serves toolchains under /{d.MIRROR_TOOLCHAINS_PATH}/: choose another "
                                  "name", "registries", i, "name")
        return self


def unique(items: list[tuple[tuple[str | int, ...], str]], what: str) -> None:
    """Each value once; the second of two is the error (an index path after the host shown as '/…')."""
    seen: set[str] = set()
    for where, value in items:
        if value in seen:
            shown = value.partition("/")[0] + ("/…" if "/" in value else "")  # an index path may hold a token
            raise problem(f"duplicate {what} {shown!r}", *where)
        seen.add(value)


def schema() -> dict:
    """The JSON Schema of proxies.yaml (proxies.schema.json), for editors to complete and check the file."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **ProxiesFile.model_json_schema()}
