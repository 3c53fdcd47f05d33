"""Cargo's sparse-registry protocol, as pure functions.

Index layout, crate-name and version rules, `dl` templates and index-file lookups follow
the Cargo book (reference/registry-index.md) and Cargo's own validation.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass

MAX_NAME_LENGTH = 64
MAX_VERSION_LENGTH = 128
DL_MARKERS = ("{crate}", "{version}", "{prefix}", "{lowerprefix}", "{sha256-checksum}")

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*\Z")
_VERSION = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?\Z"
)
_SHA256 = re.compile(r"^[0-9a-f]{64}\Z")  # \Z: "$" would accept a trailing newline


def name_problem(name: str) -> str | None:
    """Why `name` is not a valid crate name (Cargo's rules), or None."""
    if not name:
        return "empty crate name"
    if len(name) > MAX_NAME_LENGTH:
        return f"crate name longer than {MAX_NAME_LENGTH} characters"
    if not _NAME.match(name):
        return "invalid crate name (ASCII letters, digits, '-' and '_', starting with a letter)"
    return None


def version_problem(version: str) -> str | None:
    if len(version) > MAX_VERSION_LENGTH or not _VERSION.match(version):
        return "invalid version (expected semver such as 1.2.3)"
    return None


def prefix(name: str) -> str:
    """The directory part of a crate's index path, keeping the name's case ({prefix})."""
    if len(name) == 1:
        return "1"
    if len(name) == 2:
        return "2"
    if len(name) == 3:
        return f"3/{name[0]}"
    return f"{name[0:2]}/{name[2:4]}"


def index_path(name: str) -> str:
    """Path of a crate's index file under the index root: 'se/rd/serde'."""
    lower = name.lower()
    return f"{prefix(lower)}/{lower}"


def download_url(dl: str, name: str, version: str, cksum: str) -> str:
    """Expand a config.json `dl` template; with no marker Cargo appends /{crate}/{version}/download."""
    if not any(marker in dl for marker in DL_MARKERS):
        return f"{dl.rstrip('/')}/{name}/{version}/download"
    return (
        dl.replace("{crate}", name)
        .replace("{version}", version)  # as Cargo does: no escaping
        .replace("{prefix}", prefix(name))
        .replace("{lowerprefix}", prefix(name.lower()))
        .replace("{sha256-checksum}", cksum)
    )


@dataclass(frozen=True)
class IndexEntry:
    name: str
    version: str
    cksum: str
    yanked: bool


def parse_index(body: bytes) -> list[IndexEntry]:
    """The versions of an index file that can be served: lines with a string name and vers and a valid cksum.
    Any other line is skipped, as Cargo skips an index line it cannot parse (a newer format's line, one with a
    malformed checksum): such a version is never downloaded through the proxy, since it cannot be verified."""
    return [entry for line in body.splitlines() if (entry := _entry(line_object(line))) is not None]


def line_object(line: bytes) -> dict | None:
    """An index line as a JSON object, or None (blank, not JSON, not an object)."""
    if not line.strip():
        return None
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def _entry(obj: dict | None) -> IndexEntry | None:
    if obj is None:
        return None
    name, vers, cksum, yanked = obj.get("name"), obj.get("vers"), obj.get("cksum"), obj.get("yanked", False)
    if not isinstance(name, str) or not isinstance(vers, str) or not isinstance(cksum, str):
        return None
    if not _SHA256.match(cksum) or yanked not in (None, True, False):
        return None
    return IndexEntry(name, vers, cksum, yanked is True)


def prune_index(body: bytes, keep: Callable[[IndexEntry], bool]) -> bytes:
    """The index file with only the version lines for which `keep` is true (lines kept verbatim; lines that
    cannot be served are dropped)."""
    kept = []
    for line in body.splitlines(keepends=True):
        entry = _entry(line_object(line))
        if entry is not None and keep(entry):
            kept.append(line if line.endswith(b"\n") else line + b"\n")
    return b"".join(kept)


def find_version(body: bytes, name: str, version: str) -> IndexEntry | None:
    """The index line for `name` `version` that can be served, matching the name case-insensitively."""
    lower = name.lower()
    for entry in parse_index(body):
        if entry.version == version and entry.name.lower() == lower:
            return entry
    return None


def listed_unverifiable(body: bytes, name: str, version: str) -> bool:
    """Whether `version` has a line that names it but cannot be served (no valid cksum, say)."""
    lower = name.lower()
    for line in body.splitlines():
        obj = line_object(line)
        if obj and obj.get("vers") == version and str(obj.get("name", "")).lower() == lower and _entry(obj) is None:
            return True
    return False


def validate_index(body: bytes, name: str) -> None:
    """Raise ValueError unless `body` is an index file for crate `name`: empty (no versions), or with lines that
    are JSON objects naming that crate. Lines Cargo would skip are accepted; what is not an index file at all
    (an HTML portal page) and a file for another crate are not."""
    lower, named, first_other = name.lower(), 0, None
    for number, line in enumerate(body.splitlines(), 1):
        if not line.strip():
            continue
        obj = line_object(line)
        if obj is None or not isinstance(obj.get("name"), str):
            first_other = first_other or number
            continue
        if obj["name"].lower() != lower:
            raise ValueError(f"index file is for {obj['name']!r}, not {name!r}")
        named += 1
    if first_other is not None and not named:
        raise ValueError(f"not an index file: line {first_other} is not a JSON object naming a crate")


def parse_config(body: bytes) -> dict:
    """An upstream's config.json. Raises ValueError unless it is an object with a string `dl`."""
    try:
        obj = json.loads(body)
    except ValueError as e:
        raise ValueError("config.json is not JSON") from e
    if not isinstance(obj, dict) or not isinstance(obj.get("dl"), str) or not obj["dl"]:
        raise ValueError("config.json has no dl")
    return obj


def client_config(upstream_config: dict, download_root: str, keep_api: bool) -> bytes:
    """The config.json served to Cargo: downloads come back to the intercepted host.

    `api` (publish, yank, owner, search) is kept only from the registry's own index host
    (`keep_api`): a mirror's API must not receive the tokens Cargo has for the real registry.
    `auth-required` is dropped because the proxy authenticates to upstreams itself.
    """
    out = {"dl": download_root}
    if keep_api and isinstance(upstream_config.get("api"), str):
        out["api"] = upstream_config["api"]
    return json.dumps(out, separators=(",", ":")).encode() + b"\n"
