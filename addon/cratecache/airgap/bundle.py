"""Export the cache (or a lockfile's subset) to one file, and import it on the other side of an air gap.

A bundle is an uncompressed tar (crates are already gzip'd):
- `manifest.json` first: format, creation time, and per entry its cache key, kind, registry, name,
  version, SHA-256, size and provenance
- `blobs/<sha256>`: the bytes, once per distinct content

A bundle is untrusted input. Import verifies everything before it writes anything: `manifest.json` read
entry by entry (each entry at most MAX_ENTRY_BYTES, at most MAX_ENTRIES of them), every manifest field
(`records.meta_problem`, and keys the proxy itself would use), every member's size against the manifest
before it is read, every blob's SHA-256 while it is streamed to disk, every manifest entry's blob present,
every crate's SHA-256 against the `cksum` of its version in the index file served after the import, and
every toolchain component against the hash the channel manifests of its channel and date agree on
(`dist.vouches`; the bundle's and the cache's). A file that never changes (a crate, a component, a dated
manifest) already cached is never replaced by other bytes; rustup-init, which nothing but its own `.sha256`
vouches for, is refused (and left out of exports); `rustup/release-stable.toml` must be rustup's release
file. A corrupted, truncated or forged bundle is rejected with `BundleError` and imports nothing.
Importing twice is harmless (the second says every entry was already present).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import tarfile
import tempfile
import time
import tomllib
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..config import DEFAULT_MAX_CRATE_SIZE, DEFAULT_MAX_DIST_FILE_SIZE, DEFAULT_MAX_INDEX_SIZE, TOOLCHAINS, Settings
from ..protocols import dist, sparse
from ..storage import Meta, Storage
from ..storage.local import as_file
from ..storage.records import meta_problem
from . import jsonstream

FORMAT = "cargo-cache-bundle/1"
IMPORTED_KINDS = ("config", "index", "crate", *dist.KINDS)
MANIFEST = "manifest.json"
MAX_ENTRIES = 1_000_000  # a whole crates.io mirror's crate versions and index files fit
MAX_ENTRY_BYTES = 4096  # one manifest entry (export writes ~480 bytes; a key is at most 512, a validator 1024)
MAX_MANIFEST_BYTES = MAX_ENTRIES * 512  # read entry by entry, never held whole
COPY_CHUNK = 1 << 20
_RUSTUP_VERSION = re.compile(r"\d{1,4}\.\d{1,4}\.\d{1,4}\Z")
_REGISTRY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")  # as config/fields.py allows


class BundleError(Exception):
    """The bundle cannot be imported (message says why); nothing was imported."""


@dataclass(frozen=True)
class Summary:
    entries: int
    crates: int
    index_files: int
    bytes: int
    toolchain_files: int = 0
    new: int | None = None  # import: entries written (new, or newer than the cache's copy)
    present: int | None = None  # import: entries the cache already held (the same, or newer)
    skipped: tuple[str, ...] = ()  # export: entries left out (executables a bundle cannot vouch for)


def key_fields(key: str) -> dict:
    """'crate/crates-io/serde/1.0.0' -> kind, registry, name, version. A toolchain entry's registry is
    'toolchains'; a manifest's name is its toolchain's ('stable', 'nightly-2026-11-30'), a component's its file
    name with its dated folder as the version."""
    parts = key.split("/")
    if parts[0] in dist.KINDS:
        return {"kind": parts[0], "registry": TOOLCHAINS, **dist.describe("/".join(parts[1:]))}
    fields = {"kind": parts[0], "registry": parts[1] if len(parts) > 1 else None, "name": None, "version": None}
    if parts[0] in ("index", "crate") and len(parts) > 2:
        fields["name"] = parts[2]
    if parts[0] == "crate" and len(parts) > 3:
        fields["version"] = parts[3]
    return fields


async def export_bundle(store: Storage, path: Path, keys: list[str]) -> Summary:
    """Write the entries named by `keys` to `path`, atomically. BundleError if one is not in the cache.

    Each entry is read once (meta and bytes together, the shared store's newest copy), by its key (what the export
    costs follows `keys`, not the cache), its bytes spooled to a folder beside `path` and its manifest entry to a
    file there, so memory holds one entry at a time.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    spool = Path(tempfile.mkdtemp(prefix=".export-", dir=path.parent))
    blobs = spool / "blobs"
    blobs.mkdir()
    try:
        skipped = tuple(k for k in keys if unvouched_executable(k))
        kinds: Counter[str] = Counter()
        with open(spool / MANIFEST, "w", encoding="utf-8") as manifest:
            # what json.dumps(indent=1) wrote of the whole manifest, an entry at a time
            manifest.write(f'{{\n "format": {json.dumps(FORMAT)},\n "created": {json.dumps(time.time())},\n '
                           '"entries": [')
            for key in (k for k in keys if k not in skipped):
                entry = await store.latest(key)
                if entry is None:
                    raise BundleError(f"{key} is not in the cache (evicted or purged during the export?)")
                if not (blobs / entry.meta.sha256).exists():
                    if entry.body is None:  # a large entry: copied from its file, never read whole
                        await asyncio.to_thread(shutil.copyfile, entry.file, blobs / entry.meta.sha256)
                    else:
                        (blobs / entry.meta.sha256).write_bytes(entry.body)
                fields = {"key": key, **key_fields(key), **asdict(entry.meta)}
                manifest.write(("\n" if not kinds else ",\n") + _indented(fields))
                kinds[fields["kind"]] += 1
            manifest.write("\n ]\n}" if kinds else "]\n}")
        partial = path.with_name(path.name + ".partial")
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
            tar.add(spool / MANIFEST, arcname=MANIFEST, recursive=False)
            for blob in sorted(blobs.iterdir()):
                tar.add(blob, arcname=f"blobs/{blob.name}", recursive=False)
        os.replace(partial, path)
        total = sum(blob.stat().st_size for blob in blobs.iterdir())
        return Summary(sum(kinds.values()), kinds["crate"], kinds["index"], total,
                       sum(kinds[k] for k in dist.KINDS), skipped=skipped)
    finally:
        shutil.rmtree(spool, ignore_errors=True)


def _indented(fields: dict) -> str:
    """One manifest entry as json.dumps(manifest, indent=1) writes it inside the entries list."""
    return "\n".join("  " + line for line in json.dumps(fields, indent=1).splitlines())


async def import_bundle(store: Storage, path: Path, settings: Settings | None = None) -> Summary:
    """Verify the whole bundle, then load it into `store`. Raises BundleError, having written nothing.

    A bundle is untrusted input (it crosses from the less trusted side of an air gap): every manifest
    field is checked (`records.meta_problem`), every member's size is checked against the manifest before
    it is read, blobs are streamed to a staging folder while they are hashed, and every crate is verified
    against the index file that will be served after the import. `settings` gives the size limits and each
    registry's download host (an imported config.json is rebuilt from its `dl` so that downloads come back
    to the proxy, and never carries an `api`: a bundle cannot choose where Cargo sends its tokens).
    """
    limits = _Limits.of(settings)
    staging = Path(tempfile.mkdtemp(prefix="import-", dir=store.directory))
    try:
        manifest = _verify_into(path, staging, limits)
        plan = await _plan_writes(manifest, staging, path, store, settings)
        for item, meta in plan.writes:
            blob = staging / meta.sha256
            if as_file(item["key"], meta.size) and blob.exists():  # moved into the cache, never read whole
                await store.put_entry_file(item["key"], meta, blob)
            else:
                await store.put_entry(item["key"], meta, blob.read_bytes())
        await _store_hashes(store, plan)
        total = sum(m["size"] for m in {i["sha256"]: i for i in manifest["entries"]}.values())
        return replace(_summary(manifest["entries"], total), new=len(plan.writes), present=plan.present)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@dataclass(frozen=True)
class _Limits:
    index: int = DEFAULT_MAX_INDEX_SIZE
    crate: int = DEFAULT_MAX_CRATE_SIZE
    manifest: int = MAX_MANIFEST_BYTES
    dist_file: int = DEFAULT_MAX_DIST_FILE_SIZE

    @classmethod
    def of(cls, settings: Settings | None) -> _Limits:
        if settings is None:
            return cls()
        dist_file = settings.toolchains.max_file_size if settings.toolchains else DEFAULT_MAX_DIST_FILE_SIZE
        return cls(settings.cache.max_index_size, settings.cache.max_crate_size, dist_file=dist_file)

    def entry(self, kind: str) -> int:
        return {"crate": self.crate, "component": self.dist_file, "rustup": self.dist_file}.get(kind, self.index)


def _verify_into(path: Path, staging: Path, limits: _Limits) -> dict:
    try:
        with tarfile.open(path, "r:") as tar:
            first = tar.next()
            if first is None or first.name != MANIFEST or not first.isfile() or first.issparse():
                raise BundleError(f"{path}: not a cargo-cache bundle (no {MANIFEST} first)")
            if first.size > limits.manifest:
                raise BundleError(f"{path}: the manifest is larger than {limits.manifest} bytes")
            manifest = _manifest(tar.extractfile(first), path, limits)
            expected = {item["sha256"]: item["size"] for item in manifest["entries"]}
            seen: set[str] = set()
            while (member := tar.next()) is not None:
                name = member.name.removeprefix("blobs/")
                if (not member.isfile() or member.issparse() or name not in expected or name in seen
                        or member.name != f"blobs/{name}"):
                    raise BundleError(f"{path}: unexpected member {member.name!r}")
                if member.size != expected[name]:  # before reading a byte of it
                    raise BundleError(f"{path}: {member.name} is corrupted (size mismatch)")
                if _copy_hashed(tar.extractfile(member), staging / name) != name:
                    raise BundleError(f"{path}: {member.name} is corrupted (checksum or size mismatch)")
                seen.add(name)
    except (tarfile.TarError, EOFError, OSError, ValueError, KeyError) as e:
        raise BundleError(f"{path}: unreadable or truncated bundle ({e})") from e
    missing = [sha for sha in expected if sha not in seen]
    if missing:
        raise BundleError(f"{path}: truncated bundle: {len(missing)} of {len(expected)} blobs missing")
    return manifest


def _copy_hashed(source, target: Path) -> str:
    """Copy a member to `target` in bounded pieces; its SHA-256."""
    digest = hashlib.sha256()
    with open(target, "wb") as out:
        while chunk := source.read(COPY_CHUNK):
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def _manifest(source, path: Path, limits: _Limits) -> dict:
    """manifest.json, read entry by entry (`jsonstream`): at most MAX_ENTRIES entries of at most MAX_ENTRY_BYTES,
    each checked as it is read (`_entry`)."""
    entries: list[dict] = []
    now, keys = time.time(), set()

    def add(raw, index: int) -> None:
        if index >= MAX_ENTRIES:
            raise BundleError(f"{path}: the manifest lists more than {MAX_ENTRIES} entries")
        item = _entry(raw, path, now, limits)
        if item["key"] in keys:
            raise BundleError(f"{path}: entry {item['key']!r} appears twice in the manifest")
        keys.add(item["key"])
        entries.append(item)

    try:
        manifest = jsonstream.read_object(source, "entries", add, MAX_ENTRY_BYTES)
    except ValueError as e:
        raise BundleError(f"{path}: invalid manifest (not a {FORMAT} bundle: {e})") from None
    if manifest.get("format") != FORMAT or manifest.get("entries") is not True:
        raise BundleError(f"{path}: invalid manifest (not a {FORMAT} bundle)")
    return {**manifest, "entries": entries}


def _entry(item, path: Path, now: float, limits: _Limits) -> dict:
    """One manifest entry, checked, with only the fields import uses (what its key says, not what it claims)."""
    if not isinstance(item, dict) or not isinstance(item.get("key"), str):
        raise BundleError(f"{path}: invalid manifest entry (no key)")
    if problem := _key_problem(item["key"]):
        raise BundleError(f"{path}: unexpected entry {item['key']!r} in the manifest ({problem})")
    fields = key_fields(item["key"])
    if problem := meta_problem(item, now, limits.entry(fields["kind"])):
        raise BundleError(f"{path}: invalid manifest entry {item['key']!r}: {problem}")
    return {"key": item["key"], **fields, **{f: item.get(f) for f in Meta.__dataclass_fields__}}


def _key_problem(key: str) -> str | None:
    """Why `key` is not a config, index or crate key the proxy would itself use."""
    if len(key) > 512:
        return "too long"
    parts = key.split("/")
    kind, lengths = parts[0], {"config": 2, "index": 3, "crate": 4}
    if kind not in IMPORTED_KINDS:
        return "not a config, index, crate or toolchain entry"
    if kind in dist.KINDS:
        found = dist.classify("/".join(parts[1:]))
        if not isinstance(found, dist.DistFile) or found.checksum or f"{found.kind}/{found.path}" != key:
            return "not a file of rustup's dist layout"
        return None
    if len(parts) != lengths[kind] or not _REGISTRY_NAME.match(parts[1]):
        return "malformed key"
    if kind != "config" and (sparse.name_problem(parts[2]) or parts[2] != parts[2].lower()):
        return "invalid crate name"
    if kind == "crate" and sparse.version_problem(parts[3]):
        return "invalid version"
    return None


def unvouched_executable(key: str) -> bool:
    """rustup-init: an executable no channel manifest lists, whose only check is its upstream `.sha256`, which a
    bundle would carry itself. Export leaves it out and import refuses it."""
    return key.startswith("rustup/") and key.rsplit("/", 1)[-1] in ("rustup-init", "rustup-init.exe")


def _immutable(item: dict) -> bool:
    """Published once, never changed: a crate, a component, a dated manifest, an archived rustup-init."""
    if item["kind"] == "crate":
        return True
    found = dist.classify(item["key"].split("/", 1)[1]) if item["kind"] in dist.KINDS else None
    return isinstance(found, dist.DistFile) and found.immutable


@dataclass
class _Plan:
    writes: list[tuple[dict, Meta]]
    present: int  # entries the cache already holds (the same bytes, or a newer copy)
    listings: dict[str, dist.Listing]  # manifest key -> what it vouches for


async def _plan_writes(manifest: dict, staging: Path, path: Path, store: Storage, settings: Settings | None) -> _Plan:
    """What the import writes, each entry checked: index files name their crate, config.json is rebuilt, each
    crate's bytes match the cksum of its version in the index file that is served after the import (the bundle's
    if it replaces the cache's, else the cache's), each component the hash that the manifests of its channel and
    date agree on (the bundle's and the cache's: `dist.vouches`), and nothing the cache holds of a file that never
    changes (a crate, a component, a dated manifest) is replaced by other bytes."""
    plan = _Plan([], 0, {})
    served: dict[tuple[str, str], Path] = {}  # the bundle's index files that will be served (the cache's otherwise)
    checked: list[tuple[dict, Meta]] = []
    replaced: list[str] = []  # files that never change, which the bundle has other bytes of than the cache
    for item in manifest["entries"]:
        meta = Meta(**{f: item[f] for f in Meta.__dataclass_fields__})
        key, kind = item["key"], item["kind"]
        if unvouched_executable(key):
            raise BundleError(f"{path}: {key.split('/', 1)[1]} is an executable the bundle cannot vouch for (no "
                              "channel manifest lists rustup-init, and its .sha256 would come from the bundle "
                              "itself); install rustup on this side from a copy you trust")
        current = await store.meta(key)
        if kind == "manifest" and not key.endswith(".asc"):
            plan.listings[key] = _vouched(key, staging / meta.sha256, path)
        elif kind == "rustup":
            _check_release(key, (staging / meta.sha256).read_bytes(), path)
        elif kind == "index":
            body = (staging / meta.sha256).read_bytes()
            try:
                sparse.validate_index(body, item["name"])
            except ValueError as e:
                raise BundleError(f"{path}: index file of {item['name']} is invalid ({e})") from None
            if current is None or current.checked_at < meta.checked_at:
                served[(item["registry"], item["name"])] = staging / meta.sha256
        elif kind == "config":
            meta = _rebuilt_config(item, meta, staging, path, settings)
        if kind in ("crate", "component"):
            checked.append((item, meta))
        if _immutable(item) and current is not None and current.sha256 != meta.sha256:
            replaced.append(key)
        if current is None or (not _immutable(item) and current.checked_at < meta.checked_at):
            plan.writes.append((item, meta))
        else:  # the cache's copy is the same, or as new or newer (an index revalidated since the export)
            plan.present += 1
    dates = {item["key"].split("/")[2] for item, _ in checked if item["kind"] == "component"}
    tables = await _manifest_tables(store, plan.listings, dates, path)
    index = _IndexFiles(served, store)
    # by index file, so that each is read once and only one is held at a time (a bundle may hold 100 000s)
    for item, meta in sorted(checked, key=lambda c: (c[0]["kind"], c[0]["registry"] or "", c[0]["name"] or "")):
        if item["kind"] == "component":
            _verify_component(item, meta, tables, path)
        else:
            await _verify_crate(item, meta, index, path)
    if replaced:
        raise BundleError(f"{path}: {replaced[0]} differs from the copy the cache already holds, which was verified "
                          "when it was stored; a file that never changes is not replaced"
                          + (f" (and {len(replaced) - 1} more)" if len(replaced) > 1 else ""))
    return plan


def _vouched(key: str, blob: Path, path: Path) -> dist.Listing:
    try:
        return dist.parse_listing(blob.read_bytes()).vouched_by(key.split("/", 1)[1])
    except ValueError as e:
        raise BundleError(f"{path}: channel manifest {key} is invalid ({e})") from None


def _check_release(key: str, body: bytes, path: Path) -> None:
    """rustup/release-stable.toml: only what rustup reads of it (`version`); nothing vouches for its value."""
    try:
        version = tomllib.loads(body.decode("utf-8")).get("version") if len(body) <= 4096 else None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        version = None
    if not isinstance(version, str) or not _RUSTUP_VERSION.match(version):
        raise BundleError(f"{path}: {key.split('/', 1)[1]} is not rustup's release file (a small TOML file with "
                          "version = \"X.Y.Z\")")


async def _manifest_tables(store: Storage, listings: dict[str, dist.Listing], dates: set[str],
                           path: Path) -> dict[str, dict]:
    """By date (of the bundle's manifests, and `dates`): each manifest (the bundle's and the cache's) -> what it
    vouches for. BundleError where two of them list different hashes for one file."""
    tables: dict[str, dict[str, dict[str, str]]] = {date: {} for date in dates}
    for key, listing in listings.items():
        tables.setdefault(listing.date, {})[f"{key.split('/', 1)[1]} (in the bundle)"] = listing.files
    for date, held in tables.items():
        prefix = f"dist-hashes/{date}/"
        for stored in await store.keys(prefix):
            if (entry := await store.get(stored)) is not None:
                manifest_path = stored[len(prefix):]
                held[f"{manifest_path} (in the cache)"] = dist.read_vouched(manifest_path, date, entry.body)
        for file in {f for table in held.values() for f in table}:
            try:
                dist.agreed_hash(file, held)
            except dist.ManifestConflict as e:
                raise BundleError(f"{path}: {e}") from None
    return tables


def _verify_component(item: dict, meta: Meta, tables: dict[str, dict], path: Path) -> None:
    """A toolchain component must match the hash the manifests of its channel and date (in the bundle, or held
    in the cache) list for it."""
    file = item["key"].split("/", 1)[1]
    expected = dist.agreed_hash(file, tables.get(file.split("/")[1], {}))
    if expected is None:
        raise BundleError(f"{path}: toolchain file {file} cannot be verified: no channel manifest of its channel "
                          "and date in the bundle lists it (export the manifests with the components)")
    if expected != meta.sha256:
        raise BundleError(f"{path}: toolchain file {file} does not match the hash its channel manifest lists")


class _IndexFiles:
    """The index file served after the import for a crate's (registry, name): the bundle's (read from the staging
    folder) if it replaces the cache's, else the cache's; the last one read is kept, no other."""

    def __init__(self, served: dict[tuple[str, str], Path], store: Storage):
        self._served, self._store = served, store
        self._last: tuple[tuple[str, str], bytes | None] | None = None

    async def body(self, registry: str, name: str) -> bytes | None:
        if self._last is None or self._last[0] != (registry, name):
            if (staged := self._served.get((registry, name))) is not None:
                body = await asyncio.to_thread(staged.read_bytes)
            else:
                cached = await self._store.latest(f"index/{registry}/{name}")
                body = cached.body if cached is not None else None
            self._last = ((registry, name), body)
        return self._last[1]


async def _verify_crate(item: dict, meta: Meta, index: _IndexFiles, path: Path) -> None:
    body = await index.body(item["registry"], item["name"])
    listed = sparse.find_version(body, item["name"], item["version"]) if body else None
    if listed is None:
        raise BundleError(f"{path}: crate {item['name']} {item['version']} cannot be verified: no index "
                          "file lists it (export the index files with the crates)")
    if listed.cksum != meta.sha256:
        raise BundleError(f"{path}: crate {item['name']} {item['version']} does not match its index checksum")


async def _store_hashes(store: Storage, plan: _Plan) -> None:
    """What each imported manifest vouches for, kept as the resolver keeps it, so its components verify when served."""
    for item, meta in plan.writes:
        if (listing := plan.listings.get(item["key"])) is not None:
            await store.put(f"dist-hashes/{listing.date}/{item['key'].split('/', 1)[1]}", listing.record(),
                            meta.upstream)


def _rebuilt_config(item: dict, meta: Meta, staging: Path, path: Path, settings: Settings | None) -> Meta:
    """config.json as the proxy itself would serve it for this registry: downloads through the proxy, no api."""
    registry = next((r for r in settings.registries if r.name == item["registry"]), None) if settings else None
    if registry is None:
        raise BundleError(f"{path}: config.json of registry {item['registry']!r}, which is not configured here")
    try:
        upstream_config = sparse.parse_config((staging / meta.sha256).read_bytes())
    except ValueError as e:
        raise BundleError(f"{path}: config.json of registry {item['registry']} is invalid ({e})") from None
    body = sparse.client_config(upstream_config, registry.download_root, keep_api=False)
    digest = hashlib.sha256(body).hexdigest()
    (staging / digest).write_bytes(body)
    return replace(meta, sha256=digest, size=len(body))


def _summary(entries: list[dict], total: int) -> Summary:
    kinds = [e["kind"] for e in entries]
    return Summary(len(entries), kinds.count("crate"), kinds.count("index"), total,
                   sum(kinds.count(k) for k in dist.KINDS))
