"""Export the cache (or a lockfile's subset) to one file, and import it on the other side of an air gap.

A bundle is an uncompressed tar (crates are already gzip'd):
- `manifest.json` first: format, creation time, and per entry its cache key, kind, registry, name,
  version, SHA-256, size and provenance
- `blobs/<sha256>`: the bytes, once per distinct content

Import verifies everything before it writes anything: every blob's size and SHA-256 against the
manifest, every manifest entry's blob present, and every crate's SHA-256 against the `cksum` of its
version in the index file (from the bundle, else from the cache). A corrupted or truncated bundle
is rejected with `BundleError` and imports nothing. Importing twice is harmless.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from . import sparse
from .storage import Meta, Storage

FORMAT = "cargo-cache-bundle/1"
IMPORTED_KINDS = ("config", "index", "crate")
MANIFEST = "manifest.json"


class BundleError(Exception):
    """The bundle cannot be imported (message says why); nothing was imported."""


@dataclass(frozen=True)
class Summary:
    entries: int
    crates: int
    index_files: int
    bytes: int


def key_fields(key: str) -> dict:
    """'crate/crates-io/serde/1.0.0' -> kind, registry, name, version."""
    parts = key.split("/")
    fields = {"kind": parts[0], "registry": parts[1] if len(parts) > 1 else None, "name": None, "version": None}
    if parts[0] in ("index", "crate") and len(parts) > 2:
        fields["name"] = parts[2]
    if parts[0] == "crate" and len(parts) > 3:
        fields["version"] = parts[3]
    return fields


async def export_bundle(store: Storage, path: Path, keys: list[str]) -> Summary:
    """Write the entries named by `keys` to `path`, atomically. BundleError if one is not in the cache.

    Each entry is read once (meta and bytes together, the shared store's newest copy) and its bytes
    spooled to a folder beside `path`, so memory holds one entry at a time.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    spool = Path(tempfile.mkdtemp(prefix=".export-", dir=path.parent))
    try:
        entries = []
        for key in keys:
            entry = await store.latest(key)
            if entry is None:
                raise BundleError(f"{key} is not in the cache (evicted or purged during the export?)")
            if not (spool / entry.meta.sha256).exists():
                (spool / entry.meta.sha256).write_bytes(entry.body)
            entries.append({"key": key, **key_fields(key), **asdict(entry.meta)})
        manifest = {"format": FORMAT, "created": time.time(), "entries": entries}
        partial = path.with_name(path.name + ".partial")
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
            _add(tar, MANIFEST, json.dumps(manifest, indent=1).encode())
            for blob in sorted(spool.iterdir()):
                tar.add(blob, arcname=f"blobs/{blob.name}", recursive=False)
        os.replace(partial, path)
        return _summary(entries, sum(blob.stat().st_size for blob in spool.iterdir()))
    finally:
        shutil.rmtree(spool, ignore_errors=True)


async def import_bundle(store: Storage, path: Path) -> Summary:
    """Verify the whole bundle, then load it into `store`. Raises BundleError."""
    staging = Path(tempfile.mkdtemp(prefix="import-", dir=store.directory))
    try:
        manifest = _verify_into(path, staging)
        await _verify_crates(manifest, staging, path, store)
        for item in manifest["entries"]:
            meta = Meta(**{f: item[f] for f in Meta.__dataclass_fields__})
            current = await store.meta(item["key"])
            if current is not None and current.checked_at >= meta.checked_at:
                continue  # the cache's copy is as new or newer (an index revalidated since the export)
            await store.put_entry(item["key"], meta, (staging / meta.sha256).read_bytes())
        return _summary(manifest["entries"], sum(p.stat().st_size for p in staging.iterdir()))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _verify_into(path: Path, staging: Path) -> dict:
    try:
        with tarfile.open(path, "r:") as tar:
            first = tar.next()
            if first is None or first.name != MANIFEST:
                raise BundleError(f"{path}: not a cargo-cache bundle (no {MANIFEST} first)")
            manifest = _manifest(tar.extractfile(first).read(), path)
            expected = {item["sha256"]: item["size"] for item in manifest["entries"]}
            while (member := tar.next()) is not None:
                name = member.name.removeprefix("blobs/")
                if not member.isfile() or name not in expected or member.name != f"blobs/{name}":
                    raise BundleError(f"{path}: unexpected member {member.name!r}")
                data = tar.extractfile(member).read()
                if len(data) != expected[name] or hashlib.sha256(data).hexdigest() != name:
                    raise BundleError(f"{path}: {member.name} is corrupted (checksum or size mismatch)")
                (staging / name).write_bytes(data)
    except (tarfile.TarError, EOFError, OSError, ValueError, KeyError) as e:
        raise BundleError(f"{path}: unreadable or truncated bundle ({e})") from e
    missing = [sha for sha in expected if not (staging / sha).exists()]
    if missing:
        raise BundleError(f"{path}: truncated bundle: {len(missing)} of {len(expected)} blobs missing")
    return manifest


def _manifest(raw: bytes, path: Path) -> dict:
    try:
        manifest = json.loads(raw)
        valid = manifest.get("format") == FORMAT and all(
            isinstance(item.get("key"), str) and isinstance(item.get("size"), int)
            and isinstance(item.get("sha256"), str) and len(item["sha256"]) == 64
            and all(f in item for f in Meta.__dataclass_fields__)
            for item in manifest["entries"]
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        valid = False
    if not valid:
        raise BundleError(f"{path}: invalid manifest (not a {FORMAT} bundle)")
    for item in manifest["entries"]:
        item.update(key_fields(item["key"]))  # what the key says, not what the manifest claims
        if item["kind"] not in IMPORTED_KINDS or not item["registry"] or (item["kind"] != "config" and not item["name"]):
            raise BundleError(f"{path}: unexpected entry {item['key']!r} in the manifest")
    return manifest


async def _verify_crates(manifest: dict, staging: Path, path: Path, store: Storage) -> None:
    """Each crate's bytes must match the cksum of its version in the index (the bundle's, else the cache's)."""
    index_bodies = {(i["registry"], i["name"]): (staging / i["sha256"]).read_bytes()
                    for i in manifest["entries"] if i["kind"] == "index"}
    for item in manifest["entries"]:
        if item["kind"] != "crate":
            continue
        body = index_bodies.get((item["registry"], item["name"].lower()))
        if body is None and (cached := await store.latest(f"index/{item['registry']}/{item['name'].lower()}")):
            body = cached.body
        listed = sparse.find_version(body, item["name"], item["version"]) if body else None
        if listed is None:
            raise BundleError(f"{path}: crate {item['name']} {item['version']} cannot be verified: no index "
                              "file lists it (export the index files with the crates)")
        if listed.cksum != item["sha256"]:
            raise BundleError(f"{path}: crate {item['name']} {item['version']} does not match its index checksum")


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
    tar.addfile(info, io.BytesIO(data))


def _summary(entries: list[dict], total: int) -> Summary:
    kinds = [e["kind"] for e in entries]
    return Summary(len(entries), kinds.count("crate"), kinds.count("index"), total)
