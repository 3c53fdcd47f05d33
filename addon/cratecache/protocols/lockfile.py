"""Cargo.lock files -> the registry packages to stage, per configured registry (pure but for reading files).

A package's `source` says where it comes from:
- `registry+https://github.com/rust-lang/crates.io-index` or `sparse+https://index.crates.io/`: crates.io
- `sparse+https://{host}/{path}`: the configured registry whose index is exactly there (index_host: path `/`,
  or its index_url)
- `git+...`: a git dependency, skipped (not a registry crate)
- no source: a path dependency or a workspace member, skipped
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..config import Registry, Settings
from . import sparse

CRATES_IO_SOURCES = ("registry+https://github.com/rust-lang/crates.io-index", "sparse+https://index.crates.io/")
CRATES_IO_INDEX_HOST = "index.crates.io"


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    source: str | None
    checksum: str | None


@dataclass
class Plan:
    """What to stage: per registry name, crate name -> {version: lockfile checksum}."""

    crates: dict[str, dict[str, dict[str, str | None]]] = field(default_factory=dict)
    skipped: list[tuple[Package, str]] = field(default_factory=list)  # git and path packages: not registry crates
    unservable: list[tuple[Package, str]] = field(default_factory=list)  # registry crates no configured registry serves

    def count(self) -> int:
        return sum(len(versions) for names in self.crates.values() for versions in names.values())


def find_lockfiles(paths: Iterable[str | Path]) -> list[Path]:
    """Lockfiles named directly, and every Cargo.lock below a named folder. Raises FileNotFoundError."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            inside = sorted(p for p in path.rglob("Cargo.lock") if "target" not in p.relative_to(path).parts)
            if not inside:
                raise FileNotFoundError(f"no Cargo.lock in {path} (build output folders named target are skipped)")
            found.extend(inside)
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"no such lockfile or folder: {path}")
    return found


def read_lockfile(path: Path) -> list[Package]:
    """The packages listed in one Cargo.lock. Raises ValueError naming the file."""
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ValueError(f"{path}: not a readable Cargo.lock ({e})") from e
    packages = []
    v1_checksums = _metadata_checksums(doc.get("metadata"))
    for raw in doc.get("package", []):
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not isinstance(raw.get("version"), str):
            raise ValueError(f"{path}: a [[package]] entry lacks name or version")
        checksum = raw.get("checksum", v1_checksums.get((raw["name"], raw["version"], raw.get("source"))))
        package = Package(raw["name"], raw["version"], raw.get("source"), checksum)
        if package.source is not None and (problem := _package_problem(package)):
            # checked as the proxy's routes check requests: a name or version never becomes a path trick
            raise ValueError(f"{path}: package {package.name!r} {package.version!r}: {problem}")
        packages.append(package)
    return packages


def _metadata_checksums(metadata: object) -> dict[tuple[str, str, str], object]:
    """A version 1 lockfile's checksums: `"checksum NAME VERSION (SOURCE)" = "hex"` under [metadata]
    ("<none>" for a package without one)."""
    found: dict[tuple[str, str, str], object] = {}
    for key, value in (metadata.items() if isinstance(metadata, dict) else ()):
        m = re.fullmatch(r"checksum (\S+) (\S+) \((.+)\)", key)
        if m:
            found[(m.group(1), m.group(2), m.group(3))] = None if value == "<none>" else value
    return found


def _package_problem(package: Package) -> str | None:
    if problem := sparse.name_problem(package.name) or sparse.version_problem(package.version):
        return problem
    checksum = package.checksum
    if checksum is not None and not (isinstance(checksum, str) and re.fullmatch(r"[0-9a-f]{64}", checksum)):
        return "checksum is not 64 lowercase hex digits"
    return None


def plan(packages: Iterable[Package], settings: Settings) -> Plan:
    """Sort packages into the configured registries; everything else is skipped with a reason."""
    result = Plan()
    for package in packages:
        registry, reason = registry_for_source(package.source, settings)
        if registry is None:
            # git and path packages are built from their sources; a registry crate nobody serves would break the
            # offline build, so it is a failure of the staging
            is_registry = package.source is not None and not package.source.startswith("git+")
            (result.unservable if is_registry else result.skipped).append((package, reason))
            continue
        versions = result.crates.setdefault(registry.name, {}).setdefault(package.name, {})
        versions[package.version] = package.checksum
    return result


def registry_for_source(source: str | None, settings: Settings) -> tuple[Registry | None, str]:
    if source is None:
        return None, "path dependency or workspace member"
    if source.startswith("git+"):
        return None, "git source"
    if source in CRATES_IO_SOURCES:
        index_url = f"https://{CRATES_IO_INDEX_HOST}/"
    elif source.startswith("sparse+"):
        index_url = source.removeprefix("sparse+")
    elif source.startswith("registry+"):
        return None, (f"a git-protocol registry index ({source}); the proxy serves sparse registries: use its "
                      "sparse+ index URL in Cargo's configuration")
    else:
        return None, f"registry not configured ({source})"
    registry = settings.registry_at(index_url)
    if registry is None:
        return None, f"registry not configured ({source})"
    return registry, ""
