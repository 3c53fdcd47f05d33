"""The small JSON records kept in the bucket (leases, negatives, purges), read defensively."""

from __future__ import annotations

import json
from typing import Any


def load_record(raw: bytes) -> dict[str, Any]:
    """A small JSON object from the bucket; {} if it is not one."""
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def number(record: dict[str, Any], field: str) -> float:
    """The record's numeric field (a time), 0.0 if missing or not a number."""
    value = record.get(field)
    return float(value) if is_number(value) else 0.0
