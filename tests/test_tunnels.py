"""tunnels.py: which destinations the proxy's clients may not reach."""

from __future__ import annotations

import ipaddress

import pytest
from cratecache.boundary.gitindex import hint
from cratecache.boundary.tunnels import _destination_problem, forbidden, literal


@pytest.mark.parametrize(("address", "why"), [
    ("127.0.0.1", "a loopback address"),
    ("127.8.9.10", "a loopback address"),
    ("::1", "a loopback address"),
    ("::ffff:127.0.0.1", "a loopback address"),
    ("169.254.169.254", "a link-local address"),
    ("fe80::1", "a link-local address"),
    ("0.0.0.0", "the unspecified address (this host)"),
    ("::", "the unspecified address (this host)"),
    ("10.1.2.3", None),  # private networks are where corporate mirrors live: allowed
    ("192.168.0.1", None),
    ("151.101.0.1", None),
])
def test_forbidden_destinations(address, why):
    assert forbidden(ipaddress.ip_address(address)) == why


@pytest.mark.parametrize(("host", "expected"), [
    ("127.0.0.1", "127.0.0.1"), ("[::1]", "::1"), ("fe80::1%eth0", "fe80::1"), ("example.com", None), ("127.1", None),
])
def test_literal_addresses(host, expected):
    found = literal(host)
    assert (found.compressed if found else None) == expected


@pytest.mark.parametrize(("host", "expected"), [
    ("localhost", "a loopback address"),
    ("LocalHost.", "a loopback address"),
    ("api.localhost", "a loopback address"),
    ("127.1", "127.1, which resolves to a loopback address"),  # the resolver's short forms too
    ("2130706433", "2130706433, which resolves to a loopback address"),
    ("no-such-host.invalid", None),  # does not resolve: left to mitmproxy, which fails and says so
])
async def test_names_are_judged_by_what_they_resolve_to(host, expected):
    assert await _destination_problem(host, 80) == expected


@pytest.mark.parametrize(("host", "port", "hinted"), [
    ("github.com", 443, True),
    ("api.github.com", 443, True),  # Cargo asks the API whether the index moved before fetching it
    ("GitHub.com.", 443, True),
    ("github.com", 22, False),  # not Cargo's HTTPS git fetch
    ("codeload.github.com", 443, False),
    ("gitlab.com", 443, False),
])
def test_a_failed_tunnel_to_github_says_the_git_index_is_not_served(host, port, hinted):
    found = hint(host, port)
    if hinted:
        assert "github.com/rust-lang/crates.io-index" in found and "does not serve the git index" in found
        assert "CARGO_UNSTABLE_SPARSE_REGISTRY=true" in found and "CARGO_REGISTRIES_CRATES_IO_PROTOCOL=sparse" in found
    else:
        assert found is None
