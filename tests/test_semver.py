"""Cargo's version requirements, as the semver crate (1.x) matches them: its own test cases, its error
messages, semver 2.0 order, and every requirement of the real RustSec snapshot."""

from __future__ import annotations

import re
import tomllib

import pytest
from cratecache.semver import Comparator, Req, Version, parse_req, parse_version

from tests.fixtures.rustsec import SNAPSHOT as SNAPSHOT_DIR

RUSTSEC = SNAPSHOT_DIR

# (requirement, versions it matches, versions it does not): tests/test_version_req.rs of dtolnay/semver
CASES = [
    ("1.0.0", ["1.0.0", "1.1.0", "1.0.1"], ["0.9.9", "0.10.0", "0.1.0", "1.0.0-pre", "1.0.1-pre"]),
    ("=1.0.0", ["1.0.0"], ["1.0.1", "0.9.9", "0.10.0", "0.1.0", "1.0.0-pre"]),
    ("=0.9.0", ["0.9.0"], ["0.9.1", "1.9.0", "0.0.9", "0.9.0-pre"]),
    ("=0.0.2", ["0.0.2"], ["0.0.1", "0.0.3", "0.0.2-pre"]),
    ("=0.1.0-beta2.a", ["0.1.0-beta2.a"], ["0.9.1", "0.1.0", "0.1.1-beta2.a", "0.1.0-beta2"]),
    ("=0.1.0+meta", ["0.1.0", "0.1.0+meta", "0.1.0+any"], []),
    (">= 1.0.0", ["1.0.0", "2.0.0"], ["0.1.0", "0.0.1", "1.0.0-pre", "2.0.0-pre"]),
    (
        ">= 2.1.0-alpha2",
        ["2.1.0-alpha2", "2.1.0-alpha3", "2.1.0", "3.0.0"],
        ["2.0.0", "2.1.0-alpha1", "2.0.0-alpha2", "3.0.0-alpha2"],
    ),
    ("< 1.0.0", ["0.1.0", "0.0.1"], ["1.0.0", "1.0.0-beta", "1.0.1", "0.9.9-alpha"]),
    (
        "<= 2.1.0-alpha2",
        ["2.1.0-alpha2", "2.1.0-alpha1", "2.0.0", "1.0.0"],
        ["2.1.0", "2.2.0-alpha1", "2.0.0-alpha2", "1.0.0-alpha2"],
    ),
    (">1.0.0-alpha, <1.0.0", ["1.0.0-beta"], []),
    (">1.0.0-alpha, <1.0", [], ["1.0.0-beta"]),
    (">1.0.0-alpha, <1", [], ["1.0.0-beta"]),
    ("> 0.0.9, <= 2.5.3", ["0.0.10", "1.0.0", "2.5.3"], ["0.0.8", "2.5.4"]),
    ("0.3.0, 0.4.0", [], ["0.0.8", "0.3.0", "0.4.0"]),
    ("<= 0.2.0, >= 0.5.0", [], ["0.0.8", "0.3.0", "0.5.1"]),
    ("0.1.0, 0.1.4, 0.1.6", ["0.1.6", "0.1.9"], ["0.1.0", "0.1.4", "0.2.0"]),
    (
        ">=0.5.1-alpha3, <0.6",
        ["0.5.1-alpha3", "0.5.1-alpha4", "0.5.1-beta", "0.5.1", "0.5.5"],
        ["0.5.1-alpha1", "0.5.2-alpha3", "0.5.5-pre", "0.5.0-pre", "0.6.0", "0.6.0-pre"],
    ),
    ("~1", ["1.0.0", "1.0.1", "1.1.1"], ["0.9.1", "2.9.0", "0.0.9"]),
    ("~1.2", ["1.2.0", "1.2.1"], ["1.1.1", "1.3.0", "0.0.9"]),
    ("~1.2.2", ["1.2.2", "1.2.4"], ["1.2.1", "1.9.0", "1.0.9", "2.0.1", "0.1.3"]),
    ("~1.2.3-beta.2", ["1.2.3", "1.2.4", "1.2.3-beta.2", "1.2.3-beta.4"], ["1.3.3", "1.1.4", "1.2.3-beta.1", "1.2.4-beta.2"]),
    ("^1", ["1.1.2", "1.1.0", "1.2.1", "1.0.1"], ["0.9.1", "2.9.0", "0.1.4", "1.0.0-beta1", "0.1.0-alpha", "1.0.1-pre"]),
    ("^1.1", ["1.1.2", "1.1.0", "1.2.1"], ["0.9.1", "2.9.0", "1.0.1", "0.1.4"]),
    ("^1.1.2", ["1.1.2", "1.1.4", "1.2.1"], ["0.9.1", "2.9.0", "1.1.1", "0.0.1", "1.1.2-alpha1", "1.1.3-alpha1", "2.9.0-alpha1"]),
    ("^0.1.2", ["0.1.2", "0.1.4"], ["0.9.1", "2.9.0", "1.1.1", "0.0.1", "0.1.2-beta", "0.1.3-alpha", "0.2.0-pre"]),
    (
        "^0.5.1-alpha3",
        ["0.5.1-alpha3", "0.5.1-alpha4", "0.5.1-beta", "0.5.1", "0.5.5"],
        ["0.5.1-alpha1", "0.5.2-alpha3", "0.5.5-pre", "0.5.0-pre", "0.6.0"],
    ),
    ("^0.0.2", ["0.0.2"], ["0.9.1", "2.9.0", "1.1.1", "0.0.1", "0.1.4"]),
    ("^0.0", ["0.0.2", "0.0.0"], ["0.9.1", "2.9.0", "1.1.1", "0.1.4"]),
    ("^0", ["0.9.1", "0.0.2", "0.0.0"], ["2.9.0", "1.1.1"]),
    (
        "^1.4.2-beta.5",
        ["1.4.2", "1.4.3", "1.4.2-beta.5", "1.4.2-beta.6", "1.4.2-c"],
        ["0.9.9", "2.0.0", "1.4.2-alpha", "1.4.2-beta.4", "1.4.3-beta.5"],
    ),
    ("*", ["0.9.1", "2.9.0", "0.0.9", "1.0.1", "1.1.1", "0.0.1"], ["1.0.0-pre"]),
    ("1.*", ["1.2.0", "1.2.1", "1.1.1", "1.3.0"], ["0.0.9", "1.2.0-pre"]),
    ("1.2.*", ["1.2.0", "1.2.2", "1.2.4"], ["1.9.0", "1.0.9", "2.0.1", "0.1.3", "1.2.2-pre"]),
    ("0.*.*", ["0.5.0"], ["1.0.0"]),
    ("=2.1.1-really.0", ["2.1.1-really.0"], []),
    # partial versions with the other operators (eval.rs matches_greater/matches_less with minor/patch None)
    (">= 1.2", ["1.2.0", "1.3.0", "2.0.0"], ["1.1.9", "1.2.0-rc.1"]),
    ("> 1.2", ["1.3.0", "2.0.0"], ["1.2.0", "1.2.9"]),
    ("< 1.2", ["1.1.9", "0.1.0"], ["1.2.0", "1.2.1", "1.1.9-pre"]),
    ("<= 1", ["1.9.9", "0.5.0"], ["2.0.0"]),
    ("=1.2", ["1.2.0", "1.2.7"], ["1.3.0", "1.1.0"]),
    ("~0", ["0.0.1", "0.9.0"], ["1.0.0"]),
    # RustSec's forms
    (">= 0.9.0", ["0.9.0", "0.10.5", "1.0.0"], ["0.8.9", "0.9.0-rc.1"]),
    (">= 0.10.55, < 0.11", ["0.10.55", "0.10.66"], ["0.10.54", "0.11.0", "0.9.0"]),
]


@pytest.mark.parametrize(("req", "yes", "no"), CASES, ids=[c[0] for c in CASES])
def test_matches_as_the_semver_crate(req: str, yes: list[str], no: list[str]) -> None:
    r = parse_req(req)
    assert [v for v in yes if not r.matches(parse_version(v))] == []
    assert [v for v in no if r.matches(parse_version(v))] == []


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("1.0.0", "^1.0.0"),
        ("=0.1.0+meta", "=0.1.0"),
        (">= 1.0.0", ">=1.0.0"),
        ("> 0.0.9, <= 2.5.3", ">0.0.9, <=2.5.3"),
        ("0.3.0, 0.4.0", "^0.3.0, ^0.4.0"),
        (">=0.5.1-alpha3, <0.6", ">=0.5.1-alpha3, <0.6"),
        ("2.X", "2.*"),
        ("2.x.x", "2.*"),
        ("0.*.*", "0.*"),
        ("0.0.*", "0.0.*"),
        ("1.2.3-alpha", "^1.2.3-alpha"),
        ("*", "*"),
    ],
)
def test_canonical_text(text: str, shown: str) -> None:
    assert str(parse_req(text)) == shown
    assert parse_req(text).text == text


def test_wildcard_spellings_are_equal_and_hashable() -> None:
    assert parse_req("*") == parse_req("x") == parse_req("X") == Req("*", ())
    assert parse_req("1.*") == parse_req("1.x") == parse_req("1.X") == parse_req("1.*.*")
    assert parse_req("1.*").comparators == (Comparator("*", 1, None, None, ()),)
    assert parse_req("1.2.*") == parse_req("1.2.x") == parse_req("1.2.X")
    assert parse_req("^1") == parse_req("^1") and parse_req("^1") != parse_req("^2")
    assert len({parse_req("^1"), parse_req("^1"), parse_req("1")}) == 1


@pytest.mark.parametrize("op", ["=", ">", ">=", "<", "<=", "~", "^"])
def test_leading_digit_in_pre_and_build(op: str) -> None:
    for rest in [
        "1.2.3-1a",
        "1.2.3+1a",
        "1.2.3-01a",
        "1.2.3+01",
        "1.2.3-1+1",
        "1.2.3-1-1+1-1-1",
        "1.2.3-1a+1a",
        "1.2.3-1a-1a+1a-1a-1a",
    ]:
        assert parse_req(f"{op} {rest}").comparators[0].op == op


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "unexpected end of input while parsing major version number"),
        ("> 0.1.0,", "unexpected end of input while parsing major version number"),
        ("> 0.3.0, ,", "unexpected character ',' while parsing major version number"),
        ("1.2.3 - 2.3.4", "expected comma after patch version number, found '-'"),
        ("> 0.0.9 <= 2.5.3", "expected comma after patch version number, found '<'"),
        ("=1.2.3 || =2.3.4", "expected comma after patch version number, found '|'"),
        ("1.1 || =1.2.3", "expected comma after minor version number, found '|'"),
        ("6.* || 8.* || >= 10.*", "expected comma after minor version number, found '|'"),
        ("\0", "unexpected character '\\0' while parsing major version number"),
        (">= >= 0.0.2", "unexpected character '>' while parsing major version number"),
        (">== 0.0.2", "unexpected character '=' while parsing major version number"),
        ("a.0.0", "unexpected character 'a' while parsing major version number"),
        ("1.0.0-", "empty identifier segment in pre-release identifier"),
        (">=", "unexpected end of input while parsing major version number"),
        ("1.2.3-01", "invalid leading zero in pre-release identifier"),
        ("1.2.3+4.", "empty identifier segment in build metadata"),
        ("1.", "unexpected end of input while parsing minor version number"),
        ("1.*.", "unexpected character after wildcard in version req"),
        ("*.1", "unexpected character after wildcard in version req"),
        ("1.*.1", "unexpected character after wildcard in version req"),
        (">=1.*.1", "unexpected character after wildcard in version req"),
        ("*, 0.20.0-any", "wildcard req (*) must be the only comparator in the version req"),
        ("0.20.0-any, *", "wildcard req (*) must be the only comparator in the version req"),
        ("0.20.0-any, *, 1.0", "wildcard req (*) must be the only comparator in the version req"),
        ("01.0", "invalid leading zero in major version number"),
        ("99999999999999999999", "value of major version number exceeds u64::MAX"),
        (", ".join(f">{n}" for n in range(1, 34)), "excessive number of version comparators"),
    ],
)
def test_invalid_requirements_name_the_text_and_the_problem(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_req(text)
    assert str(caught.value) == f"invalid version requirement {text!r}: {message}"


def test_thirty_two_comparators_are_the_most() -> None:
    assert len(parse_req(", ".join(f">{n}" for n in range(1, 33))).comparators) == 32


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty string, expected a semver version"),
        ("1.q.r", "unexpected character 'q' while parsing minor version number"),
        ("1.2", "unexpected end of input while parsing minor version number"),
        ("1.2.3-", "empty identifier segment in pre-release identifier"),
        ("1.2.3-a..b", "empty identifier segment in pre-release identifier"),
        ("1.2.3-01", "invalid leading zero in pre-release identifier"),
        ("1.2.03", "invalid leading zero in patch version number"),
        ("1.2.3 ", "unexpected character ' ' after patch version number"),
        ("1.2.3-a+b ", "unexpected character ' ' after build metadata"),
        ("^1.2.3", "unexpected character '^' while parsing major version number"),
    ],
)
def test_invalid_versions(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_version(text)
    assert str(caught.value) == f"invalid version {text!r}: {message}"


def test_version_fields_and_text() -> None:
    v = parse_version("1.0.0-alpha.1.x-y+build.5")
    assert v == Version(1, 0, 0, ("alpha", 1, "x-y"), "build.5")
    assert str(v) == "1.0.0-alpha.1.x-y+build.5"
    assert str(parse_version("0.10.55")) == "0.10.55"


def test_prerelease_order() -> None:
    chain = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
        "1.0.1",
        "1.1.0",
        "2.0.0-0",
        "2.0.0",
    ]
    versions = [parse_version(t) for t in chain]
    for lower, higher in zip(versions, versions[1:], strict=False):
        assert lower < higher and higher > lower and lower <= higher and not higher <= lower
    assert sorted(reversed(versions)) == versions
    # build metadata plays no part in the order
    assert not parse_version("1.0.0+a") < parse_version("1.0.0+b")
    assert parse_version("1.0.0+a") <= parse_version("1.0.0+b") <= parse_version("1.0.0+a")


def _rustsec_requirements() -> list[str]:
    found = []
    for file in sorted(RUSTSEC.glob("crates/*/*.md")):
        text = file.read_text(encoding="utf-8")
        front = re.match(r"```toml\n(.*?)\n```", text, re.S)
        assert front, file
        versions = tomllib.loads(front.group(1)).get("versions", {})
        found += versions.get("patched", []) + versions.get("unaffected", [])
    return found


def test_every_requirement_of_the_rustsec_snapshot_parses() -> None:
    requirements = _rustsec_requirements()
    assert len(requirements) == 1201
    assert len(set(requirements)) == 727
    for text in requirements:
        assert parse_req(text).comparators, text


def _around(cmp: Comparator) -> set[Version]:
    """Release versions on and either side of each part of a comparator's version."""
    near = lambda n: {0, 1} | ({n - 1, n, n + 1} - {-1}) if n is not None else {0, 1, 7}  # noqa: E731
    return {Version(a, b, c) for a in near(cmp.major) for b in near(cmp.minor) for c in near(cmp.patch)}


def test_release_versions_take_a_shortcut_with_the_same_answers() -> None:
    """Req.matches answers a release version from a range worked out at parse time: it must agree with
    eval.rs's comparator-by-comparator rules on every version near every requirement."""
    from cratecache.semver import _matches

    texts = set(_rustsec_requirements()) | {case[0] for case in CASES}
    texts |= {
        f"{op}{v}"
        for op in ["=", ">", ">=", "<", "<=", "~", "^", ""]
        for v in ["0", "1", "0.0", "0.3", "2.1", "0.0.0", "0.0.4", "0.5.1", "1.2.3", "1.2.3-rc.1", "0.0.3-a", "0.*", "1.2.*"]
        if not (v.endswith("*") and op)
    }
    checked = 0
    for text in texts:
        req = parse_req(text)
        versions = set().union(*(_around(c) for c in req.comparators)) if req.comparators else {Version(0, 0, 1)}
        for version in versions:
            assert req.matches(version) == all(_matches(c, version) for c in req.comparators), (text, version)
            checked += 1
    assert checked > 30_000
