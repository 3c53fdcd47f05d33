"""rustup's dist layout (static.rust-lang.org), as pure functions: what a path is, what verifies it, which
names move, and what a toolchain consists of. The rustup twin of `sparse.py`; the resolver runs both.

Paths (relative to the dist root; see ../shared/rustup-protocol.md):
- `dist/channel-rust-{stable|beta|nightly|1.95|1.95.0}.toml`   a channel manifest; moves (revalidated after the TTL)
- `dist/{YYYY-MM-DD}/channel-rust-{channel}.toml`              a dated manifest; immutable
  Either with `.sha256` (served from the manifest the proxy holds: one pair) or `.asc` (passed on, not checked).
- `dist/{YYYY-MM-DD}/{pkg}-{version}-{target}.tar.{gz,xz,zst}` a component; immutable, verified against the hash
  the manifests of its channel and date list for it (`vouches`: no other manifest counts, and manifests that
  disagree refuse it); `.sha256` is served from that hash
- `rustup/release-stable.toml`                                 rustup's latest version; moves, nothing to check
- `rustup/dist/{triple}/rustup-init[.exe]`                     moves; verified against its upstream `.sha256`
- `rustup/archive/{version}/{triple}/rustup-init[.exe]`        immutable; likewise
Anything else on the dist host is refused with a reason, never passed on.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from urllib.parse import urlsplit

KINDS = ("manifest", "component", "rustup")  # how toolchain entries are stored and listed: '{kind}/{path}'
CHANNELS = ("stable", "beta", "nightly")
FORMATS = ("zst", "xz", "gz")  # rustup's preference when a manifest offers several
FIELDS = {"zst": ("zst_url", "zst_hash"), "xz": ("xz_url", "xz_hash"), "gz": ("url", "hash")}  # a target's file fields
PROFILES = ("minimal", "default", "complete")

_DATE = re.compile(r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])\Z")
_RELEASE = r"\d{1,4}\.\d{1,4}(?:\.\d{1,4})?(?:-beta(?:\.\d{1,4})?)?"
_MANIFEST = re.compile(rf"^channel-rust-(stable|beta|nightly|{_RELEASE})\.toml\Z")
_V1_MANIFEST = re.compile(rf"^channel-rust-(stable|beta|nightly|{_RELEASE})\Z")
_ARCHIVE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,200}\.tar\.(gz|xz|zst)\Z")
_TRIPLE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,80}\Z")
_SEMVER = re.compile(r"^\d{1,4}\.\d{1,4}\.\d{1,4}\Z")
_HEX64 = re.compile(r"^[0-9a-f]{64}\Z")
_TOOLCHAIN = re.compile(rf"^(?:(stable|beta|nightly)(?:-(\d{{4}}-\d{{2}}-\d{{2}}))?|({_RELEASE}))\Z")


@dataclass(frozen=True)
class DistFile:
    """What a dist path asks for. `path` is the file itself (for a `.sha256` request: the file it checks)."""

    kind: str  # manifest | component | rustup
    path: str
    immutable: bool
    checked_by: str  # "pair": its own upstream .sha256; "manifest": a manifest's hash; "none"
    checksum: bool = False  # the request is for `path` + ".sha256"

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def date(self) -> str | None:
        """The dated folder a file is in (`dist/2026-04-16/...`), if any."""
        parts = self.path.split("/")
        return parts[1] if parts[0] == "dist" and len(parts) == 3 else None


@dataclass(frozen=True)
class Refused:
    status: int
    reason: str


def classify(path: str) -> DistFile | Refused:
    """A request path on the dist host (already checked for traversal and odd characters) -> what it is."""
    parts = path.lstrip("/").split("/")
    last = parts[-1]
    checksum = last.endswith(".sha256")
    base = last.removesuffix(".sha256")
    if parts[0] == "dist" and len(parts) == 2:
        if _MANIFEST.match(base):
            return DistFile("manifest", f"dist/{base}", False, "pair", checksum)
        if not checksum and last.endswith(".toml.asc") and _MANIFEST.match(last[:-4]):
            return DistFile("manifest", f"dist/{last}", False, "none")
        if _V1_MANIFEST.match(base):
            return Refused(404, f"{last}: v1 channel manifests are not served (rustup asks for the v2 .toml first)")
    elif parts[0] == "dist" and len(parts) == 3:
        if not _DATE.match(parts[1]):
            return Refused(404, f"not a dated dist folder: {parts[1]}")
        prefix = f"dist/{parts[1]}"
        if _MANIFEST.match(base):
            return DistFile("manifest", f"{prefix}/{base}", True, "pair", checksum)
        if not checksum and last.endswith(".toml.asc") and _MANIFEST.match(last[:-4]):
            return DistFile("manifest", f"{prefix}/{last}", True, "none")
        if _ARCHIVE.match(base):
            return DistFile("component", f"{prefix}/{base}", True, "manifest", checksum)
    elif parts[0] == "rustup":
        if parts[1:] == ["release-stable.toml"]:
            return DistFile("rustup", "rustup/release-stable.toml", False, "none")
        if base in ("rustup-init", "rustup-init.exe"):
            if len(parts) == 4 and parts[1] == "dist" and _TRIPLE.match(parts[2]):
                return DistFile("rustup", f"rustup/dist/{parts[2]}/{base}", False, "pair", checksum)
            if len(parts) == 5 and parts[1] == "archive" and _SEMVER.match(parts[2]) and _TRIPLE.match(parts[3]):
                return DistFile("rustup", f"rustup/archive/{parts[2]}/{parts[3]}/{base}", True, "pair", checksum)
    return Refused(404, f"not a rustup dist path: /{path.lstrip('/')}")


def describe(path: str) -> dict:
    """A stored dist file's name and version for listings: a manifest by its toolchain's name, a component by
    its file name and dated folder, a rustup file by its path under rustup/."""
    parts = path.split("/")
    m = _MANIFEST.match(parts[-1].removesuffix(".asc"))
    if parts[0] == "dist" and m:
        name = m.group(1) if len(parts) == 2 else f"{m.group(1)}-{parts[1]}"
        return {"name": name + (" (signature)" if parts[-1].endswith(".asc") else ""), "version": None}
    if parts[0] == "dist" and len(parts) == 3:
        return {"name": parts[2], "version": parts[1]}
    return {"name": "/".join(parts[1:]) or path, "version": None}


def checksum_body(sha256: str, name: str) -> bytes:
    """A `.sha256` file as static.rust-lang.org writes it."""
    return f"{sha256}  {name}\n".encode()


def parse_checksum(body: bytes) -> str:
    """The hash in a `.sha256` file ('<hex>  <name>' or just '<hex>'). Raises ValueError."""
    try:
        first = body.decode("ascii").split(maxsplit=1)[0].lower() if body.strip() else ""
    except UnicodeDecodeError:
        first = ""
    if not _HEX64.match(first):
        raise ValueError("not a .sha256 file (expected 64 hex digits first)")
    return first


# -- the channel manifest ---------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    date: str
    version: str | None  # of pkg.rust, e.g. "1.95.0" or "1.97.0-nightly"
    pkg: dict = field(repr=False)
    profiles: dict[str, list[str]] = field(repr=False)
    renames: dict[str, str] = field(repr=False)


def parse_manifest(body: bytes) -> Manifest:
    """A v2 channel manifest. Raises ValueError for anything else (an HTML page, a v1 manifest, a truncation)."""
    try:
        doc = tomllib.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ValueError(f"not a TOML channel manifest ({e})") from None
    if doc.get("manifest-version") != "2":
        raise ValueError(f"manifest-version is {doc.get('manifest-version')!r}, expected \"2\"")
    date, pkg = doc.get("date"), doc.get("pkg")
    if not isinstance(date, str) or not _DATE.match(date):
        raise ValueError(f"manifest date {date!r} is not YYYY-MM-DD")
    if not isinstance(pkg, dict) or not isinstance(pkg.get("rust"), dict):
        raise ValueError("manifest has no [pkg.rust]")
    version = pkg["rust"].get("version")
    profiles = doc.get("profiles") if isinstance(doc.get("profiles"), dict) else {}
    renames = {k: v["to"] for k, v in (doc.get("renames") or {}).items() if isinstance(v, dict) and isinstance(v.get("to"), str)}
    return Manifest(date, version.split(" ")[0] if isinstance(version, str) else None, pkg, profiles, renames)


def file_hashes(manifest: Manifest) -> dict[str, str]:
    """Every downloadable file the manifest lists ('dist/2026-04-16/rustc-….tar.xz') -> its SHA-256."""
    out: dict[str, str] = {}
    for pkg in manifest.pkg.values():
        targets = pkg.get("target") if isinstance(pkg, dict) else None
        for entry in (targets or {}).values():
            if not isinstance(entry, dict) or not entry.get("available", False):
                continue
            for url_field, hash_field in FIELDS.values():
                url, digest = entry.get(url_field), entry.get(hash_field)
                if isinstance(url, str) and isinstance(digest, str) and _HEX64.match(digest.lower()):
                    path = urlsplit(url).path.lstrip("/")
                    if isinstance(classify(path), DistFile) and path.startswith("dist/"):
                        out[path] = digest.lower()
    return out


# -- which manifest vouches for which component ----------------------------------------------
# A component is vouched for only by a manifest of the channel and date it belongs to: the dated manifest
# `dist/<date>/channel-rust-<channel>.toml` (whose own `date` is its folder's) or an undated one of that channel
# (`channel-rust-stable.toml`, `-1.95.toml`, ...) whose `date` is the component's folder. Two such manifests that
# list different hashes for one file are a conflict: the file is refused, never one of them chosen.


class ManifestConflict(ValueError):
    """Manifests that may each vouch for a file list different hashes for it."""


@dataclass(frozen=True)
class Listing:
    """What a manifest lists, all the proxy keeps of a parsed manifest (not the document): its date, its Rust
    version, and file path -> SHA-256."""

    date: str
    version: str | None
    files: dict[str, str] = field(repr=False)

    def vouched_by(self, manifest_path: str) -> Listing:
        """Only the files this manifest may vouch for when it is held under `manifest_path`."""
        files = {p: d for p, d in self.files.items() if vouches(manifest_path, self.date, p)}
        return Listing(self.date, self.version, files)

    def record(self) -> bytes:
        """How the table is stored (`dist-hashes/<date>/<manifest path>`), read back by `read_vouched`."""
        return json.dumps({"date": self.date, "files": self.files}, sort_keys=True).encode()


def component_channel(name: str) -> str:
    """The channel a component file belongs to, by its name: `rustc-nightly-…`, `rustc-beta-…`, `rustc-1.95.0-…`."""
    return "nightly" if "-nightly" in name else "beta" if "-beta" in name else "stable"


def manifest_channel(path: str) -> str | None:
    """The channel of a manifest path: `channel-rust-1.95.toml` is stable, `-1.96.0-beta.2.toml` beta."""
    m = _MANIFEST.match(path.rsplit("/", 1)[-1])
    if m is None:
        return None
    name = m.group(1)
    return name if name in CHANNELS else "beta" if "-beta" in name else "stable"


def vouches(manifest_path: str, manifest_date: str, component_path: str) -> bool:
    """May the manifest at `manifest_path`, dated `manifest_date`, vouch for `component_path`?"""
    parts, comp = manifest_path.split("/"), component_path.split("/")
    if len(comp) != 3 or comp[1] != manifest_date:
        return False  # only files of its own day
    if len(parts) == 3 and parts[1] != manifest_date:
        return False  # a dated manifest that names another day is not that day's manifest
    return manifest_channel(manifest_path) == component_channel(comp[2])


def parse_listing(body: bytes) -> Listing:
    """`parse_manifest` keeping only its `Listing` (slow for a big manifest: run it off the event loop).
    Raises ValueError as `parse_manifest` does."""
    manifest = parse_manifest(body)
    return Listing(manifest.date, manifest.version, file_hashes(manifest))


def read_vouched(manifest_path: str, folder: str, body: bytes) -> dict[str, str]:
    """A stored table (`Vouched.record`, kept under the dated folder it covers) -> what it vouches for. A table
    stored before the rule (a bare path -> hash map) counts only for a dated manifest of that folder."""
    try:
        table = json.loads(body)
    except ValueError:
        return {}
    if not isinstance(table, dict):
        return {}
    if isinstance(table.get("files"), dict) and isinstance(table.get("date"), str):
        date, files = table["date"], table["files"]
    else:
        date, files = (folder if manifest_path.split("/")[1:2] == [folder] else ""), table
    return {p: d for p, d in files.items() if isinstance(d, str) and vouches(manifest_path, date, p)}


def agreed_hash(component_path: str, tables: dict[str, dict[str, str]]) -> str | None:
    """The hash the manifests (path -> what it vouches for) agree on for a component; None if none lists it.
    Raises ManifestConflict naming them when they disagree."""
    listed = {path: table[component_path] for path, table in tables.items() if component_path in table}
    if len(set(listed.values())) > 1:
        said = "; ".join(f"{path} says {digest[:16]}…" for path, digest in sorted(listed.items()))
        raise ManifestConflict(f"{component_path.rsplit('/', 1)[-1]}: the manifests of its channel and date "
                               f"disagree on its hash ({said}); it is not served until one of them is purged")
    return next(iter(listed.values()), None)


def component_files(manifest: Manifest, host: str, targets: tuple[str, ...] = (), profile: str = "minimal",
                    components: tuple[str, ...] = ()) -> list[str]:
    """The files rustup downloads to install this manifest's toolchain for `host` with a profile, extra targets
    and extra components (names as rustup takes them: `clippy`, `rust-src`, `rust-std` …). ValueError if the
    manifest cannot give them (an unknown profile, a host or target it lacks, an unavailable component)."""
    if profile not in manifest.profiles:
        raise ValueError(f"the manifest has no profile {profile!r} (it has {', '.join(manifest.profiles) or 'none'})")
    rust = (manifest.pkg["rust"].get("target") or {}).get(host)
    if not isinstance(rust, dict) or not rust.get("available", False):
        raise ValueError(f"the toolchain is not available for host {host}")
    offered = [(c.get("pkg"), c.get("target")) for key in ("components", "extensions") for c in rust.get(key) or []
               if isinstance(c, dict)]
    wanted: list[tuple[str, str]] = []

    def want(name: str, target: str, optional: bool) -> None:
        name = manifest.renames.get(name, name)
        for pkg, tgt in offered:
            if pkg == name and tgt in (target, "*"):
                if (pkg, tgt) not in wanted:
                    wanted.append((pkg, tgt))
                return
        if not optional:
            raise ValueError(f"component {name} is not offered for {target}")

    for name in manifest.profiles[profile]:
        want(name, host, optional=True)  # a profile names e.g. rust-mingw, which only Windows hosts have
    for target in targets:
        if target != host:
            want("rust-std", target, optional=False)
    for name in components:
        want(name, host, optional=False)
    files = []
    for pkg, target in wanted:
        entry = ((manifest.pkg.get(pkg) or {}).get("target") or {}).get(target)
        if not isinstance(entry, dict) or not entry.get("available", False):
            if pkg in manifest.profiles[profile] and target == host and pkg not in components:
                continue  # rustup skips a profile's component that is unavailable on this host
            raise ValueError(f"{pkg} is not available for {target}")
        url = next((entry[FIELDS[f][0]] for f in FORMATS if isinstance(entry.get(FIELDS[f][0]), str)), None)
        if url is None:
            raise ValueError(f"{pkg} for {target} has no download URL")
        files.append(urlsplit(url).path.lstrip("/"))
    return files


# -- toolchain names --------------------------------------------------------------------------


def manifest_path(toolchain: str) -> str:
    """A toolchain name as rustup takes it -> its manifest's path: 'stable' -> 'dist/channel-rust-stable.toml',
    '1.95' -> 'dist/channel-rust-1.95.toml', 'nightly-2026-11-30' -> 'dist/2026-11-30/channel-rust-nightly.toml'.
    ValueError for a name that is none of these."""
    m = _TOOLCHAIN.match(toolchain.strip())
    if not m:
        raise ValueError(f"{toolchain!r} is not a toolchain name (stable, beta, nightly, 1.95, 1.95.0, "
                         "nightly-2026-11-30, stable-2026-04-16)")
    channel, date, release = m.groups()
    if date:
        if not _DATE.match(date):
            raise ValueError(f"{toolchain!r}: {date} is not a date")
        return f"dist/{date}/channel-rust-{channel}.toml"
    return f"dist/channel-rust-{channel or release}.toml"


def alias_paths(manifest: Manifest) -> list[str]:
    """The other names under which a client may ask for this manifest (romt's "fixup"): for a stable release
    its exact and minor version names and its dated stable manifest; for a nightly or beta its dated one."""
    version = manifest.version or ""
    if "-nightly" in version:
        return [f"dist/{manifest.date}/channel-rust-nightly.toml"]
    if "-beta" in version:
        return [f"dist/{manifest.date}/channel-rust-beta.toml"]
    if not _SEMVER.match(version):
        return []
    minor = version.rsplit(".", 1)[0]
    return [f"dist/channel-rust-{version}.toml", f"dist/channel-rust-{minor}.toml",
            f"dist/{manifest.date}/channel-rust-stable.toml"]


def release_key(manifest: Manifest) -> tuple[int, ...]:
    """Orders stable releases (1.94.1 after 1.94.0) when two staged toolchains claim one minor alias."""
    version = manifest.version or ""
    return tuple(int(x) for x in version.split(".")) if _SEMVER.match(version) else (-1,)


@dataclass(frozen=True)
class ToolchainRequest:
    channel: str
    profile: str = "minimal"
    components: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()


def parse_toolchain_file(text: str) -> ToolchainRequest:
    """A project's rust-toolchain.toml (or the legacy one-line rust-toolchain file). Raises ValueError."""
    stripped = text.strip()
    if stripped and "\n" not in stripped and "=" not in stripped and "[" not in stripped:
        manifest_path(stripped)  # the legacy form: only the channel
        return ToolchainRequest(stripped)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"not a rust-toolchain.toml: {e}") from None
    table = doc.get("toolchain")
    if not isinstance(table, dict) or not isinstance(table.get("channel"), str):
        raise ValueError("rust-toolchain.toml has no [toolchain] channel (a path toolchain cannot be staged)")
    manifest_path(table["channel"])

    def names(key: str) -> tuple[str, ...]:
        value = table.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"rust-toolchain.toml: toolchain.{key} must be a list of strings")
        return tuple(value)

    profile = table.get("profile", "default")  # rustup installs a toolchain file's toolchain with its default profile
    if profile not in PROFILES:
        raise ValueError(f"rust-toolchain.toml: unknown profile {profile!r}")
    return ToolchainRequest(table["channel"], profile, names("components"), names("targets"))
