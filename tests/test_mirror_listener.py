"""mirror_listener.py: which connections are the mirror's, and the operator's certificate on them (re-read when its
files change)."""

from __future__ import annotations

import trustme
from cratecache.boundary.mirror_listener import MirrorListener, is_mirror
from cratecache.operations.mirror_modes import TARGET
from mitmproxy.proxy import mode_specs
from mitmproxy.test import tflow


def client(spec: str):
    conn = tflow.tclient_conn()
    conn.proxy_mode = mode_specs.ProxyMode.parse(spec)
    return conn


def test_only_connections_on_the_mirror_listener_are_the_mirrors():
    assert is_mirror(client(f"reverse:{TARGET}@127.0.0.1:8090"))
    assert not is_mirror(client("regular"))
    assert not is_mirror(client("reverse:http://example.com:80@8091"))  # an operator's own reverse mode


def test_the_certificate_is_loaded_once_and_again_when_its_files_change(tmp_path):
    ca = trustme.CA()
    cert, key = tmp_path / "gw.pem", tmp_path / "gw.key"

    def issue(name: str) -> None:
        leaf = ca.issue_cert(name)
        cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        leaf.private_key_pem.write_to_path(str(key))

    issue("gw.corp.example")
    listener = MirrorListener(lambda: None)
    first = listener._ssl_context(str(cert), str(key))
    assert listener._ssl_context(str(cert), str(key)) is first
    issue("renewed.gw.corp.example")  # certbot's renewal writes both files
    renewed = listener._ssl_context(str(cert), str(key))
    assert renewed is not first
    assert listener._ssl_context(str(cert), str(key)) is renewed
