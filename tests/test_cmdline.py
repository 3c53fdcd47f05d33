"""cmdline.py and the launcher's commands: every single-valued option reaches mitmdump once, the user's winning
(mitmproxy drops all of an addon's options when one is given twice)."""

from __future__ import annotations

import pytest
from cratecache.operations import cmdline
from cratecache.operations.workers import Supervisor, worker_args
from mitmproxy.optmanager import _UnconvertedStrings

MAKE_RUN = ["-s", "addon/cargo_cache.py", "--listen-host", "127.0.0.1", "--set", "confdir=/p/certs",
            "--set", "cargo_proxies=/p/proxies.yaml", "--set", "flow_detail=0"]


def sets(args: list[str], option: str) -> int:
    return sum(1 for item in cmdline.items(args) if item.option == option)


@pytest.mark.parametrize("theirs, option, value", [
    (["--set", "cargo_status_port=9000"], "cargo_status_port", "9000"),
    (["--set=cargo_status_port=9000"], "cargo_status_port", "9000"),
    (["--set", "flow_detail=3"], "flow_detail", "3"),
    (["--set", "confdir=/elsewhere"], "confdir", "/elsewhere"),
    (["--listen-host", "0.0.0.0"], "listen_host", "0.0.0.0"),
    (["--set", "listen_host=0.0.0.0"], "listen_host", "0.0.0.0"),  # a --set beats our flag too
    (["-p", "9090"], "listen_port", "9090"),
    (["--listen-port=9090"], "listen_port", "9090"),
    (["--set", "cargo_proxies=/other.yaml", "--set", "cargo_proxies=/last.yaml"], "cargo_proxies", "/last.yaml"),
])
def test_the_users_value_wins_and_is_passed_once(theirs, option, value):
    merged = cmdline.merge(MAKE_RUN + ["--listen-port", "8080", "--set", "cargo_status_port=8081"], theirs)
    assert sets(merged, option) == 1 and cmdline.value(merged, option) == value
    for other in ("cargo_proxies", "confdir", "flow_detail", "listen_host", "listen_port", "cargo_status_port"):
        assert sets(merged, other) == 1, (other, merged)


def test_options_that_take_several_values_and_other_words_are_left_alone():
    theirs = ["--set", "allow_hosts=a", "--set", "allow_hosts=b", "-q", "--mode", "regular"]
    merged = cmdline.merge(MAKE_RUN, theirs)
    assert merged == MAKE_RUN + theirs


@pytest.mark.parametrize("user", [[], ["--set", "cargo_status_port=9000"], ["--listen-port", "7000"]])
def test_a_worker_gets_each_port_once(user):
    """The launcher takes the user's ports out before it computes worker i's (main), so its command holds
    each once: `make run ARGS="--set cargo_status_port=9000"` used to pass two and run a plain proxy."""
    args = cmdline.merge([], MAKE_RUN + user)
    args = cmdline.without(cmdline.without(args, "listen_port"), "cargo_status_port")
    command = Supervisor(2, 8080, 8081, args).command(1)
    assert sets(command, "listen_port") == 1 and sets(command, "cargo_status_port") == 1
    assert cmdline.value(command, "cargo_status_port") == "8082"
    assert cmdline.value(worker_args(args, 8080, 0), "cargo_status_port") == "0"


def test_repeated_names_the_cargo_options_mitmproxy_holds_twice():
    deferred = {"cargo_status_port": _UnconvertedStrings(["1", "2"]), "cargo_offline": _UnconvertedStrings(["true"]),
                "other_addon": _UnconvertedStrings(["a", "b"])}
    assert cmdline.repeated(deferred) == ["cargo_status_port"]
