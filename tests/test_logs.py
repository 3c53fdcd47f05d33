"""operations/logs.py: a request logged once, printed as today's text line or as one JSON object; other records as
JSON with their fields; mitmproxy's connection lines shown with -v only; the format chosen by option or file."""

from __future__ import annotations

import io
import json
import logging
import re
from calendar import timegm
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cratecache.operations import logs, workers
from cratecache.operations.logs import JsonFormatter, RequestLine
from mitmproxy import log as mitmlog
from mitmproxy.addons.termlog import TermLogHandler
from mitmproxy.exceptions import OptionsError
from mitmproxy.test import taddons

from tests.addons import CacheAddons
from tests.harness import write_proxies

CREATED = timegm((2026, 12, 7, 19, 32, 1)) + 0.123  # 2026-12-07T19:32:01.123Z


def record(msg, *args, level: int = logging.INFO, name: str = "cratecache.boundary.addon", **extra):
    out = logging.LogRecord(name, level, __file__, 1, msg, args, None)
    out.created, out.msecs = CREATED, 123.0
    out.__dict__.update(extra)
    return out


SERDE = RequestLine("127.0.0.1", "GET", "index.crates.io", "/se/rd/serde", 200, "corp-mirror", "miss", 27811, 41.26,
                    "HTTP/2.0")


def test_a_request_prints_todays_text_line_through_mitmdumps_formatter():
    text = mitmlog.MitmFormatter(colorize=False).format(record(SERDE))
    assert re.fullmatch(r"\[\d\d:\d\d:\d\d\.123\] (.*)", text).group(1) == (
        "127.0.0.1 GET index.crates.io/se/rd/serde 200 corp-mirror miss 27811B 41ms HTTP/2.0")


def test_a_failed_request_is_a_warning_whose_text_line_ends_with_the_reason():
    failed = RequestLine("10.0.0.7", "GET", "static.crates.io", "/crates/serde/1.0.0/download", 502, "-", "error", 61,
                         5003.7, "HTTP/1.1", "every upstream failed (corp-mirror: timed out)")
    assert failed.level == logging.WARNING and SERDE.level == logging.INFO
    assert str(failed) == ("10.0.0.7 GET static.crates.io/crates/serde/1.0.0/download 502 - error 61B 5004ms HTTP/1.1: "
                           "every upstream failed (corp-mirror: timed out)")


def test_a_request_as_json_carries_every_field():
    line = JsonFormatter().format(record(SERDE))
    assert "\n" not in line
    assert json.loads(line) == {
        "time": "2026-12-07T19:32:01.123Z", "level": "info", "logger": "cratecache.boundary.addon",
        "client": "127.0.0.1", "method": "GET", "host": "index.crates.io", "path": "/se/rd/serde", "status": 200,
        "state": "miss", "upstream": "corp-mirror", "bytes": 27811, "ms": 41.3, "reason": None, "http": "HTTP/2.0",
        "message": "127.0.0.1 GET index.crates.io/se/rd/serde 200 corp-mirror miss 27811B 41ms HTTP/2.0",
    }


def test_a_mirror_request_names_its_token_owner_in_text_and_json_never_the_token():
    mirror = RequestLine("10.0.0.9", "GET", "index.crates.io", "/se/rd/serde", 401, "-", "unauthorized", 120, 0.8,
                         "HTTP/1.1", "this mirror requires a token", "-")
    alice = RequestLine("10.0.0.9", "GET", "index.crates.io", "/se/rd/serde", 200, "cache", "hit", 27811, 0.6,
                        "HTTP/2.0", "", "alice")
    assert str(mirror).endswith("HTTP/1.1 user=-: this mirror requires a token")
    assert str(alice).endswith("HTTP/2.0 user=alice")
    assert json.loads(JsonFormatter().format(record(alice)))["user"] == "alice"
    assert "user" not in json.loads(JsonFormatter().format(record(SERDE)))  # the transparent proxy's lines


def test_a_hit_has_no_upstream_and_a_reason_with_quotes_newlines_and_a_non_ascii_path_stay_one_line():
    reason = 'denied by rule "openssl-src@<300"\nsecond line \\ and a tab\t'
    hit = RequestLine("::1", "GET", "static.crates.io", "/crates/café/1.0.0/download", 403, "cache", "refused", 0, 0.4,
                      "HTTP/2.0", reason)
    line = JsonFormatter(worker=1).format(record(hit, level=hit.level))
    assert "\n" not in line and line.isascii()
    fields = json.loads(line)
    assert (fields["path"], fields["reason"], fields["upstream"], fields["worker"], fields["status"]) == (
        "/crates/café/1.0.0/download", reason, None, 1, 403)


def test_any_other_record_is_time_level_logger_message_and_its_fields():
    line = JsonFormatter().format(record("upstream %s failed: %s", "corp-mirror", "HTTP 503", level=logging.WARNING,
                                         name="cratecache.upstreams.client", upstream="corp-mirror"))
    assert json.loads(line) == {"time": "2026-12-07T19:32:01.123Z", "level": "warning",
                                "logger": "cratecache.upstreams.client", "upstream": "corp-mirror",
                                "message": "upstream corp-mirror failed: HTTP 503"}


def test_mitmproxys_client_address_is_host_port_and_an_exception_its_traceback():
    connection = json.loads(JsonFormatter().format(record("client connect", name="mitmproxy.proxy.server",
                                                          client=("127.0.0.1", 58570))))
    assert (connection["client"], connection["message"]) == ("127.0.0.1:58570", "client connect")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        import sys

        crashed = record("cargo-cache: internal error on %s", "GET", level=logging.ERROR)
        crashed.exc_info = sys.exc_info()
    fields = json.loads(JsonFormatter(worker=0).format(crashed))
    assert fields["level"] == "error" and fields["worker"] == 0
    assert fields["message"] == "cargo-cache: internal error on GET"
    assert fields["exception"].startswith("Traceback") and fields["exception"].endswith("RuntimeError: boom")


@contextmanager
def terminal() -> Iterator[tuple[TermLogHandler, io.StringIO]]:
    """mitmdump's terminal handler on the root logger, writing to a buffer (made in the test itself: mitmproxy's
    handler drops records from another test phase); mitmproxy's connection logger as it was, afterwards."""
    out = io.StringIO()
    handler = TermLogHandler(out)
    handler.setLevel(logging.INFO)
    handler.install()
    root_level = logging.getLogger().level
    logging.getLogger().setLevel(logging.DEBUG)  # as mitmdump sets it
    try:
        yield handler, out
    finally:
        handler.uninstall()
        logging.getLogger().setLevel(root_level)
        source = logging.getLogger(logs.CONNECTION_LOGGER)
        for f in [f for f in source.filters if isinstance(f, logs.ConnectionLines)]:
            source.removeFilter(f)


def test_connection_lines_show_only_with_verbose():
    with terminal() as (handler, out):
        connection_lines(handler, out)


def connection_lines(handler: TermLogHandler, out: io.StringIO) -> None:
    logs.quiet_connections()
    logs.quiet_connections()  # once per process, however often the addon loads
    server = logging.getLogger(logs.CONNECTION_LOGGER)
    for message in ("client connect", "server connect index.crates.io:443", "server disconnect index.crates.io:443",
                    "client disconnect", "Client TLS handshake failed. The client does not trust the proxy's "
                                         "certificate for index.crates.io (OSError)"):
        server.info(message, extra={"client": ("127.0.0.1", 5555)})
    quiet = out.getvalue()
    assert [line.split("] ", 1)[1] for line in quiet.splitlines()] == [  # not a per-connection line: still shown
        "Client TLS handshake failed. The client does not trust the proxy's certificate for index.crates.io (OSError)"]

    handler.setLevel(logging.DEBUG)  # -v: termlog_verbosity=debug
    server.info("client connect", extra={"client": ("127.0.0.1", 5556)})
    server.info("client disconnect", extra={"client": ("127.0.0.1", 5556)})
    assert [line.split("] ", 1)[1] for line in out.getvalue()[len(quiet):].splitlines()] == [
        "client connect", "client disconnect"]


def test_use_switches_mitmdumps_terminal_between_json_and_its_own_text():
    addon_logger = logging.getLogger("cratecache.boundary.addon")
    with terminal() as (_, out):
        logs.use("json", worker=3)
        logs.log_request(addon_logger, SERDE)
        logs.use("text")
        logs.log_request(addon_logger, SERDE)
    first, second = out.getvalue().splitlines()
    assert json.loads(first)["worker"] == 3 and json.loads(first)["upstream"] == "corp-mirror"
    assert second.endswith("] 127.0.0.1 GET index.crates.io/se/rd/serde 200 corp-mirror miss 27811B 41ms HTTP/2.0")


@pytest.mark.parametrize("option, configured, expected", [
    ("", "text", "text"), ("", "json", "json"), ("json", "text", "json"), ("text", "json", "text")])
def test_the_option_wins_when_given_else_the_file(option, configured, expected):
    assert logs.chosen(option, configured) == expected


@pytest.mark.parametrize("option, in_file, json_lines", [
    (None, None, False), (None, "json", True), ("json", None, True), ("text", "json", False)])
def test_the_proxys_start_lines_follow_the_option_or_proxies_yaml(tmp_path: Path, option, in_file, json_lines):
    config = write_proxies(tmp_path / "proxies.yaml", [{"name": "up", "url": "http://127.0.0.1:9/"}], tmp_path / "c")
    if in_file:
        config.write_text(f"log_format: {in_file}\n" + config.read_text())
    cache = CacheAddons()
    with terminal() as (_, out), taddons.context(*cache.addons) as tctx:
        tctx.configure(cache.configuration, cargo_proxies=str(config),
                       **({"cargo_log_format": option} if option else {}))
    lines = [line for line in out.getvalue().splitlines() if "cargo-cache:" in line]
    assert any("intercepting index.crates.io, static.crates.io" in line for line in lines)
    parsed = [line.startswith("{") and json.loads(line)["logger"] == "cratecache.operations.configuration"
              for line in lines]
    assert parsed == [json_lines] * len(lines)


def test_an_unknown_option_value_is_refused(tmp_path: Path):
    cache = CacheAddons()
    expected = "cargo_log_format: expected one of text, json, got 'xml'"
    with taddons.context(*cache.addons) as tctx, pytest.raises(OptionsError, match=expected):
        tctx.configure(cache.configuration, cargo_log_format="xml")


def test_the_supervisor_prefixes_text_lines_and_passes_json_lines_on():
    text = "[19:35:08.588] 127.0.0.1 GET index.crates.io/config.json 200 secondary miss 41B 30ms HTTP/2.0\n"
    assert workers.relayed(text, 1, "text") == f"w1 | {text}"
    ours = '{"time": "2026-12-07T19:32:01.123Z", "level": "info", "worker": 1, "message": "x"}\n'
    assert workers.relayed(ours, 1, "json") == ours
    crash = json.loads(workers.relayed("Traceback (most recent call last):\n", 1, "json"))
    assert (crash["worker"], crash["level"], crash["message"]) == (1, "error", "Traceback (most recent call last):")


def test_the_supervisors_own_lines_are_text_or_json(capsys):
    try:
        workers.say_in("text")
        workers.say("stopping 2 workers")
        workers.say_in("json")
        workers.say("worker 1 (pid 4242) exited (signal 9); starting a new one", logging.WARNING)
    finally:
        workers.logger.handlers.clear()
    text, line = capsys.readouterr().out.splitlines()
    assert text == "cargo-cache workers: stopping 2 workers"
    fields = json.loads(line)
    assert (fields["level"], fields["logger"], fields["message"]) == (
        "warning", "cratecache.operations.workers", "worker 1 (pid 4242) exited (signal 9); starting a new one")
    assert "worker" not in fields  # the supervisor's own line, not a worker's
