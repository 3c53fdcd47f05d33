"""The proxy's CA: created in its folder (mitmproxy's confdir) if absent, with a CA bundle for Cargo.

    python -m cratecache.operations.ca [FOLDER]     (`make ca`; `cargo-cache ca` takes the folder from proxies.yaml)

`cargo-ca-bundle.pem` = the proxy's CA + the system's CAs, so CARGO_HTTP_CAINFO also trusts hosts the proxy
tunnels untouched (git dependencies, crates.io's API). An existing CA is kept; the bundle is written again
(the system's CAs may have changed).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

SYSTEM_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")
CERT, KEY, BUNDLE = "mitmproxy-ca-cert.pem", "mitmproxy-ca.pem", "cargo-ca-bundle.pem"


@dataclass(frozen=True)
class Files:
    cert: Path  # the CA certificate: for clients
    bundle: Path  # the CA + the system's CAs: for CARGO_HTTP_CAINFO / SSL_CERT_FILE
    key: Path  # the CA's private key: stays on the proxy host
    system: Path  # the system bundle the CA was added to

    def lines(self) -> list[str]:
        return [f"CA: {self.cert}", f"Cargo bundle (proxy CA + {self.system}): {self.bundle}",
                f"private key (keep it on this host): {self.key}"]


def create(confdir: Path) -> Files:
    """Create the CA in `confdir` unless there is one, and write its Cargo bundle."""
    import certifi
    from mitmproxy import certs

    confdir.mkdir(parents=True, exist_ok=True)
    certs.CertStore.from_store(confdir, "mitmproxy", 2048)
    system = next((Path(p) for p in SYSTEM_BUNDLES if Path(p).is_file()), Path(certifi.where()))
    proxy_ca = (confdir / CERT).read_text()
    bundle = confdir / BUNDLE
    bundle.write_text(proxy_ca.rstrip("\n") + "\n" + system.read_text())
    return Files(confdir / CERT, bundle, confdir / KEY, system)


def main(argv: list[str]) -> int:
    files = create(Path(argv[0] if argv else "certs").resolve())
    print("\n".join(files.lines()[:2]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
