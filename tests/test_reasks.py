"""reasks.py: when a client's request for an index file is Cargo asking again."""

from __future__ import annotations

from cratecache.reasks import Reasks

from tests.fake_registry import Clock


def test_a_second_ask_on_the_same_connection_is_a_reask_whenever_it_comes():
    clock = Clock()
    reasks = Reasks(window=10, clock=clock)
    assert not reasks.asked_again("conn-1", "10.0.0.1", "index/crates-io/log")
    assert not reasks.asked_again("conn-1", "10.0.0.1", "index/crates-io/anyhow")
    clock.advance(600)
    assert reasks.asked_again("conn-1", "10.0.0.1", "index/crates-io/log")


def test_another_connection_of_the_same_client_counts_only_within_the_window():
    clock = Clock()
    reasks = Reasks(window=10, clock=clock)
    assert not reasks.asked_again("conn-1", "10.0.0.1", "index/crates-io/log")
    clock.advance(0.05)
    assert reasks.asked_again("conn-2", "10.0.0.1", "index/crates-io/log")  # HTTP/1.1: another pooled connection
    assert not reasks.asked_again("conn-3", "10.0.0.2", "index/crates-io/log")  # another client
    clock.advance(11)
    assert not reasks.asked_again("conn-4", "10.0.0.1", "index/crates-io/log")  # a later cargo run


def test_a_closed_connection_is_forgotten():
    clock = Clock()
    reasks = Reasks(window=10, clock=clock)
    reasks.asked_again("conn-1", "10.0.0.1", "index/crates-io/log")
    reasks.forget("conn-1")
    clock.advance(11)
    assert not reasks.asked_again("conn-1", "10.0.0.1", "index/crates-io/log")
