"""A request on a registry host -> what it asks for (its route, declared in `protocols/routes.py`), or why it is
refused (pure).

Routes:
- `ConfigRoute`   GET {index path}config.json on the index host
- `IndexRoute`    GET {index path}{sparse path} on the index host, the path matching the crate name
- `CrateRoute`    GET {index path}crates/{name}/{version}/download or .../crates/{name}/{name}-{version}.crate
                  on the download host
The index path is `/` for a registry configured by `index_host`, the path of its `index_url` otherwise.
- `DistRoute`     GET of a file of rustup's dist layout on the toolchains host (what it is: `protocols/dist.py`)
- `Rejection`     anything else, with a 4xx status and a one-line reason
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Registry, Settings, Source, Toolchains
from ..protocols import dist, sparse
from ..protocols.routes import ConfigRoute, CrateRoute, DistRoute, IndexRoute, Route

MAX_PATH_LENGTH = 512
ALLOWED_METHODS = ("GET", "HEAD")


@dataclass(frozen=True)
class Rejection:
    status: int
    reason: str


@dataclass(frozen=True)
class Target:
    """An intercepted request's registry (or the toolchains' dist source) and the configured host it is on."""
    registry: Source
    host: str


def intercept(settings: Settings, host: str, port: int, host_header: str | None, path: str = "/") -> Target | Rejection | None:
    """Whether a request is the proxy's to answer, from the connection's target (the CONNECT/SNI host, or an
    absolute URL's) and the Host header together, and the path (a registry configured by `index_url` owns only
    the paths under its index). None: neither names a registry, so it is not ours. A request on which the two
    disagree is never passed on to a real host: it gets a 421."""
    registry, configured = settings.match_host(host, port, path)
    if host_header is None:
        return Target(registry, configured) if registry else None
    header_host, header_port = _authority(host_header)
    header_registry, header_configured = settings.match_host(header_host, header_port or port, path)
    if registry is None and header_registry is None:
        return None
    if registry is None or header_configured != configured or header_registry is not registry:
        return Rejection(421, f"Host header {host_header!r} does not match the connection's target {host}:{port}")
    return Target(registry, configured)


def _authority(value: str) -> tuple[str, int | None]:
    """'host', 'host:port' or '[v6]:port' -> (host, port or None); a port that is not a number is part of no host."""
    host, sep, port = value.rpartition(":") if not value.endswith("]") else ("", "", "")
    if not sep or not port.isdigit():
        return value.strip("[]"), None
    return host.strip("[]"), int(port)


def classify(registry: Source, host: str, method: str, path: str) -> Route | Rejection:
    """Decide what a request on one of `registry`'s hosts (or the toolchains host) asks for."""
    if problem := request_problem(method, path):
        return problem
    if "%" in path:
        path = path.replace("%2B", "+").replace("%2b", "+")
    if isinstance(registry, Toolchains):
        found = dist.classify(path)
        return DistRoute(registry, found) if isinstance(found, dist.DistFile) else Rejection(found.status, found.reason)
    if not path.startswith(registry.index_path):
        return Rejection(404, f"not under the registry's index path {registry.index_path}: {path}")
    segments = path[len(registry.index_path):].split("/")
    host = host.lower()
    if host == registry.index_host:
        route = _index_route(registry, segments)
        if route is not None or host != registry.download_host:
            return route or Rejection(404, f"not a sparse index path: {path}")
    return _download_route(registry, segments) or Rejection(404, f"not a registry path: {path}")


def request_problem(method: str, path: str) -> Rejection | None:
    """What every intercepted host refuses: writes, odd or encoded characters, traversal."""
    if method not in ALLOWED_METHODS:
        return Rejection(405, f"method {method} not allowed; the registry is read-only (GET, HEAD)")
    if len(path) > MAX_PATH_LENGTH:
        return Rejection(414, "path too long")
    if "?" in path or "#" in path:
        return Rejection(400, "query strings are not part of the registry protocol")
    if not path.isascii() or not path.isprintable() or "\\" in path:
        return Rejection(400, "invalid character in path (control, non-ASCII or backslash)")
    # Only an encoded '+' (semver build metadata) is meaningful; anything else hides a path trick.
    if "%" in path.replace("%2B", "+").replace("%2b", "+"):
        return Rejection(400, "percent-encoded characters are not allowed in registry paths")
    if not path.startswith("/") or "//" in path:
        return Rejection(400, "malformed path")
    if any(s in (".", "..") for s in path.split("/")):
        return Rejection(400, "path traversal is not allowed")
    return None


def _index_route(registry: Registry, segments: list[str]) -> Route | Rejection | None:
    if segments == ["config.json"]:
        return ConfigRoute(registry)
    if segments[0] == "crates" or len(segments) not in (2, 3):
        return None
    name = segments[-1]
    if problem := sparse.name_problem(name):
        return Rejection(400, problem)
    if name != name.lower():
        return Rejection(404, "sparse index paths are lowercase")
    if "/".join(segments) != sparse.index_path(name):
        return Rejection(404, f"path does not match the index layout (expected /{sparse.index_path(name)})")
    return IndexRoute(registry, name)


def _download_route(registry: Registry, segments: list[str]) -> Route | Rejection | None:
    if segments[0] != "crates" or len(segments) not in (3, 4):
        return None
    name = segments[1]
    if problem := sparse.name_problem(name):
        return Rejection(400, problem)
    if len(segments) == 4 and segments[3] == "download":
        version = segments[2]
    elif len(segments) == 3 and segments[2].startswith(f"{name}-") and segments[2].endswith(".crate"):
        version = segments[2][len(name) + 1 : -len(".crate")]
    else:
        return None
    if problem := sparse.version_problem(version):
        return Rejection(400, problem)
    return CrateRoute(registry, name, version)
