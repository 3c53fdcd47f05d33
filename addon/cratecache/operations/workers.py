"""`make run`: N mitmdump workers sharing one listening port (Linux SO_REUSEPORT) and one cache.

    python -m cratecache.operations.workers --workers N --port 8080 [--status-port 8081] -- MITMDUMP ARGS...

MITMDUMP ARGS win over the launcher's own: `--listen-port`/`-p` or `--set listen_port=` over `--port`,
`--set cargo_status_port=` over `--status-port`, and a single-valued option given twice is passed once, with
its last value (mitmproxy would otherwise drop every option of the addon; cmdline.py). The launcher refuses to
start (exit 1, one line) when the proxy port or a status port is already taken: by a program, or by another
launch's workers, which would otherwise share the port with these (SO_REUSEPORT) and split the traffic between
two configurations and caches. `--workers 1` runs mitmdump in this process, without SO_REUSEPORT.

One mitmdump process uses one core. The kernel spreads the connections to the shared port over the workers;
they share the cache folder (diskcache is safe across processes, and leases make concurrent misses fetch once
across workers). mitmproxy binds its port before any addon script runs, so each worker is started through
`python -m cratecache.operations.workers --worker`, which asks asyncio for SO_REUSEPORT on the ports of mitmproxy's
own servers only (the proxy port, and the mirror listener of proxies.yaml's `mirror:`, wherever a reload moves it)
and then runs mitmdump in-process. The mirror's port is checked like the proxy port at launch. Worker i has its own
status page on `--status-port + i` (request counts are summed across workers by `make cache-stats`; Prometheus sums
the workers' /metrics). This supervisor prefixes each worker's log lines with `w{i} |`, starts a new worker when one
dies (at most RESTARTS_PER_MINUTE a minute, then it stops them all, exit 1), passes SIGHUP on to every worker (each
re-reads proxies.yaml; a worker starts with SIGHUP blocked until its handler is in place, so one that comes during its
start is a reload once it runs, see hangup.py), and stops all of them on Ctrl-C or SIGTERM. With JSON logs
(`log_format`/`cargo_log_format: json`) a worker's lines carry "worker": i instead of the prefix and are passed on
as they are, and the supervisor's own lines are JSON too (logs.py).
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import functools
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from . import cmdline, hangup, logs

RESTARTS_PER_MINUTE = 5
STOP_SECONDS = 10
LISTEN_PORT_ENV = "CARGO_CACHE_SHARED_PORT"

logger = logging.getLogger("cratecache.operations.workers")  # its own lines (say); not __main__ under -m


def worker(args: list[str], shared: int | None = None, log_format: str = "text", index: int | None = None) -> int:
    """One worker: mitmdump in this process, its proxy port `shared` opened with SO_REUSEPORT (None: alone), its
    lines in `log_format` from mitmproxy's first one on (worker `index`, when one of several)."""
    hangup.hold()  # first: a SIGHUP while mitmproxy starts is a reload for later (the launcher started us with it blocked)
    if log_format == "json":
        _json_from_the_start(index)
    if shared is not None:
        original = asyncio.start_server

        @functools.wraps(original)
        async def start_server(client_connected_cb, host=None, port=None, **kwargs):
            if port == shared or (port and is_mode_server(client_connected_cb)):
                kwargs["reuse_port"] = True
            return await original(client_connected_cb, host, port, **kwargs)

        asyncio.start_server = start_server  # mitmproxy's mode servers call asyncio.start_server
    from mitmproxy.tools.main import mitmdump

    return mitmdump(args) or 0


def _json_from_the_start(index: int | None) -> None:
    """mitmdump logs its first line (`Loading script …`) before any addon is loaded: its terminal handler is given
    the JSON formatter as soon as it exists, when mitmdump's master is made."""
    from mitmproxy.tools import dump

    plain = dump.DumpMaster

    class DumpMaster(plain):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            logs.use("json", index)

    dump.DumpMaster = DumpMaster  # what mitmproxy.tools.main.mitmdump makes


def launch_settings(args: list[str]):
    """proxies.yaml as the workers will read it (the file `--set cargo_proxies=` names, else the one config discovery
    finds), or None when there is none or it is invalid: the workers then say why."""
    from .configuration import default_proxies
    from .reload import read

    path = cmdline.value(args, "cargo_proxies") or default_proxies()
    return read(path).settings if path else None


def launch_format(args: list[str]) -> str:
    """The log format the workers will use: `--set cargo_log_format=` in their arguments, else proxies.yaml's
    `log_format` (text when the file cannot be read)."""
    if given := cmdline.value(args, "cargo_log_format") or "":
        return given
    settings = launch_settings(args)
    return logs.chosen(given, settings.log_format if settings is not None else "text")


def relayed(line: str, index: int, log_format: str) -> str:
    """Worker `index`'s output line as the supervisor writes it: prefixed in text; in JSON passed on as it is (it
    names its worker), or, when the worker wrote something else (a crash's traceback), made a JSON line."""
    if log_format != "json":
        return f"w{index} | {line}"
    if line.startswith("{") and line.rstrip().endswith("}"):
        return line if line.endswith("\n") else line + "\n"
    record = logging.makeLogRecord({"name": "worker.output", "msg": line.rstrip("\n"), "levelno": logging.ERROR,
                                    "levelname": "ERROR"})
    return logs.JsonFormatter(index).format(record) + "\n"


def is_mode_server(callback) -> bool:
    """Whether asyncio is asked to listen for one of mitmproxy's proxy modes (the proxy port, the mirror listener,
    whichever port a reload gives it): those ports are every worker's; the status page and the blob server are not."""
    owner = getattr(callback, "__self__", None)
    return type(owner).__module__ == "mitmproxy.proxy.mode_servers"


class Supervisor:
    def __init__(self, count: int, port: int, status_port: int, args: list[str], log_format: str = "text"):
        self.count, self.port, self.status_port, self.args = count, port, status_port, args
        self.log_format = log_format
        self.procs: dict[int, subprocess.Popen] = {}
        self.restarts: list[float] = []
        self.stopping = False
        self.lock = threading.Lock()

    def command(self, index: int) -> list[str]:
        """Worker `index`'s command: `args` (which set neither port; see main) and its two ports, each once."""
        return [sys.executable, "-m", "cratecache.operations.workers", "--worker", "--",
                *worker_args(self.args, self.port, self.status_port + index if self.status_port else 0)]

    def start(self, index: int) -> None:
        env = os.environ | {LISTEN_PORT_ENV: str(self.port), "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
                            logs.WORKER_ENV: str(index)}
        with hangup.blocked():  # it starts with SIGHUP blocked, until its handler is in place (worker())
            proc = subprocess.Popen(self.command(index), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, bufsize=1, errors="replace")
        self.procs[index] = proc
        say(f"worker {index} started (pid {proc.pid}, status page port "
            f"{self.status_port + index if self.status_port else 'off'})")
        threading.Thread(target=self._relay, args=(index, proc), daemon=True).start()

    def _relay(self, index: int, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            out = relayed(line, index, self.log_format)
            with self.lock:
                sys.stdout.write(out)
                sys.stdout.flush()

    def run(self) -> int:
        for sig in (signal.SIGINT, signal.SIGTERM):  # first: a signal during start is not the default action
            signal.signal(sig, lambda *_: self.stop())
        signal.signal(signal.SIGHUP, lambda *_: self.forward(signal.SIGHUP))  # reload: every worker re-reads
        for index in range(self.count):
            self.start(index)
        while not self.stopping:
            time.sleep(0.2)
            for index, proc in list(self.procs.items()):
                if proc.poll() is None or self.stopping:
                    continue
                now = time.monotonic()
                self.restarts = [t for t in self.restarts if now - t < 60] + [now]
                how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"status {proc.returncode}"
                if len(self.restarts) > RESTARTS_PER_MINUTE:
                    say(f"worker {index} (pid {proc.pid}) exited ({how}); more than {RESTARTS_PER_MINUTE} restarts "
                        "in a minute: stopping all workers", logging.ERROR)
                    self.stop()
                    return 1
                say(f"worker {index} (pid {proc.pid}) exited ({how}); starting a new one", logging.WARNING)
                self.start(index)
        return 0

    def forward(self, sig: int) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(sig)

    def stop(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        say(f"stopping {len(self.procs)} workers")
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def say(text: str, level: int = logging.INFO) -> None:
    if not logger.handlers:
        say_in("text")
    logger.log(level, text)


def say_in(log_format: str) -> None:
    """The supervisor's own lines on stdout: `cargo-cache workers: …`, or JSON objects."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logs.JsonFormatter() if log_format == "json" else
                         logging.Formatter("cargo-cache workers: %(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False  # one worker runs mitmdump in this process: its handler on the root logger


def worker_args(args: list[str], port: int, status_port: int) -> list[str]:
    return cmdline.merge(["--listen-port", str(port), "--set", f"cargo_status_port={status_port}"], args)


def taken(host: str, port: int) -> str | None:
    """Why `port` on `host` cannot be ours (something listens there), or None. Bound without SO_REUSEPORT, as
    no worker of another launch could be joined; like asyncio's servers, with SO_REUSEADDR (a closed connection
    in TIME_WAIT does not count)."""
    try:
        addresses = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError:
        return None  # mitmproxy will say what is wrong with the address
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    return f"{host or '*'}:{port} is already in use"
    return None


def mirror_listen(args: list[str]) -> tuple[str, int] | None:
    """Where proxies.yaml's mirror listener will listen, or None (none, or a file the workers will report on)."""
    settings = launch_settings(args)
    mirror = settings.mirror if settings is not None else None
    return (mirror.listen_host, mirror.listen_port) if mirror is not None else None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        args = argv[2:] if argv[1:2] == ["--"] else argv[1:]
        return worker(args, int(os.environ[LISTEN_PORT_ENV]), launch_format(args), logs.worker_index(os.environ))
    hangup.hold()
    parser = argparse.ArgumentParser(prog="cratecache.operations.workers", description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--status-port", type=int, default=8081, help="worker i's status page: this + i (0: none)")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="-- then mitmdump's arguments")
    opts = parser.parse_args(argv)
    if opts.workers < 1:
        parser.error("--workers must be at least 1")
    args = cmdline.merge([], opts.args[1:] if opts.args[:1] == ["--"] else opts.args)  # each option once, the last
    log_format = launch_format(args)
    say_in(log_format)
    status = cmdline.value(args, "cargo_status_port")
    try:  # what mitmdump's arguments say wins
        port, status_port = int(cmdline.value(args, "listen_port") or opts.port), int(status or opts.status_port)
    except ValueError:
        parser.error("the listen port and cargo_status_port must be numbers")
    args = cmdline.without(cmdline.without(args, "listen_port"), "cargo_status_port")
    host, status_host = cmdline.value(args, "listen_host") or "", cmdline.value(args, "cargo_status_host") or "127.0.0.1"
    busy = [taken(host, port)] + [taken(status_host, status_port + i) for i in range(opts.workers) if status_port]
    if (mirror := mirror_listen(args)) is not None:
        busy.append(taken(*mirror))
    if problem := next((b for b in busy if b), None):
        say(f"not starting: {problem} (another cargo-cache, or another program; choose another PORT or "
            "STATUS_PORT, or stop it)", logging.ERROR)
        return 1
    if opts.workers == 1:  # one plain mitmdump, in this process: nothing to supervise
        say(f"worker 0 started (pid {os.getpid()}, status page port {status_port or 'off'}; in this process)")
        return worker(worker_args(args, port, status_port), log_format=log_format)
    if sys.platform != "linux":
        say("SO_REUSEPORT spreads connections only on Linux; elsewhere run one worker per port")
    return Supervisor(opts.workers, port, status_port, args, log_format).run()


if __name__ == "__main__":
    sys.exit(main())
