"""What kind of IP address an address is (pure, no I/O): loopback, link-local, private, unspecified, multicast, not
public. The guards that refuse addresses keep their own policy over these kinds (which ones, in which order, in
which words): the client guard (`boundary/tunnels.py`: loopback, link-local, unspecified; private networks are
where corporate mirrors live) and the upstream guard (`transport.py`: any address but a public one, for a host
that is not configured)."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

LOOPBACK = "loopback"
LINK_LOCAL = "link-local"
PRIVATE = "private"
UNSPECIFIED = "unspecified"
MULTICAST = "multicast"
NOT_PUBLIC = "not public"  # not globally reachable (e.g. 100.64.0.0/10, shared address space), whatever else


def literal(host: str) -> Address | None:
    """The address a host names literally ('127.0.0.1', '[::1]', 'fe80::1%eth0'), or None for a name."""
    try:
        return ipaddress.ip_address(host.strip("[]").partition("%")[0])
    except ValueError:
        return None


def kinds(address: Address) -> frozenset[str]:
    """Every kind `address` is (a public unicast address: none). An IPv4-mapped IPv6 address (::ffff:127.0.0.1)
    is taken as the IPv4 address it maps."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    found = {kind for kind, test in ((LOOPBACK, address.is_loopback), (LINK_LOCAL, address.is_link_local),
                                     (PRIVATE, address.is_private), (UNSPECIFIED, address.is_unspecified),
                                     (MULTICAST, address.is_multicast), (NOT_PUBLIC, not address.is_global)) if test}
    return frozenset(found)


def refusal(address: Address, policy: Mapping[str, str]) -> str | None:
    """What `policy` (kind -> the words of its refusal, in the order the policy asks) says of `address`: the words of
    the first kind in that order that the address is, or None (allowed)."""
    found = kinds(address)
    return next((words for kind, words in policy.items() if kind in found), None)
