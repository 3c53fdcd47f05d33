"""Entry point for `mitmdump -s addon/cargo_cache.py`: puts the package on the path, lists the addons.

mitmproxy loads this file outside `sys.modules`, so the real code lives in the `cratecache`
package beside it (see README.md).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cratecache.boundary.addon import CargoCache  # noqa: E402
from cratecache.boundary.descriptors import DescriptorGuard  # noqa: E402
from cratecache.boundary.failsafe import FailClosed  # noqa: E402
from cratecache.boundary.tunnels import LoopbackGuard  # noqa: E402

cache = CargoCache()
addons = [
    DescriptorGuard(),  # out of file descriptors: one warning a minute, no spinning
    LoopbackGuard(lambda: cache.settings, lambda: ("127.0.0.1", cache.blobs.port) if cache.blobs.port else None),
    cache,  # answers every request on the registry and toolchains hosts
    FailClosed(lambda: cache.settings),  # last: refuses what no hook answered on those hosts
]
