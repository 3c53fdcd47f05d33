"""Mirror mode: real cargo with source replacement and real rustup with RUSTUP_DIST_SERVER, pointed at the mirror
listener of a real mitmdump, with no proxy and no CA of the proxy; the same cache as the transparent proxy."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import trustme
import yaml

from tests.fixtures.dist import ToolchainSpec, write_toolchain
from tests.fixtures.dist_server import DistServer
from tests.fixtures.rustup import Rustup
from tests.harness import DOWNLOAD_HOST, INDEX_HOST, Cargo, Proxy, cargo_binary, cli, free_port, locked_packages, make_project

pytestmark = pytest.mark.timeout(300)

CORP_INDEX = "https://corp.example/api/cargo/corp/index/"
TOKEN_LINE = re.compile(r"^(ccm_[A-Za-z0-9_-]{43})$", re.MULTILINE)


@dataclass
class MirrorCargo:
    """The real cargo configured only by its config.toml (source replacement, registries) and the environment
    given: no proxy variable, no CA of the proxy."""

    home: Path
    config: str
    extra_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "config.toml").write_text(self.config)

    def run(self, project: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CARGO_") and "proxy" not in k.lower()}
        env.update(CARGO_HOME=str(self.home), CARGO_TERM_COLOR="never", CARGO_NET_RETRY="0", **self.extra_env)
        return subprocess.run([cargo_binary(), *args], cwd=project, env=env, capture_output=True, text=True,
                              timeout=timeout)

    def fetch(self, project: Path) -> subprocess.CompletedProcess:
        lock = self.run(project, "generate-lockfile")
        return lock if lock.returncode != 0 else self.run(project, "fetch")


def replacing_crates_io(index: str) -> str:
    return f'[source.crates-io]\nreplace-with = "gw"\n\n[source.gw]\nregistry = "sparse+{index}"\n'


def start_mirror(tmp_path: Path, confdir: Path, registries: list[dict], mirror: dict | None = None, name: str = "mirror",
                 toolchains: dict | None = None, args: tuple[str, ...] = (), **cache) -> tuple[Proxy, str]:
    """mitmdump with a proxies.yaml holding `registries` and a `mirror:` section listening on a free port; the
    mirror's base URL (plain or TLS as `mirror` says) once it accepts connections."""
    port, mirror = free_port(), mirror or {}
    scheme = "https" if "tls_cert" in mirror else "http"
    doc = {"cache": {"directory": str(tmp_path / "cache"), "size_limit": "1GB", **cache}, "registries": registries,
           "mirror": {"listen": f"127.0.0.1:{port}", "public_url": f"{scheme}://127.0.0.1:{port}", **mirror}}
    if toolchains is not None:
        doc["toolchains"] = toolchains
        if not registries:
            del doc["registries"]
    config = tmp_path / f"{name}.yaml"
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    proxy = Proxy(config, confdir, tmp_path / f"{name}.log", args).start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proxy, f"{scheme}://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    proxy.stop()
    raise TimeoutError(f"the mirror did not listen on {port}:\n{proxy.log()}")


@pytest.fixture
def mirrors(tmp_path, confdir):
    started: list[Proxy] = []

    def start(*args, **kwargs) -> tuple[Proxy, str]:
        proxy, url = start_mirror(tmp_path, confdir, *args, **kwargs)
        started.append(proxy)
        return proxy, url

    yield start
    for proxy in started:
        proxy.stop()


def crates_io(*upstreams: dict) -> dict:
    return {"name": "crates-io", "index_host": INDEX_HOST, "download_host": DOWNLOAD_HOST, "proxies": list(upstreams)}


def test_cargo_through_the_mirror_cold_then_warm_with_upstreams_down_and_the_lockfile_of_the_transparent_proxy(
    registry, primary, secondary, entry, mirrors, full_project, tmp_path
):
    proxy, url = mirrors([crates_io(entry(primary, priority=1), entry(secondary, priority=2))])
    config = replacing_crates_io(f"{url}/crates-io/index/")

    cold = MirrorCargo(tmp_path / "home-cold", config).fetch(full_project)

    assert cold.returncode == 0, cold.stderr
    locked = locked_packages(full_project)
    assert len(locked) >= 40
    assert all(checksum == registry.crate(name, version).cksum for (name, version), checksum in locked.items())
    lockfile = (full_project / "Cargo.lock").read_text()
    assert 'source = "registry+https://github.com/rust-lang/crates.io-index"' in lockfile  # crates.io's source id
    log = proxy.log()
    assert re.search(r"GET 127\.0\.0\.1:\d+/crates-io/index/config\.json 200 primary miss .* user=-", log)
    assert re.search(r"GET 127\.0\.0\.1:\d+/crates-io/dl/serde/1\.0\.152/download 200 primary miss", log)
    assert secondary.requests == []

    primary.stop()
    secondary.stop()
    (full_project / "Cargo.lock").unlink()
    warm = MirrorCargo(tmp_path / "home-warm", config).fetch(full_project)
    assert warm.returncode == 0, warm.stderr
    assert (full_project / "Cargo.lock").read_text() == lockfile
    assert re.search(r"GET 127\.0\.0\.1:\d+/crates-io/index/se/rd/serde 200 cache hit", proxy.log())

    # The transparent proxy of the same process serves the same entries (no upstream is up) and the same lockfile.
    (full_project / "Cargo.lock").unlink()
    through_proxy = Cargo(tmp_path / "home-proxy", proxy)
    (tmp_path / "home-proxy").mkdir()
    transparent = through_proxy.fetch(full_project)
    assert transparent.returncode == 0, transparent.stderr
    assert (full_project / "Cargo.lock").read_text() == lockfile
    assert re.search(r"GET static\.crates\.io/crates/serde/1\.0\.152/download 200 cache hit", proxy.log())


def test_the_mirror_answers_only_its_own_paths_and_forwards_nothing(primary, entry, mirrors):
    proxy, url = mirrors([crates_io(entry(primary))])
    with httpx.Client(base_url=url, timeout=10) as client:
        config = client.get("/crates-io/index/config.json")
        assert config.status_code == 200
        assert config.json() == {"dl": f"{url}/crates-io/dl"}  # no api: nothing to publish to through a cache
        again = client.get("/crates-io/index/config.json", headers={"If-None-Match": config.headers["etag"]})
        assert again.status_code == 304
        for path, status in [("/nowhere/index/config.json", 404), ("/crates-io/index/crates/serde/1.0.152/download", 404),
                             ("/crates-io/elsewhere", 404), ("/rustup/dist/channel-rust-stable.toml", 404),
                             ("/crates-io/index/%2e%2e/dl/x", 400), ("/crates-io/index/se/rd/serde?x=1", 400)]:
            answer = client.get(path)
            assert answer.status_code == status, (path, answer.text)
        assert client.post("/crates-io/index/config.json", content=b"x").status_code == 405
        assert "registry crates-io: sparse+" in client.get("/").text
    assert "cargo-cache-mirror.invalid" not in proxy.log().replace("reverse proxy to http://cargo-cache-mirror.invalid:9", "")
    assert "was about to be forwarded" not in proxy.log()


def test_the_proxys_login_is_not_asked_of_mirror_clients(secondary, entry, mirrors, small_project, tmp_path):
    proxy, url = mirrors([crates_io(entry(secondary))], args=("--set", "proxyauth=ci:proxy-password"))
    cargo = MirrorCargo(tmp_path / "home", replacing_crates_io(f"{url}/crates-io/index/"))
    assert cargo.fetch(small_project).returncode == 0
    with httpx.Client(proxy=proxy.url, timeout=10) as through_proxy:  # the transparent proxy still asks for it
        assert through_proxy.get("http://example.invalid/").status_code == 407


def test_a_bundle_made_from_the_mirrors_cache_is_served_offline_through_the_mirror(secondary, entry, mirrors,
                                                                                   small_project, tmp_path):
    registries = [crates_io(entry(secondary))]
    _, url = mirrors(registries, name="online")
    assert MirrorCargo(tmp_path / "home-1", replacing_crates_io(f"{url}/crates-io/index/")).fetch(small_project) \
        .returncode == 0
    secondary.stop()
    bundle = tmp_path / "crates.tar"
    exported = cli(tmp_path / "online.yaml", "export", str(bundle), "--lockfile", str(small_project / "Cargo.lock"))
    assert exported.returncode == 0, exported.stderr
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({"cache": {"directory": str(tmp_path / "site-cache")}, "registries": registries}))
    imported = cli(site, "import", str(bundle))
    assert imported.returncode == 0, imported.stderr
    _, offline = mirrors(registries, name="offline", offline=True, directory=str(tmp_path / "site-cache"))

    built = MirrorCargo(tmp_path / "home-2", replacing_crates_io(f"{offline}/crates-io/index/")).run(
        small_project, "fetch", "--locked")
    assert built.returncode == 0, built.stderr
    other = make_project(tmp_path / "other", 'serde = "1"\n')
    missing = MirrorCargo(tmp_path / "home-3", replacing_crates_io(f"{offline}/crates-io/index/")).run(
        other, "generate-lockfile")
    assert missing.returncode != 0
    assert "403" in missing.stderr and "offline" in missing.stderr, missing.stderr


def test_a_private_registry_with_tokens_refuses_cargo_without_one_and_serves_it_with_one(
    secondary, entry, mirrors, tmp_path
):
    tokens = tmp_path / "tokens"
    made = add_token(tokens, "alice")
    assert made.returncode == 0, made.stderr
    token = TOKEN_LINE.search(made.stdout).group(1)
    assert token not in tokens.read_text() and tokens.read_text().startswith("alice:sha256:")
    status = free_port()
    proxy, url = mirrors([{"name": "corp", "index_url": CORP_INDEX, "proxies": [entry(secondary)]}],
                         {"auth": "tokens", "tokens_file": str(tokens)}, args=("--set", f"cargo_status_port={status}"))
    config = (f'[registries.corp]\nindex = "sparse+{url}/corp/index/"\n'
              '[registry]\nglobal-credential-providers = ["cargo:token"]\n')  # Cargo asks for it with auth-required
    project = make_project(tmp_path / "app", 'anyhow = { version = "1", registry = "corp" }\n'
                                             'log = { version = "0.4", registry = "corp" }\n')

    refused = MirrorCargo(tmp_path / "home-none", config).fetch(project)
    assert refused.returncode != 0
    assert "corp" in refused.stderr and "cargo login" in refused.stderr, refused.stderr
    assert secondary.requests == []  # nothing was fetched for a client without a token

    wrong = MirrorCargo(tmp_path / "home-wrong", config, {"CARGO_REGISTRIES_CORP_TOKEN": "ccm_not-a-token"}).fetch(project)
    assert wrong.returncode != 0
    assert "401" in wrong.stderr and "not known to this mirror" in wrong.stderr, wrong.stderr

    served = MirrorCargo(tmp_path / "home-alice", config, {"CARGO_REGISTRIES_CORP_TOKEN": token}).fetch(project)
    assert served.returncode == 0, served.stderr
    assert ("anyhow", "1.0.69") in locked_packages(project)
    assert f'source = "sparse+{url}/corp/index/"' in (project / "Cargo.lock").read_text()
    log = proxy.log()
    assert re.search(r"GET 127\.0\.0\.1:\d+/corp/index/config\.json 401 .* user=-: this mirror requires a token", log)
    assert re.search(r"GET 127\.0\.0\.1:\d+/corp/dl/anyhow/1\.0\.69/download 200 secondary miss .* user=alice", log)
    assert token not in log and "ccm_not-a-token" not in log

    # A line added to the tokens file is taken without a reload; the metrics name the owners.
    bob = add_token(tokens, "bob")
    bob_token = TOKEN_LINE.search(bob.stdout).group(1)
    time.sleep(1.1)
    with httpx.Client(base_url=url, timeout=10) as client:
        assert client.get("/corp/index/an/yh/anyhow", headers={"Authorization": bob_token}).status_code == 200
        assert client.get("/corp/index/an/yh/anyhow", headers={"Authorization": token + "x"}).status_code == 401
    assert "user=bob" in proxy.log()
    metrics = httpx.get(f"http://127.0.0.1:{status}/metrics", timeout=10).text
    assert re.search(r'cargo_cache_mirror_requests_total\{outcome="miss",registry="corp",user="alice"\} [1-9]', metrics)
    assert 'cargo_cache_mirror_requests_total{outcome="hit",registry="corp",user="bob"} 1.0' in metrics
    assert re.search(r'cargo_cache_mirror_requests_total\{outcome="unauthorized",registry="-",user="-"\} [1-9]', metrics)
    assert token not in metrics
    listed = httpx.get(f"http://127.0.0.1:{status}/status.json", timeout=10).json()
    assert listed["mirror"] == {"listen": url.removeprefix("http://"), "public_url": url, "tls": False, "auth": "tokens"}
    assert {"user": "bob", "status": 200}.items() <= listed["recent"][1].items()


def test_crates_io_replaced_by_a_mirror_with_tokens_keeps_its_source_id(secondary, entry, mirrors, small_project,
                                                                         tmp_path):
    tokens = tmp_path / "tokens"
    token = TOKEN_LINE.search(add_token(tokens, "ci-project-7").stdout).group(1)
    proxy, url = mirrors([crates_io(entry(secondary))], {"auth": "tokens", "tokens_file": str(tokens)})
    config = (f'[source.crates-io]\nreplace-with = "gw"\n\n[registries.gw]\nindex = "sparse+{url}/crates-io/index/"\n'
              '[registry]\nglobal-credential-providers = ["cargo:token"]\n')  # a token is a registry's, not a source's

    fetched = MirrorCargo(tmp_path / "home", config, {"CARGO_REGISTRIES_GW_TOKEN": token}).fetch(small_project)

    assert fetched.returncode == 0, fetched.stderr
    assert 'source = "registry+https://github.com/rust-lang/crates.io-index"' in (small_project / "Cargo.lock").read_text()
    assert re.search(r"/crates-io/dl/anyhow/1\.0\.69/download 200 secondary miss .* user=ci-project-7", proxy.log())


def test_a_private_registry_replaced_by_the_mirror_keeps_the_lockfile_of_the_transparent_proxy(
    secondary, entry, mirrors, tmp_path
):
    proxy, url = mirrors([{"name": "corp", "index_url": CORP_INDEX, "proxies": [entry(secondary)]}])
    project = make_project(tmp_path / "app", 'anyhow = { version = "1", registry = "corp" }\n'
                                             'log = { version = "0.4", registry = "corp" }\n')
    (tmp_path / "home-proxy").mkdir()
    through_proxy = Cargo(tmp_path / "home-proxy", proxy, {"CARGO_REGISTRIES_CORP_INDEX": f"sparse+{CORP_INDEX}"})
    assert through_proxy.fetch(project).returncode == 0
    lockfile = (project / "Cargo.lock").read_text()
    assert f'source = "sparse+{CORP_INDEX}"' in lockfile

    (project / "Cargo.lock").unlink()
    config = (f'[registries.corp]\nindex = "sparse+{CORP_INDEX}"\n\n'
              f'[source.corp-direct]\nregistry = "sparse+{CORP_INDEX}"\nreplace-with = "corp-gw"\n\n'
              f'[source.corp-gw]\nregistry = "sparse+{url}/corp/index/"\n')
    through_mirror = MirrorCargo(tmp_path / "home-mirror", config).fetch(project)

    assert through_mirror.returncode == 0, through_mirror.stderr
    assert (project / "Cargo.lock").read_text() == lockfile
    assert re.search(r"GET 127\.0\.0\.1:\d+/corp/index/an/yh/anyhow 200 cache hit", proxy.log())


def add_token(tokens: Path, name: str) -> subprocess.CompletedProcess:
    """`python -m cratecache token add NAME` with a proxies.yaml whose mirror keeps its tokens in `tokens`."""
    config = tokens.parent / "token-cli.yaml"
    config.write_text(yaml.safe_dump({"cache": {"directory": str(tokens.parent / "cache")},
                                      "registries": [crates_io({"name": "x", "url": "http://127.0.0.1:9/"})],
                                      "mirror": {"listen": "127.0.0.1:9", "public_url": "http://127.0.0.1:9",
                                                 "auth": "tokens", "tokens_file": str(tokens)}}))
    return cli(config, "token", "add", name)


def test_cargo_trusts_a_tls_mirror_listener_by_its_ca_alone(registry, secondary, entry, mirrors, small_project, tmp_path):
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    cert, key, ca_file = tmp_path / "mirror.pem", tmp_path / "mirror.key", tmp_path / "ca.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    for extra in leaf.cert_chain_pems[1:]:
        with cert.open("ab") as f:
            f.write(extra.bytes())
    leaf.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_file))
    proxy, url = mirrors([crates_io(entry(secondary))], {"tls_cert": str(cert), "tls_key": str(key)})
    assert url.startswith("https://")

    cargo = MirrorCargo(tmp_path / "home", replacing_crates_io(f"{url}/crates-io/index/"),
                        {"CARGO_HTTP_CAINFO": str(ca_file)})
    fetched = cargo.fetch(small_project)

    assert fetched.returncode == 0, fetched.stderr
    assert all(checksum == registry.crate(name, version).cksum
               for (name, version), checksum in locked_packages(small_project).items())
    assert re.search(r"GET 127\.0\.0\.1:\d+/crates-io/dl/anyhow/1\.0\.69/download 200 secondary miss .* HTTP/2\.0",
                     proxy.log())
    # The proxy's own CA is not what the listener shows: a client trusting only it fails.
    untrusting = MirrorCargo(tmp_path / "home-2", replacing_crates_io(f"{url}/crates-io/index/"),
                             {"CARGO_HTTP_CAINFO": str(proxy.ca_cert)})
    (small_project / "Cargo.lock").unlink()
    assert untrusting.fetch(small_project).returncode != 0
    with httpx.Client(timeout=10) as plain:  # plain HTTP on the TLS listener is not served
        refused = plain.get(url.replace("https://", "http://") + "/crates-io/index/config.json")
        assert (refused.status_code, refused.text) == (403, f"this mirror is served over HTTPS only: {url}/\n")


STABLE = ToolchainSpec(big={"rustc": 3_000_000})  # rustc above the store's file threshold: streamed from its file


def test_rustup_through_the_mirror_cold_then_warm_with_the_dist_server_down(mirrors, tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    write_toolchain(tree, STABLE)
    with DistServer(tree, name="origin") as origin:
        toolchains = {"host": "static.rust-lang.org", "proxies": [{"name": "origin", "url": origin.url}]}
        proxy, url = mirrors([], {}, toolchains=toolchains)
        env = {"RUSTUP_DIST_SERVER": f"{url}/rustup", "RUSTUP_UPDATE_ROOT": f"{url}/rustup/rustup"}
        cold = Rustup(tmp_path / "rustup-cold", env, installed=True)
        cold.run("toolchain", "install", "stable", "--profile", "minimal", check=True)  # with its self-update check
        assert cold.rustc_version("stable") == STABLE.rustc_output
        assert origin.count("rustup/release-stable.toml") == 1  # RUSTUP_UPDATE_ROOT: through the mirror too
        components = [p for p in origin.paths() if p.endswith(".tar.xz")]
        assert components and all(origin.count(p.lstrip("/")) == 1 for p in components)
    warm = Rustup(tmp_path / "rustup-warm", env)
    warm.install("stable")
    assert warm.rustc_version("stable") == STABLE.rustc_output
    log = proxy.log()
    assert re.search(rf"GET 127\.0\.0\.1:\d+/rustup/{re.escape(STABLE.component_path('rustc'))} 200 origin miss", log)
    assert re.search(r"GET 127\.0\.0\.1:\d+/rustup/rustup/release-stable\.toml 200 origin miss", log)
    assert re.search(rf"GET 127\.0\.0\.1:\d+/rustup/{re.escape(STABLE.component_path('rustc'))} 200 cache hit "
                     r"3\d{6}B", log)
    shutil.rmtree(tmp_path / "rustup-cold", ignore_errors=True)


def test_two_workers_share_the_mirror_port_and_the_launcher_refuses_a_taken_one(
        secondary, entry, small_project, tmp_path):
    from tests.harness import ROOT

    port, mirror_port = free_port(), free_port()
    doc = {"cache": {"directory": str(tmp_path / "cache")}, "registries": [crates_io(entry(secondary))],
           "mirror": {"listen": f"127.0.0.1:{mirror_port}", "public_url": f"http://127.0.0.1:{mirror_port}"}}
    config = tmp_path / "proxies.yaml"
    config.write_text(yaml.safe_dump(doc))
    log = tmp_path / "run.log"
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and not k.startswith("MAKE")}
    command = ["make", "-s", "run", "WORKERS=2", f"PORT={port}", "STATUS_PORT=0", f"PROXIES={config}"]
    with open(log, "w") as out:
        make = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while log.read_text().count(f"listening at 127.0.0.1:{mirror_port}") < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert log.read_text().count(f"listening at 127.0.0.1:{mirror_port}") == 2, log.read_text()
        cargo = MirrorCargo(tmp_path / "home", replacing_crates_io(f"http://127.0.0.1:{mirror_port}/crates-io/index/"))
        fetched = cargo.fetch(small_project)
        assert fetched.returncode == 0, fetched.stderr

        second = subprocess.run([*command[:4], f"PORT={free_port()}", *command[5:]], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=60)
        assert second.returncode != 0
        assert f"not starting: 127.0.0.1:{mirror_port} is already in use" in second.stdout + second.stderr
    finally:
        os.killpg(make.pid, signal.SIGTERM)
        make.wait(30)


def test_a_reload_starts_moves_and_stops_the_listener(secondary, entry, confdir, tmp_path):
    config = tmp_path / "proxies.yaml"
    doc = {"cache": {"directory": str(tmp_path / "cache")}, "registries": [crates_io(entry(secondary))]}
    config.write_text(yaml.safe_dump(doc))
    first, second = free_port(), free_port()

    def answers(port: int) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/crates-io/index/config.json", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    def reload_with(mirror: dict | None, port: int, wanted: bool) -> None:
        config.write_text(yaml.safe_dump({**doc, "mirror": mirror} if mirror else doc))
        proxy.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while answers(port) != wanted and time.monotonic() < deadline:
            time.sleep(0.1)
        assert answers(port) == wanted, proxy.log()

    with Proxy(config, confdir, tmp_path / "mitmdump.log") as proxy:
        assert not answers(first)
        reload_with({"listen": f"127.0.0.1:{first}", "public_url": f"http://127.0.0.1:{first}"}, first, True)
        reload_with({"listen": f"127.0.0.1:{second}", "public_url": f"http://127.0.0.1:{second}"}, second, True)
        assert not answers(first)
        reload_with(None, second, False)
        assert re.search(r"configuration reloaded \((SIGHUP|file changed)\): mirror off -> 127\.0\.0\.1:", proxy.log())
