"""proxies.yaml -> Settings: read the file, check it against the models, then what needs the file system (secret
files, CA bundles, the advisory database, paths relative to the file's folder), each error naming its field; and
each registry's effective policy, its own `policy:` merged over the global one."""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable, Mapping
from pathlib import Path

import yaml
from pydantic import ValidationError

from . import models
from .defaults import MAX_CONFIG_BYTES
from .errors import ConfigError, from_validation
from .files import read_regular_file, read_secret
from .policy import ACTIONS, AdvisoryPolicy, Policy, Quarantine, Rule, parse_crate_match
from .settings import CacheSettings, Mirror, Registry, S3Settings, Settings, Toolchains, Upstream


def load_settings(path: str | os.PathLike, env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate a proxies.yaml file (and the secret files it names)."""
    path = Path(path)
    try:
        text = read_regular_file(path, MAX_CONFIG_BYTES)
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(path, "", f"cannot read file ({getattr(e, 'strerror', None) or e})") from e
    return parse_settings(text, path, os.environ if env is None else env, read_secret)


def parse_settings(text: str, path: Path, env: Mapping[str, str],
                   read_file: Callable[[Path], str] = read_secret) -> Settings:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(path, "", f"not valid YAML{where}: {getattr(e, 'problem', e)}") from e
    try:
        checked = models.ProxiesFile.model_validate(doc, context={"env": env})
    except ValidationError as e:
        raise from_validation(path, e) from None  # pydantic's own text would show the values, secrets too
    return _Builder(path, read_file).settings(checked)


class _Builder:
    """Checked models -> Settings, with what the models leave out (they do no I/O)."""

    def __init__(self, path: Path, read_file: Callable[[Path], str]):
        self.path, self.read_file = path, read_file
        self.secret_files: list[str] = []

    def settings(self, doc: models.ProxiesFile) -> Settings:
        cache = self.cache(doc.cache)
        policy = self.policy(doc.policy.model_dump(), {}, "policy", "policy")
        registries = tuple(self.registry(r, f"registries[{i}]", cache.index_ttl, doc.policy)
                           for i, r in enumerate(doc.registries or ()))
        toolchains = None
        if (tc := doc.toolchains) is not None:
            ups = self.upstreams(tc.proxies, "toolchains.proxies")
            toolchains = Toolchains(host=tc.host, upstreams=ups, ttl=tc.ttl, max_file_size=tc.max_file_size)
        mirror = self.mirror(doc.mirror) if doc.mirror is not None else None
        return Settings(source=str(self.path), cache=cache, registries=registries, toolchains=toolchains,
                        secret_files=tuple(dict.fromkeys(self.secret_files)), policy=policy,
                        log_format=doc.log_format,
                        ca_directory=self.path_value(doc.ca.directory, "ca.directory"), mirror=mirror)

    def mirror(self, m: models.Mirror) -> Mirror:
        host, _, port = m.listen.rpartition(":")
        cert = self.ca_bundle(m.tls_cert, "mirror.tls_cert")  # regular files that exist
        key = self.ca_bundle(m.tls_key, "mirror.tls_key")
        if cert is not None and key is not None:
            try:  # a certificate clients would fail on later is one line now
                ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
            except (ssl.SSLError, OSError) as e:
                raise ConfigError(self.path, "mirror.tls_cert", f"cannot use {cert} with {key}: {e}") from None
        tokens = str(self.path_value(m.tokens_file, "mirror.tokens_file")) if m.tokens_file else None
        return Mirror(listen_host=host.strip("[]"), listen_port=int(port), public_url=m.public_url.rstrip("/"),
                      tls_cert=cert, tls_key=key, auth=m.auth, tokens_file=tokens)

    def cache(self, c: models.Cache) -> CacheSettings:
        fields = c.model_dump(exclude={"directory", "s3"})
        return CacheSettings(directory=self.path_value(c.directory, "cache.directory"), **fields,
                             s3=self.s3(c.s3) if c.s3 is not None else None)

    def s3(self, s3: models.S3) -> S3Settings:
        where = "cache.s3"
        return S3Settings(
            bucket=s3.bucket, endpoint_url=s3.endpoint_url, prefix=s3.prefix, region=s3.region,
            access_key_id=self.secret(s3, "access_key_id", where),
            secret_access_key=self.secret(s3, "secret_access_key", where),
            ssl_validation=s3.ssl_validation, timeout_ms=s3.timeout_ms,
            ca_bundle=self.ca_bundle(s3.ca_bundle, f"{where}.ca_bundle"))

    def registry(self, r: models.Registry, where: str, default_ttl: int, policy: models.Policy) -> Registry:
        index_host, index_path = r.location
        own = r.policy.model_dump(exclude_unset=True) if r.policy is not None else {}
        return Registry(name=r.name, index_host=index_host, download_host=r.download_host or index_host,
                        upstreams=self.upstreams(r.proxies, f"{where}.proxies"),
                        index_ttl=default_ttl if r.index_ttl is None else r.index_ttl, index_path=index_path,
                        policy=self.policy(policy.model_dump(), own, "policy", f"{where}.policy"))

    def policy(self, section: dict, own: dict, where: str, own_where: str) -> Policy:
        """The global section (`where`) with a registry's own part (`own`, at `own_where`) merged over it."""
        doc = merged(section, own)
        q, a = doc["quarantine"], doc["advisories"]
        database_at = own_where if "database" in own.get("advisories", {}) else where
        return Policy(
            dry_run=doc["dry_run"],
            quarantine=Quarantine(min_age=q["min_age"], pinned=q["pinned"], missing_pubtime=q["missing_pubtime"],
                                  exempt=tuple(parse_crate_match(text) for text in q["exempt"])),
            advisories=AdvisoryPolicy(
                database=self.database(a["database"], f"{database_at}.advisories.database"),
                malicious=a["malicious"], vulnerable=a["vulnerable"], informational=a["informational"],
                ignore=tuple(dict.fromkeys(a["ignore"]))),
            rules=tuple(_rule(r) for r in doc["rules"]))

    def database(self, text: str | None, where: str) -> str | None:
        """A checkout of the RustSec advisory database: a folder with `crates/` (read by the runtime, not here)."""
        if text is None:
            return None
        path = self.path_value(text, where)
        for folder in (path, path / "crates"):
            if not folder.is_dir():
                what = "not a directory" if folder.exists() else "no such directory"
                raise ConfigError(self.path, where, f"{what}: {folder} (expected a checkout of the RustSec advisory "
                                                    "database, https://github.com/rustsec/advisory-db)")
        return str(path)

    def upstreams(self, ups: list[models.DistUpstream], where: str) -> tuple[Upstream, ...]:
        built = [self.upstream(u, f"{where}[{i}]") for i, u in enumerate(ups)]
        return tuple(sorted(built, key=lambda u: u.priority))  # stable: list order breaks ties

    def upstream(self, u: models.DistUpstream, where: str) -> Upstream:
        return Upstream(
            name=u.name, url=u.url, username=self.secret(u, "username", where),
            password=self.secret(u, "password", where), priority=u.priority, ssl_validation=u.ssl_validation,
            timeout_ms=u.timeout_ms, active=u.active, ca_bundle=self.ca_bundle(u.ca_bundle, f"{where}.ca_bundle"),
            download_hosts=tuple(getattr(u, "download_hosts", ())))

    def secret(self, section: models.Section, name: str, where: str) -> str | None:
        """`name` given inline (already expanded) or as `{name}_file` (read now, and again when it changes)."""
        file = getattr(section, f"{name}_file")
        if file is None:
            return getattr(section, name)
        where = f"{where}.{name}_file"
        path = self.path_value(file, where)
        try:
            value = self.read_file(path)
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(self.path, where, f"cannot read {path} ({getattr(e, 'strerror', None) or e})") from None
        if not value or "\n" in value or "\x00" in value:
            raise ConfigError(self.path, where, f"{path} must hold one line (the {name})")
        self.secret_files.append(str(path))
        return value

    def ca_bundle(self, value: str | None, where: str) -> str | None:
        if value is None:
            return None
        path = self.path_value(value, where)
        if not path.is_file():  # a FIFO or device would hang or flood whoever reads it (ssl, at every new client)
            problem = f"not a regular file: {path}" if path.exists() else f"file not found: {path}"
            raise ConfigError(self.path, where, problem)
        return str(path)

    def path_value(self, text: str, where: str) -> Path:
        """A path; relative ones are relative to the configuration file's folder."""
        try:
            path = Path(text).expanduser()
            return path if path.is_absolute() else (self.path.parent / path).resolve()
        except (OSError, RuntimeError, ValueError) as e:
            raise ConfigError(self.path, where, f"not a usable path: {e}") from None


def merged(base: dict, part: dict) -> dict:
    """`part` over `base`, key by key: a mapping merges into a mapping; anything else, a list too, replaces."""
    out = dict(base)
    for key, value in part.items():
        out[key] = merged(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


def _rule(rule: dict) -> Rule:
    action = next(a for a in ACTIONS if rule.get(a) is not None)  # the model let exactly one through
    return Rule(action=action, match=parse_crate_match(rule[action]), reason=rule.get("reason"))
