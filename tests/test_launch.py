"""operations/launch.py and the `run` command's arguments: `cargo-cache run` starts what `make run` starts (pure:
the command lines, compared with what make would run, without running either)."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

from cratecache.cli import parser
from cratecache.operations import launch

from tests.harness import ADDON, ROOT


def make_dry_run(*variables: str) -> list[str]:
    """What `make run` would run (make -n: nothing is run), one command per line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}  # not `make test`'s flags
    out = subprocess.run(["make", "-s", "-n", "VENV=/nonexistent/venv", "run", *variables], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True).stdout
    return out.replace("\\\n", " ").splitlines()


def test_run_gives_the_launcher_and_mitmdump_what_make_run_gives_them():
    config = Path("/srv/cc/proxies.yaml")
    made = make_dry_run("WORKERS=3", "PORT=9000", "STATUS_PORT=9100", f"PROXIES={config}", "HOST=0.0.0.0")
    launched = shlex.split(next(line for line in made if "cratecache.operations.workers" in line))
    launcher = launched[launched.index("cratecache.operations.workers") + 1:]
    ours = launch.launcher_args(3, 9000, 9100, launch.mitmdump_args(config, ROOT / "certs", "0.0.0.0", []))
    assert ours == [str(ADDON) if word == "addon/cargo_cache.py" else word for word in launcher]


def test_make_run_installs_the_runtime_requirements_only():
    installs = [line for line in make_dry_run() if "pip install" in line]
    assert len(installs) == 1 and installs[0].endswith("-r requirements.txt"), installs


def test_the_addon_file_is_the_one_beside_the_package():
    assert launch.addon_path() == ADDON


def test_mitmdumps_own_confdir_wins_and_is_where_the_ca_is_made(tmp_path: Path):
    assert launch.confdir_of(tmp_path / "certs", ["--set", "proxyauth=a:b"]) == tmp_path / "certs"
    assert launch.confdir_of(tmp_path / "certs", ["--set", f"confdir={tmp_path}/mine"]) == tmp_path / "mine"


def test_run_takes_its_options_and_passes_what_follows_the_double_dash_to_mitmdump():
    args = parser().parse_args(["run", "--config", "/etc/cargo-cache/proxies.yaml", "--host", "0.0.0.0", "--port",
                                "9000", "--workers", "2", "--status-port", "0", "--", "--set", "proxyauth=a:b", "-v"])
    assert (args.proxies, args.host, args.port, args.workers, args.status_port) == (
        "/etc/cargo-cache/proxies.yaml", "0.0.0.0", 9000, 2, 0)
    assert args.mitmdump == ["--", "--set", "proxyauth=a:b", "-v"]
    defaults = parser().parse_args(["run"])
    assert (defaults.host, defaults.port, defaults.status_port, defaults.mitmdump) == ("127.0.0.1", 8080, 8081, [])
