"""routes.py: host + method + path -> config / index / download route, or a rejection with a status."""

from __future__ import annotations

import pytest
from cratecache.boundary.routes import ConfigRoute, CrateRoute, IndexRoute, Rejection, classify
from cratecache.config import Registry, Upstream

INDEX, DL = "index.crates.io", "static.crates.io"
CRATES_IO = Registry(
    name="crates-io", index_host=INDEX, download_host=DL,
    upstreams=(Upstream(name="crates-io", url="https://index.crates.io/"),),
)
SINGLE_HOST = Registry(
    name="private", index_host="cargo.example", download_host="cargo.example",
    upstreams=(Upstream(name="private", url="https://cargo.example/"),),
)


def get(path: str, host: str = INDEX, method: str = "GET", registry: Registry = CRATES_IO):
    return classify(registry, host, method, path)


def test_config_json():
    route = get("/config.json")
    assert route == ConfigRoute(CRATES_IO)
    assert (route.kind, route.key) == ("config", "config/crates-io")


@pytest.mark.parametrize(
    "path, name",
    [("/1/a", "a"), ("/2/ab", "ab"), ("/3/a/abc", "abc"), ("/se/rd/serde", "serde"),
     ("/se/rd/serde_json", "serde_json"), ("/a-/b_/a-b_c", "a-b_c")],
)
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_index_paths(path, name, method):
    route = get(path, method=method)
    assert route == IndexRoute(CRATES_IO, name)
    assert (route.kind, route.key) == ("index", f"index/crates-io/{name}")


@pytest.mark.parametrize(
    "path, name, version",
    [
        ("/crates/serde/1.0.0/download", "serde", "1.0.0"),
        ("/crates/serde/serde-1.0.0.crate", "serde", "1.0.0"),
        ("/crates/tokio-util/tokio-util-0.7.10.crate", "tokio-util", "0.7.10"),
        ("/crates/foo/1.0.0-alpha.1/download", "foo", "1.0.0-alpha.1"),
        ("/crates/foo/foo-1.0.0-rc.1.crate", "foo", "1.0.0-rc.1"),
        ("/crates/foo/1.0.0%2Bbuild.5/download", "foo", "1.0.0+build.5"),
        ("/crates/foo/1.0.0%2bbuild.5/download", "foo", "1.0.0+build.5"),
        ("/crates/foo/1.0.0+build.5/download", "foo", "1.0.0+build.5"),
        ("/crates/foo/foo-0.1.0-beta.2%2Bzstd.1.5.2.crate", "foo", "0.1.0-beta.2+zstd.1.5.2"),
    ],
)
def test_downloads(path, name, version):
    route = get(path, host=DL)
    assert route == CrateRoute(CRATES_IO, name, version)
    assert (route.kind, route.key) == ("crate", f"crate/crates-io/{name}/{version}")


def test_download_key_lowercases_the_name():
    route = get("/crates/Inflector/0.11.4/download", host=DL)
    assert route.name == "Inflector"
    assert route.key == "crate/crates-io/inflector/0.11.4"


def test_host_is_case_insensitive():
    assert get("/se/rd/serde", host="Index.Crates.IO") == IndexRoute(CRATES_IO, "serde")


@pytest.mark.parametrize(
    "host, path, status, reason",
    [
        # wrong layout / case
        (INDEX, "/2/serde", 404, "expected /se/rd/serde"),
        (INDEX, "/s/er/serde", 404, "index layout"),
        (INDEX, "/3/b/abc", 404, "expected /3/a/abc"),
        (INDEX, "/se/rd/Serde", 404, "lowercase"),
        (INDEX, "/SE/RD/serde", 404, "index layout"),
        # path tricks
        (INDEX, "/se/../serde", 400, "path traversal"),
        (INDEX, "/./config.json", 400, "path traversal"),
        (DL, "/crates/serde/../1.0.0/download", 400, "path traversal"),
        (DL, "/crates/serde%2F1.0.0/download", 400, "percent-encoded"),
        (INDEX, "/se/rd/%2e%2e", 400, "percent-encoded"),
        (INDEX, "/se/rd/ser\x00de", 400, "invalid character"),
        (INDEX, "/se\\rd\\serde", 400, "invalid character"),
        (INDEX, "/se/rd/serde\n", 400, "invalid character"),
        (DL, "/crates/serde/1.0.0\n/download", 400, "invalid character"),
        (INDEX, "/config.json?x=1", 400, "query strings"),
        (INDEX, "/se/rd/serde#top", 400, "query strings"),
        (INDEX, "//config.json", 400, "malformed path"),
        (INDEX, "/" + "a" * 600, 414, "too long"),
        # names and versions
        (INDEX, "/aa/aa/" + "a" * 65, 400, "longer than 64"),
        (DL, f"/crates/{'a' * 65}/1.0.0/download", 400, "longer than 64"),
        (INDEX, "/se/r./ser.de", 400, "invalid crate name"),
        (INDEX, "/1/_", 400, "invalid crate name"),
        (INDEX, "/3/1/1ab", 400, "invalid crate name"),
        (DL, "/crates/ser$de/1.0.0/download", 400, "invalid crate name"),
        (DL, "/crates/serde/1.0/download", 400, "invalid version"),
        (DL, "/crates/serde/01.0.0/download", 400, "invalid version"),
        (DL, "/crates/serde/serde-latest.crate", 400, "invalid version"),
        # unknown paths
        (INDEX, "/", 404, "not a sparse index path"),
        (INDEX, "/index.html", 404, "not a sparse index path"),
        (INDEX, "/se/rd/se/serde", 404, "not a sparse index path"),
        (DL, "/", 404, "not a registry path"),
        (DL, "/crates/serde", 404, "not a registry path"),
        (DL, "/crates/serde/1.0.0/download/more", 404, "not a registry path"),
        (DL, "/crates/serde/other-1.0.0.crate", 404, "not a registry path"),
        (DL, "/crates/serde/1.0.0/upload", 404, "not a registry path"),
        # each host serves only its own kind
        (DL, "/se/rd/serde", 404, "not a registry path"),
        (DL, "/config.json", 404, "not a registry path"),
        (INDEX, "/crates/serde/1.0.0/download", 404, "not a sparse index path"),
        (INDEX, "/crates/serde/serde-1.0.0.crate", 404, "not a sparse index path"),
    ],
)
def test_rejections(host, path, status, reason):
    rejection = get(path, host=host)
    assert isinstance(rejection, Rejection)
    assert rejection.status == status
    assert reason in rejection.reason


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "get"])
def test_write_methods_are_refused(method):
    rejection = get("/crates/serde/1.0.0/download", host=DL, method=method)
    assert rejection.status == 405
    assert f"method {method} not allowed" in rejection.reason


@pytest.mark.parametrize(
    "path, expected",
    [
        ("/config.json", ConfigRoute(SINGLE_HOST)),
        ("/se/rd/serde", IndexRoute(SINGLE_HOST, "serde")),
        ("/cr/at/crates", IndexRoute(SINGLE_HOST, "crates")),
        ("/crates/serde/1.0.0/download", CrateRoute(SINGLE_HOST, "serde", "1.0.0")),
        ("/crates/serde/serde-1.0.0.crate", CrateRoute(SINGLE_HOST, "serde", "1.0.0")),
        ("/2/serde", Rejection(404, "path does not match the index layout (expected /se/rd/serde)")),
        ("/index.html", Rejection(404, "not a registry path: /index.html")),
    ],
)
def test_single_host_registry_serves_both_kinds(path, expected):
    assert get(path, host="cargo.example", registry=SINGLE_HOST) == expected


# -- interception: the connection's target and the Host header together ------------------------------------


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    import yaml
    from cratecache.config import parse_settings

    tmp = tmp_path_factory.mktemp("intercept")
    doc = {"cache": {"directory": str(tmp / "cache")}, "registries": [
        {"name": "crates-io", "index_host": "index.crates.io", "download_host": "static.crates.io",
         "proxies": [{"name": "a", "url": "https://a.example/"}]},
        {"name": "corp", "index_host": "corp.example:8443", "proxies": [{"name": "b", "url": "https://b.example/"}]}]}
    return parse_settings(yaml.safe_dump(doc), tmp / "proxies.yaml", env={})


@pytest.mark.parametrize(("host", "port", "header", "expected"), [
    ("index.crates.io", 443, "index.crates.io", ("crates-io", "index.crates.io")),
    ("index.crates.io", 443, None, ("crates-io", "index.crates.io")),  # HTTP/1.0: no Host header
    ("INDEX.crates.io.", 443, "index.crates.io.", ("crates-io", "index.crates.io")),  # case, trailing dot
    ("index.crates.io", 443, "index.crates.io:443", ("crates-io", "index.crates.io")),
    ("corp.example", 8443, "corp.example:8443", ("corp", "corp.example:8443")),
    ("corp.example", 443, "corp.example", None),  # another port of that host is not the registry
    ("example.org", 443, "example.org", None),  # not ours: passed on
])
def test_interception_follows_the_connection_and_the_host_header(settings, host, port, header, expected):
    from cratecache.boundary.routes import Target, intercept

    got = intercept(settings, host, port, header)
    assert (got.registry.name, got.host) == expected if isinstance(got, Target) else got is expected


@pytest.mark.parametrize(("host", "port", "header"), [
    ("index.crates.io", 443, "example.org"),  # would have gone to the real host with a foreign Host header
    ("index.crates.io", 443, "static.crates.io"),  # the other host of the same registry: ambiguous
    ("example.org", 443, "index.crates.io"),
    ("corp.example", 8443, "corp.example:9999"),
])
def test_a_host_header_that_disagrees_with_the_connection_is_a_421(settings, host, port, header):
    from cratecache.boundary.routes import intercept

    got = intercept(settings, host, port, header)
    assert isinstance(got, Rejection) and got.status == 421 and "does not match the connection's target" in got.reason


# -- registries whose index is under a path (index_url) ------------------------------------------------------


@pytest.fixture(scope="module")
def shared_host(tmp_path_factory):
    """Two Artifactory repositories on one host, and a registry at the root of another host."""
    import yaml
    from cratecache.config import parse_settings

    tmp = tmp_path_factory.mktemp("paths")
    up = [{"name": "u", "url": "https://u.example/"}]
    doc = {"cache": {"directory": str(tmp / "cache")}, "registries": [
        {"name": "a", "index_url": "sparse+https://corp.example/artifactory/api/cargo/a/index/", "proxies": up},
        {"name": "b", "index_url": "https://corp.example/artifactory/api/cargo/b/index", "proxies": up},
        {"name": "root", "index_host": "root.example", "proxies": up},
        {"name": "nested", "index_url": "https://root.example/team/index/", "proxies": up}]}
    return parse_settings(yaml.safe_dump(doc), tmp / "proxies.yaml", env={})


@pytest.mark.parametrize(("host", "path", "expected"), [
    ("corp.example", "/artifactory/api/cargo/a/index/config.json", "a"),
    ("corp.example", "/artifactory/api/cargo/b/index/se/rd/serde", "b"),
    ("corp.example", "/artifactory/api/cargo/b/index/crates/serde/1.0.0/download", "b"),
    ("corp.example", "/artifactory/webapp/", None),  # the rest of that host is not ours: passed on untouched
    ("corp.example", "/artifactory/api/cargo/a/indexes/config.json", None),
    ("root.example", "/team/index/config.json", "nested"),  # the longest index path wins
    ("root.example", "/team/other", "root"),
])
def test_a_path_registry_owns_only_the_paths_under_its_index(shared_host, host, path, expected):
    from cratecache.boundary.routes import Target, intercept

    got = intercept(shared_host, host, 443, host, path)
    assert (got.registry.name if isinstance(got, Target) else got) == expected


@pytest.mark.parametrize(("path", "expected"), [
    ("/artifactory/api/cargo/a/index/config.json", "config/a"),
    ("/artifactory/api/cargo/a/index/3/l/log", "index/a/log"),
    ("/artifactory/api/cargo/a/index/crates/log/0.4.17/download", "crate/a/log/0.4.17"),
    ("/artifactory/api/cargo/a/index/crates/log/log-0.4.17.crate", "crate/a/log/0.4.17"),
])
def test_a_path_registry_classifies_below_its_index_path(shared_host, path, expected):
    reg = shared_host.registries[0]
    assert classify(reg, "corp.example", "GET", path).key == expected


def test_a_path_registry_refuses_what_is_not_below_its_index_path(shared_host):
    got = classify(shared_host.registries[0], "corp.example", "GET", "/config.json")
    assert got == Rejection(404, "not under the registry's index path /artifactory/api/cargo/a/index/: /config.json")


def test_a_path_registry_sends_downloads_back_under_its_index_path(shared_host):
    assert shared_host.registries[1].download_root == "https://corp.example/artifactory/api/cargo/b/index/crates"
    assert shared_host.registries[2].download_root == "https://root.example/crates"
