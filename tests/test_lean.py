"""lean.py: a command's store keeps SQLite's memory small on every connection, and leaves the proxy's settings alone."""

from __future__ import annotations

import threading

from cratecache.storage.local import LocalStore


def pragmas(store: LocalStore) -> tuple[int, int]:
    cache = store._cache
    return cache._sql("PRAGMA mmap_size").fetchone()[0], cache._sql("PRAGMA cache_size").fetchone()[0]


def on_another_thread(store: LocalStore) -> tuple[int, int]:
    found = []
    thread = threading.Thread(target=lambda: found.append(pragmas(store)))  # as the store thread's connection
    thread.start()
    thread.join()
    return found[0]


def test_a_lean_store_maps_nothing_and_keeps_a_small_page_cache_on_every_connection(tmp_path):
    store = LocalStore(tmp_path / "cache", 10**9, lean=True)
    try:
        store.put("index/crates-io/foo", b"foo\n", "a")
        assert pragmas(store) == (0, -4096)
        assert on_another_thread(store) == (0, -4096)
        assert store.get("index/crates-io/foo").body == b"foo\n"
    finally:
        store.close()


def test_a_proxy_opening_the_folder_after_a_command_keeps_its_own_sqlite_settings(tmp_path):
    command = LocalStore(tmp_path / "cache", 10**9, lean=True)
    proxy = LocalStore(tmp_path / "cache", 10**9)
    try:
        assert pragmas(proxy) == (64 * 2**20, 8192)  # diskcache's defaults
        assert on_another_thread(proxy) == (64 * 2**20, 8192)
    finally:
        command.close()
        proxy.close()
