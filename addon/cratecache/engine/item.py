"""What a protocol tells the engine about one entry (pure data): where it is kept, whose upstreams serve it, how
long it stays fresh, how messages name it; and, for a download, what its bytes must hash to."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Source


@dataclass(frozen=True)
class Item:
    key: str  # where the entry is kept in the store
    source: Source  # whose upstreams serve it, in priority order
    what: str  # how a message names it ("... not found on any upstream")
    ttl: int = 0  # seconds it is served without asking an upstream, after one last confirmed it
    immutable: bool = False  # once held it never changes: never revalidated
    held: bool = False  # small and moving: a copy held in memory is revalidated as it is, without a store read
    force: bool = False  # revalidate now, whatever its age

    @property
    def kind(self) -> str:
        """The freshness rule it follows (`freshness.decide`)."""
        return "immutable" if self.immutable else "moving"


@dataclass(frozen=True)
class Expected:
    """What a download's bytes must hash to, and who says so (for the message when they do not)."""
    sha256: str
    name: str  # the file, as the message names it
    says: str  # what vouches for the digest
