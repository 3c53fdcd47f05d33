"""One error for an unusable proxies.yaml, `ConfigError`: `file: field: problem` on one line.

The models raise `problem(...)` (a pydantic error carrying the wording, and a field below the one validated when
a check spans fields); `from_validation` turns pydantic's first error into a ConfigError in the same words.
No message echoes a value that may be a secret: URLs are shown as `shown_url` shows them.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError
from pydantic_core import PydanticCustomError

PROBLEM = "cargo_cache"  # the pydantic error type of the models' own checks


class ConfigError(ValueError):
    """proxies.yaml is unusable: `file: field: problem`."""

    def __init__(self, file: str | os.PathLike, field: str, problem: str):
        self.file, self.field, self.problem = str(file), field, problem
        super().__init__(f"{self.file}: {field}: {problem}" if field else f"{self.file}: {problem}")


def problem(text: str, *below: str | int) -> PydanticCustomError:
    """A check's failure, worded for the user; `below`: the field it is about, under the one validated."""
    return PydanticCustomError(PROBLEM, "{problem}", {"problem": text, "below": below})


def from_validation(file: str | os.PathLike, error: ValidationError) -> ConfigError:
    """The first of pydantic's errors, as the hand-written parser worded it."""
    first = error.errors(include_url=False)[0]
    ctx = first.get("ctx") or {}
    return ConfigError(file, field_path((*first["loc"], *ctx.get("below", ()))) or "(top level)", _wording(first))


def field_path(loc: tuple[str | int, ...]) -> str:
    """('registries', 0, 'proxies', 1, 'url') -> 'registries[0].proxies[1].url'."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_EXPECTED = {"int_type": "an integer", "int_from_float": "an integer", "bool_type": "true or false",
             "string_type": "a string", "model_type": "a mapping", "dict_type": "a mapping", "list_type": "a list"}


def _wording(error: dict[str, Any]) -> str:
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    if kind == PROBLEM:
        return ctx["problem"]
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {type_name(value)}"
    if kind == "missing":
        return "required field is missing"
    if kind == "greater_than_equal":
        return f"must be at least {ctx['ge']}, got {value}"
    if kind == "value_error":
        return str(ctx["error"])
    return error["msg"]


def type_name(value: Any) -> str:
    return {type(None): "nothing", bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)


def shown_url(url: str) -> str:
    """A URL as logs and errors show it: scheme://host[:port] and no path, where a token may be (some hosted
    registries put one there); as the status page shows upstreams (activity.origin)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(an unparsable URL)"
    if not parts.netloc:
        return "(no scheme://host)"
    host = parts.netloc.rpartition("@")[2]  # credentials in a URL are refused, and never echoed
    return f"{parts.scheme}://{host}" + ("/…" if parts.path.strip("/") else "/")
