"""The collector setting for a running proxy: startup's objects frozen, later garbage still collected."""

import gc
import weakref

import pytest
from cratecache.operations import collector


@pytest.fixture
def unfrozen():
    gc.unfreeze()
    yield
    gc.unfreeze()


class Node:
    def __init__(self):
        self.me = self  # a reference cycle: only the cycle collector frees it


def test_objects_alive_at_startup_are_frozen_and_startup_garbage_is_not(unfrozen):
    kept = Node()
    garbage = weakref.ref(Node())  # a cycle nothing refers to any more
    assert collector.freeze_startup() > 1000  # the interpreter, pytest and the addon's modules
    assert garbage() is None  # collected before the freeze, not kept forever
    assert gc.get_freeze_count() >= 1 and kept.me is kept


def test_garbage_made_after_the_freeze_is_still_collected(unfrozen):
    collector.freeze_startup()
    later = weakref.ref(Node())
    gc.collect()
    assert later() is None
