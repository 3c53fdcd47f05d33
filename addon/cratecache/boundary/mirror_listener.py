"""The mirror listener: one more mitmproxy server in the same process, answered by the same request addon.

`mirror.listen` becomes a mitmproxy reverse-proxy mode (operations/mirror_modes.py: `mode` is a list; mitmproxy
starts and stops its servers when it changes, so a reload moves the listener). Its reverse target is a name under
`.invalid`, which never resolves, and it is never meant to be reached: the request addon answers every request on
this listener itself (boundary/addon.py, boundary/mirror.py), the fail-closed addon answers what it did not, and
`server_connect` here refuses a connection to that target should anything still try. This addon decides the
protocol stack of a mirror connection itself (TLS from the client with the operator's certificate, then HTTP),
whatever `allow_hosts` and `ignore_hosts` say, and gives the TLS handshake the operator's certificate and key
(`mirror.tls_cert`/`tls_key`, re-read when the files change) instead of one signed by the proxy's CA. mitmproxy's
`proxyauth` (the transparent proxy's login) does not apply to the mirror, which has its own tokens.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from mitmproxy import connection, ctx, tls
from mitmproxy.addons.tlsconfig import AppData, alpn_select_callback
from mitmproxy.net.tls import starts_like_tls_record
from mitmproxy.proxy import layer, layers, mode_specs, server_hooks, tunnel
from mitmproxy.proxy.layers import modes
from mitmproxy.proxy.layers.http import HTTPMode
from OpenSSL import SSL

from ..config import Settings
from ..operations.mirror_modes import TARGET_HOST, is_mirror_spec

logger = logging.getLogger(__name__)

def is_mirror(client: connection.Client) -> bool:
    """Whether a client connection came in on the mirror listener."""
    mode = client.proxy_mode
    return isinstance(mode, mode_specs.ReverseMode) and mode.address[0] == TARGET_HOST


class MirrorListener:
    def __init__(self, settings: Callable[[], Settings | None]) -> None:
        self.settings = settings  # the settings in force (runtime.py)
        self._context: tuple[tuple, SSL.Context] | None = None  # (the files' identity, the context made from them)

    async def running(self) -> None:
        """mitmdump loads this script while it starts its servers: a listener added to `mode` before mitmproxy ran
        is started here (mitmproxy starts those added later by itself)."""
        proxyserver = ctx.master.addons.get("proxyserver")
        if proxyserver is not None and any(is_mirror_spec(spec) for spec in ctx.options.mode):
            await proxyserver.setup_servers()

    def client_connected(self, client: connection.Client) -> None:
        """mitmproxy's `proxyauth` is the transparent proxy's login; the mirror has its own (`mirror.auth`): its
        clients are not asked for the proxy's password (which, on a reverse listener, would take the Authorization
        header Cargo sends its token in)."""
        if is_mirror(client) and (proxyauth := ctx.master.addons.get("proxyauth")) is not None:
            proxyauth.authenticated[client] = ("cargo-cache-mirror", "")

    def next_layer(self, nextlayer: layer.NextLayer) -> None:
        """A mirror connection is TLS (if it starts like it) then HTTP: decided here, after mitmproxy's own choice,
        which `allow_hosts` could have made a raw tunnel to the (unreachable) target."""
        context = nextlayer.context
        if not is_mirror(context.client) or len(context.layers) != 1 or not isinstance(context.layers[0],
                                                                                      modes.ReverseProxy):
            return
        data = nextlayer.data_client()
        if len(data) < 3:
            nextlayer.layer = None  # not enough bytes to tell TLS from HTTP yet: asked again when more come
            return
        settings = self.settings()
        stack = tunnel.LayerStack()  # each layer is made after its parent: it finds them in context.layers
        if starts_like_tls_record(data) and settings and settings.mirror and settings.mirror.tls_cert:
            stack /= layers.ClientTLSLayer(context)
        stack /= layers.HttpLayer(context, HTTPMode.transparent)  # a TLS hello on a plain listener: mitmproxy's 400
        nextlayer.layer = stack[0]

    def tls_start_client(self, data: tls.TlsData) -> None:
        """The operator's certificate on the mirror listener, in place of the one mitmproxy's tlsconfig made from its
        CA (which no mirror client trusts: a certificate that cannot be loaded fails the handshake)."""
        if not isinstance(data.conn, connection.Client) or not is_mirror(data.conn):
            return
        settings = self.settings()
        mirror = settings.mirror if settings else None
        if mirror is None or mirror.tls_cert is None or mirror.tls_key is None:
            return  # TLS was chosen while a certificate was configured; a reload took it away since
        try:
            context = self._ssl_context(mirror.tls_cert, mirror.tls_key)
        except (OSError, SSL.Error) as e:
            logger.error("cargo-cache: mirror TLS certificate %s / key %s unusable: %s", mirror.tls_cert, mirror.tls_key, e)
            return
        conn = SSL.Connection(context)
        conn.set_app_data(AppData(client_alpn=None, server_alpn=None, http2=ctx.options.http2))
        conn.set_accept_state()
        data.ssl_conn = conn

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        """The listener's reverse target is never connected to (its requests are all answered by the addons)."""
        if data.server.address is not None and data.server.address[0] == TARGET_HOST:
            data.server.error = "cargo-cache: the mirror never forwards a request"
            logger.error("cargo-cache: a mirror request was about to be forwarded; refused")

    def _ssl_context(self, cert: str, key: str) -> SSL.Context:
        """The server context for the operator's files, made again when either file changes (a renewed certificate
        is used from the next connection on)."""
        identity = tuple((path, st.st_ino, st.st_size, st.st_mtime_ns) for path in (cert, key) for st in [os.stat(path)])
        if self._context is not None and self._context[0] == identity:
            return self._context[1]
        context = SSL.Context(SSL.TLS_SERVER_METHOD)
        context.set_min_proto_version(SSL.TLS1_2_VERSION)
        context.use_certificate_chain_file(cert)
        context.use_privatekey_file(key)
        context.check_privatekey()
        context.set_alpn_select_callback(alpn_select_callback)
        self._context = (identity, context)
        return context
