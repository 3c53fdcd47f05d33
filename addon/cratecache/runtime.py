"""What the addons of one mitmdump share, in one small object made by addon/cargo_cache.py and passed to each.

The configuration addon (operations/configuration.py) sets `settings` and `resolver` when proxies.yaml is applied;
the request addon (boundary/addon.py) reads them on every request and streams large files through `blobs`; the
upkeep addon (operations/upkeep.py) shows `activity` and `config` on the status server and closes the resolver at
the end. No addon reaches into another: what one makes for the others is here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .boundary.blobs import BlobServer
from .config import Settings
from .operations.activity import Activity
from .operations.reload import ConfigState
from .resolver import Resolver


@dataclass(eq=False)
class Runtime:
    settings: Settings | None = None  # None until proxies.yaml is applied; replaced whole by a reload
    resolver: Resolver | None = None  # made with the settings at start; reconfigured by a reload
    activity: Activity = field(default_factory=Activity)  # this worker's requests, counts and metrics
    config: ConfigState = field(default_factory=ConfigState)  # when it was last loaded, the last reload error
    blobs: BlobServer = field(default_factory=BlobServer)  # large cached files, streamed through mitmproxy

    def blob_address(self) -> tuple[str, int] | None:
        """Where the blob server listens (mitmproxy fetches from it), once it does."""
        return ("127.0.0.1", self.blobs.port) if self.blobs.port else None

    async def close(self) -> None:
        if self.resolver is not None:
            await self.resolver.aclose()
            await self.resolver.store.close()
            self.resolver = None
