"""How the proxy's log lines look: text (mitmdump's own lines, the default) or JSON (one object a line), and which
of mitmproxy's lines are shown without `-v`.

A request is logged once, as a record whose message is a `RequestLine`: mitmdump's text formatter prints its
`str()` (`127.0.0.1 GET index.crates.io/se/rd/serde 200 corp-mirror miss 27811B 41ms HTTP/2.0`), `JsonFormatter`
its fields (`RequestLine.fields`). Any other record becomes {time, level, logger, message} plus the fields it
carries (mitmproxy's `client` address, an exception's traceback), and every line gets "worker" when the workers
launcher started the process (`WORKER_ENV`). `chosen` decides the format: the `cargo_log_format` option when
given, else proxies.yaml's `log_format`; `use` puts it on mitmdump's terminal handler. mitmproxy logs `client
connect`/`client disconnect` and `server connect`/`server disconnect` for every connection at info:
`ConnectionLines` lowers them to debug, which `-v` (termlog_verbosity=debug) shows.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

FORMATS = ("text", "json")
WORKER_ENV = "CARGO_CACHE_WORKER"  # set by the workers launcher: this process's worker index
CONNECTION_LOGGER = "mitmproxy.proxy.server"
CONNECTION_LINES = ("client connect", "client disconnect")
CONNECTION_PREFIXES = ("server connect ", "server disconnect ")
# what every LogRecord has; anything else on a record is a field its caller gave (`extra=`)
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def chosen(option: str, configured: str) -> str:
    """The format in force: the option when given (not ""), else the configuration's."""
    return option or configured


def worker_index(environ: Mapping[str, str]) -> int | None:
    """This process's worker index, when the workers launcher started it (several workers) and said so."""
    try:
        return int(environ[WORKER_ENV])
    except (KeyError, ValueError):
        return None


@dataclass(frozen=True)
class RequestLine:
    """One answered request, as logged: its text is the line, its fields the JSON object."""

    client: str
    method: str
    host: str
    path: str
    status: int
    source: str  # "cache", the upstream's name, or "-" when nothing was served
    state: str  # hit | miss | revalidated | updated | stale | not_found | refused | error | rejected
    bytes: int
    ms: float
    http_version: str
    reason: str = ""
    user: str | None = None  # the mirror's token owner ("-": no token); None: not a mirror request

    @property
    def level(self) -> int:
        return logging.WARNING if self.status >= 500 else logging.INFO

    @property
    def upstream(self) -> str | None:
        """The upstream that answered (by name); None when the cache did or nothing was served."""
        return None if self.source in ("cache", "-") else self.source

    def __str__(self) -> str:
        return (f"{self.client} {self.method} {self.host}{self.path} {self.status} {self.source} {self.state} "
                f"{self.bytes}B {self.ms:.0f}ms {self.http_version}" + (f" user={self.user}" if self.user is not None else "")
                + (f": {self.reason}" if self.reason else ""))

    def fields(self) -> dict[str, Any]:
        return {"client": self.client, "method": self.method, "host": self.host, "path": self.path,
                "status": self.status, "state": self.state, "upstream": self.upstream, "bytes": self.bytes,
                "ms": round(self.ms, 1), "reason": self.reason or None, "http": self.http_version,
                **({"user": self.user} if self.user is not None else {})}


def log_request(logger: logging.Logger, line: RequestLine) -> None:
    logger.log(line.level, line)


class JsonFormatter(logging.Formatter):
    """One JSON object a line (ASCII: whatever the path or reason holds, the line is one valid line)."""

    def __init__(self, worker: int | None = None) -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(self.fields(record), default=str)

    def fields(self, record: logging.LogRecord) -> dict[str, Any]:
        out: dict[str, Any] = {"time": iso_time(record.created), "level": record.levelname.lower()}
        if self.worker is not None:
            out["worker"] = self.worker
        out["logger"] = record.name
        if isinstance(record.msg, RequestLine):
            out.update(record.msg.fields())
        for name, value in vars(record).items():
            if name not in _STANDARD and name not in out:
                out[name] = _address(value) if name == "client" else value
        out["message"] = record.getMessage()
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        return out


def iso_time(created: float) -> str:
    """ISO 8601 in UTC with milliseconds: 2026-12-07T19:32:01.123Z."""
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _address(value: Any) -> Any:
    """mitmproxy's `client` field is a (host, port) pair: host:port, as its text lines show it."""
    if isinstance(value, tuple) and len(value) >= 2:
        host, port = value[0], value[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return value


class ConnectionLines(logging.Filter):
    """mitmproxy's per-connection lines lowered from info to debug: shown with `-v` only."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and isinstance(record.msg, str) and (
                record.msg in CONNECTION_LINES or record.msg.startswith(CONNECTION_PREFIXES)):
            record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return True


def quiet_connections() -> None:
    """Lower mitmproxy's per-connection lines (once per process)."""
    source = logging.getLogger(CONNECTION_LOGGER)
    if not any(isinstance(f, ConnectionLines) for f in source.filters):
        source.addFilter(ConnectionLines())


def use(log_format: str, worker: int | None = None) -> None:
    """Put `log_format` on mitmdump's terminal output (its handler on the root logger); text is mitmproxy's own."""
    from mitmproxy import log
    from mitmproxy.addons.termlog import TermLogHandler

    for handler in logging.getLogger().handlers:
        if not isinstance(handler, TermLogHandler):
            continue
        if log_format == "json":
            if not isinstance(handler.formatter, JsonFormatter) or handler.formatter.worker != worker:
                handler.setFormatter(JsonFormatter(worker))
        elif isinstance(handler.formatter, JsonFormatter):
            handler.setFormatter(log.MitmFormatter(handler.has_vt_codes))
