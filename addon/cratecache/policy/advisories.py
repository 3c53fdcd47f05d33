"""The RustSec advisory database: which versions of a crate an advisory affects, and what kind it is.

An advisory file (RustSec's layout: `crates/<name>/RUSTSEC-YYYY-NNNN.md`) is a ```toml fenced front block
then Markdown whose first `# ` heading is the title. A version is affected unless it matches one of the
`[versions] patched` or `unaffected` requirements (Cargo's semver rules, `semver.py`); `patched = []` and no
`unaffected` means every version; a withdrawn advisory affects nothing. The kind:
- "malicious" when `categories` contains "malicious". In the snapshot of 2026-08-21, 73 of the 77 malware
  advisories are marked so; four recent ones (arone, aronenao, logprinter, tinymember) carry only
  `expect-deleted = true` and `patched = []`, so they read as "vulnerable" (every version), and
  `expect-deleted` is not a sign of malware by itself (vec-const has it for a soundness bug);
- "informational" when `[advisory] informational` is set ("unmaintained", "unsound", "notice");
- "vulnerable" otherwise.

`parse` is pure (one file's text in); `load` reads a checkout (blocking: callers run it in a thread), skipping
a file that does not parse with a warning naming it; `fingerprint` is the cheap stat-only check a watcher
polls to know when to load again.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import os
import re
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from ..semver import Req, Version, parse_req

logger = logging.getLogger(__name__)

MAX_FILE_BYTES = 256 * 1024  # the largest advisory of the snapshot is 10 KB; bounds what one broken file costs

_FRONT = re.compile(r"\A\s*```toml[ \t]*\r?\n(.*?)^```[ \t]*$", re.S | re.M)
_TITLE = re.compile(r"^# +(.+?)\s*$", re.M)


@dataclass(frozen=True, slots=True)
class Advisory:
    """One RustSec advisory: the crate, its kind, and the requirements of the versions it does not affect."""

    id: str
    package: str
    kind: str
    informational: str | None
    title: str
    date: str
    patched: tuple[Req, ...]
    unaffected: tuple[Req, ...]
    withdrawn: str | None
    _safe: tuple[Req, ...] = field(init=False, repr=False, compare=False, hash=False)
    _safe_releases: tuple = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_safe", self.patched + self.unaffected)
        object.__setattr__(self, "_safe_releases", tuple(req.release_range for req in self._safe))

    def affects(self, version: Version) -> bool:
        """Affected = not withdrawn, and no patched/unaffected requirement matches (RustSec's rule)."""
        if self.withdrawn is not None:
            return False
        if not version.pre:  # runs for every version of every index file served: Req.matches inlined
            release = version.release
            for low, high in self._safe_releases:
                if low <= release < high:
                    return False
            return True
        for req in self._safe:
            if req.matches(version):
                return False
        return True


def _string(table: dict, key: str, where: str, required: bool = True) -> str | None:
    value = table.get(key)
    if isinstance(value, datetime.date):  # an unquoted TOML date (RustSec quotes them)
        value = value.isoformat()
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        problem = "missing" if value is None else f"not a string: {value!r}"
        raise ValueError(f"{where}: [advisory] {key} {problem}")
    return value.strip()


def _requirements(versions: dict, key: str, where: str) -> tuple[Req, ...]:
    texts = versions.get(key, [])
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise ValueError(f"{where}: [versions] {key} is not a list of strings: {texts!r}")
    try:
        return tuple(parse_req(t) for t in texts)
    except ValueError as e:
        raise ValueError(f"{where}: [versions] {key}: {e}") from None


def parse(text: str, where: str = "") -> Advisory:
    """One advisory file's text -> Advisory; ValueError("<where>: <problem>")."""
    where = where or "advisory"
    front = _FRONT.match(text)
    if not front:
        raise ValueError(f"{where}: no ```toml front block at the top")
    try:
        data = tomllib.loads(front.group(1))
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{where}: bad TOML: {e}") from None
    advisory = data.get("advisory")
    if not isinstance(advisory, dict):
        raise ValueError(f"{where}: no [advisory] table")
    versions = data.get("versions", {})
    if not isinstance(versions, dict):
        raise ValueError(f"{where}: [versions] is not a table")
    categories = advisory.get("categories", [])
    if not isinstance(categories, list):
        raise ValueError(f"{where}: [advisory] categories is not a list: {categories!r}")
    informational = _string(advisory, "informational", where, required=False)
    if "malicious" in categories:
        kind = "malicious"
    elif informational is not None:
        kind = "informational"
    else:
        kind = "vulnerable"
    title = _TITLE.search(text, front.end())
    return Advisory(
        id=_string(advisory, "id", where),
        package=_string(advisory, "package", where),
        kind=kind,
        informational=informational if kind == "informational" else None,
        title=title.group(1) if title else "",
        date=str(_string(advisory, "date", where)),
        patched=_requirements(versions, "patched", where),
        unaffected=_requirements(versions, "unaffected", where),
        withdrawn=_string(advisory, "withdrawn", where, required=False),
    )


@dataclass(frozen=True, eq=False)
class Database:
    """One loaded checkout (compared by identity: `fingerprint` says whether the files changed)."""

    path: str
    by_crate: Mapping[str, tuple[Advisory, ...]]
    count: int
    skipped: tuple[tuple[str, str], ...]
    newest: str | None
    fingerprint: tuple

    def for_crate(self, name: str) -> tuple[Advisory, ...]:
        return self.by_crate.get(name.lower(), ())


def _crates_dir(path: str | Path) -> Path:
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"advisory database {str(root)!r}: no such directory")
    crates = root / "crates"
    if not crates.is_dir():
        raise FileNotFoundError(f"advisory database {str(root)!r}: no crates/ folder (not a RustSec checkout?)")
    return crates


def _advisory_files(crates: Path):
    """(path, stat) of crates/*/*.md, in a stable order. Plain strings, no Path per folder: the watcher runs this
    every cargo_reload_ms, and making a Path per folder was a third of its CPU (under the GIL)."""
    root = os.fspath(crates)
    with os.scandir(root) as folders:
        names = sorted(entry.name for entry in folders if entry.is_dir())
    for name in names:
        try:
            with os.scandir(os.path.join(root, name)) as files:
                entries = sorted((e for e in files if e.name.endswith(".md") and e.is_file()), key=lambda e: e.name)
                for entry in entries:
                    yield entry.path, entry.stat()
        except FileNotFoundError:  # removed while we looked (a git pull): the next fingerprint differs
            continue


def fingerprint(path: str | Path) -> tuple:
    """(file count, digest of every advisory file's name, size, mtime, ctime and inode): stats only, no reads.
    Changes when a file is added, removed or rewritten; FileNotFoundError when the checkout is gone."""
    crates = _crates_dir(path)
    digest = hashlib.blake2b(digest_size=16)
    count = 0
    for file, stat in _advisory_files(crates):
        count += 1
        digest.update(f"{file}\0{stat.st_size}\0{stat.st_mtime_ns}\0{stat.st_ctime_ns}\0{stat.st_ino}\n".encode())
    return (count, digest.hexdigest())


def folders(path: str | Path) -> tuple:
    """A cheaper look than `fingerprint`: the modification times of crates/ and of each crate's folder (one stat per
    folder, none per file). A `git pull` adds, removes or replaces (renames over) files, which changes their
    folder's time; only a file rewritten in place is missed, and the full fingerprint catches that later."""
    root = os.fspath(_crates_dir(path))
    digest = hashlib.blake2b(digest_size=16)
    top = os.stat(root)
    digest.update(f"{top.st_mtime_ns}\0{top.st_ino}\n".encode())
    with os.scandir(root) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            try:
                stat = entry.stat()
            except FileNotFoundError:
                continue
            digest.update(f"{entry.name}\0{stat.st_mtime_ns}\0{stat.st_ino}\n".encode())
    return digest.hexdigest()


def _read(file: str) -> str:
    with open(file, "rb") as f:
        data = f.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise ValueError(f"{file}: larger than {MAX_FILE_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{file}: not UTF-8 ({e.reason} at byte {e.start})") from None


def load(path: str | Path) -> Database:
    """Read <path>/crates/*/*.md (RustSec's layout; rust/ for the toolchain is not crates). Blocking: run it in
    a thread. A file that does not parse is skipped with a warning naming it; a missing path or a folder
    without crates/ raises FileNotFoundError."""
    started = time.monotonic()
    crates = _crates_dir(path)
    seen = fingerprint(path)  # before reading: a change during the load shows as a newer fingerprint later
    by_crate: dict[str, list[Advisory]] = {}
    skipped: list[tuple[str, str]] = []
    newest: str | None = None
    count = 0
    for file, _stat in _advisory_files(crates):
        try:
            advisory = parse(_read(file), file)
        except (OSError, ValueError) as e:
            reason = str(e).removeprefix(f"{file}: ")
            skipped.append((file, reason))
            logger.warning("advisory database: skipped %s: %s", file, reason)
            continue
        by_crate.setdefault(advisory.package.lower(), []).append(advisory)
        count += 1
        if newest is None or advisory.date > newest:
            newest = advisory.date
    database = Database(
        path=str(path),
        by_crate=MappingProxyType({name: tuple(found) for name, found in by_crate.items()}),
        count=count,
        skipped=tuple(skipped),
        newest=newest,
        fingerprint=seen,
    )
    logger.info(
        "advisory database %s: %d advisories for %d crates (newest %s), %d skipped, read in %.2fs",
        path,
        count,
        len(by_crate),
        newest,
        len(skipped),
        time.monotonic() - started,
    )
    return database
