"""Hypothesis: no input makes the request classifier or the config loader raise anything but their own errors."""

from __future__ import annotations

from pathlib import Path

import yaml
from cratecache.boundary.routes import ConfigRoute, CrateRoute, IndexRoute, Rejection, classify
from cratecache.config import ConfigError, parse_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fake_registry import make_settings, upstream

REGISTRY = make_settings(Path("/tmp/fuzz"), [upstream("a", "http://a.test/index/")]).registries[0]
SEGMENT = st.one_of(
    st.sampled_from(["crates", "download", "config.json", "..", ".", "", "se", "rd", "serde", "1", "2", "3",
                     "serde-1.0.0.crate", "1.0.0", "%2F", "%2B", "%00", "a", "ab"]),
    st.text(min_size=0, max_size=80),
)
PATHS = st.one_of(st.text(max_size=600), st.lists(SEGMENT, max_size=6).map(lambda parts: "/" + "/".join(parts)))
METHODS = st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "", "get"])
HOSTS = st.sampled_from(["index.crates.io", "static.crates.io", "INDEX.CRATES.IO", "other.example"])


@given(HOSTS, METHODS, PATHS)
@settings(max_examples=1500, deadline=None)
def test_classify_never_raises(host, method, path):
    route = classify(REGISTRY, host, method, path)
    assert isinstance(route, (ConfigRoute, IndexRoute, CrateRoute, Rejection))
    if isinstance(route, Rejection):
        assert 400 <= route.status < 500 and "\n" not in route.reason and route.reason
    if isinstance(route, (IndexRoute, CrateRoute)):
        assert "/" not in route.name and ".." not in route.name and len(route.name) <= 64


YAML_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=30),
                         st.sampled_from(["9" * 400 + "GB", "a\x00b", "${MISSING}", "~nobody/x", "1e999MB"]))
YAML_VALUES = st.recursive(
    YAML_SCALARS,
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.sampled_from([
                                   "cache", "registries", "name", "index_host", "download_host", "proxies", "url",
                                   "username", "password", "priority", "ssl_validation", "timeout_ms", "active",
                                   "directory", "size_limit", "index_ttl", "offline", "max_crate_size", "x"]),
                                   children, max_size=6)),
    max_leaves=25,
)


@given(YAML_VALUES)
@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_config_loader_only_raises_config_errors_on_structures(doc):
    try:
        parse_settings(yaml.safe_dump(doc), Path("/tmp/fuzz/proxies.yaml"), env={"TOKEN": "t"})
    except ConfigError as e:
        assert str(e).startswith("/tmp/fuzz/proxies.yaml: ") and "\n" not in str(e)


@given(st.text(max_size=400))
@settings(max_examples=800, deadline=None)
def test_config_loader_only_raises_config_errors_on_text(text):
    try:
        parse_settings(text, Path("/tmp/fuzz/proxies.yaml"), env={})
    except ConfigError as e:
        assert str(e).startswith("/tmp/fuzz/proxies.yaml: ")
