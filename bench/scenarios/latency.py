"""Scenario 10: the upstream 20 ms away (bench.relay in front of nginx): cold, warm-fresh and warm-expired
`cargo generate-lockfile && cargo fetch` through cargo-cache, against plain mitmdump through the same relay.

Configurations, timed in turn within each repetition (the order rotates):
- Cargo straight to the relay by source replacement (no proxy; for reference);
- plain mitmdump, map_remote to the relay, started fresh for each run (as in scenario 2);
- cargo-cache cold: an empty cache folder and a freshly started proxy for each run;
- cargo-cache warm, index files fresh (`index_ttl: 300`, filled once, kept running);
- cargo-cache warm, every index file expired (`index_ttl: 5`, each run more than 5 s after its previous one,
  filled once, kept running).
"""

from __future__ import annotations

import json

from .. import cargo
from ..context import Bench
from ..procs import Mitmdump, plain_args
from ..relay import Relay
from ..report import Check, Section
from .cargo_fetch import PACKAGES, _describe, _rotate, _states, _timed
from .expired import EXPIRED_TTL, aged, logged, percentiles

DELAY_MS = 20
DIRECT = "Cargo straight to the relay (source replacement; reference)"
PLAIN = "plain mitmdump (map_remote), fresh each run"
COLD = "cargo-cache, cold (empty cache, fresh proxy)"
FRESH = "cargo-cache, warm, index files fresh (index_ttl 300)"
EXPIRED = "cargo-cache, warm, every index file expired (index_ttl 5, 5 s after the last run)"
CONNECTIONS = "connections through the relay"
BURSTS = "bursts of revalidations"
BURST_GAP = 0.015  # s: a revalidation starting later than this after the previous one starts a new burst


def bursts(entries: list[tuple[float, str, int]]) -> int:
    """Groups of revalidations that started together (each answer's time minus its duration, from the log)."""
    starts = sorted(t - ms / 1000 for t, state, ms in entries if state == "revalidated")
    return sum(1 for i, t in enumerate(starts) if i == 0 or t - starts[i - 1] > BURST_GAP)


def _method(bench: Bench) -> str:
    return f"""
nginx behind `bench/relay.py`, an asyncio TCP relay in its own process that delays every chunk by {DELAY_MS} ms in
each direction (order kept; bandwidth not limited), and makes a new connection's first bytes wait for the TCP
handshake's round trip as well (so a new upstream connection costs {2 * DELAY_MS} ms more than a reused one). Every
configuration's upstream is the relay: cargo-cache's proxies.yaml names it (its config.json's `dl` names the relay
too, so downloads go through it), plain mitmdump maps crates.io's hosts to it, and for reference Cargo is also run
straight to it by source replacement. Each timed run is the `cargo generate-lockfile && cargo fetch` of scenarios 1
and 2 ({PACKAGES} crates, fresh project copy and `CARGO_HOME` on tmpfs, only `HTTPS_PROXY` and `CARGO_HTTP_CAINFO`
for the proxies). Plain mitmdump and cold cargo-cache (an empty cache folder) are started fresh for each run, as in
scenario 2; the two warm cargo-cache proxies (`index_ttl: 300`, every index file fresh; `index_ttl: {EXPIRED_TTL}` with each
run starting more than {EXPIRED_TTL} s after its previous one ended, so every index file is revalidated upstream with a
conditional request, config.json fetched again) each filled their cache with one untimed run and stay running. "{CONNECTIONS}" counts the TCP connections the relay accepted during the run (each
paid the handshake's round trip). {bench.reps}; the order of the configurations rotates between repetitions."""


def run(bench: Bench) -> Section:
    section = Section("latency", f"10. Upstream {DELAY_MS} ms away (a relay): cold, warm and expired cargo fetch",
                      _method(bench))
    template = cargo.project_template(bench.scratch / "template")
    work = bench.scratch / "cargo-run"
    relay = Relay(bench.nginx.port, DELAY_MS, bench.log_path("latency-relay")).start()
    (bench.nginx.root / "relay-config.json").write_text(json.dumps({"dl": f"{relay.origin}/crates"}))
    upstream = [{"name": "nginx", "url": f"{relay.origin}/relay-index/"}]
    fresh = bench.addon("latency-fresh", bench.fresh_dir("caches", "latency-fresh"), upstream, index_ttl=300).start()
    expired = bench.addon("latency-expired", bench.fresh_dir("caches", "latency-expired"), upstream,
                            index_ttl=EXPIRED_TTL).start()
    states: dict[str, dict[str, int]] = {}
    timing: dict[str, list[tuple[float, str, int]]] = {}

    def through(proxy: Mitmdump, name: str) -> None:
        start = len(proxy.log())
        _measure(section, relay, bench, name,
                 lambda: cargo.fetch(template, work, PACKAGES, proxy_url=proxy.url, ca=proxy.ca_cert), proxy)
        if name != PLAIN:
            log = proxy.log()[start:]
            counts = states.setdefault(name, {})
            for state, n in _states(log).items():
                counts[state] = counts.get(state, 0) + n
            timing.setdefault(name, []).extend(entries := logged(log))
            if name == EXPIRED:
                section.figure(name, BURSTS, "count").samples.append(bursts(entries))

    def started_fresh(make, name: str) -> None:
        proxy = make().start()
        try:
            through(proxy, name)
        finally:
            bench.stop(proxy)

    def plain() -> Mitmdump:
        return Mitmdump("latency-plain", plain_args(relay.origin), bench.confdir, bench.log_path("latency-plain"))

    def cold() -> Mitmdump:
        return bench.addon("latency-cold", bench.fresh_dir("caches", "latency-cold"), upstream)

    direct_url = f"{relay.origin}/relay-index/"
    try:
        for proxy in (fresh, expired):  # fills both caches
            cargo.fetch(template, work, PACKAGES, proxy_url=proxy.url, ca=proxy.ca_cert)
        cargo.fetch(template, work, PACKAGES, direct_index_url=direct_url)  # nginx, page cache
        steps = {
            DIRECT: lambda: _measure(section, relay, bench, DIRECT,
                                     lambda: cargo.fetch(template, work, PACKAGES, direct_index_url=direct_url), None),
            PLAIN: lambda: started_fresh(plain, PLAIN),
            COLD: lambda: started_fresh(cold, COLD),
            FRESH: lambda: through(fresh, FRESH),
            EXPIRED: aged(lambda: through(expired, EXPIRED)),
        }
        for rep in range(bench.repeat):
            for name in _rotate(list(steps), rep):
                steps[name]()
    finally:
        bench.stop(fresh)
        bench.stop(expired)
        relay.stop()
    _report(section, states, timing)
    return section


def _measure(section: Section, relay: Relay, bench: Bench, name: str, fetch, proxy: Mitmdump | None) -> None:
    connections, asked = relay.connections(), bench.nginx.conditional().get("304", 0)
    _timed(section, name, fetch, proxy)
    section.figure(name, CONNECTIONS, "count").samples.append(relay.connections() - connections)
    section.figure(name, "304s from nginx", "count").samples.append(bench.nginx.conditional().get("304", 0) - asked)


def _report(section: Section, states: dict[str, dict[str, int]], timing: dict[str, list]) -> None:
    wall = {c: section.figure(c, "wall time", "s") for c in (DIRECT, PLAIN, COLD, FRESH, EXPIRED)}
    section.checks += [
        Check("cold: cargo-cache vs plain mitmdump", wall[COLD], wall[PLAIN], 1.0),
        Check("warm, every index file expired vs fresh", wall[EXPIRED], wall[FRESH], 1.1),
        Check("warm, index files fresh: cargo-cache vs plain mitmdump", wall[FRESH], wall[PLAIN], None),
        Check("warm, every index file expired: cargo-cache vs plain mitmdump", wall[EXPIRED], wall[PLAIN], None),
    ]
    med = {c: f.median for c, f in wall.items()}
    conns = {c: section.figure(c, CONNECTIONS, "count").median for c in (PLAIN, COLD, EXPIRED)}
    rtt = 2 * DELAY_MS / 1000
    section.notes += [
        "Answers of cargo-cache over all repetitions: "
        + "; ".join(f"{config}: {_describe(s)}" for config, s in states.items()) + ".",
        f"For reference, Cargo straight to the relay takes {med[DIRECT]:.2f} s; plain mitmdump "
        f"{med[PLAIN] / med[DIRECT]:.2f}× that, cargo-cache cold {med[COLD] / med[DIRECT]:.2f}×, warm fresh "
        f"{med[FRESH] / med[DIRECT]:.2f}×, warm expired {med[EXPIRED] / med[DIRECT]:.2f}× (Cargo speaks HTTP/1.1 to "
        "a plain-HTTP registry and used only a few connections, one request after the other on each; to the proxies "
        "it speaks HTTP/2 with many requests in flight).",
        f"Connections the relay accepted per run: plain mitmdump {conns[PLAIN]:.0f} (a new upstream connection for "
        f"each of Cargo's requests), cargo-cache cold {conns[COLD]:.0f} and expired {conns[EXPIRED]:.0f} (its pool keeps up "
        "to 64 connections per upstream open for 30 s, so a burst larger than the last one opens new ones); each new one "
        "costs a round trip more.",
        f"Every expired run costs {med[EXPIRED] - med[FRESH]:.2f} s more than a fresh one, the time of "
        f"{(med[EXPIRED] - med[FRESH]) / rtt:.0f} round trips of {2 * DELAY_MS} ms. An expired index file is "
        "revalidated before it is served, and Cargo asks for the index files of a dependency level only once it has "
        "read those of the level before, so the revalidations come in bursts (median "
        f"{section.figure(EXPIRED, BURSTS, 'count').median:.0f} per run, counted from the log: revalidations that "
        f"started within {BURST_GAP * 1000:.0f} ms of the previous one belong to one burst) and each burst waits at "
        "least one round trip. Time cargo-cache logged per revalidated index file: "
        + percentiles([ms for _, state, ms in timing.get(EXPIRED, []) if state == "revalidated"])
        + f" (a round trip is {2 * DELAY_MS} ms; a new connection's, {4 * DELAY_MS} ms); per miss (cold): "
        + percentiles([ms for _, state, ms in timing.get(COLD, []) if state == "miss"]) + ".",
    ]
