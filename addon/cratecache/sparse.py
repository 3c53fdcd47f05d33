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
    """The versions listed in an index file. Raises ValueError on a malformed file."""
    entries = []
    for number, line in enumerate(body.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise ValueError(f"line {number} is not JSON") from e
        if not isinstance(obj, dict):
            raise ValueError(f"line {number} is not a JSON object")
        name, vers, cksum = obj.get("name"), obj.get("vers"), obj.get("cksum")
        if not isinstance(name, str) or not isinstance(vers, str):
            raise ValueError(f"line {number} lacks name or vers")
        if not isinstance(cksum, str) or not _SHA256.match(cksum):
            raise ValueError(f"line {number} has no valid cksum")
        entries.append(IndexEntry(name, vers, cksum, bool(obj.get("yanked", False))))
    return entries


def prune_index(body: bytes, keep: Callable[[IndexEntry], bool]) -> bytes:
    """The index file with only the version lines for which `keep` is true (lines kept verbatim)."""
    kept = []
    for line in body.splitlines(keepends=True):
        if not line.strip():
            continue
        (entry,) = parse_index(line)
        if keep(entry):
            kept.append(line if line.endswith(b"\n") else line + b"\n")
    return b"".join(kept)


def find_version(body: bytes, name: str, version: str) -> IndexEntry | None:
    """The index line for `name` `version`, matching the name case-insensitively."""
    lower = name.lower()
    for entry in parse_index(body):
        if entry.version == version and entry.name.lower() == lower:
            return entry
    return None


def validate_index(body: bytes, name: str) -> None:
    """Raise ValueError unless `body` is an index file for crate `name`."""
    entries = parse_index(body)
    if not entries:
        raise ValueError("index file lists no versions")
    lower = name.lower()
    for entry in entries:
        if entry.name.lower() != lower:
            raise ValueError(f"index file is for {entry.name!r}, not {name!r}")


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
