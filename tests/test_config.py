"""config.py: proxies.yaml -> Settings, and one-line ConfigErrors naming the field."""

from __future__ import annotations

import copy
import os
import re
import textwrap
from pathlib import Path

import pytest
import yaml
from cratecache.config import (
    MAX_CONFIG_BYTES,
    MAX_SECRET_BYTES,
    ConfigError,
    Upstream,
    load_settings,
    parse_settings,
    parse_size,
)

SHIPPED = Path(__file__).resolve().parent.parent / "proxies.yaml"
FILE = Path("/etc/cargo-cache/proxies.yaml")

MINIMAL = {
    "registries": [
        {
            "name": "crates-io",
            "index_host": "index.crates.io",
            "download_host": "static.crates.io",
            "proxies": [
                {"name": "mirror", "url": "https://mirror.example/index/"},
                {"name": "crates-io", "url": "https://index.crates.io/"},
            ],
        }
    ]
}


def parse(doc: dict | str, env: dict | None = None, path: Path = FILE):
    text = doc if isinstance(doc, str) else yaml.safe_dump(doc)
    return parse_settings(text, path, env or {})


def parse_error(doc: dict | str, env: dict | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(doc, env)
    assert "\n" not in str(info.value)
    return info.value


def test_shipped_file_parses():
    settings = load_settings(SHIPPED, env={})
    (reg,) = settings.registries
    assert (reg.name, reg.index_host, reg.download_host) == ("crates-io", "index.crates.io", "static.crates.io")
    (up,) = reg.upstreams
    assert (up.name, up.url, up.active) == ("crates-io", "https://index.crates.io/", True)
    assert (up.timeout_ms, up.ssl_validation, up.auth) == (5000, True, None)
    assert settings.cache.directory == SHIPPED.parent / ".cache" / "cargo"
    assert settings.cache.size_limit == 20 * 10**9
    assert settings.cache.index_ttl == reg.index_ttl == 300


def test_full_example(tmp_path: Path):
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "corp.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    text = """
        cache:
          directory: /var/cache/cargo
          size_limit: 512MiB
          index_ttl: 60
          eviction_policy: least-recently-stored
        registries:
          - name: crates-io
            index_host: Index.Crates.IO
            download_host: static.crates.io
            index_ttl: 30
            proxies:
              - name: corp
                url: https://${CORP_HOST}/index
                username: ${CORP_USER}
                password: ${CORP_TOKEN}
                priority: 5
                ssl_validation: false
                timeout_ms: 2000
                active: false
                ca_bundle: certs/corp.pem
              - name: crates-io
                url: https://index.crates.io/
                priority: 1
    """
    env = {"CORP_HOST": "cargo.corp.example", "CORP_USER": "alice", "CORP_TOKEN": "t0ken"}
    settings = parse(textwrap.dedent(text), env, path=tmp_path / "proxies.yaml")

    assert settings.cache.directory == Path("/var/cache/cargo")
    assert (settings.cache.size_limit, settings.cache.index_ttl) == (512 * 2**20, 60)
    assert settings.cache.eviction_policy == "least-recently-stored"
    (reg,) = settings.registries
    assert (reg.index_host, reg.index_ttl) == ("index.crates.io", 30)
    assert [u.name for u in reg.upstreams] == ["crates-io", "corp"]
    assert [u.name for u in reg.active_upstreams] == ["crates-io"]
    corp = reg.upstream("corp")
    assert corp.url == "https://cargo.corp.example/index/"
    assert corp.auth == ("alice", "t0ken")
    assert (corp.priority, corp.ssl_validation, corp.timeout_ms) == (5, False, 2000)
    assert corp.ca_bundle == str(tmp_path / "certs" / "corp.pem")
    assert settings.match_host("STATIC.crates.io") == (reg, "static.crates.io")
    assert settings.hosts == ["index.crates.io", "static.crates.io"]
    assert "t0ken" not in repr(settings)


def test_equal_priorities_keep_list_order():
    doc = copy.deepcopy(MINIMAL)
    doc["registries"][0]["proxies"] = [
        {"name": n, "url": f"https://{n}.example/", "priority": p} for n, p in [("b", 1), ("a", 0), ("c", 1)]
    ]
    assert [u.name for u in parse(doc).registries[0].upstreams] == ["a", "b", "c"]


def test_registry_ttl_defaults_to_cache_ttl():
    doc = {**copy.deepcopy(MINIMAL), "cache": {"index_ttl": 42}}
    assert parse(doc).registries[0].index_ttl == 42


def test_revalidate_ahead_defaults_to_256_and_zero_switches_it_off():
    assert parse(copy.deepcopy(MINIMAL)).cache.revalidate_ahead == 256
    assert parse({**copy.deepcopy(MINIMAL), "cache": {"revalidate_ahead": 0}}).cache.revalidate_ahead == 0
    error = parse_error({**copy.deepcopy(MINIMAL), "cache": {"revalidate_ahead": -1}})
    assert "cache.revalidate_ahead" in str(error)


def test_relative_cache_directory_is_relative_to_the_file(tmp_path: Path):
    doc = {**copy.deepcopy(MINIMAL), "cache": {"directory": "data/cache"}}
    settings = parse(doc, path=tmp_path / "conf" / "proxies.yaml")
    assert settings.cache.directory == tmp_path / "conf" / "data" / "cache"


def test_the_ca_folder_is_certs_beside_the_file_unless_given_and_relative_to_the_file(tmp_path: Path):
    """Installed or not, the CA lives where the configuration says: never in the package or the working folder."""
    assert load_settings(SHIPPED, env={}).ca_directory == SHIPPED.parent / "certs"  # a checkout: its certs/
    assert parse(copy.deepcopy(MINIMAL), path=tmp_path / "conf" / "proxies.yaml").ca_directory == (
        tmp_path / "conf" / "certs")
    doc = {**copy.deepcopy(MINIMAL), "ca": {"directory": "state/ca"}}
    assert parse(doc, path=tmp_path / "conf" / "proxies.yaml").ca_directory == tmp_path / "conf" / "state" / "ca"
    doc = {**copy.deepcopy(MINIMAL), "ca": {"directory": "/var/lib/cargo-cache/certs"}}
    assert parse(doc, path=tmp_path / "proxies.yaml").ca_directory == Path("/var/lib/cargo-cache/certs")


def test_url_gets_one_trailing_slash():
    doc = copy.deepcopy(MINIMAL)
    doc["registries"][0]["proxies"][0]["url"] = "https://mirror.example/index"
    assert parse(doc).registries[0].upstreams[0].url == "https://mirror.example/index/"


def test_password_not_in_repr():
    up = Upstream(name="corp", url="https://x.example/", username="alice", password="hunter2")
    assert "hunter2" not in repr(up)
    assert "alice" in repr(up)


@pytest.mark.parametrize(
    "value, expected",
    [("20GB", 20 * 10**9), ("512MiB", 512 * 2**20), (1048576, 1048576), ("2Gi", 2 * 2**30),
     ("1.5 kb", 1500), ("100", 100), ("7B", 7), (0, 0)],
)
def test_parse_size(value, expected):
    assert parse_size(value) == expected


@pytest.mark.parametrize(
    "value, problem",
    [("20XB", "expected a size"), ("20iB", "unknown size unit"), ("lots", "expected a size"),
     (-1, "must not be negative"), (True, "expected a size"), (1.5, "expected a size"),
     ("9" * 400 + "GB", "too large")],
)
def test_parse_size_errors(value, problem):
    with pytest.raises(ValueError, match=problem):
        parse_size(value)


REG = "registries[0]"
UP1 = "registries[0].proxies[1]"


def _set(path: str, value):
    """A mutation of MINIMAL: set the dotted/indexed `path` (None deletes the key)."""
    def apply(doc):
        *parents, last = [int(k) if k.isdigit() else k for k in path.split(".")]
        node = doc
        for key in parents:
            node = node[key] if isinstance(key, int) else node.setdefault(key, {})
        if value is None:
            del node[last]
        else:
            node[last] = value
    apply.__name__ = f"{path}={value!r}"  # the test id
    return apply


def _second_registry(**overrides):
    def apply(doc):
        doc["registries"].append({**copy.deepcopy(doc["registries"][0]), "name": "other",
                                  "index_host": "i.other.example", "download_host": "d.other.example",
                                  **overrides})
    return apply


@pytest.mark.parametrize(
    "mutate, field, problem",
    [
        (_set("extra", 1), "extra", "unknown field"),
        (_set("cache.dir", "x"), "cache.dir", "unknown field"),
        (_set("registries.0.ttl", 1), f"{REG}.ttl", "unknown field"),
        (_set("registries.0.proxies.1.retries", 3), f"{UP1}.retries", "unknown field"),
        (_set("registries.0.proxies.1.timeout_ms", "5000"), f"{UP1}.timeout_ms", "expected an integer, got a string"),
        (_set("registries.0.proxies.1.ssl_validation", 1), f"{UP1}.ssl_validation", "expected true or false"),
        (_set("registries.0.proxies.1", ["x"]), UP1, "expected a mapping, got a list"),
        (_set("cache", ["x"]), "cache", "expected a mapping, got a list"),
        (_set("cache", []), "cache", "expected a mapping, got a list"),
        (_set("cache.index_ttl", -1), "cache.index_ttl", "must be at least 0"),
        (_set("registries.0.proxies.1.timeout_ms", 0), f"{UP1}.timeout_ms", "must be at least 1"),
        (_set("cache.size_limit", "20XB"), "cache.size_limit", "expected a size"),
        (_set("cache.eviction_policy", "random"), "cache.eviction_policy", "expected one of"),
        (_set("log_format", "xml"), "log_format", "expected one of text, json, got 'xml'"),
        (_set("registries.0.proxies.1.url", "ftp://mirror.example/"), f"{UP1}.url", "expected an http:// or https://"),
        (_set("registries.0.proxies.1.url", "https:///index/"), f"{UP1}.url", "expected an http:// or https://"),
        (_set("registries.0.proxies.1.url", "https://bob:pw@x.example/"), f"{UP1}.url", "credentials in the URL"),
        (_set("registries.0.proxies.1.url", "https://x.example/?a=1"), f"{UP1}.url", "must not have a query"),
        (_set("registries.0.proxies.1.url", "https://x.example:99999/"), f"{UP1}.url", "not a valid URL"),
        (_set("registries.0.proxies.1.name", "mirror"), f"{UP1}.name", "duplicate upstream name 'mirror'"),
        (_set("registries.0.name", "bad name!"), f"{REG}.name", "not a valid name"),
        (_set("registries.0.name", "crates-io\n"), f"{REG}.name", "not a valid name"),
        (_set("registries.0.index_host", "index/crates"), f"{REG}.index_host", "not a host name"),
        (_set("registries.0.proxies", []), f"{REG}.proxies", "non-empty list"),
        (_set("registries", {}), "registries", "non-empty list"),
        (_second_registry(name="crates-io"), "registries[1].name", "duplicate registry name 'crates-io'"),
        (_second_registry(index_host="static.crates.io"), "registries[1].index_host", "duplicate host"),
        (_second_registry(download_host="INDEX.crates.io"), "registries[1].download_host", "duplicate host"),
        (_set("registries", None), "registries", "required field is missing"),
        (_set("registries.0.index_host", None), f"{REG}.index_host", "required field is missing"),
        (_set("registries.0.proxies.1.url", None), f"{UP1}.url", "required field is missing"),
        (_set("registries.0.index_url", "https://index.crates.io/"), f"{REG}.index_host", "not both"),
        (_second_registry(index_host=None, index_url="http://corp.example/index/"), "registries[1].index_url",
         "expected an https:// index URL"),
        (_second_registry(index_host=None, index_url="https://corp.example/a%2F/"), "registries[1].index_url",
         "not a usable index path"),
        (_second_registry(index_host=None, index_url="https://corp.example/a/../b/"), "registries[1].index_url",
         "not a usable index path"),
        (_second_registry(index_host=None, index_url="https://corp.example/i/?x=1"), "registries[1].index_url",
         "must not have a query"),
        (_second_registry(index_host=None, index_url="https://index.crates.io"), "registries[1].index_url",
         "duplicate host 'index.crates.io'"),
    ],
)
def test_errors_name_file_and_field(mutate, field, problem):
    doc = copy.deepcopy(MINIMAL)
    mutate(doc)
    err = parse_error(doc)
    assert err.field == field
    assert str(err).startswith(f"{FILE}: {field}: ")
    assert problem in err.problem


def test_missing_env_var_names_it_and_no_secret():
    doc = copy.deepcopy(MINIMAL)
    doc["registries"][0]["proxies"][1].update(username="${CORP_USER}", password="${CORP_TOKEN}")
    err = parse_error(doc, env={"CORP_USER": "alice-secret", "OTHER_TOKEN": "hunter2"})
    assert str(err) == f"{FILE}: {UP1}.password: environment variable CORP_TOKEN is not set"


@pytest.mark.parametrize("url", ["ftp://bob:s3cret@mirror.example/", "https://:s3cret@/",
                                 "http:///index/?token=s3cret"])
def test_url_error_does_not_echo_secrets(url):
    doc = copy.deepcopy(MINIMAL)
    doc["registries"][0]["proxies"][0]["url"] = "${MIRROR_URL}"
    err = parse_error(doc, env={"MIRROR_URL": url})
    assert err.field == "registries[0].proxies[0].url"
    assert "s3cret" not in str(err)


def test_missing_ca_bundle(tmp_path: Path):
    doc = copy.deepcopy(MINIMAL)
    doc["registries"][0]["proxies"][0]["ca_bundle"] = "nope.pem"
    with pytest.raises(ConfigError, match=r"proxies\[0\]\.ca_bundle: file not found"):
        parse(doc, path=tmp_path / "proxies.yaml")


@pytest.mark.parametrize(
    "text, message",
    [
        ("registries: [unclosed\n", rf"^{FILE}: not valid YAML at line \d+: "),
        ("", rf"^{FILE}: \(top level\): expected a mapping, got nothing$"),
        ("- a\n- b\n", rf"^{FILE}: \(top level\): expected a mapping, got a list$"),
    ],
)
def test_unusable_documents(text, message):
    err = parse_error(text)
    assert re.search(message, str(err))


def test_nonexistent_file(tmp_path: Path):
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError) as info:
        load_settings(missing, env={})
    assert str(info.value) == f"{missing}: cannot read file (No such file or directory)"


def with_cache(**cache) -> dict:
    doc = copy.deepcopy(MINIMAL)
    doc["cache"] = cache
    return doc


def test_s3_backend_settings_and_defaults():
    s3 = parse(with_cache(backend="s3", s3={"endpoint_url": "http://127.0.0.1:8333/", "bucket": "cargo-cache",
                                            "prefix": "/fleet-a/", "access_key_id": "${S3_KEY}",
                                            "secret_access_key": "${S3_SECRET}"}),
               env={"S3_KEY": "AKIDEXAMPLE", "S3_SECRET": "wJalrXUtnFEMI/K7MDENG"}).cache
    assert s3.backend == "s3"
    assert (s3.s3.endpoint_url, s3.s3.bucket, s3.s3.prefix, s3.s3.region) == (
        "http://127.0.0.1:8333", "cargo-cache", "fleet-a/", "us-east-1")
    assert (s3.s3.access_key_id, s3.s3.secret_access_key) == ("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG")
    assert (s3.s3.ssl_validation, s3.s3.timeout_ms) == (True, 5000)
    assert "wJalrXUtnFEMI" not in repr(s3) and "AKIDEXAMPLE" not in repr(s3)
    assert s3.s3.target == "http://127.0.0.1:8333/cargo-cache/fleet-a/"
    assert parse(MINIMAL).cache.backend == "disk" and parse(MINIMAL).cache.s3 is None
    aws = parse(with_cache(backend="s3", s3={"bucket": "my.bucket-1", "region": "eu-west-1"})).cache.s3
    assert (aws.endpoint_url, aws.target, aws.access_key_id) == (None, "s3://my.bucket-1/", None)


@pytest.mark.parametrize(
    ("cache", "field", "problem"),
    [
        ({"backend": "nfs"}, "cache.backend", "expected one of disk, s3"),
        ({"backend": "s3"}, "cache.s3", "required with backend: s3"),
        ({"s3": {"bucket": "abc"}}, "cache.s3", "only used with backend: s3"),
        ({"backend": "s3", "s3": {"bucket": "ab"}}, "cache.s3.bucket", "is not a bucket name"),
        ({"backend": "s3", "s3": {"bucket": "Cargo_Cache"}}, "cache.s3.bucket", "is not a bucket name"),
        ({"backend": "s3", "s3": {}}, "cache.s3.bucket", "required field is missing"),
        ({"backend": "s3", "s3": {"bucket": "abc", "endpoint_url": "s3.example"}}, "cache.s3.endpoint_url",
         "expected an http:// or https:// URL"),
        ({"backend": "s3", "s3": {"bucket": "abc", "endpoint_url": "http://h:1/abc"}}, "cache.s3.endpoint_url",
         "scheme://host[:port] only"),
        ({"backend": "s3", "s3": {"bucket": "abc", "prefix": "a/../b"}}, "cache.s3.prefix", "'..' segment"),
        ({"backend": "s3", "s3": {"bucket": "abc", "region": "US East"}}, "cache.s3.region", "not a region name"),
        ({"backend": "s3", "s3": {"bucket": "abc", "access_key_id": "k"}}, "cache.s3.secret_access_key",
         "set both access_key_id and secret_access_key"),
        ({"backend": "s3", "s3": {"bucket": "abc", "timeout_ms": 0}}, "cache.s3.timeout_ms", "must be at least 1"),
        ({"backend": "s3", "s3": {"bucket": "abc", "ssl_validation": "no"}}, "cache.s3.ssl_validation",
         "expected true or false"),
        ({"backend": "s3", "s3": {"bucket": "abc", "sekret": "x"}}, "cache.s3.sekret", "unknown field"),
        ({"backend": "s3", "s3": {"bucket": "abc", "ca_bundle": "/nonexistent/ca.pem"}}, "cache.s3.ca_bundle",
         "file not found: /nonexistent/ca.pem"),
    ],
)
def test_s3_errors_name_the_field(cache, field, problem):
    error = parse_error(with_cache(**cache))
    assert error.field == field and problem in error.problem


def test_s3_secret_never_echoed_in_errors():
    error = parse_error(with_cache(backend="s3", s3={"bucket": "abc", "endpoint_url": "http://key:hunter22@h/",
                                                     "secret_access_key": "hunter22", "access_key_id": "key"}))
    assert "hunter22" not in str(error)


def test_download_hosts_are_host_names(tmp_path):
    from tests.fake_registry import make_settings

    hosts = ["CDN.example", "b.example:8443"]
    settings = make_settings(tmp_path, [{"name": "a", "url": "https://a.example/", "download_hosts": hosts}])
    assert settings.registries[0].upstreams[0].download_hosts == ("cdn.example", "b.example:8443")
    with pytest.raises(ConfigError, match=r"download_hosts\[0\]: 'http://x' is not a host name"):
        make_settings(tmp_path, [{"name": "a", "url": "https://a.example/", "download_hosts": ["http://x"]}])


def test_index_url_gives_the_host_port_and_index_path():
    doc = copy.deepcopy(MINIMAL)
    _second_registry(index_host=None, download_host=None,
                     index_url="sparse+https://Corp.Example:8443/artifactory/api/cargo/corp/index")(doc)
    doc["registries"][1] = {k: v for k, v in doc["registries"][1].items() if v is not None}
    reg = parse(doc).registries[1]
    assert (reg.index_host, reg.download_host, reg.index_path) == (
        "corp.example:8443", "corp.example:8443", "/artifactory/api/cargo/corp/index/")
    assert reg.index_url == "https://corp.example:8443/artifactory/api/cargo/corp/index/"


def test_registries_may_share_a_host_under_different_index_paths():
    doc = copy.deepcopy(MINIMAL)
    for repo in ("a", "b"):
        _second_registry(name=repo, index_host=None, download_host=None,
                         index_url=f"https://corp.example/api/cargo/{repo}/index/")(doc)
        doc["registries"][-1] = {k: v for k, v in doc["registries"][-1].items() if v is not None}
    assert [r.index_path for r in parse(doc).registries[1:]] == ["/api/cargo/a/index/", "/api/cargo/b/index/"]


# -- toolchains: -------------------------------------------------------------------------------

def with_toolchains(**section) -> dict:
    doc = copy.deepcopy(MINIMAL)
    doc["toolchains"] = {"proxies": [{"name": "rust-lang", "url": "https://static.rust-lang.org/"}], **section}
    return doc


def test_shipped_file_serves_toolchains_from_static_rust_lang_org():
    settings = load_settings(SHIPPED, env={})
    tc = settings.toolchains
    assert (tc.host, tc.ttl, [u.url for u in tc.upstreams]) == ("static.rust-lang.org", 3600, ["https://static.rust-lang.org/"])
    assert "static.rust-lang.org" in settings.hosts
    assert settings.match_host("static.rust-lang.org", 443, "/dist/channel-rust-stable.toml") == (tc, "static.rust-lang.org")


def test_without_the_section_nothing_about_toolchains_is_intercepted():
    settings = parse(MINIMAL)
    assert settings.toolchains is None and "static.rust-lang.org" not in settings.hosts
    assert settings.match_host("static.rust-lang.org", 443, "/dist/channel-rust-stable.toml") == (None, "")


def test_toolchain_upstreams_take_the_registry_fields_and_defaults():
    doc = with_toolchains(host="dist.corp.example", ttl=60, max_file_size="512MiB")
    doc["toolchains"]["proxies"] = [
        {"name": "rust-lang", "url": "https://static.rust-lang.org", "priority": 2},
        {"name": "corp", "url": "https://dist.corp.example/rust/", "username": "u", "password": "${TOKEN}",
         "priority": 1, "timeout_ms": 900, "ssl_validation": False, "active": False},
    ]
    tc = parse(doc, env={"TOKEN": "t0ken"}).toolchains
    assert (tc.host, tc.ttl, tc.max_file_size) == ("dist.corp.example", 60, 512 * 1024**2)
    corp, rust = tc.upstreams
    assert (corp.name, corp.auth, corp.timeout_ms) == ("corp", ("u", "t0ken"), 900)
    assert (corp.ssl_validation, corp.active) == (False, False)
    assert (rust.url, rust.timeout_ms, rust.active) == ("https://static.rust-lang.org/", 5000, True)
    assert tc.active_upstreams == (rust,)


@pytest.mark.parametrize("section, field, problem", [
    ({"ttl": -1}, "toolchains.ttl", "must be at least 0"),
    ({"mirror": True}, "toolchains.mirror", "unknown field"),
    ({"proxies": []}, "toolchains.proxies", "non-empty list"),
    ({"proxies": [{"name": "x", "url": "ftp://x/"}]}, "toolchains.proxies[0].url", "http:// or https://"),
    ({"proxies": [{"name": "x", "url": "https://x/", "download_hosts": ["y"]}]}, "toolchains.proxies[0].download_hosts",
     "unknown field"),
    ({"proxies": [{"name": "x", "url": "https://x/", "timeout_ms": 0}]}, "toolchains.proxies[0].timeout_ms",
     "at least 1"),
    ({"proxies": [{"name": "x", "url": "https://x/"}, {"name": "x", "url": "https://y/"}]},
     "toolchains.proxies[1].name", "duplicate upstream name"),
    ({"host": "index.crates.io"}, "toolchains.host", "duplicate host"),
    ({"max_file_size": "1KB"}, "toolchains.max_file_size", "at least 1MiB"),
])
def test_toolchain_errors_name_the_field(section, field, problem):
    error = parse_error(with_toolchains(**section))
    assert error.field == field and problem in error.problem


def test_a_registry_cannot_take_the_toolchains_name():
    doc = with_toolchains()
    doc["registries"][0]["name"] = "toolchains"
    assert parse_error(doc).field == "registries[0].name"


# -- secrets from files ------------------------------------------------------------------------

def test_password_and_username_files_are_read_and_remembered(tmp_path: Path):
    (tmp_path / "user").write_text("ci-runner\n")
    (tmp_path / "token").write_text("s3cret\n")
    doc = copy.deepcopy(MINIMAL)
    doc["registries"][0]["proxies"][0] |= {"username_file": "user", "password_file": str(tmp_path / "token")}
    settings = parse(doc, path=tmp_path / "proxies.yaml")
    assert settings.registries[0].upstreams[0].auth == ("ci-runner", "s3cret")
    assert settings.secret_files == (str(tmp_path / "user"), str(tmp_path / "token"))


@pytest.mark.parametrize("fields, problem", [
    ({"password": "x", "password_file": "/run/secret"}, "set either password or password_file, not both"),
    ({"password_file": "/nonexistent/secret"}, "cannot read /nonexistent/secret"),
])
def test_secret_file_errors_name_the_field(fields, problem):
    doc = copy.deepcopy(MINIMAL)
    doc["registries"][0]["proxies"][0] |= fields
    error = parse_error(doc)
    assert error.field == "registries[0].proxies[0].password_file" and problem in error.problem


def test_a_secret_file_must_hold_one_line(tmp_path: Path):
    (tmp_path / "token").write_text("line one\nline two\n")
    doc = copy.deepcopy(MINIMAL)
    doc["registries"][0]["proxies"][0]["password_file"] = str(tmp_path / "token")
    with pytest.raises(ConfigError, match="must hold one line"):
        parse(doc)


def test_s3_keys_from_files(tmp_path: Path):
    (tmp_path / "id").write_text("AKIA\n")
    (tmp_path / "secret").write_text("shh\n")
    doc = copy.deepcopy(MINIMAL)
    doc["cache"] = {"backend": "s3", "s3": {"bucket": "cargo-cache", "access_key_id_file": str(tmp_path / "id"),
                                            "secret_access_key_file": str(tmp_path / "secret")}}
    s3 = parse(doc).cache.s3
    assert (s3.access_key_id, s3.secret_access_key) == ("AKIA", "shh")


def _with_password_file(tmp_path: Path, secret: Path) -> Path:
    doc = copy.deepcopy(MINIMAL)
    doc["registries"][0]["proxies"][0]["password_file"] = str(secret)
    config = tmp_path / "proxies.yaml"
    config.write_text(yaml.safe_dump(doc))
    return config


@pytest.mark.timeout(20)
@pytest.mark.parametrize("kind", ["fifo", "device", "folder"])
def test_a_secret_that_is_not_a_regular_file_is_refused_without_reading_it(tmp_path: Path, kind: str):
    """A FIFO swapped in for a password file used to block the reader (at reload: the whole proxy) forever."""
    secret = tmp_path / "token"
    if kind == "fifo":
        os.mkfifo(secret)
    elif kind == "folder":
        secret.mkdir()
    else:
        secret = Path("/dev/zero")  # endless: read whole, it would fill memory
    with pytest.raises(ConfigError) as info:
        load_settings(_with_password_file(tmp_path, secret), env={})
    assert info.value.field == "registries[0].proxies[0].password_file"
    assert "not a regular file" in info.value.problem


@pytest.mark.timeout(20)
def test_proxies_yaml_must_be_a_regular_file_of_bounded_size(tmp_path: Path):
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_settings(fifo, env={})
    huge = tmp_path / "huge.yaml"
    huge.write_text(yaml.safe_dump(MINIMAL) + "#" * (MAX_CONFIG_BYTES + 1))
    with pytest.raises(ConfigError, match="larger than"):
        load_settings(huge, env={})
    secret = tmp_path / "token"
    secret.write_text("x" * (MAX_SECRET_BYTES + 1))
    with pytest.raises(ConfigError, match="larger than"):
        load_settings(_with_password_file(tmp_path, secret), env={})


@pytest.mark.parametrize("url", ["ftp://dl.cloudsmith.io/T0KEN-abc123/org/repo/cargo/index/",
                                 "dl.cloudsmith.io/T0KEN-abc123/org/repo/cargo/index/"])
def test_a_url_error_never_shows_the_urls_path(url: str):
    """Some hosted registries put a token in the path: an error (logged, and shown as status.json's
    config.last_error) names the field and the origin only."""
    doc = copy.deepcopy(MINIMAL)
    doc["registries"][0]["proxies"][0]["url"] = url
    error = parse_error(doc)
    assert error.field == "registries[0].proxies[0].url" and "http://" in error.problem
    assert "T0KEN" not in str(error)


def test_an_index_url_error_never_shows_the_path():
    doc = copy.deepcopy(MINIMAL)
    del doc["registries"][0]["index_host"]
    doc["registries"][0]["index_url"] = "https://dl.cloudsmith.io/T0KEN-abc123/../cargo/index/"
    error = parse_error(doc)
    assert error.field == "registries[0].index_url" and "T0KEN" not in str(error)


def test_a_duplicate_index_url_error_never_shows_its_path():
    doc = copy.deepcopy(MINIMAL)
    doc["registries"].append({"name": "corp", "index_url": "https://dl.cloudsmith.io/T0KEN/org/cargo/index/",
                              "proxies": [{"name": "c", "url": "https://dl.cloudsmith.io/T0KEN/org/cargo/index/"}]})
    doc["registries"].append({**doc["registries"][1], "name": "corp2"})
    error = parse_error(doc)
    assert error.field == "registries[2].index_url" and "duplicate host 'dl.cloudsmith.io/…'" in error.problem
    assert "T0KEN" not in str(error)


def test_a_ca_bundle_that_is_not_a_regular_file_is_refused(tmp_path: Path):
    fifo = tmp_path / "ca.pem"
    os.mkfifo(fifo)
    doc = copy.deepcopy(MINIMAL)
    doc["registries"][0]["proxies"][0]["ca_bundle"] = str(fifo)
    assert parse_error(doc).problem == f"not a regular file: {fifo}"
