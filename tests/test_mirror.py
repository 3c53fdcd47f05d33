"""boundary/mirror.py: a path on the mirror listener -> the request on an intercepted host it stands for (pure), and
the config.json the mirror serves; mirror_listener.py's mode list (pure)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from cratecache.boundary.mirror import MirrorTarget, client_config, index_url, locate, welcome
from cratecache.boundary.routes import Rejection, classify
from cratecache.config import ConfigError, parse_settings
from cratecache.operations.mirror_modes import TARGET_HOST, mirror_modes, mode_spec
from cratecache.protocols.routes import ConfigRoute, CrateRoute, DistRoute, IndexRoute
from mitmproxy.proxy import mode_specs

FILE = Path("/etc/cargo-cache/proxies.yaml")
DOC = {
    "registries": [
        {"name": "crates-io", "index_host": "index.crates.io", "download_host": "static.crates.io",
         "proxies": [{"name": "up", "url": "https://index.crates.io/"}]},
        {"name": "corp", "index_url": "https://corp.example/api/cargo/corp/index/",
         "proxies": [{"name": "up", "url": "https://corp.example/api/cargo/corp/index/"}]},
    ],
    "toolchains": {"proxies": [{"name": "origin", "url": "https://static.rust-lang.org/"}]},
    "mirror": {"listen": "0.0.0.0:8090", "public_url": "https://cargo-gw.corp.example:8090"},
}


def settings(**mirror):
    doc = {**DOC, "mirror": {**DOC["mirror"], **mirror}}
    return parse_settings(yaml.safe_dump(doc), FILE, {}, read_file=lambda path: "")


def route(path: str, method: str = "GET"):
    """What the transparent proxy's classification makes of the request a mirror path stands for."""
    s = settings()
    target = locate(s, s.mirror, method, path)
    if isinstance(target, Rejection):
        return target
    return classify(target.source, target.host, method, target.path)


@pytest.mark.parametrize("path, expected", [
    ("/crates-io/index/config.json", ("config", "config/crates-io")),
    ("/crates-io/index/se/rd/serde", ("index", "index/crates-io/serde")),
    ("/crates-io/index/3/l/log", ("index", "index/crates-io/log")),
    ("/crates-io/dl/serde/1.0.152/download", ("crate", "crate/crates-io/serde/1.0.152")),
    ("/crates-io/dl/serde/serde-1.0.152.crate", ("crate", "crate/crates-io/serde/1.0.152")),
    ("/corp/index/config.json", ("config", "config/corp")),
    ("/corp/index/an/yh/anyhow", ("index", "index/corp/anyhow")),
    ("/corp/dl/anyhow/1.0.69/download", ("crate", "crate/corp/anyhow/1.0.69")),
    ("/rustup/dist/channel-rust-stable.toml", ("manifest", "manifest/dist/channel-rust-stable.toml")),
    ("/rustup/dist/2026-04-16/rustc-1.95.0-x86_64-unknown-linux-gnu.tar.xz",
     ("component", "component/dist/2026-04-16/rustc-1.95.0-x86_64-unknown-linux-gnu.tar.xz")),
])
def test_mirror_paths_are_the_transparent_routes_under_the_same_cache_keys(path, expected):
    found = route(path)
    assert isinstance(found, (ConfigRoute, IndexRoute, CrateRoute, DistRoute)), found
    assert (found.kind, found.key) == expected


@pytest.mark.parametrize("path, status, reason", [
    ("/", 404, "not a registry path"),  # the root page is the addon's, not a route
    ("/nowhere/index/config.json", 404, "no registry 'nowhere' on this mirror"),
    ("/crates-io", 404, "not a registry path"),
    ("/crates-io/index/", 404, "not a registry path"),
    ("/crates-io/api/v1/crates/new", 404, "not a registry path"),
    ("/crates-io/index/crates/serde/1.0.152/download", 404, "not a registry path"),  # downloads only under dl/
    ("/crates-io/dl/serde", 404, "not a registry path"),
    ("/crates-io/index/se/rd/Serde", 404, "lowercase"),
    ("/crates-io/index/se/rd/serde?x", 400, "query strings"),
    ("/crates-io/index/%2e%2e/dl/x", 400, "percent-encoded"),
    ("/crates-io/index/../dl/serde/1.0.0/download", 400, "path traversal"),
    ("/crates-io//index/config.json", 400, "malformed path"),
])
def test_anything_else_is_refused_with_a_reason(path, status, reason):
    found = route(path)
    assert isinstance(found, Rejection)
    assert found.status == status and reason in found.reason


def test_writes_are_refused():
    assert route("/crates-io/index/config.json", "PUT") == Rejection(405, "method PUT not allowed; the registry is "
                                                                          "read-only (GET, HEAD)")


def test_toolchains_are_not_served_without_a_toolchains_section():
    s = parse_settings(yaml.safe_dump({k: v for k, v in DOC.items() if k != "toolchains"}), FILE, {})
    found = locate(s, s.mirror, "GET", "/rustup/dist/channel-rust-stable.toml")
    assert found == Rejection(404, "this mirror serves no toolchains (no toolchains section)")


def test_a_public_url_with_a_path_is_the_prefix_of_every_mirror_path():
    s = settings(public_url="https://gw.corp.example/cargo")
    assert isinstance(locate(s, s.mirror, "GET", "/cargo/crates-io/index/config.json"), MirrorTarget)
    assert locate(s, s.mirror, "GET", "/crates-io/index/config.json").status == 404
    assert index_url(s.mirror, s.registries[1]) == "https://gw.corp.example/cargo/corp/index/"
    assert json.loads(client_config(s.mirror, s.registries[1])) == {"dl": "https://gw.corp.example/cargo/corp/dl"}


def test_only_config_json_is_rewritten():
    s = settings()
    assert locate(s, s.mirror, "GET", "/corp/index/config.json").config
    assert not locate(s, s.mirror, "GET", "/corp/index/an/yh/anyhow").config
    assert not locate(s, s.mirror, "GET", "/rustup/dist/channel-rust-stable.toml").config


def test_config_json_sends_downloads_to_the_mirror_and_asks_for_tokens_only_with_them():
    plain = settings()
    assert json.loads(client_config(plain.mirror, plain.registries[0])) == \
        {"dl": "https://cargo-gw.corp.example:8090/crates-io/dl"}
    with_tokens = settings(auth="tokens", tokens_file="tokens")
    assert json.loads(client_config(with_tokens.mirror, with_tokens.registries[0])) == \
        {"dl": "https://cargo-gw.corp.example:8090/crates-io/dl", "auth-required": True}


def test_the_root_page_names_what_to_configure():
    s = settings(auth="tokens", tokens_file="tokens")
    page = welcome(s, s.mirror)
    assert "registry corp: sparse+https://cargo-gw.corp.example:8090/corp/index/" in page
    assert "RUSTUP_DIST_SERVER=https://cargo-gw.corp.example:8090/rustup" in page
    assert "token add NAME" in page
    unlisted = welcome(s, s.mirror, listed=False)  # to a client without a known token
    assert "sparse+" not in unlisted and "/corp/index/" not in unlisted and "RUSTUP_DIST_SERVER" in unlisted


def test_the_dl_of_the_served_config_json_leads_back_to_a_download_route():
    s = settings()
    dl = json.loads(client_config(s.mirror, s.registries[0]))["dl"]
    path = dl.removeprefix(s.mirror.public_url) + "/serde/1.0.152/download"  # Cargo's form for a dl without markers
    assert route(path) == CrateRoute(s.registries[0], "serde", "1.0.152")


# -- the listener in mitmproxy's modes ---------------------------------------------------------------------


@pytest.mark.parametrize("current, expected", [
    (["regular"], ["regular", f"reverse:http://{TARGET_HOST}:9@0.0.0.0:8090"]),
    (["regular@8080", f"reverse:http://{TARGET_HOST}:9@127.0.0.1:7000"],
     ["regular@8080", f"reverse:http://{TARGET_HOST}:9@0.0.0.0:8090"]),  # moved
    (["regular", "socks5@1080"], ["regular", "socks5@1080", f"reverse:http://{TARGET_HOST}:9@0.0.0.0:8090"]),
])
def test_the_mirror_is_one_more_mode_and_the_operators_modes_are_kept(current, expected):
    assert mirror_modes(current, settings().mirror) == expected


def test_without_a_mirror_its_mode_is_removed():
    assert mirror_modes(["regular", f"reverse:http://{TARGET_HOST}:9@:8090"], None) == ["regular"]


@pytest.mark.parametrize("listen, host, port", [("0.0.0.0:8090", "0.0.0.0", 8090), (":8090", "", 8090),
                                                 ("[::]:8090", "::", 8090), ("127.0.0.1:1", "127.0.0.1", 1)])
def test_mitmproxy_listens_where_the_file_says(listen, host, port):
    mode = mode_specs.ProxyMode.parse(mode_spec(settings(listen=listen).mirror))
    assert isinstance(mode, mode_specs.ReverseMode) and mode.transport_protocol == "tcp"  # never HTTP/3 over UDP
    assert (mode.listen_host(), mode.listen_port(), mode.address) == (host, port, (TARGET_HOST, 9))


# -- the mirror: section -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mirror, message", [
    ({"listen": "8090"}, "mirror.listen: '8090' is not host:port"),
    ({"listen": "0.0.0.0:99999"}, "mirror.listen: '0.0.0.0:99999' is not host:port"),
    ({"listen": "[zz]:80"}, "mirror.listen: '[zz]:80': not an IPv6 address in brackets"),
    ({"public_url": "ftp://gw"}, "mirror.public_url: expected an http:// or https:// URL"),
    ({"tls_cert": "cert.pem"}, "mirror.tls_key: set both tls_cert and tls_key, or neither"),
    ({"auth": "tokens"}, "mirror.tokens_file: required with auth: tokens"),
    ({"tokens_file": "tokens"}, "mirror.tokens_file: only used with auth: tokens"),
    ({"auth": "basic"}, "mirror.auth: expected one of none, tokens"),
    ({"token": "x"}, "mirror.token: unknown field"),
])
def test_the_mirror_section_is_checked(mirror, message):
    with pytest.raises(ConfigError) as info:
        settings(**mirror)
    assert message in str(info.value)


def test_a_registry_may_not_take_the_toolchains_path_of_the_mirror():
    doc = {**DOC, "registries": [{**DOC["registries"][0], "name": "rustup"}]}
    with pytest.raises(ConfigError, match=r"registries\[0\]\.name: the mirror serves toolchains under /rustup/"):
        parse_settings(yaml.safe_dump(doc), FILE, {})


def test_certificate_files_must_exist_and_make_a_pair(tmp_path):
    import trustme

    ca = trustme.CA()
    leaf, other = ca.issue_cert("gw.corp.example"), ca.issue_cert("other.example")
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    other.private_key_pem.write_to_path(str(tmp_path / "other-key.pem"))
    config = tmp_path / "proxies.yaml"

    def load(**mirror):
        return parse_settings(yaml.safe_dump({**DOC, "mirror": {**DOC["mirror"], **mirror}}), config, {})

    good = load(tls_cert="cert.pem", tls_key="key.pem").mirror
    assert (good.tls_cert, good.tls_key) == (str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"))
    with pytest.raises(ConfigError, match="mirror.tls_cert: file not found"):
        load(tls_cert="missing.pem", tls_key="key.pem")
    with pytest.raises(ConfigError, match="mirror.tls_cert: cannot use .* with .*other-key.pem"):
        load(tls_cert="cert.pem", tls_key="other-key.pem")
