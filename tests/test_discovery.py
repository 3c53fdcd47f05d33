"""config/discovery.py: which proxies.yaml a command runs with when none is given, and what it says when none is
found."""

from __future__ import annotations

from pathlib import Path

import pytest
from cratecache.config.discovery import ConfigNotFound, find_config, from_env


@pytest.fixture
def places(tmp_path: Path) -> tuple[Path, Path]:
    """A working folder and a stand-in for /etc/cargo-cache/proxies.yaml, neither holding a file yet."""
    (tmp_path / "cwd").mkdir()
    (tmp_path / "etc").mkdir()
    return tmp_path / "cwd", tmp_path / "etc" / "proxies.yaml"


def test_the_environment_variable_wins_over_both_files(places):
    cwd, system = places
    (cwd / "proxies.yaml").write_text("{}")
    system.write_text("{}")
    assert find_config({"CARGO_CACHE_CONFIG": "/srv/cc/proxies.yaml"}, cwd, system) == Path("/srv/cc/proxies.yaml")


def test_a_variable_naming_a_missing_file_is_still_the_one_used(places):
    """The read then fails naming that file, rather than silently serving with another configuration."""
    cwd, system = places
    system.write_text("{}")
    assert find_config({"CARGO_CACHE_CONFIG": "/nowhere/proxies.yaml"}, cwd, system) == Path("/nowhere/proxies.yaml")


def test_the_older_variable_name_still_counts_and_the_new_one_wins():
    assert from_env({"CARGO_CACHE_PROXIES": "/old.yaml"}) == "/old.yaml"
    assert from_env({"CARGO_CACHE_PROXIES": "/old.yaml", "CARGO_CACHE_CONFIG": "/new.yaml"}) == "/new.yaml"
    assert from_env({"CARGO_CACHE_CONFIG": ""}) is None


def test_the_working_folders_file_comes_before_the_systems(places):
    cwd, system = places
    (cwd / "proxies.yaml").write_text("{}")
    system.write_text("{}")
    assert find_config({}, cwd, system) == cwd / "proxies.yaml"


def test_the_systems_file_is_the_last_resort(places):
    cwd, system = places
    system.write_text("{}")
    assert find_config({}, cwd, system) == system


def test_none_found_names_every_place_looked_at(places):
    cwd, system = places
    (cwd / "proxies.yaml").mkdir()  # a folder of that name is not a configuration
    with pytest.raises(ConfigNotFound) as e:
        find_config({}, cwd, system)
    assert str(e.value) == (f"no configuration file: none given, $CARGO_CACHE_CONFIG is not set, and neither "
                            f"{cwd / 'proxies.yaml'} nor {system} exists")
