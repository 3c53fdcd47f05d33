"""upstreams/addresses.py: what kind of IP address an address is, and a policy's refusal over those kinds."""

from __future__ import annotations

import ipaddress

import pytest
from cratecache.upstreams.addresses import (
    LINK_LOCAL,
    LOOPBACK,
    MULTICAST,
    NOT_PUBLIC,
    PRIVATE,
    UNSPECIFIED,
    kinds,
    literal,
    refusal,
)


@pytest.mark.parametrize(("address", "expected"), [
    ("93.184.216.34", set()),
    ("2606:4700::1111", set()),
    ("127.0.0.1", {LOOPBACK, PRIVATE, NOT_PUBLIC}),
    ("::1", {LOOPBACK, PRIVATE, NOT_PUBLIC}),
    ("169.254.169.254", {LINK_LOCAL, PRIVATE, NOT_PUBLIC}),
    ("fe80::1", {LINK_LOCAL, PRIVATE, NOT_PUBLIC}),
    ("10.1.2.3", {PRIVATE, NOT_PUBLIC}),
    ("fd00::1", {PRIVATE, NOT_PUBLIC}),
    ("0.0.0.0", {UNSPECIFIED, PRIVATE, NOT_PUBLIC}),
    ("::", {UNSPECIFIED, PRIVATE, NOT_PUBLIC}),
    ("224.0.0.1", {MULTICAST}),  # Python counts it global
    ("100.64.0.1", {NOT_PUBLIC}),  # shared address space (carrier-grade NAT): neither private nor public
])
def test_the_kinds_of_an_address(address, expected):
    assert kinds(ipaddress.ip_address(address)) == expected


def test_an_ipv4_mapped_address_is_the_kind_of_the_address_it_maps():
    assert kinds(ipaddress.ip_address("::ffff:127.0.0.1")) == kinds(ipaddress.ip_address("127.0.0.1"))
    assert kinds(ipaddress.ip_address("::ffff:93.184.216.34")) == set()


@pytest.mark.parametrize(("host", "expected"), [
    ("127.0.0.1", "127.0.0.1"), ("[::1]", "::1"), ("fe80::1%eth0", "fe80::1"), ("[fe80::1%25eth0]", "fe80::1"),
    ("example.com", None), ("127.1", None), ("", None),
])
def test_literal_addresses(host, expected):
    found = literal(host)
    assert (found.compressed if found else None) == expected


def test_a_policy_refuses_in_its_own_order_and_words():
    unspecified = ipaddress.ip_address("0.0.0.0")  # unspecified and private both
    assert refusal(unspecified, {PRIVATE: "private", UNSPECIFIED: "this host"}) == "private"
    assert refusal(unspecified, {UNSPECIFIED: "this host", PRIVATE: "private"}) == "this host"
    assert refusal(unspecified, {LOOPBACK: "loopback"}) is None


def test_a_policy_allows_what_it_does_not_name():
    assert refusal(ipaddress.ip_address("10.1.2.3"), {LOOPBACK: "loopback", LINK_LOCAL: "link-local"}) is None
    assert refusal(ipaddress.ip_address("93.184.216.34"), {NOT_PUBLIC: "not public"}) is None
    assert refusal(ipaddress.ip_address("100.64.0.1"), {PRIVATE: "private", NOT_PUBLIC: "not public"}) == "not public"
