"""Cargo's git index of crates.io is not served: what to add to the log when a client's tunnel to GitHub fails.

Cargo before 1.70 reads crates.io's index from the git repository github.com/rust-lang/crates.io-index (asking
api.github.com first whether it changed) unless told to use the sparse protocol. The proxy serves the sparse index
(index.crates.io) only; a git fetch is an ordinary CONNECT tunnel to GitHub, which the proxy neither decrypts nor
caches, so its path is not visible. Where GitHub is unreachable (an air-gapped site, a firewall) such a Cargo
fails with a TLS or network error that names no proxy; the proxy's log line for the failed tunnel names the host
and, for GitHub's hosts, says what to set. Pure.
"""

from __future__ import annotations

#: The hosts Cargo's git index fetch connects to: the repository, and the API it asks whether the repository moved.
GIT_INDEX_HOSTS = frozenset({"github.com", "api.github.com"})

HINT = ("if this is Cargo's git index of crates.io (github.com/rust-lang/crates.io-index): the proxy does not serve "
        "the git index, only the sparse one (index.crates.io); use the sparse protocol: Cargo 1.70 and later by "
        "default, 1.68-1.69 with CARGO_REGISTRIES_CRATES_IO_PROTOCOL=sparse, 1.63-1.67 with "
        "CARGO_UNSTABLE_SPARSE_REGISTRY=true (and RUSTC_BOOTSTRAP=1 on a stable toolchain)")


def hint(host: str, port: int) -> str | None:
    """What to add to a failed or refused tunnel's log line (None: nothing): for GitHub's HTTPS hosts, that the git
    index is not served and how to switch Cargo to the sparse protocol."""
    if port == 443 and host.lower().removesuffix(".") in GIT_INDEX_HOSTS:
        return HINT
    return None
