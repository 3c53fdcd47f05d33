"""The mitmproxy addon driven through mitmproxy's own test harness (taddons / tflow)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from mitmproxy.addons.next_layer import NextLayer
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.test import taddons, tflow, tutils

from tests.addons import CacheAddons
from tests.fixtures.registry import build_registry
from tests.fixtures.upstream import UpstreamServer
from tests.harness import write_proxies


@pytest.fixture(scope="module")
def upstream():
    with UpstreamServer(build_registry(only=["anyhow", "log", "cfg-if"]), name="local") as server:
        yield server


@pytest.fixture
def config(tmp_path: Path, upstream: UpstreamServer) -> Path:
    upstream.clear()
    return write_proxies(tmp_path / "proxies.yaml", [{"name": "local", "url": upstream.url}], tmp_path / "cache")


def flow(host: str, path: str, method: str = "GET"):
    return tflow.tflow(req=tutils.treq(host=host, port=443, scheme=b"https", path=path.encode(),
                                       method=method.encode(), headers=((b"host", host.encode()),)))


async def test_registry_request_is_answered_from_upstream_then_cache(config, upstream, caplog):
    cache = CacheAddons()
    addon = cache.requests
    with taddons.context(*cache.addons) as tctx, caplog.at_level(logging.INFO, "cratecache"):
        tctx.configure(addon, cargo_proxies=str(config))
        first, second = flow("index.crates.io", "/an/yh/anyhow"), flow("index.crates.io", "/an/yh/anyhow")
        await addon.request(first)
        await addon.request(second)
        await cache.done()

    assert first.response.status_code == 200 and first.response.headers["X-Cache"] == "MISS"
    assert second.response.headers["X-Cache"] == "HIT"
    assert first.response.content == second.response.content
    assert upstream.paths() == ["/index/an/yh/anyhow"]
    assert "GET index.crates.io/an/yh/anyhow 200 local miss" in caplog.text
    assert "GET index.crates.io/an/yh/anyhow 200 cache hit" in caplog.text


async def test_other_hosts_and_answered_flows_are_left_alone(config, upstream):
    cache = CacheAddons()
    addon = cache.requests
    with taddons.context(*cache.addons) as tctx:
        tctx.configure(addon, cargo_proxies=str(config))
        other = flow("example.com", "/an/yh/anyhow")
        answered = flow("index.crates.io", "/an/yh/anyhow")
        answered.response = tutils.tresp()
        await addon.request(other)
        await addon.request(answered)
        await cache.done()

    assert other.response is None
    assert answered.response.content == tutils.tresp().content
    assert upstream.requests == []


async def test_rejections_and_methods(config):
    cache = CacheAddons()
    addon = cache.requests
    with taddons.context(*cache.addons) as tctx:
        tctx.configure(addon, cargo_proxies=str(config))
        post = flow("index.crates.io", "/config.json", method="POST")
        bad = flow("static.crates.io", "/crates/foo/../../etc/download")
        await addon.request(post)
        await addon.request(bad)
        await cache.done()

    assert post.response.status_code == 405
    assert bad.response.status_code == 400 and bad.response.text == "path traversal is not allowed\n"


def test_configure_limits_interception_to_registry_hosts(config):
    cache = CacheAddons()
    addon = cache.requests
    with taddons.context(Proxyserver(), NextLayer(), *cache.addons) as tctx:
        tctx.options.allow_hosts = ["^git\\.example\\.com:443$"]
        tctx.configure(addon, cargo_proxies=str(config))

        assert tctx.options.connection_strategy == "lazy"
        assert tctx.options.allow_hosts == [
            "^git\\.example\\.com:443$", r"^index\.crates\.io\.?(:\d+)?$", r"^static\.crates\.io\.?(:\d+)?$"
        ]


@pytest.mark.parametrize("ca, folder", [(None, "certs"), ("state/ca", "state/ca")])
def test_default_confdir_is_the_configurations_ca_folder(config, ca, folder):
    """ca.directory of proxies.yaml, relative to its folder (by default certs/ beside it: a checkout's shipped
    file gives the project's certs/), wherever the package is installed; a confdir given explicitly wins."""
    if ca is not None:
        config.write_text(config.read_text() + f"ca:\n  directory: {ca}\n")
    cache = CacheAddons()
    addon = cache.requests
    with taddons.context(*cache.addons) as tctx:
        tctx.configure(addon, cargo_proxies=str(config))
        tctx.configure(addon, confdir="~/.mitmproxy")
        assert tctx.options.confdir == str(config.parent / folder)
        tctx.configure(addon, confdir="/elsewhere")
        assert tctx.options.confdir == "/elsewhere"


def test_invalid_config_is_one_clear_error_and_keeps_the_running_settings(config, tmp_path, caplog):
    bad = tmp_path / "bad.yaml"
    bad.write_text(config.read_text().replace("size_limit: 1GB", "size_limit: 1GB\n  colour: blue"))
    cache = CacheAddons()
    addon = cache.requests
    with taddons.context(*cache.addons) as tctx:
        tctx.configure(addon, cargo_proxies=str(config))
        with caplog.at_level(logging.ERROR):
            tctx.configure(addon, cargo_proxies=str(bad))

    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0]
    assert errors[0].startswith(f"cargo-cache: invalid configuration: {bad}: cache.colour: unknown field (allowed: ")
    assert cache.runtime.settings.source == str(config)


async def test_head_never_carries_a_body_even_on_errors(config, upstream):
    cache = CacheAddons()
    addon = cache.requests
    with taddons.context(*cache.addons) as tctx:
        tctx.configure(addon, cargo_proxies=str(config))
        missing = flow("index.crates.io", "/3/z/zzz", method="HEAD")
        found = flow("index.crates.io", "/an/yh/anyhow", method="HEAD")
        await addon.request(missing)
        await addon.request(found)
        await cache.done()

    assert missing.response.status_code == 404 and missing.response.content == b""
    assert int(missing.response.headers["Content-Length"]) > 0
    assert found.response.status_code == 200 and found.response.content == b""
    assert int(found.response.headers["Content-Length"]) > 300


async def test_an_error_anywhere_in_the_request_hook_is_answered_never_forwarded(config, upstream, caplog):
    class BrokenRouting:  # stands for any bug outside the handler's own error handling
        source = "broken"

        def __getattr__(self, name):
            raise RuntimeError("routing bug")

    cache = CacheAddons()
    addon = cache.requests
    with taddons.context(*cache.addons) as tctx:
        tctx.configure(addon, cargo_proxies=str(config))
        working = cache.runtime.settings
        cache.runtime.settings = BrokenRouting()
        broken = flow("index.crates.io", "/an/yh/anyhow")
        await addon.request(broken)
        cache.runtime.settings = working
        await cache.done()

    assert broken.response.status_code == 500
    assert broken.response.text == "cargo-cache internal error: RuntimeError\n"
    assert "cargo-cache: internal error on GET https://index.crates.io/an/yh/anyhow" in caplog.text
    assert upstream.requests == []


def test_the_start_line_never_shows_an_index_path_that_may_hold_a_token(tmp_path, caplog):
    config = tmp_path / "proxies.yaml"
    config.write_text(f"""
cache: {{directory: {tmp_path / 'cache'}}}
registries:
  - name: cloudsmith
    index_url: https://dl.cloudsmith.io/SECRET-TOKEN/org/repo/cargo/index/
    proxies: [{{name: up, url: "https://dl.cloudsmith.io/SECRET-TOKEN/org/repo/cargo/index/"}}]
""")
    cache = CacheAddons()
    addon = cache.requests
    with taddons.context(*cache.addons) as tctx, caplog.at_level(logging.INFO, "cratecache"):
        tctx.configure(addon, cargo_proxies=str(config))

    assert "intercepting dl.cloudsmith.io/…; cache disk" in caplog.text
    assert "SECRET-TOKEN" not in caplog.text
