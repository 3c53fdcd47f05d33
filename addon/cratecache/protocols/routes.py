"""The routes the protocol modules answer: what a request on a registry host asks for, and the key its entry is
cached under. `boundary/routes.py` decides which route a request is (or refuses it); `Cargo` answers `ConfigRoute`,
`IndexRoute` and `CrateRoute`, `Rustup` answers `DistRoute` (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Registry, Toolchains
from . import dist


@dataclass(frozen=True)
class ConfigRoute:
    registry: Registry

    @property
    def key(self) -> str:
        return f"config/{self.registry.name}"

    @property
    def kind(self) -> str:
        return "config"


@dataclass(frozen=True)
class IndexRoute:
    registry: Registry
    name: str  # lowercase, as in the index path

    @property
    def key(self) -> str:
        return f"index/{self.registry.name}/{self.name}"

    @property
    def kind(self) -> str:
        return "index"


@dataclass(frozen=True)
class CrateRoute:
    registry: Registry
    name: str
    version: str

    @property
    def key(self) -> str:
        return f"crate/{self.registry.name}/{self.name.lower()}/{self.version}"

    @property
    def kind(self) -> str:
        return "crate"


@dataclass(frozen=True)
class DistRoute:
    registry: Toolchains
    file: dist.DistFile

    @property
    def key(self) -> str:
        """The stored file's key: 'manifest/dist/channel-rust-stable.toml', 'component/dist/2026-04-16/…'."""
        return f"{self.file.kind}/{self.file.path}"

    @property
    def kind(self) -> str:
        return self.file.kind


Route = ConfigRoute | IndexRoute | CrateRoute | DistRoute
