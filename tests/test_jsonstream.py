"""jsonstream.py: a JSON object read piece by piece, each value bounded (no sockets)."""

from __future__ import annotations

import io
import json

import pytest
from cratecache.airgap.jsonstream import read_object


def read(text: str | bytes, max_value: int = 64):
    items = []
    found = read_object(io.BytesIO(text.encode() if isinstance(text, str) else text), "entries",
                        lambda item, i: items.append((i, item)), max_value)
    return found, items


def test_fields_and_the_items_of_the_array_field_as_they_are_read():
    doc = {"format": "x/1", "created": 1000.5, "entries": [{"key": "a"}, {"key": "b", "n": [1, 2]}], "tail": None}
    for text in (json.dumps(doc), json.dumps(doc, indent=1), json.dumps(doc, separators=(",", ":"))):
        found, items = read(text)
        assert found == {"format": "x/1", "created": 1000.5, "entries": True, "tail": None}
        assert items == [(0, {"key": "a"}), (1, {"key": "b", "n": [1, 2]})]
    assert read('{"entries": []}') == ({"entries": True}, [])
    assert read("{ }") == ({}, [])


def test_a_value_split_across_reads_and_multibyte_text_are_read_whole():
    entries = [{"key": "é" * 20 + str(i)} for i in range(20000)]  # several 64 KiB reads, a split UTF-8 sequence
    found, items = read(json.dumps({"entries": entries}, ensure_ascii=False), max_value=128)
    assert [item for _, item in items] == entries


@pytest.mark.parametrize("text, problem", [
    ('{"entries": [' + "[" * 5000 + "]" * 5000 + "]}", r"entries\[0\] is not JSON of at most 64 bytes"),
    ('{"entries": [{"key": "' + "x" * 100 + '"}]}', r"entries\[0\] is not JSON of at most 64 bytes"),
    ('{"format": "' + "x" * 100 + '"}', "field format is not JSON"),
    ('{"a": 1, "a": 2}', "distinct field names"),
    ('{"entries": {"a": 1}}', "entries is not a list"),
    ('{"entries": [1 2]}', "entries is not a list"),
    ('{"a": 1} {"b": 2}', "not one JSON object"),
    ("[1]", "not a JSON object"),
    ('{"a": 1', "not one JSON object"),
    (b'{"a": "\xff"}', "not UTF-8"),
])
def test_anything_else_is_refused_saying_what(text, problem):
    with pytest.raises(ValueError, match=problem):
        read(text)
