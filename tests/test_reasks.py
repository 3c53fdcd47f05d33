"""reasks.py: when a client's request for an index file is Cargo asking again."""

from __future__ import annotations

from cratecache.protocols.reasks import Reasks

from tests.fake_registry import Clock


def test_a_second_ask_on_the_same_connection_is_a_reask_whenever_it_comes():
    clock = Clock()
    reasks = Reasks(window=3, clock=clock)
    assert not reasks.asked_again("conn-1", "10.0.0.1", "index/crates-io/log", True)
    assert not reasks.asked_again("conn-1", "10.0.0.1", "index/crates-io/anyhow", True)
    clock.advance(600)
    assert reasks.asked_again("conn-1", "10.0.0.1", "index/crates-io/log", True)


def test_another_connection_of_the_same_client_counts_only_within_the_window():
    clock = Clock()
    reasks = Reasks(window=3, clock=clock)
    assert not reasks.asked_again("conn-1", "10.0.0.1", "index/crates-io/log", True)
    clock.advance(0.05)
    assert reasks.asked_again("conn-2", "10.0.0.1", "index/crates-io/log", True)  # HTTP/1.1: another pooled connection
    assert not reasks.asked_again("conn-3", "10.0.0.2", "index/crates-io/log", True)  # another client
    clock.advance(4)
    assert not reasks.asked_again("conn-4", "10.0.0.1", "index/crates-io/log", True)  # a later cargo run


def test_a_closed_connection_is_forgotten():
    clock = Clock()
    reasks = Reasks(window=3, clock=clock)
    reasks.asked_again("conn-1", "10.0.0.1", "index/crates-io/log", True)
    reasks.forget("conn-1")
    clock.advance(4)
    assert not reasks.asked_again("conn-1", "10.0.0.1", "index/crates-io/log", True)


def test_an_unconditional_ask_is_never_a_reask():
    """Cargo holds the file when it asks again; cold homes asking for the first time send no validator."""
    reasks = Reasks(window=3, clock=Clock())
    assert not reasks.asked_again("conn-1", "10.0.0.1", "index/crates-io/log", False)
    assert not reasks.asked_again("conn-1", "10.0.0.1", "index/crates-io/log", False)
    assert not reasks.asked_again("conn-2", "10.0.0.1", "index/crates-io/log", False)
    assert reasks.asked_again("conn-1", "10.0.0.1", "index/crates-io/log", True)
