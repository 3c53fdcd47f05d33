"""Create mitmproxy's CA in a confdir (if absent) and a CA bundle for Cargo.

`certs/cargo-ca-bundle.pem` = the proxy's CA + the system's CAs, so CARGO_HTTP_CAINFO also
trusts hosts the proxy tunnels untouched (git dependencies, crates.io's API).
"""

import sys
from pathlib import Path

import certifi
from mitmproxy import certs

SYSTEM_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")


def main(confdir: Path) -> None:
    confdir.mkdir(parents=True, exist_ok=True)
    certs.CertStore.from_store(confdir, "mitmproxy", 2048)
    system = next((Path(p) for p in SYSTEM_BUNDLES if Path(p).is_file()), Path(certifi.where()))
    proxy_ca = (confdir / "mitmproxy-ca-cert.pem").read_text()
    bundle = confdir / "cargo-ca-bundle.pem"
    bundle.write_text(proxy_ca.rstrip("\n") + "\n" + system.read_text())
    print(f"CA: {confdir / 'mitmproxy-ca-cert.pem'}\nCargo bundle (proxy CA + {system}): {bundle}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "certs").resolve())
