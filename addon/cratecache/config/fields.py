"""The field types of proxies.yaml, for what a Python type alone cannot say: `${VAR}` in strings, names, hosts
(`host[:port]`), http(s) URLs and index URLs, sizes such as `64MiB`, durations such as `3d`, lower bounds, one of
a few words, the policy's crate matches (`tokio@1.48.0`) and advisory ids.

Each is an `Annotated` type: the check runs after the type's own (a string is a string before it is expanded,
then checked). `${VAR}` is expanded from the environment given as the validation context (`{"env": ...}`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, Field, ValidationInfo, WithJsonSchema

from .errors import problem, shown_url, type_name
from .policy import ADVISORY_ID, ADVISORY_ID_PATTERN, parse_crate_match

ENV_PATTERN = r"\$\{[A-Za-z_][A-Za-z0-9_]*\}"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_HOST = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::\d{1,5})?$")
_IPV6 = re.compile(r"^[0-9A-Fa-f:.]{2,45}\Z")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
_INDEX_PATH = re.compile(r"^/(?:[A-Za-z0-9._~-]+/){0,16}\Z")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1000, "KB": 1000, "M": 1000**2, "MB": 1000**2, "G": 1000**3,
          "GB": 1000**3, "T": 1000**4, "TB": 1000**4, "KIB": 1024, "MIB": 1024**2,
          "GIB": 1024**3, "TIB": 1024**4, "KI": 1024, "MI": 1024**2, "GI": 1024**3, "TI": 1024**4}
SIZE_PATTERN = r"^\s*\d+(\.\d+)?\s*([KMGTkmgt][iI]?)?[bB]?\s*$"
_DURATION = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*\Z")
_SECONDS_IN = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
DURATION_PATTERN = r"^\s*\d+\s*[smhd]?\s*$"


def _expand(value: str, info: ValidationInfo) -> str:
    env: Mapping[str, str] = (info.context or {}).get("env", {})

    def variable(m: re.Match) -> str:
        if m.group(1) not in env:
            raise problem(f"environment variable {m.group(1)} is not set")
        return env[m.group(1)]

    return _ENV_REF.sub(variable, value)


Text = Annotated[str, AfterValidator(_expand)]  # every string of the file may use ${VAR}


def _name(value: str) -> str:
    if not _NAME.match(value):
        raise problem(f"{value!r} is not a valid name (letters, digits, '-', '_', '.'; at most 64)")
    return value


def host(value: str) -> str:
    value = value.strip().lower()
    if not _HOST.match(value):
        raise problem(f"{value!r} is not a host name (expected e.g. index.crates.io)")
    return value


def url(value: str) -> str:
    """An http(s) URL without credentials, query or fragment, ending with '/'."""
    value = value.strip()
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as e:
        raise problem(f"not a valid URL: {e}") from None
    # Credentials and query are checked first: the scheme error below echoes the URL.
    if parts.username or parts.password:
        raise problem("credentials in the URL are not allowed; use username and password")
    if parts.query or parts.fragment:
        raise problem("the index URL must not have a query or fragment")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise problem(f"expected an http:// or https:// URL, got {shown_url(value)!r}")
    return value if value.endswith("/") else value + "/"


def _listen(value: str) -> str:
    """'host:port', '[v6]:port' or ':port' (every address) -> as given, checked."""
    value = value.strip()
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise problem(f"{value!r} is not host:port (expected e.g. 0.0.0.0:8090)")
    if host.startswith("["):
        if not host.endswith("]") or not _IPV6.match(host[1:-1]):
            raise problem(f"{value!r}: not an IPv6 address in brackets")
    elif host and not _HOST.match(host.lower()):
        raise problem(f"{value!r}: not a host name or address")
    return value


def _index_url(value: str) -> str:
    """'[sparse+]https://Host[:port]/path' -> 'https://host[:port]/path/'."""
    parts = urlsplit(url(value.strip().removeprefix("sparse+")))
    if parts.scheme != "https":
        raise problem("expected an https:// index URL (Cargo reaches the proxy's registries over TLS)")
    if not _INDEX_PATH.match(parts.path) or any(s in (".", "..") for s in parts.path.split("/")):
        raise problem(f"the path of {shown_url(parts.geturl())!r} is not a usable index path (letters, digits "
                      "and -._~ between slashes; no '.' or '..' segments)")
    return f"https://{host(parts.hostname + (f':{parts.port}' if parts.port else ''))}{parts.path}"


def index_location(index_url: str) -> tuple[str, str]:
    """A checked index URL -> ('host[:port]', '/path/')."""
    parts = urlsplit(index_url)
    return parts.netloc, parts.path


def _path(value: str) -> str:
    if not value or "\x00" in value:
        raise problem("expected a path")
    return value


def parse_size(value: Any) -> int:
    """'20GB' / '512MiB' / 1048576 -> bytes. Raises ValueError."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 20GB")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("must not be negative")
        return value
    m = _SIZE.match(str(value)) if isinstance(value, str) else None
    if not m:
        raise ValueError(f"expected a size such as 20GB or 512MiB, got {value!r}")
    unit = (m.group(2) or "").upper()
    if unit not in _UNITS:
        raise ValueError(f"unknown size unit in {value!r}")
    size = float(m.group(1)) * _UNITS[unit]
    if not size < 2**63:
        raise ValueError(f"size {value!r} is too large")
    return int(size)


def parse_duration(value: Any) -> int:
    """'3d' / '90m' / '12h' / '30s' / '0' / 600 -> seconds. Raises ValueError."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError("must not be negative")
        return value
    m = _DURATION.match(value) if isinstance(value, str) else None
    if not m:
        shown = repr(value) if isinstance(value, str) else type_name(value)
        raise ValueError(f"expected a duration such as 3d, 12h, 90m, 30s or plain seconds, got {shown}")
    seconds = int(m.group(1)) * _SECONDS_IN[m.group(2)]
    if seconds >= 2**63:
        raise ValueError(f"duration {value!r} is too long")
    return seconds


def _duration(value: Any) -> int:
    try:
        return parse_duration(value)
    except ValueError as e:
        raise problem(str(e)) from None


def _crate_match(value: str) -> str:
    try:
        parse_crate_match(value)
    except ValueError as e:
        raise problem(str(e)) from None
    return value.strip()


def _advisory_id(value: str) -> str:
    if not ADVISORY_ID.match(value):
        raise problem(f"{value!r} is not a RustSec advisory id (RUSTSEC-YYYY-NNNN; its GHSA- or CVE- aliases are "
                      "not accepted)")
    return value


def _one_line(value: str) -> str:
    if not value.strip() or any(c in value for c in "\r\n\x00"):
        raise problem("expected one line of text")
    return value.strip()


def _size(value: Any) -> int:
    try:
        return parse_size(value)
    except ValueError as e:
        raise problem(str(e)) from None


def at_least(minimum: int, shown: str) -> AfterValidator:
    def check(value: int) -> int:
        if value < minimum:
            raise problem(f"must be at least {shown}")
        return value
    return AfterValidator(check)


def one_of(choices: tuple[str, ...], echo: bool = False) -> Any:
    def check(value: str) -> str:
        if value not in choices:
            raise problem(f"expected one of {', '.join(choices)}" + (f", got {value!r}" if echo else ""))
        return value
    schema = {"anyOf": [{"enum": list(choices)}, {"type": "string", "pattern": ENV_PATTERN}]}  # ${VAR} too
    return Annotated[Text, AfterValidator(check), WithJsonSchema(schema)]


def non_empty(what: str) -> BeforeValidator:
    """A list with at least one item; the error says what the items are."""
    def check(value: Any) -> Any:
        if not isinstance(value, list) or not value:
            raise problem(f"expected a non-empty list of {what}")
        return value
    return BeforeValidator(check)


def listed(what: str) -> BeforeValidator:
    """A list (maybe empty); the error says what the items are."""
    def check(value: Any) -> Any:
        if not isinstance(value, list):
            raise problem(f"expected a list of {what}")
        return value
    return BeforeValidator(check)


Name = Annotated[Text, AfterValidator(_name)]
Host = Annotated[Text, AfterValidator(host)]
Hosts = Annotated[list[Host], listed("host names")]
Url = Annotated[Text, AfterValidator(url)]
IndexUrl = Annotated[Text, AfterValidator(_index_url)]
Listen = Annotated[Text, AfterValidator(_listen)]
FilePath = Annotated[Text, AfterValidator(_path)]
Size = Annotated[int, BeforeValidator(_size), WithJsonSchema(
    {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": SIZE_PATTERN}]})]
Seconds = Annotated[int, Field(ge=0)]
Duration = Annotated[int, BeforeValidator(_duration), WithJsonSchema(
    {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": DURATION_PATTERN}]})]
CrateMatchText = Annotated[Text, AfterValidator(_crate_match)]  # built into a CrateMatch by load.py
AdvisoryId = Annotated[Text, AfterValidator(_advisory_id), WithJsonSchema(
    {"anyOf": [{"type": "string", "pattern": ADVISORY_ID_PATTERN}, {"type": "string", "pattern": ENV_PATTERN}]})]
OneLine = Annotated[Text, AfterValidator(_one_line)]


def _bucket(value: str) -> str:
    if not re.match(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]\Z", value) or ".." in value:
        raise problem(f"{value!r} is not a bucket name (3-63 of a-z, 0-9, '.', '-')")
    return value


def _endpoint(value: str) -> str:
    value = value.rstrip("/")
    if urlsplit(value).path:
        raise problem("expected scheme://host[:port] only; the bucket goes in bucket")
    return value


def _prefix(value: str) -> str:
    """'/fleet-a/' -> 'fleet-a/'; '' stays ''."""
    value = value.strip("/")
    if value and any(part in ("", ".", "..") for part in value.split("/")):
        raise problem(f"{value!r} has an empty, '.' or '..' segment")
    return f"{value}/" if value else ""


def _region(value: str) -> str:
    if not re.match(r"^[a-z0-9-]{1,32}\Z", value):
        raise problem(f"{value!r} is not a region name (e.g. us-east-1)")
    return value


Bucket = Annotated[Text, AfterValidator(_bucket)]
Endpoint = Annotated[Url, AfterValidator(_endpoint)]
Prefix = Annotated[Text, AfterValidator(_prefix)]
Region = Annotated[Text, AfterValidator(_region)]
