"""Cargo's semver: versions, their order, and version requirements as Cargo matches them.

A port of the `semver` crate 1.x (dtolnay/semver, src/parse.rs and src/eval.rs), the crate Cargo itself uses
for `VersionReq::parse` and `VersionReq::matches`, with its error messages. Why not a PyPI library:
`semantic_version` 2.10 (the well-kept candidate) reads a bare `1.0.0` as `==1.0.0` where Cargo reads `^1.0.0`,
lets `>=1.0.0` match `2.0.0-pre` (SimpleSpec) where Cargo does not, reads `^0.0` differently (SimpleSpec),
and rejects the space after an operator that RustSec writes (`>= 0.9.0`), in both SimpleSpec and NpmSpec.

The rules, as Cargo has them:
- a requirement is comma-separated comparators, all of which must match; a bare version means `^`;
- `*`, `x`, `X` (alone), `1.*`, `1.2.x` are wildcards; `=`, `>`, `>=`, `<`, `<=`, `~`, `^` take partial versions;
- a pre-release version matches only if every comparator matches and at least one comparator names the same
  major.minor.patch with a pre-release of its own (pre-releases are opt-in per version tuple).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

OPS = ("=", ">", ">=", "<", "<=", "~", "^", "*")
MAX_COMPARATORS = 32
_U64_MAX = 2**64 - 1

_MAJOR, _MINOR, _PATCH, _PRE, _BUILD = (
    "major version number",
    "minor version number",
    "patch version number",
    "pre-release identifier",
    "build metadata",
)


def _pre_key(pre: tuple) -> tuple:
    """Semver 2.0 precedence of a pre-release: none sorts above any; numbers below words; longer above a prefix."""
    if not pre:
        return (1,)
    return (0, tuple((0, part) if isinstance(part, int) else (1, part) for part in pre))


@dataclass(frozen=True, slots=True)
class Version:
    """A semver version; ordered as semver 2.0 (build metadata ignored by the order, kept by ==)."""

    major: int
    minor: int
    patch: int
    pre: tuple[str | int, ...] = ()
    build: str = ""
    _key: tuple = field(init=False, repr=False, compare=False, hash=False)
    release: tuple[int, int, int] = field(init=False, repr=False, compare=False, hash=False)  # (major, minor, patch)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_key", (self.major, self.minor, self.patch, _pre_key(self.pre)))
        object.__setattr__(self, "release", (self.major, self.minor, self.patch))

    def __lt__(self, other: Version) -> bool:
        return self._key < other._key

    def __le__(self, other: Version) -> bool:
        return self._key <= other._key

    def __gt__(self, other: Version) -> bool:
        return self._key > other._key

    def __ge__(self, other: Version) -> bool:
        return self._key >= other._key

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        if self.pre:
            text += "-" + ".".join(str(part) for part in self.pre)
        if self.build:
            text += "+" + self.build
        return text


@dataclass(frozen=True, slots=True)
class Comparator:
    """One comparator of a requirement: `op` and a possibly partial version (`minor`/`patch` None)."""

    op: str
    major: int
    minor: int | None = None
    patch: int | None = None
    pre: tuple[str | int, ...] = ()
    _pre_key: tuple = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_pre_key", _pre_key(self.pre))

    def __str__(self) -> str:
        if self.op == "*":
            return f"{self.major}.*" if self.minor is None else f"{self.major}.{self.minor}.*"
        text = f"{self.op}{self.major}"
        if self.minor is not None:
            text += f".{self.minor}"
        if self.patch is not None:
            text += f".{self.patch}"
        if self.pre:
            text += "-" + ".".join(str(part) for part in self.pre)
        return text


@dataclass(frozen=True, slots=True)
class Req:
    """A Cargo version requirement. `text` is as written; == and hash go by the comparators (`x` == `*`)."""

    text: str = field(compare=False)
    comparators: tuple[Comparator, ...]
    # the release versions it matches, [low, high) over (major, minor, patch), worked out once
    release_range: tuple = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "release_range", _release_range(self.comparators))

    def matches(self, version: Version) -> bool:
        """Cargo's `VersionReq::matches` (semver crate, eval.rs `matches_req`)."""
        if not version.pre:
            # the same answer as the comparators below, for a release version, in two tuple comparisons
            low, high = self.release_range
            return low <= version.release < high
        for comparator in self.comparators:
            if not _matches(comparator, version):
                return False
        # a pre-release is allowed only if a comparator with the same major.minor.patch has a pre-release too
        for comparator in self.comparators:
            if _pre_is_compatible(comparator, version):
                return True
        return False

    def __str__(self) -> str:
        return ", ".join(str(c) for c in self.comparators) if self.comparators else "*"


_NO_END = (math.inf,)  # above every (major, minor, patch)


def _comparator_range(cmp: Comparator) -> tuple[tuple, tuple]:
    """The release versions (no pre-release) that `cmp` matches, as [low, high) over (major, minor, patch):
    eval.rs's functions worked out for `ver.pre` empty, which sorts above any pre-release of the same triple."""
    op, major, minor, patch, pre = cmp.op, cmp.major, cmp.minor, cmp.patch, bool(cmp.pre)
    start = (major, minor or 0, patch or 0)
    if minor is None:
        after = (major + 1, 0, 0)  # past every M.x.y
    elif patch is None:
        after = (major, minor + 1, 0)  # past every M.m.y
    else:
        after = (major, minor, patch + 1)
    zero = (0, 0, 0)
    if op in ("=", "*"):
        return (start, start) if pre else (start, after)  # a pre-release comparator is never a release's
    if op == ">":
        return (start if pre else after), _NO_END
    if op == ">=":
        return start, _NO_END
    if op == "<":
        return zero, start
    if op == "<=":
        return zero, (start if pre else after)
    if op == "~":
        return start, (major + 1, 0, 0) if minor is None else (major, minor + 1, 0)
    # "^": the leftmost non-zero part of the version stays
    if minor is None or major > 0:
        return start, (major + 1, 0, 0)
    if patch is None or minor > 0:
        return start, (0, minor + 1, 0)
    return start, (0, 0, patch + 1)


def _release_range(comparators: tuple[Comparator, ...]) -> tuple[tuple, tuple]:
    """All comparators must match: the intersection of their ranges (empty when low >= high)."""
    low, high = (0, 0, 0), _NO_END
    for cmp in comparators:
        cmp_low, cmp_high = _comparator_range(cmp)
        low, high = max(low, cmp_low), min(high, cmp_high)
    return low, high


# ---- matching (eval.rs) ----


def _matches(cmp: Comparator, ver: Version) -> bool:
    op = cmp.op
    if op == "=" or op == "*":
        return _exact(cmp, ver)
    if op == "^":
        return _caret(cmp, ver)
    if op == ">=":
        return _exact(cmp, ver) or _greater(cmp, ver)
    if op == "<":
        return _less(cmp, ver)
    if op == ">":
        return _greater(cmp, ver)
    if op == "<=":
        return _exact(cmp, ver) or _less(cmp, ver)
    return _tilde(cmp, ver)


def _exact(cmp: Comparator, ver: Version) -> bool:
    if ver.major != cmp.major:
        return False
    if cmp.minor is not None and ver.minor != cmp.minor:
        return False
    if cmp.patch is not None and ver.patch != cmp.patch:
        return False
    return ver.pre == cmp.pre


def _greater(cmp: Comparator, ver: Version) -> bool:
    if ver.major != cmp.major:
        return ver.major > cmp.major
    if cmp.minor is None:
        return False
    if ver.minor != cmp.minor:
        return ver.minor > cmp.minor
    if cmp.patch is None:
        return False
    if ver.patch != cmp.patch:
        return ver.patch > cmp.patch
    return ver._key[3] > cmp._pre_key


def _less(cmp: Comparator, ver: Version) -> bool:
    if ver.major != cmp.major:
        return ver.major < cmp.major
    if cmp.minor is None:
        return False
    if ver.minor != cmp.minor:
        return ver.minor < cmp.minor
    if cmp.patch is None:
        return False
    if ver.patch != cmp.patch:
        return ver.patch < cmp.patch
    return ver._key[3] < cmp._pre_key


def _tilde(cmp: Comparator, ver: Version) -> bool:
    if ver.major != cmp.major:
        return False
    if cmp.minor is not None and ver.minor != cmp.minor:
        return False
    if cmp.patch is not None and ver.patch != cmp.patch:
        return ver.patch > cmp.patch
    return ver._key[3] >= cmp._pre_key


def _caret(cmp: Comparator, ver: Version) -> bool:
    if ver.major != cmp.major:
        return False
    minor, patch = cmp.minor, cmp.patch
    if minor is None:
        return True
    if patch is None:
        return ver.minor >= minor if cmp.major > 0 else ver.minor == minor
    if cmp.major > 0:
        if ver.minor != minor:
            return ver.minor > minor
        if ver.patch != patch:
            return ver.patch > patch
    elif minor > 0:
        if ver.minor != minor:
            return False
        if ver.patch != patch:
            return ver.patch > patch
    elif ver.minor != minor or ver.patch != patch:
        return False
    return ver._key[3] >= cmp._pre_key


def _pre_is_compatible(cmp: Comparator, ver: Version) -> bool:
    return cmp.major == ver.major and cmp.minor == ver.minor and cmp.patch == ver.patch and bool(cmp.pre)


# ---- parsing (parse.rs), with the crate's error messages ----


class _Error(Exception):
    """A parse problem, worded as the semver crate words it; turned into ValueError naming the text."""


def _quoted(ch: str) -> str:
    escapes = {"\0": "\\0", "\t": "\\t", "\r": "\\r", "\n": "\\n", "\\": "\\\\", "'": "\\'"}
    return "'" + escapes.get(ch, ch) + "'"


def _numeric(text: str, pos: str) -> tuple[int, str]:
    length = 0
    value = 0
    while length < len(text) and "0" <= text[length] <= "9":
        if value == 0 and length > 0:
            raise _Error(f"invalid leading zero in {pos}")
        value = value * 10 + ord(text[length]) - 48
        if value > _U64_MAX:
            raise _Error(f"value of {pos} exceeds u64::MAX")
        length += 1
    if length:
        return value, text[length:]
    if text:
        raise _Error(f"unexpected character {_quoted(text[0])} while parsing {pos}")
    raise _Error(f"unexpected end of input while parsing {pos}")


def _dot(text: str, pos: str) -> str:
    if text.startswith("."):
        return text[1:]
    if text:
        raise _Error(f"unexpected character {_quoted(text[0])} after {pos}")
    raise _Error(f"unexpected end of input while parsing {pos}")


def _wildcard(text: str) -> tuple[str, str] | None:
    if text[:1] in ("*", "x", "X") and text:
        return text[0], text[1:]
    return None


_IDENT_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-")


def _identifier(text: str, pos: str) -> tuple[str, str]:
    """Dot-separated [A-Za-z0-9-]+ segments (no leading zero in a numeric pre-release segment)."""
    accumulated = 0
    segment = 0
    nondigit = False
    while True:
        index = accumulated + segment
        ch = text[index] if index < len(text) else None
        if ch is not None and ch in _IDENT_CHARS:
            segment += 1
            if not ch.isdigit():
                nondigit = True
            continue
        if segment == 0:
            if accumulated == 0 and ch != ".":
                return "", text
            raise _Error(f"empty identifier segment in {pos}")
        if pos == _PRE and segment > 1 and not nondigit and text[accumulated] == "0":
            raise _Error(f"invalid leading zero in {pos}")
        accumulated += segment
        if ch == ".":
            accumulated += 1
            segment = 0
            nondigit = False
        else:
            return text[:accumulated], text[accumulated:]


def _pre_tuple(text: str) -> tuple[str | int, ...]:
    return tuple(int(part) if part.isdigit() else part for part in text.split("."))


def _pre_and_build(text: str, pos: str) -> tuple[tuple, str, str, str]:
    pre: tuple = ()
    build = ""
    if text.startswith("-"):
        pos = _PRE
        ident, text = _identifier(text[1:], _PRE)
        if not ident:
            raise _Error(f"empty identifier segment in {_PRE}")
        pre = _pre_tuple(ident)
    if text.startswith("+"):
        pos = _BUILD
        build, text = _identifier(text[1:], _BUILD)
        if not build:
            raise _Error(f"empty identifier segment in {_BUILD}")
    return pre, build, text, pos


def parse_version(text: str) -> Version:
    """`1.2.3`, `1.0.0-alpha.1+build` -> Version; ValueError("invalid version '...': <the crate's message>")."""
    try:
        if not text:
            raise _Error("empty string, expected a semver version")
        major, rest = _numeric(text, _MAJOR)
        rest = _dot(rest, _MAJOR)
        minor, rest = _numeric(rest, _MINOR)
        rest = _dot(rest, _MINOR)
        patch, rest = _numeric(rest, _PATCH)
        pre, build, rest, pos = _pre_and_build(rest, _PATCH)
        if rest:
            raise _Error(f"unexpected character {_quoted(rest[0])} after {pos}")
    except _Error as e:
        raise ValueError(f"invalid version {text!r}: {e}") from None
    return Version(major, minor, patch, pre, build)


_OPERATORS = (">=", "<=", "=", ">", "<", "~", "^")


def _comparator(text: str) -> tuple[Comparator, str, str]:
    for op in _OPERATORS:
        if text.startswith(op):
            text = text[len(op) :]
            default_op = False
            break
    else:
        op, default_op = "^", True
    text = text.lstrip(" ")

    pos = _MAJOR
    major, text = _numeric(text, pos)
    minor = patch = None
    has_wildcard = False
    if text.startswith("."):
        pos = _MINOR
        text = text[1:]
        wild = _wildcard(text)
        if wild:
            has_wildcard = True
            if default_op:
                op = "*"
            text = wild[1]
        else:
            minor, text = _numeric(text, pos)
    if text.startswith("."):
        pos = _PATCH
        text = text[1:]
        wild = _wildcard(text)
        if wild:
            if default_op:
                op = "*"
            text = wild[1]
        elif has_wildcard:
            raise _Error("unexpected character after wildcard in version req")
        else:
            patch, text = _numeric(text, pos)
    pre: tuple = ()
    if patch is not None:
        pre, _build, text, pos = _pre_and_build(text, pos)
    return Comparator(op, major, minor, patch, pre), pos, text.lstrip(" ")


def _wildcard_alone_error(text: str) -> str | None:
    wild = _wildcard(text)
    if wild:
        rest = wild[1].lstrip(" ")
        if not rest or rest.startswith(","):
            return f"wildcard req ({wild[0]}) must be the only comparator in the version req"
    return None


def parse_req(text: str) -> Req:
    """A Cargo version requirement (`^1.2`, `>= 0.9.0, < 0.10`, `1.*`, `*`) -> Req;
    ValueError("invalid version requirement '...': <the crate's message>")."""
    try:
        rest = text.lstrip(" ")
        wild = _wildcard(rest)
        if wild:
            after = wild[1].lstrip(" ")
            if not after:
                return Req(text, ())
            if after.startswith(","):
                raise _Error(f"wildcard req ({wild[0]}) must be the only comparator in the version req")
            raise _Error("unexpected character after wildcard in version req")
        comparators = []
        while True:
            try:
                comparator, pos, rest_after = _comparator(rest)
            except _Error as e:
                raise _Error(_wildcard_alone_error(rest) or str(e)) from None
            comparators.append(comparator)
            if not rest_after:
                break
            if not rest_after.startswith(","):
                raise _Error(f"expected comma after {pos}, found {_quoted(rest_after[0])}")
            if len(comparators) == MAX_COMPARATORS:
                raise _Error("excessive number of version comparators")
            rest = rest_after[1:].lstrip(" ")
    except _Error as e:
        raise ValueError(f"invalid version requirement {text!r}: {e}") from None
    return Req(text, tuple(comparators))
