"""The HTTP boundary: a request on a registry host -> a `Reply` (status, headers, body).

Domain outcomes become statuses here and nowhere else: a refused path is its route's 4xx,
`NotFound` is 404, `Unavailable` is 502 listing each upstream's outcome.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from ..config import Source
from ..engine import freshness
from ..protocols import dist
from ..protocols.routes import DistRoute, IndexRoute, Route
from ..resolver import NotFound, NotStaged, Refused, Resolver, Served, Unavailable
from . import ranges
from .routes import Rejection, classify

logger = logging.getLogger(__name__)

CONTENT_TYPES = {
    "config": "application/json",
    "index": "text/plain; charset=utf-8",
    "crate": "application/gzip",
}
DIST_CONTENT_TYPES = {".sha256": "text/plain; charset=utf-8", ".toml": "application/toml", ".asc": "application/pgp-signature",
                      ".gz": "application/gzip", ".xz": "application/x-xz", ".zst": "application/zstd"}


@dataclass(frozen=True)
class Client:
    """What the proxy remembers about the client connection a request came on (see reasks.py and pairs.py)."""
    asked_again: Callable[[str], bool] = lambda key: False  # given this index file already: Cargo's re-ask
    pinned: Callable[[str], str | None] = lambda path: None  # the hash of a manifest's .sha256 it was just given
    gave: Callable[[str, str], None] = lambda path, sha256: None  # record that it was given one


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    source: str = "-"  # cache, an upstream's name, or '-' when nothing was served
    state: str = "rejected"  # hit | miss | revalidated | updated | stale | not_found | refused | error | rejected
    kind: str = "-"
    size: int = 0  # bytes of the entity (also for HEAD and 304)
    reason: str = ""  # why nothing was served (4xx/5xx), for the log line and the status page
    file: str | None = None  # a large entry: `size` bytes from `offset` of this file are the body (streamed)
    offset: int = 0
    key: str = ""  # the stored entry a file belongs to, and the digest and size the whole file was stored with
    sha256: str = ""  # (checked before or while it is streamed)
    file_size: int = 0


async def handle(
    resolver: Resolver, registry: Source, method: str, host: str, path: str, headers: Mapping[str, str],
    client: Client = Client(),
) -> Reply:
    reply = await _answer(resolver, registry, method, host, path, headers, client)
    return _without_body(reply) if method == "HEAD" and reply.status != 304 else reply


async def _answer(
    resolver: Resolver, registry: Source, method: str, host: str, path: str, headers: Mapping[str, str],
    client: Client,
) -> Reply:
    route = classify(registry, host, method, path)
    if isinstance(route, Rejection):
        return text_reply(route.status, route.reason, "rejected")
    try:
        served = await _resolve(resolver, route, client)
    except NotStaged as e:  # offline: a status the client shows with the reason (see resolver.not_staged_status)
        return text_reply(e.status, str(e), "not_found", route.kind)
    except NotFound as e:
        return text_reply(404, str(e), "not_found", route.kind)
    except Refused as e:  # the policy's deny: Cargo shows the body in its error
        refused = text_reply(e.status, str(e), "refused", route.kind)
        return replace(refused, headers={**refused.headers, **dict(e.headers)})
    except Unavailable as e:
        return text_reply(502, str(e), "error", route.kind)
    except Exception as e:  # never let a request fall through to the real registry host
        logger.exception("cargo-cache: internal error on %s %s%s", method, host, path)
        return text_reply(500, f"cargo-cache internal error: {type(e).__name__}", "error", route.kind)
    reply = entry_reply(route.kind, served, headers, _content_type(route))
    return replace(reply, key=route.key) if reply.file is not None else reply


async def _resolve(resolver: Resolver, route: Route, client: Client) -> Served:
    if isinstance(route, IndexRoute):
        return await resolver.resolve(route, reasked=client.asked_again(route.key))
    if not isinstance(route, DistRoute) or route.kind != "manifest":
        return await resolver.resolve(route)
    if not route.file.checksum:  # the manifest whose .sha256 this client was just given, even if it moved since
        return await resolver.resolve(route, pinned=client.pinned(route.file.path))
    served = await resolver.resolve(route)
    client.gave(route.file.path, dist.parse_checksum(served.entry.body))
    return served


def _content_type(route: Route) -> str:
    if isinstance(route, DistRoute):
        name = route.file.name + (".sha256" if route.file.checksum else "")
        return next((t for suffix, t in DIST_CONTENT_TYPES.items() if name.endswith(suffix)), "application/octet-stream")
    return CONTENT_TYPES[route.kind]


def _without_body(reply: Reply) -> Reply:
    """HEAD: the same status and headers, the entity's length, no body (errors included)."""
    return replace(reply, body=b"", file=None, headers={**reply.headers, "Content-Length": str(reply.size)})


def entry_reply(kind: str, served: Served, request_headers: Mapping[str, str], content_type: str | None = None) -> Reply:
    meta = served.entry.meta
    etag = freshness.etag_for(meta.sha256)
    last_modified = meta.last_modified or freshness.http_date(meta.stored_at)
    headers = {
        "Content-Type": content_type or CONTENT_TYPES[kind],
        "ETag": etag,
        "Last-Modified": last_modified,
        "X-Cache": served.state.upper(),
        "X-Cache-Upstream": meta.upstream,
        **dict(served.headers),
    }
    if served.state == "stale":
        headers["Warning"] = '110 cargo-cache "Response is stale: every upstream failed"'
    not_modified = kind not in ("crate", "component") and freshness.client_not_modified(
        request_headers.get("if-none-match"), request_headers.get("if-modified-since") if served.dated else None,
        etag, last_modified
    )
    if not_modified:
        return Reply(304, b"", headers, served.source, served.state, kind, meta.size)
    headers["Accept-Ranges"] = "bytes"
    wanted = ranges.requested(request_headers.get("range"), request_headers.get("if-range"), meta.size, etag,
                              last_modified)
    if wanted == ranges.UNSATISFIABLE:
        return Reply(416, b"", {**headers, "Content-Range": f"bytes */{meta.size}"}, served.source, served.state,
                     kind, 0, f"range not satisfiable: {request_headers.get('range')} of {meta.size} bytes")
    status, start, size = 200, 0, meta.size
    if isinstance(wanted, ranges.Slice):
        status, start, size = 206, wanted.start, wanted.length
        headers["Content-Range"] = wanted.content_range(meta.size)
    entry = served.entry
    if entry.body is None:  # a large entry: streamed from its file
        return Reply(status, b"", headers, served.source, served.state, kind, size, file=entry.file, offset=start,
                     sha256=meta.sha256, file_size=meta.size)
    body = entry.body if status == 200 else entry.body[start:start + size]
    return Reply(status, body, headers, served.source, served.state, kind, size)


def text_reply(status: int, reason: str, state: str, kind: str = "-") -> Reply:
    line = reason.replace("\n", " ")
    body = (line + "\n").encode()
    return Reply(status, body, {"Content-Type": "text/plain; charset=utf-8"}, "-", state, kind, len(body), line)
