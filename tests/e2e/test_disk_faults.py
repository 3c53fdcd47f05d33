"""When the disk fails (issue 30), the write path: a full disk and a read-only cache folder under a running proxy.

Real faults, not mocks: the cache folder is a small tmpfs filled up by a filler file while the real cargo downloads a
crate larger than what is left, or an ext4 file system on a loop device that the kernel turns read-only after an
error (as it does on an I/O error: `errors=remount-ro`); a real mitmdump in between. The client gets its bytes,
nothing partial stays in the folder, hits go on being served, the log warns once, /metrics and status.json say so,
and once space is back the next miss is cached without a restart. Tests that cannot mount (not root) are skipped.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.fixtures.registry import CrateFile, Registry, encode_index, index_entry, load_manifest, pack_crate
from tests.fixtures.upstream import UpstreamServer
from tests.harness import Proxy, free_port, make_project, write_proxies
from tests.tmpfs import files, fill, tmpfs

BIG, BIG_VERSION = "anyhow", "1.0.69"  # its real sources plus an incompressible payload
PAYLOAD_BYTES = 6 * 1000 * 1000
MiB = 1024 * 1024
WARNING = "cannot be written"


@pytest.fixture(scope="module")
def big_registry(registry: Registry, tmp_path_factory) -> Registry:
    source = tmp_path_factory.mktemp("big") / f"{BIG}-{BIG_VERSION}"
    shutil.copytree(f"/usr/share/cargo/registry/{BIG}-{BIG_VERSION}", source,
                    ignore=shutil.ignore_patterns("debian", ".cargo-checksum.json"))
    (source / "payload.bin").write_bytes(os.urandom(PAYLOAD_BYTES))
    data = pack_crate(source, BIG, BIG_VERSION)
    own = Registry(index_files=dict(registry.index_files), crates=dict(registry.crates))
    own.crates[(BIG, BIG_VERSION)] = CrateFile(BIG, BIG_VERSION, data, hashlib.sha256(data).hexdigest())
    own.index_files[BIG] = encode_index([index_entry(load_manifest(source), hashlib.sha256(data).hexdigest())])
    return own


def status_proxy(start_proxy, upstreams, cache_dir: Path):
    port = free_port()
    proxy = start_proxy(upstreams, cache_dir=cache_dir, args=("--set", f"cargo_status_port={port}"))
    proxy.status_url = f"http://127.0.0.1:{port}"
    return proxy


def metric(proxy, name: str) -> float:
    text = httpx.get(proxy.status_url + "/metrics").text
    values = [float(m.group(1)) for m in re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M)]
    return sum(values)


def rendered(url: str, profile: Path) -> str:
    """The status page as the browser shows it (its script fills it from status.json)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is installed by `make test` (scripts/install-test-deps)"
    return subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           f"--user-data-dir={profile}", "--virtual-time-budget=5000", "--dump-dom", url],
                          capture_output=True, text=True, timeout=60).stdout


def crate_requests(server: UpstreamServer) -> list[str]:
    return [p for p in server.paths() if p.startswith("/crates/")]


def wait_for(check, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


def test_a_full_disk_mid_download_still_answers_cargo_then_caching_resumes_when_space_returns(
    big_registry, entry, start_proxy, new_cargo, tmp_path
):
    small = make_project(tmp_path / "small", 'log = "0.4"\n')
    big = make_project(tmp_path / "big", f'{BIG} = "={BIG_VERSION}"\n')
    data = big_registry.crate(BIG, BIG_VERSION).data
    with tmpfs(tmp_path / "disk", 24 * MiB) as disk, UpstreamServer(big_registry, name="up") as up:
        cache = disk / "cache"
        proxy = status_proxy(start_proxy, [entry(up)], cache)
        warm = new_cargo(proxy).fetch(small)  # cached while there is room: served later as hits
        filler = fill(disk, leave=2 * MiB)  # the 6 MB crate does not fit in what is left

        cold = new_cargo(proxy).fetch(big)
        after_full = proxy.log()
        hits = new_cargo(proxy).fetch(small)
        writable_when_full = metric(proxy, "cargo_cache_store_writable")
        errors_when_full = metric(proxy, "cargo_cache_store_errors_total")
        folder = httpx.get(proxy.status_url + "/status.json").json()["storage"]["folder"]
        left_in_folder = [f for f in files(disk) if f.startswith("cache/partial/") or f.endswith(".part")]
        largest_stored = max((p.stat().st_size for p in cache.rglob("*.val")), default=0)

        filler.unlink()  # space is back: within a few seconds (the upkeep's probe) the cache takes writes again
        resumed = wait_for(lambda: metric(proxy, "cargo_cache_store_writable") == 1)
        asked = len(crate_requests(up))
        refill = new_cargo(proxy).fetch(big)
        asked_refill = len(crate_requests(up))
        hit = new_cargo(proxy).fetch(big)
        asked_hit = len(crate_requests(up))
        log = proxy.log()
        proxy.stop()

    assert warm.returncode == 0, warm.stderr
    assert cold.returncode == 0, cold.stderr  # the client got its bytes, verified by cargo against the index
    unpacked = next(tmp_path.glob("cargo-home-1/registry/cache/*/anyhow-1.0.69.crate"))
    assert unpacked.read_bytes() == data
    assert f"GET static.crates.io/crates/{BIG}/{BIG_VERSION}/download 200 up miss {len(data)}B" in after_full
    assert after_full.count(WARNING) == 1, after_full  # one warning, not one per request
    assert "disk full" in after_full
    assert left_in_folder == []  # nothing partial left behind
    assert largest_stored < PAYLOAD_BYTES  # and the crate not stored
    assert hits.returncode == 0, hits.stderr
    assert "GET static.crates.io/crates/log/" in after_full and " cache hit " in log  # hits served meanwhile
    assert writable_when_full == 0 and errors_when_full >= 1
    assert folder["writable"] is False and folder["error"].startswith("disk full") and folder["since"]

    assert resumed, "cargo_cache_store_writable did not return to 1 after the filler was deleted"
    assert refill.returncode == 0, refill.stderr
    assert asked_refill == asked + 1  # the next miss went to the upstream once...
    assert hit.returncode == 0, hit.stderr
    assert asked_hit == asked_refill  # ...and was cached: the next fetch is a hit
    assert log.count(f"GET static.crates.io/crates/{BIG}/{BIG_VERSION}/download 200 cache hit") == 1
    assert "is writable again" in log
    assert "Traceback" not in log and "internal error" not in log


@contextlib.contextmanager
def ext4(path: Path, image: Path, size: int):
    """An ext4 file system in `image` on a loop device, mounted at `path` with errors=remount-ro."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mkfs.ext4") is None:
        pytest.skip("an ext4 file system on a loop device needs root and mkfs.ext4")
    with open(image, "wb") as f:
        f.truncate(size)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True)
    done = subprocess.run(["mount", "-o", "loop,errors=remount-ro", str(image), str(path)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"mounting a loop device is not permitted here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)
        image.unlink(missing_ok=True)


def make_read_only(path: Path) -> None:
    """What the kernel does on an I/O error with errors=remount-ro: the file system becomes read-only under the
    files open on it (a plain `mount -o remount,ro` is refused while SQLite holds its database open for writing)."""
    device = subprocess.run(["findmnt", "-n", "-o", "SOURCE", str(path)], capture_output=True, text=True,
                            check=True).stdout.strip()
    trigger = Path("/sys/fs/ext4") / Path(device).name / "trigger_fs_error"
    if not trigger.exists():
        pytest.skip(f"this kernel has no {trigger}")
    trigger.write_text("cargo-cache test: read-only cache folder")
    assert wait_for(lambda: not writable(path)), "the file system is still writable"


def writable(path: Path) -> bool:
    try:
        (path / "probe").touch()
    except OSError as e:
        assert e.errno == errno.EROFS, e
        return False
    (path / "probe").unlink()
    return True


def test_a_cache_folder_turned_read_only_under_a_running_proxy_serves_hits_and_passes_misses_through(
    big_registry, entry, start_proxy, new_cargo, tmp_path
):
    small = make_project(tmp_path / "small", 'log = "0.4"\n')
    big = make_project(tmp_path / "big", f'{BIG} = "={BIG_VERSION}"\n')
    data = big_registry.crate(BIG, BIG_VERSION).data
    with ext4(tmp_path / "disk", tmp_path / "disk.img", 64 * MiB) as disk, \
            UpstreamServer(big_registry, name="up") as up:
        proxy = status_proxy(start_proxy, [entry(up)], disk / "cache")
        warm = new_cargo(proxy).fetch(small)
        make_read_only(disk)

        hits = new_cargo(proxy).fetch(small)
        asked = len(crate_requests(up))
        passed = new_cargo(proxy).fetch(big)
        again = new_cargo(proxy).fetch(big)
        asked_after = len(crate_requests(up))
        writable = metric(proxy, "cargo_cache_store_writable")
        errors = metric(proxy, "cargo_cache_store_errors_total")
        folder = httpx.get(proxy.status_url + "/status.json").json()["storage"]["folder"]
        page = rendered(proxy.status_url + "/", tmp_path / "chromium")
        log = proxy.log()
        proxy.stop()

    assert warm.returncode == 0, warm.stderr
    assert hits.returncode == 0, hits.stderr
    assert re.search(r"GET static.crates.io/crates/log/\S+ 200 cache hit", log)  # hits served from the ro folder
    assert passed.returncode == 0, passed.stderr and again.returncode == 0  # misses passed through
    assert next(tmp_path.glob("cargo-home-2/registry/cache/*/anyhow-1.0.69.crate")).read_bytes() == data
    assert asked_after == asked + 2  # not kept: each fetch of the new crate went to the upstream
    assert log.count(f"GET static.crates.io/crates/{BIG}/{BIG_VERSION}/download 200 up miss") == 2
    assert log.count(WARNING) == 1, log
    assert "Traceback" not in log and "internal error" not in log
    assert writable == 0 and errors >= 1
    assert folder["writable"] is False and folder["error"].startswith("read-only file system")
    assert re.search(r'<p class="bad" id="folder">cache not writable since [^<]+: read-only file system', page), page


def test_rustup_installs_a_toolchain_whose_large_component_does_not_fit_on_the_full_disk(start_proxy, tmp_path):
    from tests.fixtures.dist import ToolchainSpec, write_toolchain
    from tests.fixtures.dist_server import DistServer
    from tests.fixtures.rustup import Rustup

    spec = ToolchainSpec(big={"rustc": 12_000_000})  # rustc's tarball does not fit in what is left
    (tmp_path / "tree").mkdir()
    built = write_toolchain(tmp_path / "tree", spec)
    with tmpfs(tmp_path / "disk", 16 * MiB) as disk, DistServer(tmp_path / "tree", name="origin") as origin:
        port = free_port()
        proxy = start_proxy([], cache_dir=disk / "cache", args=("--set", f"cargo_status_port={port}"),
                            toolchains={"host": "static.rust-lang.org", "ttl": 3600,
                                        "proxies": [{"name": "origin", "url": origin.url}]})
        proxy.status_url = f"http://127.0.0.1:{port}"
        fill(disk)  # full before rustup starts: the manifest, its hashes and the components are not kept
        rustup = Rustup(tmp_path / "rustup", {"HTTPS_PROXY": proxy.url, "SSL_CERT_FILE": str(proxy.ca_cert)})
        rustup.install("stable")
        version = rustup.rustc_version("stable")
        left_in_folder = [f for f in files(disk) if f.startswith("cache/partial/") or f.endswith(".part")]
        writable = metric(proxy, "cargo_cache_store_writable")
        log = proxy.log()
        proxy.stop()

    assert version == spec.rustc_output  # installed: every component verified against the manifest and served
    assert f"GET static.rust-lang.org/{spec.component_path('rustc')} 200 origin miss" in log
    assert all(path in origin.paths() or f"/{path}" in origin.paths() for path in built.minimal_paths)
    assert left_in_folder == []
    assert log.count(WARNING) == 1, log
    assert "Traceback" not in log and "internal error" not in log
    assert writable == 0


def remount(path: Path, mode: str) -> None:
    done = subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


START_WARNING = "opened read-only"


def test_a_cache_folder_read_only_at_start_serves_hits_passes_misses_through_then_caches_once_writable(
    big_registry, entry, start_proxy, new_cargo, tmp_path
):
    small = make_project(tmp_path / "small", 'log = "0.4"\n')
    big = make_project(tmp_path / "big", f'{BIG} = "={BIG_VERSION}"\n')
    data = big_registry.crate(BIG, BIG_VERSION).data
    with tmpfs(tmp_path / "disk", 32 * MiB) as disk, UpstreamServer(big_registry, name="up") as up:
        cache = disk / "cache"
        warming = status_proxy(start_proxy, [entry(up)], cache)
        warm = new_cargo(warming).fetch(small)
        warming.stop()
        remount(disk, "ro")  # `mount -o remount,ro` of the cache's file system while no proxy runs
        before = files(disk)

        proxy = status_proxy(start_proxy, [entry(up)], cache)  # it starts (it used to exit with an OSError)
        asked = list(up.paths())
        hits = new_cargo(proxy).fetch(small)
        asked_hits = list(up.paths())
        passed = new_cargo(proxy).fetch(big)
        asked_passed = list(up.paths())
        written = files(disk)
        writable_ro = metric(proxy, "cargo_cache_store_writable")
        folder = httpx.get(proxy.status_url + "/status.json").json()["storage"]["folder"]
        page = rendered(proxy.status_url + "/", tmp_path / "chromium")
        log_ro = proxy.log()

        remount(disk, "rw")  # writable again: the running proxy reopens its database within a few seconds
        resumed = wait_for(lambda: metric(proxy, "cargo_cache_store_writable") == 1)
        kept = new_cargo(proxy).fetch(big)
        asked_kept = len(crate_requests(up))
        hit = new_cargo(proxy).fetch(big)
        asked_hit = len(crate_requests(up))
        log = proxy.log()
        proxy.stop()

    assert warm.returncode == 0, warm.stderr
    assert hits.returncode == 0, hits.stderr
    assert asked_hits[len(asked):] == []  # every cached file (index files, crates) served from the read-only folder
    assert re.search(r"GET static.crates.io/crates/log/\S+ 200 cache hit", log_ro)
    assert passed.returncode == 0, passed.stderr  # the new crate fetched through...
    assert next(tmp_path.glob("cargo-home-2/registry/cache/*/anyhow-1.0.69.crate")).read_bytes() == data
    assert [p for p in asked_passed[len(asked_hits):] if p.startswith("/crates/")] == [
        f"/crates/{BIG}/{BIG_VERSION}/download"]  # ...with one upstream request
    assert written == before  # and nothing written
    assert log_ro.count(WARNING) == 1, log_ro  # the one warning, at start
    warning = next(line for line in log_ro.splitlines() if START_WARNING in line)
    assert f"the cache folder {cache} cannot be written (read-only file system)" in warning
    assert "serving hits from it, passing misses through, not caching" in warning
    assert writable_ro == 0
    assert folder["writable"] is False and folder["error"] == "read-only file system"
    assert re.search(r'<p class="bad" id="folder">cache not writable since [^<]+: read-only file system', page), page

    assert resumed, "cargo_cache_store_writable did not return to 1 after the folder was remounted read-write"
    assert "its database is reopened for writing" in log and "is writable again" in log
    assert kept.returncode == 0 and hit.returncode == 0, kept.stderr + hit.stderr
    assert asked_kept == len([p for p in asked_passed if p.startswith("/crates/")]) + 1  # fetched once more: kept...
    assert asked_hit == asked_kept  # ...and served from the cache: no second upstream request
    assert log.count(f"GET static.crates.io/crates/{BIG}/{BIG_VERSION}/download 200 cache hit") == 1
    assert "Traceback" not in log and "internal error" not in log


def test_a_cache_folder_the_proxys_user_may_not_write_serves_hits_and_passes_misses_through(
    big_registry, entry, start_proxy, new_cargo, confdir, tmp_path
):
    """Permission denied (EACCES), for real: the folder belongs to another user (nobody), readable by all, and the
    proxy runs as root without CAP_DAC_OVERRIDE, which checks permissions as for an unprivileged user."""
    if shutil.which("setpriv") is None:
        pytest.skip("dropping root's permission override needs setpriv (util-linux)")
    small = make_project(tmp_path / "small", 'log = "0.4"\n')
    big = make_project(tmp_path / "big", f'{BIG} = "={BIG_VERSION}"\n')
    cache = tmp_path / "cache"
    with UpstreamServer(big_registry, name="up") as up:
        warming = start_proxy([entry(up)], cache_dir=cache)
        warm = new_cargo(warming).fetch(small)
        warming.stop()
        subprocess.run(["chown", "-R", "nobody:nogroup", str(cache)], check=True)
        before = files(cache)
        port = free_port()
        proxy = Proxy(write_proxies(tmp_path / "proxies-denied.yaml", [entry(up)], cache), confdir,
                      tmp_path / "mitmdump-denied.log", ("--set", f"cargo_status_port={port}"),
                      command_prefix=("setpriv", "--bounding-set=-dac_override,-dac_read_search"))
        proxy.status_url = f"http://127.0.0.1:{port}"
        try:
            proxy.start()
            asked = list(up.paths())
            hits = new_cargo(proxy).fetch(small)
            asked_hits = list(up.paths())
            passed = new_cargo(proxy).fetch(big)
            asked_passed = list(up.paths())
            writable = metric(proxy, "cargo_cache_store_writable")
            folder = httpx.get(proxy.status_url + "/status.json").json()["storage"]["folder"]
        finally:
            proxy.stop()
            subprocess.run(["chown", "-R", "root:root", str(cache)], check=True)
        log = proxy.log()

    assert warm.returncode == 0, warm.stderr
    assert hits.returncode == 0 and passed.returncode == 0, hits.stderr + passed.stderr
    assert asked_hits[len(asked):] == []  # the cached project served from the folder it may not write
    assert [p for p in asked_passed[len(asked_hits):] if p.startswith("/crates/")] == [
        f"/crates/{BIG}/{BIG_VERSION}/download"]
    assert files(cache) == before
    assert log.count(WARNING) == 1, log
    assert f"the cache folder {cache} cannot be written (permission denied" in log and START_WARNING in log
    assert writable == 0 and folder["error"].startswith("permission denied")
    assert "Traceback" not in log and "internal error" not in log
