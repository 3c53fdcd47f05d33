"""Scenario 11: cache-hit throughput with 1 and 2 workers (`make run WORKERS=N`) on this 2-core machine.

The workers are started as `make run WORKERS=N` starts them: `python -m cratecache.operations.workers --workers N --port P
--status-port S -- <mitmdump args>` (PYTHONPATH: the addon folder), N mitmdumps sharing one port through
SO_REUSEPORT and one cache folder. The load generator's clients each open their own connection, so the kernel
spreads them over the workers. Per-worker CPU comes from /proc of each worker's pid, per-worker request counts
from each worker's status page.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.harness import ROOT, free_port, write_proxies

from .. import loadgen
from ..context import Bench, index_url
from ..procs import clean_env, stop, track, track_stopper, untrack_stopper
from ..report import Background, Check, Section
from ..rss import Poller, cpu_seconds

CLIENTS = 64
COUNTS = (1, 2)
PROTOCOLS = (("HTTP/2", False), ("HTTP/1.1", True))
_STARTED = re.compile(r"worker (\d+) started \(pid (\d+)")


def _free_run(count: int) -> int:
    """A port p with p .. p+count-1 all free (worker i's status page is on p + i)."""
    for _ in range(50):
        base = free_port()
        socks = []
        try:
            for i in range(count):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", base + i))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no run of free ports found")


class Workers:
    """`python -m cratecache.operations.workers` with `count` workers on one port, as `make run WORKERS=count` starts it."""

    def __init__(self, bench: Bench, label: str, count: int, config: Path):
        self.bench, self.label, self.count = bench, label, count
        self.port, self.status_port = free_port(), _free_run(count)
        self.log_path = bench.log_path(label)
        self.ca_cert = bench.confdir / "mitmproxy-ca-cert.pem"
        self.args = ["--listen-host", "127.0.0.1", "--set", f"confdir={bench.confdir}", "--set", "flow_detail=0",
                     "-s", str(bench.addon_script), "--set", f"cargo_proxies={config}"]
        self.process: subprocess.Popen | None = None
        self.pids: dict[int, int] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, timeout: float = 60) -> Workers:
        cmd = [sys.executable, "-m", "cratecache.operations.workers", "--workers", str(self.count), "--port", str(self.port),
               "--status-port", str(self.status_port), "--", *self.args]
        env = clean_env() | {"PYTHONPATH": str(self.bench.addon_script.parent)}
        with open(self.log_path, "wb") as log:
            self.process = track(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env))
        track_stopper(self._kill_workers)
        deadline = time.monotonic() + timeout
        while self.log().count("proxy listening at") < self.count:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.label}: the workers did not start:\n{self.log()[-3000:]}")
            time.sleep(0.05)
        self.pids = {int(i): int(pid) for i, pid in _STARTED.findall(self.log())}
        if len(self.pids) != self.count:
            raise RuntimeError(f"{self.label}: expected {self.count} workers, the log names {self.pids}")
        return self

    def requests(self) -> dict[int, int]:
        """Requests each worker has answered since it started (its status page's counts)."""
        out = {}
        for i in self.pids:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.status_port + i}/status.json", timeout=10) as r:
                status = json.load(r)
            out[i] = sum(kind["requests"] for kind in status["cache"]["requests"].values())
        return out

    def _kill_workers(self) -> None:
        for pid in self.pids.values():  # only if the supervisor left them behind
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def stop(self) -> None:
        stop(self.process, timeout=20)  # SIGTERM: the supervisor stops its workers
        untrack_stopper(self._kill_workers)
        self._kill_workers()
        for line in self.log().splitlines():
            if (problem := _problem(line)) is not None:
                self.bench.problems[f"{self.label}: {problem}"] += 1


def _problem(line: str) -> str | None:
    from ..context import log_problem

    return log_problem(re.sub(r"^w\d+ \| ", "", line))


def _method(bench: Bench, requests: int, files: int) -> str:
    return f"""
`make run WORKERS=N` as it starts the proxy: `python -m cratecache.operations.workers --workers N --port P --status-port S --
<mitmdump args>` (`PYTHONPATH` the addon folder), N mitmdumps listening on one port with SO_REUSEPORT and sharing
one cache folder (the default proxies.yaml settings; index files fresh for 10 days), for N = {", ".join(map(str, COUNTS))}.
The load: the {files} index files of the registry (median 2 KB), requested in a shuffled cycle by {CLIENTS} clients
(bench/loadgen.py: httpx in one separate process, closed loop, one request in flight per client), each client over
its own connection (HTTP/2, then HTTP/1.1), so that the kernel spreads the {CLIENTS} connections over the workers;
{requests} timed requests per run, every answer checked (200, exact size). The cache is filled first by one
ordinary mitmdump with the addon; each set of workers is started fresh for each repetition and gets one untimed load
run per protocol before the timed ones (each worker's in-memory tier, certificates, code paths). CPU figures cover
the load generator's timed phase only (it reports when that began and ended; a thread samples each worker's
/proc/PID/stat and the machine's /proc/stat every 20 ms): per worker its CPU (user + system) and its share of the
requests (the counts on its status page, port S + i), "CPU per 1000 requests" being that worker's CPU over its
requests; the load generator's own CPU in that phase; "machine busy" the cores in use on the whole machine.
{bench.reps}; the worker counts take turns in a rotating order."""


class CpuPoller(Poller):
    """Every 20 ms: the wall clock, each worker's CPU seconds and the machine's busy CPU seconds, so that the
    figures can be taken over exactly the load generator's timed phase (it reports its start and end)."""

    def __init__(self, pids: dict[int, int], interval: float = 0.02):
        super().__init__(interval)
        self.pids = pids
        self.samples: list[tuple[float, dict[int, float], float]] = []

    def sample(self) -> bool:
        self.samples.append((time.time(), {i: cpu_seconds(pid) for i, pid in self.pids.items()}, Background._busy()))
        return True

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        self.sample()

    def at(self, when: float) -> tuple[dict[int, float], float]:
        """Worker CPU and machine busy seconds at `when`, interpolated between the samples around it."""
        before = max((s for s in self.samples if s[0] <= when), key=lambda s: s[0], default=self.samples[0])
        after = min((s for s in self.samples if s[0] >= when), key=lambda s: s[0], default=self.samples[-1])
        f = 0.0 if after[0] == before[0] else (when - before[0]) / (after[0] - before[0])
        return ({i: before[1][i] + f * (after[1][i] - before[1][i]) for i in before[1]},
                before[2] + f * (after[2] - before[2]))


def run(bench: Bench) -> Section:
    requests = 2000 // (4 if bench.quick else 1)
    names = sorted({c.name.lower() for c in bench.real_crates})
    urls = bench.urls_file("workers-index", [(index_url(n), len(bench.registry.index_files[n])) for n in names])
    section = Section("workers", f"11. Workers: cache-hit throughput with {' and '.join(map(str, COUNTS))} workers "
                      "sharing one port (SO_REUSEPORT) on this 2-core machine", _method(bench, requests, len(names)))
    cache = bench.fresh_dir("caches", "workers")
    filler = bench.addon("workers-fill", cache).start()  # the same proxies.yaml settings as bench.addon's
    try:
        bench.prime(filler, urls)
    finally:
        bench.stop(filler)
    config = write_proxies(bench.work / "config" / "workers.yaml", [bench.nginx_upstream()], cache,
                           size_limit="50GB", index_ttl=10 * 24 * 3600)
    cores = len(os.sched_getaffinity(0))
    spread: dict[str, list[float]] = {}
    for rep in range(bench.repeat):
        for count in COUNTS[rep % len(COUNTS):] + COUNTS[:rep % len(COUNTS)]:
            workers = Workers(bench, f"workers-{count}", count, config).start()
            try:
                for _, http1 in PROTOCOLS:  # untimed: each worker's memory tier and code paths
                    loadgen.run(workers.url, workers.ca_cert, urls, CLIENTS, requests // 2, bench.work / "load.json",
                                http1=http1)
                for protocol, http1 in PROTOCOLS:
                    _measure(section, bench, workers, urls, requests, protocol, http1, spread)
            finally:
                workers.stop()
    _report(section, cores, spread)
    return section


def _measure(section: Section, bench: Bench, workers: Workers, urls: Path, requests: int, protocol: str, http1: bool,
             spread: dict[str, list[float]]) -> None:
    config = f"{protocol}, {workers.count} worker{'s' if workers.count > 1 else ''}"
    asked0 = workers.requests()
    with CpuPoller(workers.pids) as poller:
        result = loadgen.run(workers.url, workers.ca_cert, urls, CLIENTS, requests, bench.work / "load.json",
                             http1=http1)
    asked = {i: n - asked0[i] for i, n in workers.requests().items()}
    if result["errors"]:
        bench.problems[f"load generator ({config}): {result['errors']}"] += 1
    if abs(sum(asked.values()) - result["requests"] - CLIENTS) > CLIENTS // 4:  # and each client's first request
        raise RuntimeError(f"{config}: the workers' status pages count {asked}, the load generator sent "
                           f"{result['requests']} + {CLIENTS}")
    # Over the timed phase only (the load generator's start-up, TLS handshakes and first requests are left out):
    (cpu0, busy0), (cpu1, busy1) = poller.at(result["wall_began"]), poller.at(result["wall_ended"])
    seconds = result["wall_ended"] - result["wall_began"]
    cpu = {i: cpu1[i] - cpu0[i] for i in cpu0}
    timed = {i: n * result["requests"] / max(1, sum(asked.values())) for i, n in asked.items()}  # each one's share
    fig = section.figure
    fig(config, "throughput", "req/s").samples.append(result["rps"])
    fig(config, "p50 latency", "ms").samples.append(result["p50_ms"])
    fig(config, "p99 latency", "ms").samples.append(result["p99_ms"])
    fig(config, "CPU per 1000 requests, all workers", "s").samples.append(sum(cpu.values()) * 1000 / result["requests"])
    for i in sorted(cpu):
        fig(config, f"worker {i}: CPU per 1000 requests", "s").samples.append(cpu[i] * 1000 / max(1, timed[i]))
        fig(config, f"worker {i}: cores used", "cores").samples.append(cpu[i] / seconds)
        fig(config, f"worker {i}: share of requests", "%").samples.append(100 * asked[i] / max(1, sum(asked.values())))
    fig(config, "load generator CPU per 1000 requests", "s").samples.append(result["cpu_s"] * 1000 / result["requests"])
    fig(config, "machine busy", "cores").samples.append((busy1 - busy0) / seconds)
    spread.setdefault(config, []).append(max(asked.values()) / max(1, min(asked.values())))


def _report(section: Section, cores: int, spread: dict[str, list[float]]) -> None:
    fig = section.figure

    def label(protocol: str, n: int) -> str:
        return f"{protocol}, {n} worker{'s' if n > 1 else ''}"

    for protocol, _ in PROTOCOLS:
        section.checks.append(Check(f"{protocol}: throughput, 2 workers vs 1", fig(label(protocol, 2), "throughput",
                                    "req/s"), fig(label(protocol, 1), "throughput", "req/s"), None,
                                    higher_is_better=True))
    for protocol, _ in PROTOCOLS:
        one, two = label(protocol, 1), label(protocol, 2)
        worker = {c: fig(c, "CPU per 1000 requests, all workers", "s").median for c in (one, two)}
        load = {c: fig(c, "load generator CPU per 1000 requests", "s").median for c in (one, two)}
        rps = {c: fig(c, "throughput", "req/s").median for c in (one, two)}
        busy = {c: fig(c, "machine busy", "cores").median for c in (one, two)}
        used = fig(one, "worker 0: cores used", "cores").median
        accounted = rps[two] * (worker[two] + load[two]) / 1000
        low, high = sorted((1000 / worker[one], 1000 / worker[two]))
        section.notes.append(
            f"{protocol}: one worker alone used {used:.2f} of a core and {worker[one]:.2f} s of CPU per 1000 hits "
            f"({rps[one]:.0f} req/s; the load generator {load[one]:.2f} s per 1000, the machine {busy[one]:.2f} of "
            f"{cores} cores busy). Two workers: {worker[two]:.2f} s per 1000 hits each, {rps[two]:.0f} req/s "
            f"({rps[two] / rps[one]:.2f}×), the machine {busy[two]:.2f} cores busy, of which workers and load generator "
            f"account for {rps[two]:.0f} × ({worker[two]:.2f} + {load[two]:.2f}) / 1000 = {accounted:.2f}: the load "
            f"generator needs {load[two] / (worker[two] + load[two]):.0%} of the CPU per request, so on 2 cores it "
            "leaves the workers well short of 2. The connections spread over the workers as the kernel hashes them "
            f"(the busier worker got up to {max(spread.get(two, [1.0])):.2f}× the requests of the other). On a "
            f"bigger host, with a core per worker and the clients elsewhere, a worker serves 1000 / {worker[one]:.2f} "
            f"to 1000 / {worker[two]:.2f} = {low:.0f}–{high:.0f} hits/s at this core's speed (the measured CPU per "
            f"request, alone and as one of two), so N workers give ≈ N × {low:.0f}–{high:.0f} req/s (8 workers: "
            f"≈ {8 * low:.0f}–{8 * high:.0f} req/s), as long as nothing they share becomes the bottleneck (the cache "
            "folder's SQLite: each miss, and each worker's recency write-back every 5 s; a hit from memory writes "
            "nothing).")
