"""The mirror listener as one of mitmproxy's modes: `mirror.listen` -> a reverse-proxy mode spec in the `mode` list,
added, moved or removed as the settings say (mitmproxy starts and stops its servers when `mode` changes, so a
reload moves the listener). Its reverse target is a name under `.invalid` that never resolves: every request on the
listener is answered by the addons (boundary/mirror_listener.py refuses a connection to it)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from mitmproxy import ctx

from ..config import Mirror, Settings

logger = logging.getLogger(__name__)

TARGET_HOST = "cargo-cache-mirror.invalid"  # RFC 6761: never resolves
TARGET = f"http://{TARGET_HOST}:9"


def mode_spec(mirror: Mirror) -> str:
    """mitmproxy's mode for the listener: `reverse:http://cargo-cache-mirror.invalid:9@0.0.0.0:8090`."""
    return f"reverse:{TARGET}@{mirror.listen_host}:{mirror.listen_port}"


def is_mirror_spec(spec: str) -> bool:
    return spec.startswith(f"reverse:{TARGET}@")


def mirror_modes(current: Sequence[str], mirror: Mirror | None) -> list[str]:
    """mitmproxy's `mode` list with the mirror's listener as configured (added, moved or removed), the others kept."""
    kept = [spec for spec in current if not is_mirror_spec(spec)]
    return kept + [mode_spec(mirror)] if mirror is not None else kept


def listen(settings: Settings) -> None:
    """Start, move or stop the mirror listener to match `settings` (mitmproxy applies a changed `mode` live)."""
    if "mode" not in ctx.options:
        return
    wanted = mirror_modes(ctx.options.mode, settings.mirror)
    if wanted != list(ctx.options.mode):
        ctx.options.update(mode=wanted)
        if settings.mirror is not None:
            m = settings.mirror
            logger.info("cargo-cache: mirror on %s (%s) as %s%s", m.listen, "HTTPS" if m.tls_cert else
                        "plain HTTP", m.public_url, ", tokens required" if m.tokens else "")
