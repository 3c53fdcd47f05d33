"""A request on the mirror listener -> the request on an intercepted host it stands for, or why it is refused
(pure); and the config.json the mirror serves.

The mirror serves the same routes, under the same cache keys, as the transparent proxy, so the two modes share
every entry. Paths are relative to the path of `mirror.public_url`:
- `/{registry}/index/{path}`           -> `{path}` under the registry's index path on its index host
                                          (`config.json`, `se/rd/serde`)
- `/{registry}/dl/{crate}/{version}/download` (the `dl` of the mirror's config.json, which names no marker, so
  Cargo appends `/{crate}/{version}/download`)
                                       -> `crates/{crate}/{version}/download` under it, on its download host
- `/rustup/{path}`                     -> `/{path}` on the toolchains host: `RUSTUP_DIST_SERVER=<public_url>/rustup`
                                          (rustup rewrites the manifests' `https://static.rust-lang.org` itself),
                                          `RUSTUP_UPDATE_ROOT=<public_url>/rustup/rustup`
- anything else                        -> 404 (never passed on)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..config import Mirror, Registry, Settings, Source, Toolchains
from ..config.defaults import MIRROR_TOOLCHAINS_PATH
from .routes import Rejection, request_problem

INDEX, DOWNLOADS = "index", "dl"


@dataclass(frozen=True)
class MirrorTarget:
    """What a mirror request stands for: a source, the configured host and the path as the transparent proxy
    would see them."""
    source: Source
    host: str
    path: str

    @property
    def config(self) -> bool:
        """config.json of a registry: served rewritten to point at the mirror (`client_config`)."""
        return isinstance(self.source, Registry) and self.path == f"{self.source.index_path}config.json"


def locate(settings: Settings, mirror: Mirror, method: str, path: str) -> MirrorTarget | Rejection:
    """Decide which source and path a request on the mirror listener asks for."""
    if problem := request_problem(method, path):
        return problem
    prefix = urlsplit(mirror.public_url).path.rstrip("/")
    if not path.startswith(prefix + "/"):
        return Rejection(404, f"not under the mirror's path {prefix}/: {path}")
    name, _, rest = path[len(prefix) + 1:].partition("/")
    if name == MIRROR_TOOLCHAINS_PATH:
        toolchains = settings.toolchains
        if toolchains is None:
            return Rejection(404, "this mirror serves no toolchains (no toolchains section)")
        return MirrorTarget(toolchains, toolchains.host, "/" + rest)
    registry = next((r for r in settings.registries if r.name == name), None)
    if not name:
        return Rejection(404, f"not a registry path (expected /<registry>/index/...): {path}")
    if registry is None:
        return Rejection(404, f"no registry {name!r} on this mirror (registries: "
                              f"{', '.join(r.name for r in settings.registries) or 'none'})")
    part, _, rest = rest.partition("/")
    if part == INDEX and rest and not rest.startswith("crates/"):  # downloads only under dl/
        return MirrorTarget(registry, registry.index_host, registry.index_path + rest)
    if part == DOWNLOADS and rest:
        return MirrorTarget(registry, registry.download_host, f"{registry.index_path}crates/{rest}")
    return Rejection(404, f"not a registry path (expected /{name}/index/... or /{name}/dl/...): {path}")


def index_url(mirror: Mirror, source: Source) -> str:
    """The URL a client is configured with: the sparse index of a registry, the dist server of the toolchains."""
    if isinstance(source, Toolchains):
        return f"{mirror.public_url}/{MIRROR_TOOLCHAINS_PATH}"
    return f"{mirror.public_url}/{source.name}/{INDEX}/"


def client_config(mirror: Mirror, registry: Registry) -> bytes:
    """The config.json the mirror serves: downloads come back to the mirror; with tokens, Cargo sends one on every
    request. No `api`: the registry's API would receive the mirror's token (and publishing through a read-only
    cache cannot work)."""
    out: dict[str, object] = {"dl": f"{mirror.public_url}/{registry.name}/{DOWNLOADS}"}
    if mirror.tokens:
        out["auth-required"] = True
    return json.dumps(out, separators=(",", ":")).encode() + b"\n"


def login_url(mirror: Mirror) -> str:
    """Where a 401 sends the user (Cargo shows it): the mirror's root, which says how to get a token."""
    return f"{mirror.public_url}/"


def welcome(settings: Settings, mirror: Mirror, listed: bool = True) -> str:
    """The mirror's root page (the 401's login_url): what it serves and how a client is pointed at it. `listed`:
    name the registries (with tokens, only to a client that sent a known one)."""
    lines = ["cargo-cache mirror", ""]
    if listed:
        lines += [f"registry {r.name}: sparse+{index_url(mirror, r)}" for r in settings.registries]
    if settings.toolchains is not None:
        lines.append(f"toolchains: RUSTUP_DIST_SERVER={index_url(mirror, settings.toolchains)}")
    if mirror.tokens:
        lines += ["", "A token is required: ask the operator of this mirror for one (python -m cratecache token add "
                      "NAME), then `cargo login --registry NAME` or CARGO_REGISTRIES_NAME_TOKEN."]
    return "\n".join(lines)
