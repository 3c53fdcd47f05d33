"""A bucket on S3-compatible object storage, through obstore (async; the HTTP work runs in Rust threads,
never on the event loop), with the bucket's health: state, latency and errors.

Every call either answers or raises `BucketDown`. An outage (refused connection, timeout, 5xx, denied
credentials, a missing bucket) marks the bucket down: calls then fail at once, so a dead (or black-holed)
bucket costs requests nothing, and only `probe` (from the periodic upkeep, at most every
`RETRY_SECONDS`) asks it again. Any other failure (an invalid path, ...) fails just that call.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import obstore
from obstore.exceptions import AlreadyExistsError, GenericError, PermissionDeniedError, PreconditionError, UnauthenticatedError
from obstore.store import S3Store

from ..config import S3Settings

logger = logging.getLogger(__name__)

RETRY_SECONDS = 5.0
LIST_CHUNK = 1000
COPY_OFFLOAD_BYTES = 1024 * 1024
BLOB_PART = 8 * 1024 * 1024  # a large blob moves in parts of this size (obstore's multipart upload, streamed reads)
UNCONDITIONAL = object()
MIN_SECRET_LENGTH = 6
_STATUS = re.compile(r"status code: (\d{3})")


class BucketDown(Exception):
    """The bucket did not answer (or refused us); the message never carries credentials."""


class Bucket:
    def __init__(self, settings: S3Settings):
        self.settings = settings
        # Small objects (metas, leases) get a short deadline, so a bucket that accepts connections but never
        # answers is found out quickly; blobs get time to transfer.
        self.store = _s3_store(settings, transfer=2)
        self.blob_store = _s3_store(settings, transfer=12)
        self.down_since: float | None = None
        self.retry_at = 0.0
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.requests = 0
        self.errors = 0
        self.latencies_ms: deque[float] = deque(maxlen=200)
        self.on_call: Callable[[str, float, bool], None] | None = None

    def rotate(self, settings: S3Settings) -> None:
        """New credentials (a rotated key file): new clients for the next calls; calls in flight finish on theirs."""
        self.settings = settings
        self.store = _s3_store(settings, transfer=2)
        self.blob_store = _s3_store(settings, transfer=12)
        self.retry_at = 0.0  # a bucket that refused the old key is asked again at once

    @property
    def target(self) -> str:
        return self.settings.target

    def available(self) -> bool:
        """False from a failure until a probe succeeds."""
        return self.down_since is None

    async def probe(self) -> bool:
        """While down, ask the bucket again (at most every RETRY_SECONDS); True when it answers."""
        if self.down_since is None:
            return True
        if time.monotonic() < self.retry_at:
            return False

        async def call():  # a conditional write, as the cache's own writes are
            try:
                await obstore.put_async(self.store, "probe", b"", mode="create")
            except AlreadyExistsError:
                pass

        try:
            await self._call("probe", call, probing=True)
        except BucketDown:
            return False
        return True

    async def get(self, path: str) -> tuple[bytes, str | None] | None:
        """(bytes, ETag), or None if there is no such object."""
        async def call():
            try:
                got = await obstore.get_async(self._store(path), path)
                buffer = await got.bytes_async()
            except FileNotFoundError as e:  # obstore raises it (or its NotFoundError subclass) on 404
                if "NoSuchBucket" in str(e):
                    raise
                return None
            # A large body is copied off the event loop.
            data = bytes(buffer) if len(buffer) < COPY_OFFLOAD_BYTES else await asyncio.to_thread(bytes, buffer)
            return data, got.meta.get("e_tag")

        return await self._call("get", call)

    async def put(self, path: str, data: bytes, *, create: bool = False, if_match: object = UNCONDITIONAL) -> str | None:
        """Write a whole object; its new ETag ("" if the store gives none), or None when a condition did not
        hold. `create`: only if absent (If-None-Match: *). `if_match`: only if its ETag is still that (a None
        ETag cannot be checked: None, nothing written)."""
        if if_match is None:
            return None
        mode = "create" if create else ("overwrite" if if_match is UNCONDITIONAL else {"e_tag": if_match})

        async def call():
            try:
                result = await obstore.put_async(self._store(path), path, data, mode=mode)
            except (AlreadyExistsError, PreconditionError):
                return None
            return result.get("e_tag") or ""

        return await self._call("put", call)

    async def put_file(self, path: str, file: str) -> bool:
        """Upload a large blob from a file in parts (never whole in memory); False if the object exists already
        (blobs are content-addressed: the same path holds the same bytes)."""
        async def call():
            try:
                await obstore.head_async(self.blob_store, path)
                return False
            except FileNotFoundError:
                pass
            await obstore.put_async(self.blob_store, path, Path(file), use_multipart=True, chunk_size=BLOB_PART,
                                    max_concurrency=2)
            return True

        return await self._call("put", call)

    async def get_into(self, path: str, sink) -> bool:
        """Stream an object into `sink.write` in pieces of about BLOB_PART bytes; False if there is none."""
        async def call():
            try:
                got = await obstore.get_async(self.blob_store, path)
            except FileNotFoundError as e:
                if "NoSuchBucket" in str(e):
                    raise
                return False
            async for chunk in got.stream(min_chunk_size=BLOB_PART):
                await asyncio.to_thread(sink.write, bytes(chunk))
            return True

        return await self._call("get", call)

    def _store(self, path: str) -> S3Store:
        return self.blob_store if path.startswith("blob/") else self.store

    async def delete(self, path: str) -> None:
        async def call():
            try:
                await obstore.delete_async(self._store(path), path)
            except FileNotFoundError:
                pass

        await self._call("delete", call)

    async def list(self, prefix: str) -> list[dict]:
        """Objects under the folder `prefix` (their path, size, last_modified), all of them."""
        return [o async for chunk in self.chunks(prefix) for o in chunk]

    async def chunks(self, prefix: str) -> AsyncIterator[list[dict]]:
        """The objects of `list`, LIST_CHUNK at a time in the bucket's order (S3's: by key), each chunk fetched when
        the caller asks for it, so a listing of any size holds one. Each chunk is a call of its own: a failure on the
        way raises BucketDown (never a listing cut short), and a bucket found down meanwhile ends it at the next."""
        stream = obstore.list(self.store, prefix, chunk_size=LIST_CHUNK)
        while True:
            chunk = await self._call("list", lambda: anext(stream, None))
            if chunk is None:
                return
            yield chunk

    async def _call(self, op: str, call, probing: bool = False):
        if not self.available() and not probing:
            raise BucketDown(f"bucket {self.target} unavailable: {self.last_error}")
        started = time.monotonic()
        try:
            result = await call()
        except Exception as e:
            self._failed(op, e, time.monotonic() - started, outage=_is_outage(op, e))
            raise BucketDown(f"bucket {self.target}: {self.last_error}") from None
        self._succeeded(op, time.monotonic() - started)
        return result

    def _succeeded(self, op: str, seconds: float) -> None:
        self.requests += 1
        self.latencies_ms.append(seconds * 1000)
        if self.on_call:
            self.on_call(op, seconds, True)
        if self.down_since is not None:
            logger.warning("cargo-cache: bucket %s reachable again after %.0f s", self.target,
                           time.monotonic() - self.down_since)
            self.down_since = None

    def _failed(self, op: str, error: Exception, seconds: float, outage: bool) -> None:
        self.requests += 1
        self.errors += 1
        self.last_error, self.last_error_at = f"{op}: {_describe(error, self.settings)}", time.time()
        if self.on_call:
            self.on_call(op, seconds, False)
        if not outage:
            logger.warning("cargo-cache: bucket %s: %s", self.target, self.last_error)
            return
        if self.down_since is None:
            self.down_since = time.monotonic()
            logger.error("cargo-cache: bucket %s unreachable (%s): serving from the local tier and the upstreams "
                         "until it answers again", self.target, self.last_error)
        self.retry_at = time.monotonic() + RETRY_SECONDS

    def health(self) -> dict[str, Any]:
        latencies = sorted(self.latencies_ms)
        return {
            "state": "ok" if self.down_since is None else "degraded",
            "requests": self.requests,
            "errors": self.errors,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "p50_ms": round(latencies[len(latencies) // 2], 1) if latencies else None,
            "p95_ms": round(latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))], 1) if latencies else None,
        }


def _is_outage(op: str, error: Exception) -> bool:
    """Whether an error says the bucket is unusable (not just this call): no answer, 5xx, rejected keys."""
    text = str(error)
    if "NoSuchBucket" in text or isinstance(error, UnauthenticatedError):
        return True
    if isinstance(error, PermissionDeniedError):
        return op != "delete"  # a policy may deny deletes alone: purging fails, serving goes on
    if status := _STATUS.search(text):
        code = int(status.group(1))
        return code >= 500 or code in (401, 408, 429)
    return isinstance(error, (GenericError, OSError, TimeoutError))  # no HTTP answer: connection, timeout


def _s3_store(s: S3Settings, transfer: int) -> S3Store:
    timeout = timedelta(milliseconds=s.timeout_ms)
    config: dict[str, Any] = {"region": s.region, "conditional_put": "etag"}
    if s.endpoint_url:
        config["endpoint"] = s.endpoint_url
    if s.access_key_id is not None:
        config |= {"access_key_id": s.access_key_id, "secret_access_key": s.secret_access_key}
    client: dict[str, Any] = {"allow_http": True, "allow_invalid_certificates": not s.ssl_validation,
                              "connect_timeout": timeout, "timeout": timeout * transfer}
    if s.ca_bundle:
        client["root_certificate"] = Path(s.ca_bundle).read_bytes()  # added to the public roots
    return S3Store(
        s.bucket, prefix=s.prefix.rstrip("/") or None, **config, client_options=client,
        retry_config={"max_retries": 1, "retry_timeout": timeout * 2,
                      "backoff": {"init_backoff": timedelta(milliseconds=50), "max_backoff": timeout, "base": 2}},
    )


def _describe(error: Exception, s: S3Settings) -> str:
    """The first line of an error, with any credential scrubbed (obstore's messages name URLs, not keys)."""
    text = (str(error).strip().splitlines() or [type(error).__name__])[0]
    if "Server returned non-2xx status code" in text:
        text = text.split(" - ", 1)[-1].split(": <?xml", 1)[0]
    full = str(error)
    if cert := re.search(r"InvalidCertificate\(\s*(\w+)", full):
        text += f" (TLS: the endpoint's certificate is not trusted: {cert.group(1)}; see cache.s3.ca_bundle)"
    elif re.search(r"Connection refused|ConnectionRefused", full):
        text += " (connection refused)"
    elif re.search(r"timed out|TimedOut|deadline has elapsed", full, re.IGNORECASE):
        text += " (timed out)"
    text = re.sub(r", after \d+ retries, max_retries: \d+, retry_timeout: \S+?\s+(?=-)", " ", text)
    text = text.removeprefix("Generic S3 error: ")
    for secret in (s.secret_access_key, s.access_key_id):
        if secret and len(secret) >= MIN_SECRET_LENGTH:  # a toy one-letter key would mask every such letter
            text = text.replace(secret, "***")
    return f"{type(error).__name__}: {text[:400]}"
