"""Sampling profiles of a running mitmdump with py-spy, boiled down to tables.

`Spy` records raw (collapsed) stacks of the thread holding the GIL (`--gil`): mitmdump is bound by
the GIL, so the samples add up to its CPU time (the report compares the two). Without `--gil`, py-spy
also counts threads of the pool waiting for work or for SQLite's lock, which are not CPU. `Profile` classifies each sample by the frame nearest the leaf that belongs to a known
group (our addon, diskcache/SQLite, logging, HTTP/2, TLS, mitmproxy, asyncio/threads), and measures
how many samples pass through a few named functions (inclusive).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .procs import stop, track

RATE = 250  # samples per second

GROUPS = [  # (group, substrings of a frame's "(file)" part); the first frame from the leaf that matches decides
    ("cargo-cache's own code", ("(cratecache/",)),
    ("diskcache / SQLite (cache reads)", ("(diskcache/", "(sqlite3/")),
    ("logging (log lines to the terminal/file)", ("(logging/", "(mitmproxy/addons/termlog", "(mitmproxy/log.py")),
    ("HTTP/2 framing (h2, hpack, hyperframe)", ("(h2/", "(hpack/", "(hyperframe/")),
    ("TLS (pyOpenSSL, cryptography, ssl)", ("(OpenSSL/", "(cryptography/", "(ssl.py")),
    ("httpx / httpcore (the addon's upstream client)", ("(httpx/", "(httpcore/", "(anyio/", "(h11/", "(sniffio/")),
    ("HTTP/1 to nginx (mitmproxy's client side)", ("(mitmproxy/net/http/http1",)),
    ("mitmproxy: proxy layers, flows, hooks", ("(mitmproxy/",)),
    ("asyncio event loop, thread hand-offs", ("(asyncio/", "(concurrent/", "(threading.py", "(selectors.py",
                                                "(queue.py")),
]
FUNCTIONS = [  # inclusive: samples with this function anywhere on the stack
    ("CargoCache.request (the addon's request hook, all of it)", "CargoCache.request (cratecache/boundary/addon.py)"),
    ("LocalStore.get (in the worker thread)", "LocalStore.get (cratecache/storage/local.py)"),
    ("LocalStore.put (in the worker thread)", "LocalStore.put (cratecache/storage/local.py)"),
    ("UpstreamClient.get (httpx request to the upstream)", "UpstreamClient.get (cratecache/upstreams/client.py)"),
    ("asyncio.to_thread (hand-off on the event loop)", "to_thread (asyncio/threads.py)"),
    ("_log_reply (the per-request log line)", "_log_reply (cratecache/boundary/addon.py)"),
    ("Activity.request (status page, metrics)", "Activity.request (cratecache/operations/activity.py)"),
    ("entry_reply (headers, ETag)", "entry_reply (cratecache/boundary/handler.py)"),
    ("classify (routing)", "classify (cratecache/boundary/routes.py)"),
    ("Response.make", "Response.make (mitmproxy/http.py)"),
    ("mitmproxy's HTTP/1 server connection (to nginx)", "(mitmproxy/proxy/layers/http/_http1.py)"),
    ("httpcore's debug log records (Trace.atrace; only the `httpx` logger is set to WARNING)",
     "Trace.atrace (httpcore/_trace.py)"),
    ("httpcore's current_async_library (tries `import sniffio` on every call; sniffio is not installed)",
     "current_async_library (httpcore/_synchronization.py)"),
]


def py_spy() -> str | None:
    return shutil.which("py-spy") or next((str(p) for p in [Path(sys.executable).parent / "py-spy"] if p.exists()),
                                          None)


class Spy:
    """`py-spy record` on a pid until `stop()` (SIGINT makes it write its file)."""

    def __init__(self, pid: int, out: Path, gil: bool = True):
        """`gil=False`: every thread that is running (not waiting), e.g. worker threads inside SQLite too."""
        self.out = out
        binary = py_spy()
        if binary is None:
            raise RuntimeError("py-spy is not installed (bench/requirements.txt)")
        out.unlink(missing_ok=True)
        self.process = track(subprocess.Popen(
            [binary, "record", "--pid", str(pid), "--format", "raw", "--output", str(out), "--rate", str(RATE),
             "--nolineno", "--threads", *(["--gil"] if gil else [])], stdout=subprocess.PIPE, stderr=subprocess.STDOUT))

    def stop(self) -> Profile:
        self.process.send_signal(signal.SIGINT)
        try:
            output, _ = self.process.communicate(timeout=60)
        finally:
            stop(self.process)
        if not self.out.exists():
            raise RuntimeError(f"py-spy wrote no profile: {output.decode(errors='replace')[-2000:]}")
        return Profile.parse(self.out.read_text())


@dataclass
class Profile:
    stacks: Counter = field(default_factory=Counter)  # tuple of frames (root first) -> samples

    @classmethod
    def parse(cls, text: str) -> Profile:
        stacks: Counter = Counter()
        for line in text.splitlines():
            stack, _, count = line.rpartition(" ")
            if stack and count.isdigit():
                stacks[tuple(stack.split(";")[1:])] += int(count)  # drop the "thread (tid): name" root
        return cls(stacks)

    def __add__(self, other: Profile) -> Profile:
        return Profile(self.stacks + other.stacks)

    @property
    def total(self) -> int:
        return sum(self.stacks.values())

    def groups(self) -> Counter:
        out: Counter = Counter()
        for stack, n in self.stacks.items():
            out[next((g for frame in reversed(stack) for g, keys in GROUPS if any(k in frame for k in keys)),
                     "other")] += n
        return out

    def inclusive(self, needle: str) -> int:
        return sum(n for stack, n in self.stacks.items() if any(needle in frame for frame in stack))

    def leaves(self) -> Counter:
        out: Counter = Counter()
        for stack, n in self.stacks.items():
            if stack:
                out[stack[-1]] += n
        return out


def ms_per_request(samples: int, requests: int) -> float:
    return samples / RATE / max(1, requests) * 1000


def tables(columns: list[tuple[str, Profile, int]], unit: str, functions: list[tuple[str, str]] = FUNCTIONS) -> str:
    """Markdown: CPU per `unit` by group for each column, then the first column's functions and hottest leaves."""
    def cell(p: Profile, samples: int, requests: int) -> str:
        if not p.total:
            return "–"
        return f"{ms_per_request(samples, requests):.3f} ms ({samples / p.total:.0%})"

    out = ["| where the CPU time goes (frame nearest the leaf) | "
           + " | ".join(f"{label}, per {unit}" for label, _, _ in columns) + " |",
           "| --- |" + " --- |" * len(columns)]
    grouped = [(p.groups(), p, n) for _, p, n in columns]
    for group in [g for g, _ in GROUPS] + ["other"]:
        out.append(f"| {group} | " + " | ".join(cell(p, g[group], n) for g, p, n in grouped) + " |")
    out.append("| **total sampled** | " + " | ".join(cell(p, p.total, n) for _, p, n in grouped) + " |")
    label, first, requests = columns[0]
    out += ["", f"| function (inclusive: anything it calls) | {label}, per {unit} |", "| --- | --- |"]
    for name, needle in functions:
        out.append(f"| {name} | {cell(first, first.inclusive(needle), requests)} |")
    out += ["", f"| hottest leaf frames, {label} (self time) | per {unit} |", "| --- | --- |"]
    for frame, n in first.leaves().most_common(12):
        out.append(f"| `{frame}` | {cell(first, n, requests)} |")
    return "\n".join(out)
