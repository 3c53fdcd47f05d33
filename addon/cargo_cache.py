"""Entry point for `mitmdump -s addon/cargo_cache.py`: puts the package on the path, lists the addons.

mitmproxy loads this file outside `sys.modules`, so the real code lives in the `cratecache` package beside it
(see README.md). Each addon has one concern; what they share (the settings and resolver in force, the activity,
the reload state, the blob server) is one `Runtime`, made here and passed to each. mitmproxy calls every hook
in this order, `done` included.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cratecache.boundary.addon import CargoCache  # noqa: E402
from cratecache.boundary.descriptors import DescriptorGuard  # noqa: E402
from cratecache.boundary.failsafe import FailClosed  # noqa: E402
from cratecache.boundary.mirror_listener import MirrorListener  # noqa: E402
from cratecache.boundary.tunnels import LoopbackGuard  # noqa: E402
from cratecache.operations.advisory_watch import AdvisoryWatch  # noqa: E402
from cratecache.operations.configuration import Configuration  # noqa: E402
from cratecache.operations.upkeep import Upkeep  # noqa: E402
from cratecache.runtime import Runtime  # noqa: E402

runtime = Runtime()
addons = [
    DescriptorGuard(),  # out of file descriptors: one warning a minute, no spinning
    LoopbackGuard(lambda: runtime.settings, runtime.blob_address),  # clients kept off loopback, not the blob server
    MirrorListener(lambda: runtime.settings),  # the mirror listener's connections: TLS with the operator's certificate
    Configuration(runtime),  # options, proxies.yaml applied at start, reloaded and watched; interception scope
    AdvisoryWatch(runtime),  # the policy's advisory databases re-read when their checkout changes
    CargoCache(runtime),  # answers every request on the registry and toolchains hosts
    Upkeep(runtime),  # status server, request counts, store upkeep; last to stop: closes the resolver
    FailClosed(lambda: runtime.settings),  # last: refuses what no hook answered on those hosts
]
