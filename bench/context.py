"""What every scenario shares: the upstream (nginx), the CA, the URLs, proxies to start, logs to check."""

from __future__ import annotations

import json
import re
import shutil
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.fixtures.registry import CrateFile, Registry, build_registry, index_path
from tests.harness import DOWNLOAD_HOST, INDEX_HOST, free_port, write_proxies

from . import bigcrate, loadgen
from .procs import Mitmdump, addon_args, make_confdir, plain_args
from .rss import cpu_seconds
from .upstream import Nginx, write_tree

#: Index files stay fresh for the whole run: hits never ask the upstream.
LONG_TTL = 10 * 24 * 3600
UPSTREAM_NAME = "nginx"
HUGE_BYTES = 200 * 1024 * 1024  # scenario 5: a file the size of a large toolchain component


def index_url(name: str) -> str:
    return f"https://{INDEX_HOST}/{index_path(name)}"


def crate_url(crate: CrateFile) -> str:
    return f"https://{DOWNLOAD_HOST}/crates/{crate.name}/{crate.version}/download"


@dataclass
class Bench:
    work: Path  # on disk: nginx's files, proxy caches, logs, the snapshot of addon/
    scratch: Path  # on tmpfs if there is one: Cargo homes and projects (unpacking crates on disk is noise)
    repeat: int
    quick: bool
    registry: Registry = field(init=False)
    big: CrateFile = field(init=False)
    huge: CrateFile = field(init=False)
    nginx: Nginx = field(init=False)
    confdir: Path = field(init=False)
    problems: Counter = field(default_factory=Counter)  # proxy log lines that signal trouble
    addon_source: str = ""  # set when the addon measured is not the tree's addon/ (run.py --addon)
    scale: int = 0  # entries of the crates.io-scale cache (run.py --scale; 0: the scenario's default)

    @property
    def reps(self) -> str:
        return f"{self.repeat} repetition{'s' if self.repeat != 1 else ''}"

    def setup(self, addon_dir: Path) -> None:
        """Snapshot `addon_dir` (the proxy measured, whatever happens to the tree meanwhile), build, start nginx."""
        snapshot = self.work / "addon"
        shutil.copytree(addon_dir, snapshot, ignore=shutil.ignore_patterns("__pycache__"))
        self.addon_script = snapshot / "cargo_cache.py"
        sys.path.insert(0, str(snapshot))  # the scenarios fill caches with its cratecache.storage
        self.registry = build_registry()
        self.real_crates = list(self.registry.crates.values())
        self.big = bigcrate.add_big_crate(self.registry)
        self.huge = bigcrate.add_big_crate(self.registry, HUGE_BYTES, "bench-hugecrate")  # scenario 5's 200 MB case
        port = free_port()
        write_tree(self.registry, self.work / "upstream", port)
        self.nginx = Nginx(self.work / "upstream", port).start()
        self.confdir = make_confdir(self.work / "confdir")
        (self.work / "config").mkdir(parents=True, exist_ok=True)
        self.hit_urls = self.urls_file("hits", self.hit_url_list(self.real_crates))

    def close(self) -> None:
        if hasattr(self, "nginx"):
            self.nginx.stop()

    # -- URLs ---------------------------------------------------------------------------------

    def hit_url_list(self, crates: list[CrateFile]) -> list[tuple[str, int]]:
        """The index file and the .crate of each crate: what `cargo generate-lockfile && cargo fetch` asks for."""
        names = sorted({c.name.lower() for c in crates})
        return ([(index_url(n), len(self.registry.index_files[n])) for n in names]
                + [(crate_url(c), len(c.data)) for c in crates])

    def urls_file(self, name: str, urls: list[tuple[str, int]]) -> Path:
        path = self.work / "urls" / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(urls))
        return path

    # -- proxies ------------------------------------------------------------------------------

    def nginx_upstream(self) -> dict:
        return {"name": UPSTREAM_NAME, "url": self.nginx.index_url}

    def addon(self, label: str, cache_dir: Path, upstreams: list[dict] | None = None,
              env: dict[str, str] | None = None, policy: dict | None = None, **cache: object) -> Mitmdump:
        """mitmdump with the addon (not started), its cache in `cache_dir`; `env` is added to its environment;
        `policy` is proxies.yaml's `policy:` section (none if not given)."""
        config = write_proxies(self.work / "config" / f"{label}.yaml", upstreams or [self.nginx_upstream()],
                               cache_dir, **({"size_limit": "50GB", "index_ttl": LONG_TTL} | cache))
        if policy is not None:
            doc = yaml.safe_load(config.read_text())
            config.write_text(yaml.safe_dump({**doc, "policy": policy}, sort_keys=False))
        return Mitmdump(label, addon_args(self.addon_script, config), self.confdir, self.log_path(label),
                        env=env or {})

    def plain(self, label: str) -> Mitmdump:
        """Plain mitmdump forwarding crates.io's hosts to nginx with map_remote (not started)."""
        return Mitmdump(label, plain_args(f"http://127.0.0.1:{self.nginx.port}"), self.confdir, self.log_path(label))

    def log_path(self, label: str) -> Path:
        return self.work / "logs" / f"{label}.log"

    def load(self, proxy: Mitmdump, urls: Path, clients: int, requests: int, **kw) -> dict:
        """One load run; adds the proxy's CPU time per request (ms) to the result."""
        before = cpu_seconds(proxy.pid)
        result = loadgen.run(proxy.url, proxy.ca_cert, urls, clients, requests, self.work / "load.json", **kw)
        result["proxy_cpu_ms"] = (cpu_seconds(proxy.pid) - before) * 1000 / max(1, result["requests"])
        if result["errors"]:
            self.problems[f"load generator ({proxy.label}, {clients} clients): {result['errors']}"] += 1
        return result

    def prime(self, proxy: Mitmdump, urls: Path) -> dict:
        """Request every URL once (fills the addon's cache)."""
        count = len(json.loads(urls.read_text()))
        result = loadgen.run(proxy.url, proxy.ca_cert, urls, 4, count, self.work / "load.json")
        if result["errors"] or result["requests"] != count:
            raise RuntimeError(f"priming {proxy.label} failed: {result}")
        return result

    def stop(self, proxy: Mitmdump) -> None:
        """Stop a proxy and remember what its log says went wrong."""
        proxy.stop()
        for line in proxy.log().splitlines():
            if problem := log_problem(line):
                self.problems[f"{proxy.label.split('#')[0]}: {problem}"] += 1

    def fresh_dir(self, *parts: str) -> Path:
        path = self.work.joinpath(*parts)
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path


_REQUEST_LINE = re.compile(r"^\[[^\]]+\] \S+ (GET|HEAD|\S+) \S+ (\d{3}) ")
_POLICY_DECISION = re.compile(r"cargo-cache policy: (?:would-)?(?:warn|hide|deny):\S+ \(registry ")  # expected
_TROUBLE = re.compile(r"traceback|exception|error|failed|warning|stale|timed out|refused|reset", re.I)
_NOISE = re.compile(r"\[\d\d:\d\d:\d\d\.\d+\]|\[[0-9.:]+\]|\b127\.0\.0\.1:\d+|\d+ms\b|\b\d+B\b")


def log_problem(line: str) -> str | None:
    """The shape of a log line that signals trouble (timestamps, ports, sizes removed), or None."""
    if match := _REQUEST_LINE.match(line):
        if int(match.group(2)) < 500:
            return None
    elif not _TROUBLE.search(line) or _POLICY_DECISION.search(line):
        return None
    return _NOISE.sub("", line).strip()[:200]
