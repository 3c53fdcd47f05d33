"""A removal by predicate (`purge --older-than`, `--crate`): what it found so far, page by page.

The local store reads a page of meta records, deletes those the predicate chooses and notes the digests they named,
with the (64-bit prefixes of the) digests the entries it keeps name, in one transaction a page (`LocalStore.
remove_page`); at the end the blobs only removed entries named are deleted (`LocalStore.drop_unnamed`). So a purge
reads the listing once, instead of once to choose and twice more to collect garbage (every meta and every blob key).

A blob stored again after the removal began (the same bytes fetched anew meanwhile) is kept; one that a new entry
names without storing it again may be deleted: that entry is then a miss, and its bytes are fetched once more.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .entries import Meta

Chooser = Callable[[str, Meta], bool]


def short(sha256: str) -> int:
    """A digest's first 64 bits (what is kept of each digest still named: a blob whose prefix collides with a named
    one is kept, never the other way round)."""
    try:
        return int(sha256[:16], 16)
    except ValueError:
        return -1


@dataclass
class Removal:
    chosen: Chooser
    started: float  # blobs stored at or after this time are kept
    removed: list[str] = field(default_factory=list)
    named: set[str] = field(default_factory=set)  # digests the removed entries named
    kept: set[int] = field(default_factory=set)  # short digests the entries kept name

    def sort(self, page: list[tuple[str, Meta]]) -> list[str]:
        """The keys of `page` to delete; the digests of both sides noted."""
        gone = []
        for key, meta in page:
            if self.chosen(key, meta):
                gone.append(key)
                self.named.add(meta.sha256)
            else:
                self.kept.add(short(meta.sha256))
        self.removed += gone
        return gone

    def unnamed(self) -> list[str]:
        """Digests only removed entries named (as far as the pages read showed)."""
        return sorted(sha for sha in self.named if short(sha) not in self.kept)
