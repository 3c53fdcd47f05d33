"""The addon at start (mitmproxy's taddons): it never serves without its configuration, and a reload asked for
while it starts is done once it runs."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path

from cratecache.operations import hangup
from mitmproxy.test import taddons

from tests.addons import CacheAddons
from tests.harness import write_proxies


async def test_running_without_a_configuration_refuses_to_serve(caplog):
    """If mitmproxy never applied our options (e.g. one given twice), `running` ends the process, with one line."""
    cache = CacheAddons()
    with taddons.context(*cache.addons) as tctx, caplog.at_level(logging.INFO, "cratecache"):
        assert cache.runtime.settings is None
        await cache.running()
        await asyncio.sleep(0)  # Master.shutdown sets should_exit from the loop's next turn
        assert tctx.master.should_exit.is_set()
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert errors == ["cargo-cache: not serving: the configuration (cargo_proxies) was never applied"]
        assert cache.configuration._watcher is None and cache.upkeep.status is None  # nothing started


async def test_a_sighup_before_running_is_a_reload_once_running(tmp_path: Path, caplog):
    config = write_proxies(tmp_path / "proxies.yaml", [{"name": "up", "url": "http://127.0.0.1:1/"}],
                           tmp_path / "cache")
    cache = CacheAddons()
    previous = signal.getsignal(signal.SIGHUP)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        with taddons.context(*cache.addons) as tctx, caplog.at_level(logging.INFO, "cratecache"):
            tctx.configure(cache.configuration, cargo_proxies=str(config), cargo_status_port=0)
            os.kill(os.getpid(), signal.SIGHUP)  # held since load(): without it, this process would end here
            await cache.running()
            why = await cache.runtime.config.asked(5)
            assert why == "SIGHUP during start"
            await cache.done()
    finally:
        signal.signal(signal.SIGHUP, previous)
        hangup.take()


def test_the_configuration_option_defaults_to_the_discovered_file(tmp_path: Path, monkeypatch):
    from cratecache.operations.configuration import default_proxies

    monkeypatch.delenv("CARGO_CACHE_PROXIES", raising=False)
    monkeypatch.setenv("CARGO_CACHE_CONFIG", "/srv/cc/proxies.yaml")
    assert default_proxies() == "/srv/cc/proxies.yaml"
    monkeypatch.delenv("CARGO_CACHE_CONFIG")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "proxies.yaml").write_text("{}")
    assert default_proxies() == str(tmp_path / "proxies.yaml")
