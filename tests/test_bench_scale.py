"""The crates.io-scale cache builder (bench/scale.py) at a tiny scale: what the store reads back, reuse, refill."""

from __future__ import annotations

import hashlib
import json
import time

from cratecache.storage.local import LocalStore

from bench import scale


def test_builds_index_files_and_crates_the_store_reads_back(tmp_path):
    spec = scale.Spec(100)
    built = scale.ensure(tmp_path / "c", spec)
    assert built.written == 100
    store = LocalStore(tmp_path / "c", 1 << 40)
    try:
        assert (store.count("index/"), store.count("crate/")) == (20, 80)
        expected = {item.key: item.body for item in scale.items(spec)}
        for key in store.keys():
            entry = store.get(key)
            assert entry is not None and entry.body == expected[key]
            assert entry.meta.sha256 == hashlib.sha256(entry.body).hexdigest()
            assert built.built_at - scale.AGE_SPAN <= entry.meta.stored_at <= built.built_at
            assert entry.meta.checked_at == built.built_at
        for name in built.names:
            lines = [json.loads(line) for line in store.get(f"index/{scale.REGISTRY}/{name}").body.splitlines()]
            assert 1 <= len(lines) <= scale.MAX_VERSIONS
            for line in lines:  # a cached .crate matches the checksum its index file gives (verify, Cargo)
                crate = store.get(f"crate/{scale.REGISTRY}/{name}/{line['vers']}")
                assert crate is None or crate.meta.sha256 == line["cksum"]
        assert len({len(b) for b in expected.values()}) > 50  # sizes drawn, not one size
    finally:
        store.close()


def test_a_second_run_reuses_the_folder_and_refills_what_was_taken(tmp_path):
    spec = scale.Spec(100)
    first = scale.ensure(tmp_path / "c", spec)
    again = scale.ensure(tmp_path / "c", spec)
    assert again.written == 0 and again.built_at == first.built_at
    store = LocalStore(tmp_path / "c", 1 << 40)
    gone = store.keys("crate/")[:7]
    for key in gone:
        store.delete(key)
    store.close()
    refilled = scale.ensure(tmp_path / "c", spec)
    assert refilled.written == 7 and refilled.built_at == first.built_at
    store = LocalStore(tmp_path / "c", 1 << 40)
    try:
        assert store.count("") == 100 and all(store.get(k) is not None for k in gone)
    finally:
        store.close()


def test_other_parameters_rebuild_and_the_cutoff_takes_the_oldest_share(tmp_path):
    scale.ensure(tmp_path / "c", scale.Spec(100))
    built = scale.ensure(tmp_path / "c", scale.Spec(50))
    assert built.written == 50
    store = LocalStore(tmp_path / "c", 1 << 40)
    try:
        now = time.time()
        ages = [now - meta.stored_at for _, meta in store.entries()]
    finally:
        store.close()
    assert len(ages) == 50
    older = sum(age > built.cutoff(0.5, now) for age in ages)
    assert 10 <= older <= 40  # about half, drawn
