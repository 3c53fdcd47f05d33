"""rustup's dist tree over the engine (what a path is: dist.py, pure). A channel manifest and rustup-init come with
their own upstream `.sha256`, fetched first (all a revalidation costs when it is unchanged) and matched by the file;
a component is verified against the hash the manifests of its channel and date list for it (`Vouched`, kept beside
each manifest under `dist-hashes/`); a file nothing verifies is revalidated conditionally. A `.sha256` is made from
the file it checks, so a manifest and its `.sha256` are always one pair; a client given one `.sha256` gets the
manifest it names (`pinned`, the one before is kept as `dist-previous/`)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from ..config import Toolchains
from ..engine import Expected, Item, NotFound, Served, Unavailable
from ..storage import Entry, make_entry
from ..upstreams.client import Attempt, UpstreamClient, UpstreamError, status_outcome
from . import dist
from .base import Protocol
from .routes import DistRoute
from .vouched import Vouched

DIST_DEADLINE = 1800.0  # seconds for a whole toolchain component (rustc is ~70 MB)
CHECKSUM_LIMIT = 4096  # a .sha256 file is one line
MANIFEST_RETRIES = 2  # an upstream whose manifest and .sha256 disagree is asked this many more times (it moved)
RUSTUP_NOT_STAGED = 503  # rustup takes any 4xx on the nightly channel's manifest as a missing nightly, and panics


class ManifestsDisagree(Unavailable):
    """The manifests that may vouch for a component list different hashes for it: it is not served."""


class Rustup(Protocol):
    routes = (DistRoute,)

    def __init__(self, engine):
        super().__init__(engine)
        self.vouched = Vouched(engine)

    async def resolve(self, route, reasked: bool = False, pinned: str | None = None) -> Served:
        return await self.dist_file(route.registry, route.file, pinned)

    @staticmethod
    def not_staged_status(route) -> int:
        """rustup, for the undated nightly channel, reads any 4xx on its manifest as "no nightly today" and walks back
        day by day from the date of a manifest it never got ("Malformed manifest date" panic), so that manifest gets
        RUSTUP_NOT_STAGED, a failed download it reports; a missing stable, beta or dated toolchain keeps 404 (no
        release found)."""
        return RUSTUP_NOT_STAGED if route.file.path == "dist/channel-rust-nightly.toml" else 404

    async def dist_file(self, src: Toolchains, f: dist.DistFile, pinned: str | None = None) -> Served:
        """A file of the dist layout. A `.sha256` is made from the file it checks (the manifest, rustup-init) or
        from the manifest hash of a component, so a manifest and its `.sha256` are always one pair."""
        if f.checksum:
            return await self._checksum_file(src, f)
        key, engine = f"{f.kind}/{f.path}", self.engine
        if f.kind == "manifest" and pinned and (held := await self._pinned(f, pinned)) is not None:
            return held
        if engine.settings.cache.offline:
            cached = await engine.offline(key, f.path, self.not_staged_status(DistRoute(src, f)))
            return Served(cached, "cache", "hit")
        item, since = Item(key, src, f.path, src.ttl, immutable=f.immutable), engine.clock()
        cached = await engine.read(item)
        if engine.fresh(item, cached):
            return Served(cached, "cache", "hit")
        fetch = {"pair": self._fetch_paired, "manifest": self._fetch_component, "none": self._fetch_plain}[f.checked_by]
        return await engine.once(item, since, lambda c: fetch(item, f, c), cached)

    async def _checksum_file(self, src: Toolchains, f: dist.DistFile) -> Served:
        if f.checked_by == "manifest":
            body = dist.checksum_body(await self._component_hash(src, f), f.name)
            return Served(make_entry(body, "manifest", now=self.engine.clock()), "cache", "hit")
        served = await self.dist_file(src, replace(f, checksum=False))
        meta = served.entry.meta
        body = dist.checksum_body(meta.sha256, f.name)
        return Served(make_entry(body, meta.upstream, now=meta.stored_at), served.source, served.state, served.attempts)

    async def _pinned(self, f: dist.DistFile, sha256: str) -> Served | None:
        """The manifest (current or the one before) whose hash this client was just given."""
        for key in (f"manifest/{f.path}", f"dist-previous/{f.path}"):
            entry = self.engine.store.peek(key) or await self.engine.store.get(key)
            if entry is not None and entry.meta.sha256 == sha256:
                return Served(entry, "cache", "hit")
        return None

    async def _fetch_paired(self, item: Item, f: dist.DistFile, cached: Entry | None) -> Served:
        """A file with its own upstream `.sha256` (a channel manifest, rustup-init): the `.sha256` first (all a
        revalidation costs when it is unchanged), then the file, which must match it."""
        engine, manifest = self.engine, f.kind == "manifest"
        limit = engine.settings.cache.max_index_size if manifest else item.source.max_file_size

        async def attempt(client: UpstreamClient):
            got = await client.get(client.url(f.path + ".sha256"), None, CHECKSUM_LIMIT)
            if status_outcome(got.status) != "ok":
                return Attempt(client.name, status_outcome(got.status), f"HTTP {got.status} for {f.name}.sha256"), None
            expected = _checksum(got.body, f.name)
            if cached is not None and cached.meta.sha256 == expected:
                return Attempt(client.name, "not_modified", "unchanged (.sha256)"), (client.name, None)
            for retry in range(MANIFEST_RETRIES + 1):
                status, spooled = await engine.download(client, client.url(f.path), limit, None if manifest else DIST_DEADLINE)
                if spooled is None:
                    return Attempt(client.name, status_outcome(status), f"HTTP {status}"), None
                if spooled.sha256 == expected:
                    break
                spooled.discard()
                moved = _checksum((await client.get(client.url(f.path + ".sha256"), None, CHECKSUM_LIMIT)).body, f.name)
                if moved == expected or retry == MANIFEST_RETRIES:  # not moving: the bytes are bad
                    raise UpstreamError(f"checksum mismatch for {f.path}: its .sha256 says {expected[:16]}…, "
                                        f"got {spooled.sha256[:16]}…")
                expected = moved  # the upstream published a new one between the two requests: ask again
            if manifest:  # a manifest is read whole (it is parsed for its hashes): below max_index_size
                body = spooled.body if spooled.body is not None else await asyncio.to_thread(spooled.path.read_bytes)
                spooled.discard()
                try:
                    await self.vouched.listing(body, spooled.sha256)
                except ValueError as e:
                    raise UpstreamError(f"invalid channel manifest {f.path}: {e}") from None
                return Attempt(client.name, "ok", "HTTP 200"), (client.name, body)
            return Attempt(client.name, "ok", "HTTP 200"), (client.name, spooled)

        async def save(upstream: str, got) -> Entry:
            if not manifest:
                return await engine.store_spooled(item.key, got, upstream)
            if cached is not None:  # a client that was given the old one's .sha256 may still ask for it
                await engine.best_effort(engine.store.put_entry, f"dist-previous/{f.path}", cached.meta, cached.body)
            stored = await engine.save(item.key, got, upstream)
            await self.vouched.save(f.path, stored.body, stored.meta.sha256, upstream)
            return stored

        return await engine.revalidating_walk(item, attempt, cached, save)

    async def _fetch_plain(self, item: Item, f: dist.DistFile, cached: Entry | None) -> Served:
        """A file nothing verifies (release-stable.toml, a signature): revalidated conditionally."""
        return await self.engine.conditional(item, cached, f.path, self.engine.settings.cache.max_index_size)

    async def _fetch_component(self, item: Item, f: dist.DistFile, cached: Entry | None) -> Served:
        """A component, verified against the hash of a manifest the proxy holds (fetched first if need be)."""
        expected = Expected(await self._component_hash(item.source, f), f.name, "the manifest")

        async def url(client: UpstreamClient) -> str:
            return client.url(f.path)
        return await self.engine.fetch_verified(item, url, expected, item.source.max_file_size, DIST_DEADLINE)

    async def _component_hash(self, src: Toolchains, f: dist.DistFile) -> str:
        """The SHA-256 the manifests of a component's channel and date list for it (`dist.vouches`); if none is
        held, its dated manifest is fetched. ManifestsDisagree if they list different hashes."""
        if digest := await self._listed_hash(f):
            return digest
        channel, problem = dist.component_channel(f.name), None
        if not self.engine.settings.cache.offline:
            manifest = dist.DistFile("manifest", f"dist/{f.date}/channel-rust-{channel}.toml", True, "pair")
            try:
                await self.dist_file(src, manifest)
            except NotFound:
                pass
            except Unavailable as e:
                problem = str(e)
            else:
                if digest := await self._listed_hash(f):
                    return digest
        if problem:
            raise Unavailable(f"{f.name}: its manifest (dist/{f.date}/channel-rust-{channel}.toml) could not be "
                              f"fetched to verify it ({problem})")
        raise NotFound(f"{f.name} is not listed in any channel manifest of {f.date} ({channel}), so it cannot be "
                       "verified and is not served")

    async def _listed_hash(self, f: dist.DistFile) -> str | None:
        try:
            return await self.vouched.agreed_hash(f)
        except dist.ManifestConflict as e:
            raise ManifestsDisagree(str(e)) from None

    async def store_manifest(self, path: str, entry: Entry) -> None:
        """Keep a manifest under another name (staging's aliases), with what it lists."""
        await self.engine.store.put_entry(f"manifest/{path}", entry.meta, entry.body)
        await self.vouched.save(path, entry.body, entry.meta.sha256, entry.meta.upstream)


def _checksum(body: bytes, name: str) -> str:
    try:
        return dist.parse_checksum(body)
    except ValueError as e:
        raise UpstreamError(f"{name}.sha256: {e}") from None
