"""A JSON object read piece by piece from a file, for untrusted input too large to hold whole (a bundle's
manifest.json): top-level fields are decoded one value at a time, each from at most `max_value` characters, and
the items of one array field are handed to a callback as they are read. Memory holds one bounded value at a
time, never the whole text nor what a hostile text would inflate into (arrays nested thousands deep, huge
strings). Anything else than such an object raises ValueError saying what."""

from __future__ import annotations

import codecs
import json
from collections.abc import Callable
from typing import Any, BinaryIO

CHUNK = 64 << 10


class _Reader:
    def __init__(self, source: BinaryIO, max_value: int):
        self.source, self.max_value = source, max_value
        self.buffer, self.at, self.eof = "", 0, False
        self.decoder, self.utf8 = json.JSONDecoder(), codecs.getincrementaldecoder("utf-8")()

    def _fill(self, wanted: int) -> None:
        while len(self.buffer) - self.at < wanted and not self.eof:
            chunk = self.source.read(CHUNK)
            self.eof = not chunk
            try:
                text = self.utf8.decode(chunk, final=self.eof)
            except UnicodeDecodeError:
                raise ValueError("not UTF-8") from None
            self.buffer, self.at = self.buffer[self.at:] + text, 0

    def peek(self) -> str:
        """The next non-blank character ('' at the end), not consumed."""
        while True:
            self._fill(1)
            rest = self.buffer[self.at:]
            stripped = rest.lstrip()
            self.at += len(rest) - len(stripped)
            if stripped or self.eof:
                return stripped[:1]

    def punctuation(self) -> str:
        """The next non-blank character, consumed ('' at the end)."""
        found = self.peek()
        self.at += len(found)
        return found

    def value(self, what: str) -> Any:
        """The next JSON value, decoded from at most `max_value` characters."""
        self.peek()
        self._fill(self.max_value + 1)
        try:
            value, end = self.decoder.raw_decode(self.buffer[:self.at + self.max_value], self.at)
        except (ValueError, RecursionError):  # RecursionError: arrays nested a thousand deep
            raise ValueError(f"{what} is not JSON of at most {self.max_value} bytes") from None
        self.at = end
        return value


def read_object(source: BinaryIO, array_field: str, on_item: Callable[[Any, int], None], max_value: int) -> dict:
    """The object in `source`: its fields, except `array_field`, whose items are passed to `on_item(item, index)`
    as they are read (it may raise to stop) and which is returned as True when present. ValueError otherwise."""
    reader, found = _Reader(source, max_value), {}
    if reader.punctuation() != "{":
        raise ValueError("not a JSON object")
    separator = reader.punctuation() if reader.peek() == "}" else ","  # "{}", or the first field
    while separator == ",":
        name = reader.value("a field name")
        if not isinstance(name, str) or name in found or reader.punctuation() != ":":
            raise ValueError("not a JSON object with distinct field names")
        found[name] = _items(reader, name, on_item) if name == array_field else reader.value(f"field {name}")
        separator = reader.punctuation()
    if separator != "}" or reader.punctuation() != "":
        raise ValueError("not one JSON object")
    return found


def _items(reader: _Reader, name: str, on_item: Callable[[Any, int], None]) -> bool:
    if reader.punctuation() != "[":
        raise ValueError(f"{name} is not a list")
    if reader.peek() == "]":
        reader.punctuation()
        return True
    index = 0
    while True:
        on_item(reader.value(f"{name}[{index}]"), index)
        index += 1
        separator = reader.punctuation()
        if separator == "]":
            return True
        if separator != ",":
            raise ValueError(f"{name} is not a list")
