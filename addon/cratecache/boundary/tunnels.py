"""The proxy's own loopback is not a destination for its clients (Squid's `to_localhost`).

Without this, any client of the proxy could reach what listens on the proxy host's loopback only (the status
page past its `cargo_status_host` protection, a local SeaweedFS, an admin port) and link-local addresses
(cloud metadata services), through CONNECT or a plain `http://` request. A tunnel or request whose destination
is a loopback, link-local or unspecified address, by literal address or by a name that resolves to one, is
refused with 403 and the reason. The registry and toolchains hosts the proxy intercepts are answered by the
cache, never connected to, and are not affected; neither are the proxy's own requests to its upstreams.
`cargo_tunnel_loopback` allows client traffic to loopback (for tests and single-user setups).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

from mitmproxy import ctx, http
from mitmproxy.addonmanager import Loader
from mitmproxy.proxy import server_hooks

from ..config import Settings
from ..upstreams import addresses
from ..upstreams.addresses import Address, literal
from .gitindex import hint
from .mirror_listener import is_mirror

logger = logging.getLogger(__name__)

# What clients may not reach, in the words of the 403 (private networks, where corporate mirrors live, they may).
CLIENT_POLICY = {
    addresses.LOOPBACK: "a loopback address",
    addresses.LINK_LOCAL: "a link-local address",
    addresses.UNSPECIFIED: "the unspecified address (this host)",
}


def forbidden(address: Address) -> str | None:
    """Why a destination address is not for clients (None: it is allowed). Pure."""
    return addresses.refusal(address, CLIENT_POLICY)


class LoopbackGuard:
    def __init__(self, settings: Callable[[], Settings | None], own: Callable[[], tuple[str, int] | None]) -> None:
        self.settings = settings  # the settings in force (runtime.py): intercepted hosts are answered, not connected to
        self.own = own  # the address of the cache's own loopback server (blobs.py), which mitmproxy fetches from

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "cargo_tunnel_loopback", bool, False,
            "Let clients reach loopback and link-local addresses through the proxy (CONNECT or plain HTTP). Off: "
            "such requests get 403, as Squid's to_localhost.",
        )

    async def http_connect(self, flow: http.HTTPFlow) -> None:
        await self._check(flow)

    async def request(self, flow: http.HTTPFlow) -> None:  # plain-HTTP proxy requests (absolute URLs)
        if flow.response is None and flow.error is None and not flow.metadata.get("cargo_cache_streamed"):
            await self._check(flow)

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        """The last net, with no name lookup: mitmproxy is about to connect to a literal forbidden address."""
        if ctx.options.cargo_tunnel_loopback or data.server.address is None:
            return
        host, port = data.server.address[:2]
        address = literal(host)
        why = forbidden(address) if address is not None else None
        if why is not None and (address.compressed, port) != self.own():
            data.server.error = f"cargo-cache: connections to {why} ({host}:{port}) are not allowed through the proxy"
            logger.info("%s", data.server.error)

    def server_connect_error(self, data: server_hooks.ServerConnectionHookData) -> None:
        """mitmproxy's own line gives the OS error only ("Name or service not known"): say which host it was (and,
        for GitHub, that Cargo's git index is not served: gitindex.py)."""
        client = data.client.peername[0] if data.client.peername else "-"
        host, port = data.server.address[:2] if data.server.address else ("?", 0)
        logger.warning("cargo-cache: %s: connection to %s:%s failed: %s%s", client,
                       host, port, data.server.error, _hinted(host, port))

    async def _check(self, flow: http.HTTPFlow) -> None:
        if ctx.options.cargo_tunnel_loopback or flow.response is not None or is_mirror(flow.client_conn):
            return  # the mirror listener's requests are all answered by the cache, never connected anywhere
        host, port = flow.request.host, flow.request.port
        if self._intercepted(host, port):
            return
        why = await _destination_problem(host, port)
        if why is None:
            return
        client = flow.client_conn.peername[0] if flow.client_conn.peername else "-"
        reason = f"cargo-cache: {host}:{port} is {why}; the proxy does not connect its clients there"
        logger.info("%s %s %s:%d refused: %s%s", client, flow.request.method, host, port, reason, _hinted(host, port))
        flow.response = http.Response.make(403, (reason + "\n").encode(), {"Content-Type": "text/plain; charset=utf-8"})

    def _intercepted(self, host: str, port: int) -> bool:
        settings = self.settings()
        if settings is None:
            return False
        host = host.lower().removesuffix(".")
        for configured in settings.hosts:
            name, _, own_port = configured.partition(":")
            if name == host and (not own_port or int(own_port) == port):
                return True
        return False


def _hinted(host: str, port: int) -> str:
    found = hint(host, port)
    return f" ({found})" if found else ""


async def _destination_problem(host: str, port: int) -> str | None:
    """Why `host` is no destination for clients: by its literal address, or by every address its name resolves to
    (a name with any forbidden address is refused: the connection could go to either)."""
    address = literal(host)
    if address is not None:
        return forbidden(address)
    name = host.lower().removesuffix(".")
    if name == "localhost" or name.endswith(".localhost"):
        return "a loopback address"
    try:
        found = await asyncio.get_running_loop().getaddrinfo(name, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return None  # does not resolve: mitmproxy's own connection attempt fails and says so
    for *_, sockaddr in found:
        address = literal(sockaddr[0])
        if address is not None and (why := forbidden(address)):
            return f"{name}, which resolves to {why}"
    return None
