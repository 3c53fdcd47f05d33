"""cargo-cache's command line: running the proxy, its CA, staging, export/import, cache inspection and the
mirror's tokens.

    cargo-cache [--config FILE] COMMAND ...        (from a checkout: python -m cratecache, PYTHONPATH=addon)

Every command reads the same proxies.yaml as the proxy (its cache folder, CA folder and upstreams); without
--config (or its older name --proxies): the one config/discovery.py finds. All but `run` may run while the
proxy is serving. Exit status: 0 on success, 1 if anything failed, 2 on a usage or configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from .airgap.bundle import BundleError, export_bundle, import_bundle
from .boundary import tokens
from .config import ConfigError, Settings, load_settings
from .config.discovery import ConfigNotFound, find_config, from_env
from .operations import ca, catalog, launch, verify
from .operations.exiting import leave
from .protocols import dist
from .protocols.lockfile import find_lockfiles, plan, read_lockfile
from .protocols.routes import ConfigRoute, CrateRoute, IndexRoute
from .storage import Storage, StorageUnavailable, open_storage

if TYPE_CHECKING:
    from .airgap.staging import ToolchainPlan
# staging, auditing and the resolver (the upstream clients: aiohttp, httpx) are imported by the commands that use
# them: `ls` and `stats` start in about half the time without them (`ls --json`'s first line: issue 33)

COMMAND_MEMORY_BYTES = 8 * 1024 * 1024  # a command's in-memory tier: `ls` reads every index file once (issue 33)


def entry() -> None:
    """The `cargo-cache` command (pyproject.toml's console script) and `python -m cratecache`."""
    leave(main())


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "addon-path":
        print(launch.addon_path())
        return 0
    try:
        settings = load_settings(args.proxies or find_config(os.environ, Path.cwd()))
    except ConfigNotFound as e:
        print(f"cargo-cache: {e} (give one with --config FILE)", file=sys.stderr)
        return 2
    except ConfigError as e:
        print(f"cargo-cache: invalid configuration: {e}", file=sys.stderr)
        return 2
    if args.command in ("run", "ca"):  # no store opened here (the proxy's workers open it); mitmdump logs its own way
        return args.run(args, settings)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    if getattr(args, "local", None) is not None:  # a command that needs no cache
        return args.local(args, settings)
    try:
        return asyncio.run(_run(args, settings))
    except StorageUnavailable as e:
        print(f"cargo-cache: the cache's storage is unavailable: {e}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError) as e:
        print(f"cargo-cache: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `make cache-ls | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


async def _run(args, settings: Settings) -> int:
    store = open_storage(settings.cache, memory_bytes=COMMAND_MEMORY_BYTES, lean=True)
    try:
        status = await args.run(args, settings, store)
        await store.flush()  # what a shared store could not take yet: uploaded now, or an error
        return status
    finally:
        await store.close()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cargo-cache", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    proxies_help = ("proxies.yaml (default: $CARGO_CACHE_CONFIG, then ./proxies.yaml, then "
                    "/etc/cargo-cache/proxies.yaml); --proxies is its older name")
    p.add_argument("--config", "--proxies", dest="proxies", metavar="FILE", default=from_env(os.environ),
                   help=proxies_help)
    # Also after the command (`ls --config FILE`); SUPPRESS: not given there, the one before it (or the default) stays.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", "--proxies", dest="proxies", metavar="FILE", default=argparse.SUPPRESS,
                        help=proxies_help)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    command = functools.partial(sub.add_parser, parents=[common])

    r = command("run", help="start the proxy (what `make run` runs)",
                description="Create the CA if absent, then start WORKERS mitmdump workers sharing PORT and the cache "
                            "(operations/workers.py), with the addon and proxies.yaml; the CA's folder is ca.directory "
                            "of proxies.yaml. Arguments after -- go to mitmdump and win over these.")
    r.add_argument("--host", default=launch.DEFAULT_HOST, help=f"listen address (default {launch.DEFAULT_HOST})")
    r.add_argument("--port", type=int, default=launch.DEFAULT_PORT, help=f"listen port (default {launch.DEFAULT_PORT})")
    r.add_argument("--workers", type=int, default=launch.default_workers(),
                   help="mitmdump workers sharing the port (default: the number of cores; 1: one plain mitmdump)")
    r.add_argument("--status-port", type=int, default=launch.DEFAULT_STATUS_PORT,
                   help=f"status page port, worker i's: this + i (default {launch.DEFAULT_STATUS_PORT}; 0: none)")
    r.add_argument("mitmdump", nargs=argparse.REMAINDER, metavar="-- MITMDUMP ARGS",
                   help="mitmdump's own arguments (--set proxyauth=..., -v)")
    r.set_defaults(run=cmd_run)

    c = command("ca", help="create the CA (if absent) and Cargo's CA bundle; print the files for clients",
                description="Create the proxy's CA in ca.directory of proxies.yaml unless it exists, write "
                            "cargo-ca-bundle.pem (the CA + the system's CAs) beside it, and print which file "
                            "clients need (CARGO_HTTP_CAINFO, SSL_CERT_FILE) and which stays on this host.")
    c.set_defaults(run=cmd_ca)

    command("addon-path", help="print the addon file for `mitmdump -s`",
            description="Print the path of the installed addon file, so that "
                        "`mitmdump -s \"$(cargo-cache addon-path)\"` loads it.")

    s = command("stage", help="fetch everything lockfiles need into the cache",
                       description="Fetch config.json, every index file and every registry .crate that the "
                                   "lockfiles name, through the proxy's resolution path (priority order, auth, "
                                   "timeouts, checksum verification). Already cached objects are skipped; git "
                                   "and path packages are listed as skipped. Exits 1 if anything failed.")
    s.add_argument("lockfiles", nargs="*", metavar="LOCKFILE", help="a Cargo.lock, or a folder searched for them")
    s.add_argument("--concurrency", type=int, default=8, help="parallel downloads (default 8)")
    s.add_argument("--toolchain", action="append", default=[], metavar="NAME",
                   help="a Rust toolchain as rustup names it (stable, 1.95.0, 1.95, nightly-2026-11-30); repeatable")
    s.add_argument("--toolchain-file", action="append", default=[], metavar="FILE",
                   help="a project's rust-toolchain.toml (its channel, profile, components and targets); repeatable")
    s.add_argument("--target", action="append", default=[], metavar="TRIPLE",
                   help="a platform to stage toolchains for: a host such as x86_64-unknown-linux-gnu gets the whole "
                        "toolchain, another target (wasm32-unknown-unknown) its rust-std (default: this machine's host)")
    s.add_argument("--profile", choices=dist.PROFILES, help="rustup profile for --toolchain (default minimal)")
    s.add_argument("--component", action="append", default=[], metavar="NAME",
                   help="an extra component for every toolchain (clippy, rust-src, …); repeatable")
    s.set_defaults(run=cmd_stage)

    e = command("export", help="write the cache (or a lockfile's subset) to one bundle file",
                       description="Write cached config.json, index files and crates to BUNDLE (a tar with a "
                                   "manifest of names, versions, SHA-256 and sizes). With --lockfile, only what "
                                   "those lockfiles need; it fails if any of that is not cached (stage first).")
    e.add_argument("bundle", type=Path, metavar="BUNDLE")
    e.add_argument("--lockfile", action="append", default=[], metavar="LOCKFILE",
                   help="export only what this Cargo.lock (or folder of them) needs; repeatable")
    e.set_defaults(run=cmd_export)

    i = command("import", help="verify a bundle and load it into the cache",
                       description="Verify every checksum in BUNDLE, then load it into the configured cache. "
                                   "A corrupted or truncated bundle is rejected and nothing is imported. "
                                   "Importing the same bundle twice is harmless.")
    i.add_argument("bundle", type=Path, metavar="BUNDLE")
    i.set_defaults(run=cmd_import)

    ls = command("ls", help="list cached crates and index files",
                        description="List cached entries: kind, registry, name, version, size, upstream, age.")
    ls.add_argument("--kind", choices=catalog.KINDS, action="append", help="only this kind; repeatable")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    ls.set_defaults(run=cmd_ls)

    st = command("stats", help="totals and hit/miss counts",
                        description="Entries and bytes by kind, disk usage, requests served by kind and "
                                    "cache state (hit, miss, revalidated, updated, stale, not_found, error), and "
                                    "any damaged cache database that was set aside (when, where, why).")
    st.add_argument("--json", action="store_true")
    st.set_defaults(run=cmd_stats)

    au = command("audit", help="list the locked crates the policy would hide or deny",
                        description="Decide on every registry package of the lockfiles as the proxy would serve it "
                                    "now (its index file from the cache or fetched as the proxy would; the kept "
                                    "publish times, advisories and rules of proxies.yaml's policy). Lists each one "
                                    "the policy would deny, hide or warn about, with the reason; exits 1 if any "
                                    "would be denied (Cargo could not download it through the proxy).")
    au.add_argument("lockfiles", nargs="+", metavar="LOCKFILE", help="a Cargo.lock, or a folder searched for them")
    au.set_defaults(run=cmd_audit)

    ve = command("verify", help="re-hash every cached entry; --repair evicts the bad ones",
                        description="Re-hash every cached entry (streamed, a piece at a time) against the digest "
                                    "stored with it; crates also against the cksum of their version in the cached "
                                    "index file, toolchain components against the hash their manifest gives. With "
                                    "the s3 backend, the bucket's objects and this host's local tier. One line per "
                                    "bad entry, then a summary; exits 1 if anything is wrong. Safe while the proxy "
                                    "serves.")
    ve.add_argument("--repair", action="store_true",
                    help="evict each bad entry (and its bad bytes), so that the next request fetches it again")
    ve.set_defaults(run=cmd_verify)

    pu = command("purge", help="remove entries by crate name, by age, or all",
                        description="Remove cached entries. --crate NAME removes its index file and every "
                                    "version (the name matched as Cargo does: case and '-'/'_' do not matter; "
                                    "exit 1 if nothing is cached for it); --older-than AGE removes entries stored "
                                    "longer ago (30d, 12h, 90m); "
                                    "--all empties the cache.")
    group = pu.add_mutually_exclusive_group(required=True)
    group.add_argument("--crate", metavar="NAME")
    group.add_argument("--toolchain", metavar="NAME", help="a toolchain (stable, 1.94.0, nightly-2026-11-30): its "
                       "manifest, the names staging gave it, and its components no other cached toolchain uses")
    group.add_argument("--older-than", metavar="AGE", type=_age_argument)
    group.add_argument("--all", action="store_true")
    pu.set_defaults(run=cmd_purge)

    tk = command("token", help="the mirror's per-user tokens (mirror.tokens_file)",
                        description="Tokens for the mirror listener with auth: tokens. The tokens file holds one "
                                    "NAME:sha256:<hex> a line (hashes, never the tokens); the proxy re-reads it "
                                    "within a second of a change. Remove a line to revoke that token.")
    token_commands = tk.add_subparsers(dest="token_command", required=True, metavar="SUBCOMMAND")
    add = token_commands.add_parser("add", parents=[common], help="make a new token for NAME",
                                    description="Print a new random token for NAME (once: only its hash is kept) and "
                                                "append its line to mirror.tokens_file (created, mode 600, if missing). "
                                                "NAME is who the log lines and /metrics will name.")
    add.add_argument("name", metavar="NAME")
    add.set_defaults(local=cmd_token_add)
    return p


def cmd_run(args, settings: Settings) -> int:
    from .operations import workers

    extra = args.mitmdump[1:] if args.mitmdump[:1] == ["--"] else args.mitmdump
    confdir = launch.confdir_of(settings.ca_directory, extra)
    if (files := _create_ca(confdir)) is None:
        return 1
    print("\n".join(files.lines()[:2]), flush=True)
    # Each log line out as written, to the journal or a file too (mitmproxy's terminal log does not flush): this
    # process's when it runs the one worker, the workers' (their pipes to the launcher) through the environment.
    sys.stdout.reconfigure(line_buffering=True)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    mitmdump = launch.mitmdump_args(Path(settings.source).resolve(), confdir, args.host, extra)
    return workers.main(launch.launcher_args(args.workers, args.port, args.status_port, mitmdump))


def cmd_ca(args, settings: Settings) -> int:
    if (files := _create_ca(settings.ca_directory)) is None:
        return 1
    print("\n".join(files.lines()))
    print(f"clients: CARGO_HTTP_CAINFO={files.bundle} (rustup on Linux: SSL_CERT_FILE={files.bundle}); or add "
          f"{files.cert} to their system store")
    return 0


def _create_ca(confdir: Path) -> ca.Files | None:
    try:
        return ca.create(confdir)
    except OSError as e:  # a read-only /etc under systemd's ProtectSystem=strict, a folder of another user
        print(f"cargo-cache: cannot create the CA in {confdir}: {e.strerror or e} (ca.directory in proxies.yaml "
              "names the folder; it must be writable)", file=sys.stderr)
        return None


def cmd_token_add(args, settings: Settings) -> int:
    mirror = settings.mirror
    if mirror is None or mirror.tokens_file is None:
        print(f"cargo-cache: {settings.source} has no mirror.tokens_file (mirror: with auth: tokens)", file=sys.stderr)
        return 2
    if problem := tokens.name_problem(args.name):
        print(f"cargo-cache: {problem}", file=sys.stderr)
        return 2
    token = tokens.new_token()
    line = tokens.token_line(args.name, token) + "\n"
    fd = os.open(mirror.tokens_file, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        if (size := os.fstat(fd).st_size) and os.pread(fd, 1, size - 1) != b"\n":
            line = "\n" + line  # the file's last line had no newline
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    print(token)
    print(f"cargo-cache: token for {args.name} added to {mirror.tokens_file}; it is shown only now. Give it to "
          f"{args.name} for `cargo login --registry <name>` or CARGO_REGISTRIES_<NAME>_TOKEN.", file=sys.stderr)
    return 0


def _age_argument(text: str) -> float:
    try:
        return catalog.parse_age(text)
    except ValueError as e:  # argparse would print only "invalid parse_age value"
        raise argparse.ArgumentTypeError(str(e)) from None


async def cmd_stage(args, settings: Settings, store: Storage) -> int:
    settings = replace(settings, cache=replace(settings.cache, offline=False))  # staging is the connected side
    toolchains = toolchain_plan(args)
    if not args.lockfiles and toolchains is None:
        raise ValueError("nothing to stage: give lockfiles, --toolchain or --toolchain-file")
    if toolchains is not None and settings.toolchains is None:
        raise ValueError(f"{settings.source} has no toolchains: section, so toolchains are not served")
    failed = 0
    if args.lockfiles:
        failed += await _stage_lockfiles(args, settings, store)
    if toolchains is not None:
        failed += await _stage_toolchains(toolchains, settings, store, args.concurrency)
    return 1 if failed else 0


def toolchain_plan(args) -> ToolchainPlan | None:
    from .airgap.staging import ToolchainPlan

    requests = [dist.ToolchainRequest(name, args.profile or "minimal", tuple(args.component))
                for names in args.toolchain for name in names.split()]
    for name in requests:
        dist.manifest_path(name.channel)  # a ValueError (exit 2) before anything is fetched
    for path in args.toolchain_file:
        found = dist.parse_toolchain_file(Path(path).read_text(encoding="utf-8"))
        requests.append(replace(found, profile=args.profile or found.profile,
                                components=tuple(dict.fromkeys(found.components + tuple(args.component)))))
    if not requests:
        return None
    triples = tuple(dict.fromkeys(t for names in args.target for t in names.split()))
    return ToolchainPlan(tuple(requests), triples, host_triple())


def host_triple() -> str:
    """This machine's rustup host triple (where staging runs, for a site like it)."""
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(platform.machine().lower(), platform.machine().lower())
    system = platform.system()
    if system == "Darwin":
        return f"{machine}-apple-darwin"
    if system == "Windows":
        return f"{machine}-pc-windows-msvc"
    return f"{machine}-unknown-linux-gnu"


async def _stage_toolchains(wanted: ToolchainPlan, settings: Settings, store: Storage, concurrency: int) -> int:
    from .airgap.staging import Progress, stage_toolchains
    from .resolver import Resolver

    names = ", ".join(r.channel for r in wanted.requests)
    print(f"staging toolchains {names} for {', '.join(wanted.triples) or wanted.default_host} into "
          f"{store.health()['target']}")
    resolver = Resolver(settings, store)
    try:
        result = await stage_toolchains(resolver, wanted, Progress(len(wanted.requests)), min(concurrency, 4))
    finally:
        await resolver.aclose()
    for what, reason in result.failed:
        print(f"FAILED {what}: {reason}")
    print(f"toolchains: fetched {result.fetched}, already cached {result.cached}, failed {len(result.failed)}, "
          f"{result.bytes} bytes downloaded")
    return len(result.failed)


async def _stage_lockfiles(args, settings: Settings, store: Storage) -> int:
    from .airgap.staging import Progress, stage
    from .resolver import Resolver

    lockfiles = find_lockfiles(args.lockfiles)
    wanted = plan([pkg for path in lockfiles for pkg in read_lockfile(path)], settings)
    print(f"staging {wanted.count()} crates from {len(lockfiles)} lockfile(s) into {store.health()['target']}")
    for package, reason in sorted(set(wanted.skipped), key=lambda s: (s[0].name, s[0].version)):
        print(f"skipped {package.name} {package.version}: {reason}")
    unservable = sorted(set(wanted.unservable), key=lambda s: (s[0].name, s[0].version))

    resolver = Resolver(settings, store)
    try:
        result = await stage(resolver, wanted, Progress(wanted.count()), args.concurrency)
    finally:
        await resolver.aclose()
    failed = [(f"{p.name} {p.version}", reason) for p, reason in unservable] + list(result.failed)
    for what, reason in failed:
        print(f"FAILED {what}: {reason}")
    print(f"fetched {result.fetched}, already cached {result.cached}, failed {len(failed)}, "
          f"skipped {len(set(wanted.skipped))}, {result.bytes} bytes downloaded")
    return len(failed)


async def cmd_audit(args, settings: Settings, store: Storage) -> int:
    from .policy import audit as policy_audit
    from .resolver import Resolver

    lockfiles = find_lockfiles(args.lockfiles)
    wanted = plan([pkg for path in lockfiles for pkg in read_lockfile(path)], settings)
    resolver = Resolver(settings, store)
    try:
        found = await policy_audit.audit(resolver.policy, {r.name: r for r in settings.registries}, wanted)
    finally:
        await resolver.aclose()
    for line in found.lines:
        print(line)
    for package, reason in sorted(set(wanted.unservable), key=lambda s: (s[0].name, s[0].version)):
        print(f"FAILED {package.name} {package.version}: {reason}")
    failed = found.failed + len(set(wanted.unservable))
    print(f"audited {found.checked} crates from {len(lockfiles)} lockfile(s): {found.denied} denied, "
          f"{found.hidden} hidden, {found.warned} warned, {failed} could not be decided on")
    return 1 if found.denied or failed else 0


async def cmd_export(args, settings: Settings, store: Storage) -> int:
    if args.lockfile:
        keys = lockfile_keys(args.lockfile, settings)
        missing = [k for k in keys if await store.meta(k) is None]
        if missing:
            print(f"cargo-cache: {len(missing)} needed entries are not cached (run stage first): "
                  + ", ".join(missing[:10]) + (" …" if len(missing) > 10 else ""), file=sys.stderr)
            return 1
    else:
        keys = [k for k, _ in await store.entries() if k.split("/")[0] in catalog.KINDS]
    try:
        summary = await export_bundle(store, args.bundle, keys)
    except BundleError as e:
        print(f"cargo-cache: export failed, nothing written: {e}", file=sys.stderr)
        return 1
    for key in summary.skipped:
        print(f"left out {key}: an executable a bundle cannot vouch for")
    print(f"exported {_amounts(summary)} to {args.bundle}")
    return 0


async def cmd_import(args, settings: Settings, store: Storage) -> int:
    try:
        summary = await import_bundle(store, args.bundle, settings)
    except BundleError as e:
        print(f"cargo-cache: import rejected, nothing imported: {e}", file=sys.stderr)
        return 1
    print(f"imported {_amounts(summary)} into {store.health()['target']}: {summary.new} new, "
          f"{summary.present} already present")
    return 0


async def cmd_ls(args, settings: Settings, store: Storage) -> int:
    kinds = tuple(args.kind or catalog.KINDS)
    if args.json:  # streamed: each line as its page is read, the listing never held
        async for row in catalog.iter_rows(store, time.time(), kinds, real_names=True):
            print(json.dumps(row.__dict__))
        return 0
    found = await catalog.rows(store, time.time(), kinds, real_names=True)  # the table's widths need every row
    for line in listing(found):
        print(line)
    return 0


def listing(rows: list[catalog.Row]) -> list[str]:
    """`ls` as a table: each column as wide as its widest cell, sizes in binary units (--json: bytes)."""
    table = [("KIND", "REGISTRY", "NAME", "VERSION", "SIZE", "UPSTREAM", "AGE")]
    table += [(row.kind, row.registry or "-", row.name or "-", row.version or "-", human_size(row.size),
               row.upstream or "-", _age(row.age)) for row in rows]
    widths = [max(len(cells[i]) for cells in table) for i in range(len(table[0]))]
    size = 4  # right-aligned
    return ["  ".join(cell.rjust(w) if i == size else cell.ljust(w) for i, (cell, w) in
                      enumerate(zip(cells, widths, strict=True))).rstrip() for cells in table]


def human_size(size: int) -> str:
    """1536 -> '1.5 KiB'; below 1 KiB in bytes ('512 B')."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


async def cmd_stats(args, settings: Settings, store: Storage) -> int:
    totals = await catalog.totals(store, time.time())
    if args.json:
        print(json.dumps(totals, indent=1))
        return 0
    print(f"cache {store.health()['target']}: {totals['disk_bytes']} bytes on this host's disk "
          f"(limit {settings.cache.size_limit})")
    for kind, t in totals["kinds"].items():
        r = totals["requests"][kind]
        ratio = f"{r['hit_ratio']:.1%}" if r["hit_ratio"] is not None else "-"
        states = ", ".join(f"{k} {n}" for k, n in sorted(r["by_state"].items())) or "none"
        print(f"{kind:<9} {t['entries']:>7} entries {t['bytes']:>12} bytes   requests {r['requests']:>7} "
              f"hit ratio {ratio:>6} ({states})")
    for aside in totals["damaged"]:
        print(f"damaged database set aside at {aside['when']} (UTC) in {aside['folder']}: {aside['reason']} "
              f"({aside['files']} files, {aside['bytes']} bytes; the cache started empty; delete the folder once "
              "it is not needed)")
    return 0


async def cmd_verify(args, settings: Settings, store: Storage) -> int:
    report = await verify.verify(store, verify.Progress(sys.stderr), repair=args.repair)
    for line in verify.summary(report, args.repair):
        print(line)
    return 1 if report.bad else 0


async def cmd_purge(args, settings: Settings, store: Storage) -> int:
    removed = await catalog.purge(store, time.time(), crate=args.crate, older_than=args.older_than, everything=args.all,
                                  toolchain=args.toolchain)
    if args.crate is not None and not removed:
        print(f"cargo-cache: nothing cached for crate {args.crate} (names are matched ignoring case and '-'/'_')",
              file=sys.stderr)
        return 1
    if args.toolchain is not None and not removed:
        print(f"cargo-cache: toolchain {args.toolchain} is not cached", file=sys.stderr)
        return 1
    print(f"removed {len(removed)} entries")
    return 0


def lockfile_keys(paths: list[str], settings: Settings) -> list[str]:
    wanted = plan([pkg for path in find_lockfiles(paths) for pkg in read_lockfile(path)], settings)
    registries = {r.name: r for r in settings.registries}
    keys = []
    for reg_name, crates in wanted.crates.items():
        reg = registries[reg_name]
        keys.append(ConfigRoute(reg).key)
        for name, versions in crates.items():
            keys.append(IndexRoute(reg, name.lower()).key)
            keys.extend(CrateRoute(reg, name, version).key for version in versions)
    return keys


def _amounts(summary) -> str:
    toolchains = f", {summary.toolchain_files} toolchain files" if summary.toolchain_files else ""
    return (f"{summary.entries} entries ({summary.crates} crates, {summary.index_files} index files{toolchains}, "
            f"{summary.bytes} bytes)")


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


if __name__ == "__main__":
    sys.exit(main())
