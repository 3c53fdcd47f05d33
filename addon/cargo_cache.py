"""Entry point for `mitmdump -s addon/cargo_cache.py`: puts the package on the path, lists the addons.

mitmproxy loads this file outside `sys.modules`, so the real code lives in the `cratecache`
package beside it (see README.md).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cratecache.addon import CargoCache  # noqa: E402

addons = [CargoCache()]
