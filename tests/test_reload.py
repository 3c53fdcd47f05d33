"""reload.py: what a re-read proxies.yaml changes, and what waits for a restart (pure)."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import yaml
from cratecache.config import parse_settings
from cratecache.operations import reload

BASE = {
    "cache": {"directory": "/var/cache/cargo", "index_ttl": 300},
    "registries": [{"name": "crates-io", "index_host": "index.crates.io", "download_host": "static.crates.io",
                    "proxies": [{"name": "mirror", "url": "https://mirror.example/index/", "priority": 1,
                                 "username": "ci", "password": "one"},
                                {"name": "crates-io", "url": "https://index.crates.io/", "priority": 2}]}],
}


def settings(doc: dict):
    return parse_settings(yaml.safe_dump(doc), Path("/etc/proxies.yaml"), env={})


def edited(change) -> dict:
    doc = copy.deepcopy(BASE)
    change(doc)
    return doc


def test_nothing_changed():
    planned = reload.plan(settings(BASE), settings(BASE))
    assert planned.changes == () and planned.needs_restart == ()


def test_reorder_deactivate_and_rotated_credentials_are_named_without_the_credentials():
    def change(doc):
        mirror, crates = doc["registries"][0]["proxies"]
        mirror.update(priority=3, password="two")
        crates["active"] = True
        doc["registries"][0]["proxies"].append({"name": "backup", "url": "https://backup.example/", "active": False})

    planned = reload.plan(settings(BASE), settings(edited(change)))
    text = "; ".join(planned.changes)
    assert "registry crates-io: upstream backup added" in text
    assert "upstream mirror credentials changed" in text and "upstream mirror priority changed" in text
    assert "registry crates-io: reordered: crates-io, mirror" in text
    assert "one" not in text and "two" not in text


def test_deactivating_and_live_cache_fields():
    def change(doc):
        doc["registries"][0]["proxies"][0]["active"] = False
        doc["cache"].update(index_ttl=60, offline=True)

    planned = reload.plan(settings(BASE), settings(edited(change)))
    assert "registry crates-io: upstream mirror deactivated" in planned.changes
    assert {"cache.index_ttl 300 -> 60", "cache.offline False -> True"} <= set(planned.changes)
    assert planned.settings.cache.offline and planned.settings.registries[0].index_ttl == 60


def test_where_the_cache_lives_waits_for_a_restart_and_keeps_its_running_value():
    def change(doc):
        doc["cache"].update(directory="/srv/cache", size_limit="5GB")

    running = settings(BASE)
    planned = reload.plan(running, settings(edited(change)))
    assert planned.needs_restart == ("cache.directory", "cache.size_limit")
    assert planned.settings.cache.directory == running.cache.directory
    assert planned.settings.cache.size_limit == running.cache.size_limit


def test_the_log_format_waits_for_a_restart_and_keeps_its_running_value():
    running = settings(BASE)
    planned = reload.plan(running, settings(edited(lambda doc: doc.update(log_format="json"))))
    assert (running.log_format, planned.needs_restart, planned.settings.log_format) == ("text", ("log_format",), "text")


def test_a_moved_ca_folder_waits_for_a_restart_and_keeps_its_running_value():
    running = settings(BASE)
    planned = reload.plan(running, settings(edited(lambda doc: doc.update(ca={"directory": "/srv/ca"}))))
    assert planned.needs_restart == ("ca.directory",)
    assert planned.settings.ca_directory == running.ca_directory == Path("/etc/certs")


def test_registries_and_toolchains_added_and_removed():
    def change(doc):
        doc["registries"].append({"name": "corp", "index_url": "https://corp.example/api/index/",
                                  "proxies": [{"name": "art", "url": "https://corp.example/api/index/"}]})
        doc["toolchains"] = {"proxies": [{"name": "rust-lang", "url": "https://static.rust-lang.org/"}]}

    planned = reload.plan(settings(BASE), settings(edited(change)))
    assert set(planned.changes) == {"registry corp added (art)", "toolchains added (rust-lang)"}
    assert reload.plan(settings(edited(change)), settings(BASE)).changes == ("registry corp removed", "toolchains removed")


def test_a_fingerprint_tells_an_edit_a_rename_and_a_symlink_swap(tmp_path):
    first, second = tmp_path / "a" / "proxies.yaml", tmp_path / "b" / "proxies.yaml"
    for path in (first, second):
        path.parent.mkdir()
        path.write_text("x: 1\n")
    link = tmp_path / "proxies.yaml"
    link.symlink_to(first)
    before = reload.fingerprint([str(link)])
    assert reload.fingerprint([str(link)]) == before
    link.unlink()
    link.symlink_to(second)  # a ConfigMap's ..data swap: same content, another file
    assert reload.fingerprint([str(link)]) != before
    swapped = reload.fingerprint([str(link)])
    second.with_suffix(".new").write_text("x: 2\n")
    os.replace(second.with_suffix(".new"), second)
    assert reload.fingerprint([str(link)]) != swapped
    assert reload.fingerprint([str(tmp_path / "missing")]) == ((str(tmp_path / "missing"), "FileNotFoundError"),)


async def test_reconfigure_keeps_unchanged_clients_and_health_and_retires_changed_ones_once_idle(tmp_path):
    from cratecache.resolver import Resolver
    from cratecache.storage import open_storage

    doc = copy.deepcopy(BASE)
    doc["cache"]["directory"] = str(tmp_path / "cache")
    running = settings(doc)
    resolver = Resolver(running, open_storage(running.cache))
    try:
        kept, changed = resolver.clients[("crates-io", "crates-io")], resolver.clients[("crates-io", "mirror")]
        resolver.health.failed("crates-io/crates-io", "timed out", 0.0, True, 5.0)
        changed.busy = 1  # a download in flight on the old credentials
        doc["registries"][0]["proxies"][0]["password"] = "two"
        resolver.reconfigure(reload.plan(running, settings(doc)).settings)
        assert resolver.clients[("crates-io", "crates-io")] is kept
        assert resolver.clients[("crates-io", "mirror")] is not changed
        assert resolver.clients[("crates-io", "mirror")].upstream.password == "two"
        assert changed.retired and not changed.client.is_closed  # still serving its download
        assert resolver.health.of("crates-io/crates-io").failures == 1
    finally:
        await resolver.aclose()
        await resolver.store.close()


def test_rotated_s3_keys_apply_live_and_other_s3_fields_wait_for_a_restart():
    def s3(**fields):
        return edited(lambda doc: doc["cache"].update(backend="s3", s3={"bucket": "cargo-cache", **fields}))

    running = settings(s3(access_key_id="AKIA1", secret_access_key="old-secret"))
    rotated = reload.plan(running, settings(s3(access_key_id="AKIA2", secret_access_key="new-secret")))
    assert rotated.changes == ("cache.s3 credentials changed",) and rotated.needs_restart == ()
    assert rotated.settings.cache.s3.secret_access_key == "new-secret"
    moved = reload.plan(running, settings(s3(access_key_id="AKIA1", secret_access_key="old-secret", prefix="b/")))
    assert moved.needs_restart == ("cache.s3",) and moved.settings.cache.s3 == running.cache.s3


def test_a_changed_policy_is_named_by_its_parts_and_applies_live():
    def change(doc):
        doc["policy"] = {"quarantine": {"min_age": "3d"}, "rules": [{"deny": "left-pad"}]}

    planned = reload.plan(settings(BASE), settings(edited(change)))
    assert planned.changes == ("policy changed (quarantine, rules)",)  # the registry follows the global section
    assert planned.settings.registries[0].policy.quarantine.min_age == 3 * 86400


def test_a_registrys_own_policy_change_is_named_with_the_registry():
    def change(doc):
        doc["registries"][0]["policy"] = {"dry_run": True}

    planned = reload.plan(settings(BASE), settings(edited(change)))
    assert planned.changes == ("registry crates-io: policy changed (dry_run)",)
    assert reload.plan(settings(edited(change)), settings(BASE)).changes == ("registry crates-io: policy changed "
                                                                              "(dry_run)",)


def test_no_file_given_reads_the_one_discovery_finds(tmp_path: Path, monkeypatch):
    """The addon's cargo_proxies is "" when nothing was found at load; a file put in the working folder since is
    read, as `cargo-cache` would find it."""
    monkeypatch.delenv("CARGO_CACHE_CONFIG", raising=False)
    monkeypatch.delenv("CARGO_CACHE_PROXIES", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "proxies.yaml").write_text(yaml.safe_dump(BASE))
    read = reload.read("")
    assert read.error is None and read.settings.source == str(tmp_path / "proxies.yaml")
