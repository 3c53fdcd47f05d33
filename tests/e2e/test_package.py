"""The package as a user installs it: the wheel built from this checkout, installed into a fresh virtualenv
(`pip install` with its declared dependencies), its `cargo-cache` command serving the real cargo from a
configuration elsewhere; the `make run` virtualenv without the test tools; the systemd unit verified."""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import ssl
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from cratecache.cli import parser

from tests.harness import ROOT, Cargo, free_port, wait_until_listening, write_proxies

pytestmark = pytest.mark.timeout(420)

UNIT = ROOT / "contrib" / "cargo-cache.service"
TEST_TOOLS = ("pytest", "hypothesis", "trustme")  # requirements-dev.txt's, which `make run` must not install


def clean_env() -> dict[str, str]:
    """The environment of a user's shell: no checkout on the path, no proxy, no configuration variable."""
    return {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and not k.startswith(
        ("MAKE", "PYTHON", "VIRTUAL_ENV", "CARGO_CACHE_"))}


def run(command: list, timeout: float, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=timeout,
                          env=kwargs.pop("env", clean_env()), **kwargs)
    assert done.returncode == 0, f"{command}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def requirement_lines(path: Path) -> list[str]:
    """requirements.txt's requirements, without comments."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of the checkout's tracked sources, built from a copy (no build/ or egg-info left in the checkout,
    and nothing stale from an earlier build in it)."""
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    for name in ("pyproject.toml", "README.md", "requirements.txt"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "addon", source / "addon", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", out, source], timeout=180)
    (built,) = out.glob("cargo_cache-*.whl")
    return built


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Path:
    """A new virtualenv of this Python with the wheel installed as `pip install` does it: its declared
    dependencies resolved by pip (from its cache or the index), nothing of the checkout's virtualenv."""
    venv = tmp_path_factory.mktemp("fresh") / "venv"
    run([sys.executable, "-m", "venv", venv], timeout=120)
    run([venv / "bin" / "python", "-m", "pip", "install", "--quiet", wheel], timeout=300)
    return venv


def site_packages(venv: Path) -> Path:
    (found,) = venv.glob("lib/python3*/site-packages")
    return found


def test_the_wheel_declares_requirements_txt_and_carries_what_the_code_reads(wheel: Path):
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        metadata = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        entry_points = z.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    declared = re.findall(r"^Requires-Dist: (.+)$", metadata, re.M)
    assert declared == requirement_lines(ROOT / "requirements.txt")
    test_tools = [line for line in requirement_lines(ROOT / "requirements-dev.txt") if not line.startswith("-r ")]
    assert test_tools and not set(test_tools) & set(declared)
    assert "cargo-cache = cratecache.cli:entry" in entry_points
    assert {"cargo_cache.py", "cratecache/operations/status.html", "cratecache/cli.py"} <= set(names)


def test_the_installed_command_names_every_subcommand_and_the_installed_addon(fresh: Path):
    commands = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert {"run", "ca", "addon-path", "stage", "export", "import", "ls", "stats", "purge", "audit",
            "verify"} <= set(commands)
    shown = run([fresh / "bin" / "cargo-cache", "--help"], timeout=60, cwd=fresh).stdout
    listed = set(re.findall(r"^    (\S+)", shown, re.M))
    assert listed == set(commands), shown
    addon = Path(run([fresh / "bin" / "cargo-cache", "addon-path"], timeout=60, cwd=fresh).stdout.strip())
    assert addon == site_packages(fresh) / "cargo_cache.py" and addon.is_file()


@pytest.fixture
def served(tmp_path: Path, fresh: Path, secondary, entry) -> Iterator[SimpleNamespace]:
    """`cargo-cache run --config <a site folder>/proxies.yaml --workers 1`, started from another folder; the
    cache folder given relative to the configuration."""
    site = tmp_path / "site"
    site.mkdir()
    config = write_proxies(site / "proxies.yaml", [entry(secondary)], Path("data/cache"))
    port, log = free_port(), tmp_path / "run.log"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with open(log, "w") as out:
        process = subprocess.Popen([fresh / "bin" / "cargo-cache", "run", "--config", config, "--workers", "1",
                                    "--port", str(port), "--status-port", "0"], cwd=elsewhere, env=clean_env(),
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    text = lambda: log.read_text(errors="replace")  # noqa: E731
    try:
        deadline = time.monotonic() + 60
        while f"proxy listening at 127.0.0.1:{port}" not in text():
            assert process.poll() is None and time.monotonic() < deadline, f"cargo-cache run did not start:\n{text()}"
            time.sleep(0.1)
        yield SimpleNamespace(site=site, elsewhere=elsewhere, process=process, log=text,
                              proxy=SimpleNamespace(url=f"http://127.0.0.1:{port}",
                                                    ca_cert=site / "certs" / "cargo-ca-bundle.pem"))
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)


def test_the_installed_command_serves_cargo_with_the_ca_and_cache_where_the_configuration_says(
        served, fresh: Path, tmp_path: Path, small_project: Path):
    before = {p.relative_to(fresh) for p in fresh.rglob("*") if "__pycache__" not in p.parts}
    assert f"Loading script {site_packages(fresh) / 'cargo_cache.py'}" in served.log()
    (tmp_path / "home").mkdir()
    fetched = Cargo(tmp_path / "home", served.proxy).fetch(small_project)
    assert fetched.returncode == 0, fetched.stderr + served.log()
    cached = [p for p in (served.site / "data" / "cache").rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in cached) > 10_000  # the crates, in the folder the configuration names
    assert (served.site / "certs" / "mitmproxy-ca.pem").is_file()
    after = {p.relative_to(fresh) for p in fresh.rglob("*") if "__pycache__" not in p.parts}
    assert after == before  # nothing written into the installed package
    assert list(served.elsewhere.iterdir()) == []  # nor into the working folder

    os.kill(served.process.pid, signal.SIGHUP)  # the unit's ExecReload
    deadline = time.monotonic() + 30
    while "configuration reloaded (SIGHUP)" not in served.log():
        assert time.monotonic() < deadline and served.process.poll() is None, served.log()
        time.sleep(0.1)


def test_the_make_run_virtualenv_has_no_test_tools(tmp_path: Path):
    """`make run`'s install step (its stamp rule) into a new virtualenv: the runtime requirements, nothing else."""
    venv = tmp_path / "run-venv"
    run(["make", "-s", f"VENV={venv}", f"{venv}/.installed-run"], timeout=300, cwd=ROOT)
    python = venv / "bin" / "python"
    run([python, "-c", "import mitmproxy, diskcache, pydantic, obstore, prometheus_client"], timeout=60)
    for tool in TEST_TOOLS:
        missing = subprocess.run([python, "-c", f"import {tool}"], capture_output=True, text=True, timeout=60)
        assert missing.returncode != 0 and "ModuleNotFoundError" in missing.stderr, tool
    assert not (venv / ".installed-test").exists()


def test_the_systemd_unit_verifies_and_keeps_its_hardening(tmp_path: Path, fresh: Path):
    text = UNIT.read_text()
    directives = dict(line.split("=", 1) for line in text.splitlines() if re.match(r"^[A-Z]\w*=", line))
    assert directives["ExecStart"] == "/usr/local/bin/cargo-cache run --config /etc/cargo-cache/proxies.yaml"
    assert directives["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert directives["StateDirectory"] == "cargo-cache"
    assert directives["NoNewPrivileges"] == "yes" and directives["ProtectSystem"] == "strict"
    assert directives["Restart"] == "on-failure" and int(directives["LimitNOFILE"]) >= 4096
    assert directives.get("DynamicUser") == "yes" or directives.get("User")
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here (the unit's text was checked above)")
    # verify needs ExecStart's binary to exist: the same unit, run by the cargo-cache just installed
    unit = tmp_path / "cargo-cache.service"
    unit.write_text(text.replace("/usr/local/bin/cargo-cache", str(fresh / "bin" / "cargo-cache")))
    checked = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0 and checked.stdout + checked.stderr == "", checked.stdout + checked.stderr


def served_config_json(command: list, cwd: Path, port: int, ca: Path, log: Path) -> int:
    """Start `command` (a mitmdump listening on `port`), ask it for config.json as Cargo would, stop it; the status.
    (PYTHONUNBUFFERED: a plain mitmdump's log to a file is otherwise written only when its buffer fills.)"""
    with open(log, "w") as out:
        process = subprocess.Popen([str(c) for c in command], cwd=cwd, env=clean_env() | {"PYTHONUNBUFFERED": "1"},
                                   stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_listening(process, lambda: log.read_text(errors="replace"), 60)
        trusted = ssl.create_default_context(cafile=str(ca))
        with httpx.Client(proxy=f"http://127.0.0.1:{port}", verify=trusted, trust_env=False) as client:
            return client.get("https://index.crates.io/config.json", timeout=30).status_code
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(20)


def test_the_readmes_mitmdump_line_works_from_the_checkout(tmp_path: Path, confdir: Path, secondary, entry):
    """The line as the README gives it, run from the checkout's folder; only the configuration file is the test's
    (and a free port, no status page, the test session's CA)."""
    line = next(line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith(".venv/bin/mitmdump"))
    words = shlex.split(line)
    assert "cargo_proxies=proxies.yaml" in words and "-s" in words, line
    config = write_proxies(tmp_path / "proxies.yaml", [entry(secondary)], tmp_path / "cache")
    words = [f"cargo_proxies={config}" if word == "cargo_proxies=proxies.yaml" else word for word in words]
    port = free_port()
    command = [*words, "--listen-port", str(port), "--set", "cargo_status_port=0", "--set", f"confdir={confdir}"]
    assert served_config_json(command, ROOT, port, confdir / "mitmproxy-ca-cert.pem", tmp_path / "log") == 200


def test_plain_mitmdump_loads_the_installed_addon_with_the_ca_beside_the_configuration(
        tmp_path: Path, fresh: Path, secondary, entry):
    """`mitmdump -s "$(cargo-cache addon-path)"` with the installed environment's mitmdump, from another folder."""
    addon = run([fresh / "bin" / "cargo-cache", "addon-path"], timeout=60, cwd=tmp_path).stdout.strip()
    (tmp_path / "site").mkdir()
    config = write_proxies(tmp_path / "site" / "proxies.yaml", [entry(secondary)], Path("cache"))
    port = free_port()
    command = [fresh / "bin" / "mitmdump", "-s", addon, "--listen-host", "127.0.0.1", "--listen-port", str(port),
               "--set", f"cargo_proxies={config}", "--set", "cargo_status_port=0"]
    ca = tmp_path / "site" / "certs" / "mitmproxy-ca-cert.pem"  # the default ca.directory, made by mitmproxy
    assert served_config_json(command, fresh, port, ca, tmp_path / "log") == 200
