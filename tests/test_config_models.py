"""config/models.py: the declared proxies.yaml, its shipped JSON Schema and the README's reference table agree."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import types
import typing
from pathlib import Path

import pytest
from cratecache.config import models, parse_size
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parent.parent
REGENERATE = "PYTHONPATH=addon .venv/bin/python -m cratecache.config --schema > proxies.schema.json"


def _model_in(annotation) -> tuple[type[BaseModel] | None, bool]:
    """The section model a field holds (directly, optionally, or as a list of them), and whether in a list."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        found = [_model_in(a) for a in typing.get_args(annotation) if a is not type(None)]
        return found[0] if len(found) == 1 else (None, False)
    if typing.get_origin(annotation) is list:
        model, _ = _model_in(typing.get_args(annotation)[0])
        return model, model is not None
    is_model = isinstance(annotation, type) and issubclass(annotation, BaseModel)
    return (annotation if is_model else None), False


def model_fields(model: type[BaseModel] = models.ProxiesFile, prefix: str = ""):
    """(path as the README writes it, field) for every field that holds a value (not a section)."""
    for name, field in model.model_fields.items():
        section, listed = _model_in(field.annotation)
        if section is None:
            yield prefix + name, field
        else:
            yield from model_fields(section, f"{prefix}{name}{'[]' if listed else ''}.")


def test_the_shipped_schema_is_current():
    shipped = json.loads((ROOT / "proxies.schema.json").read_text())
    assert shipped == models.schema(), f"proxies.schema.json is stale; regenerate it: {REGENERATE}"


def test_the_regenerating_command_prints_the_schema():
    out = subprocess.run([sys.executable, "-m", "cratecache.config", "--schema"], cwd=ROOT, capture_output=True,
                         text=True, check=True, env={**os.environ, "PYTHONPATH": str(ROOT / "addon")}).stdout
    assert json.loads(out) == models.schema()


def test_the_shipped_proxies_yaml_names_the_schema():
    first = (ROOT / "proxies.yaml").read_text().splitlines()[0]
    assert first == "# yaml-language-server: $schema=./proxies.schema.json"


@pytest.mark.parametrize("path, field", list(model_fields()), ids=lambda v: v if isinstance(v, str) else "")
def test_every_field_has_a_one_line_description(path, field):
    assert field.description and "\n" not in field.description, path


def readme_rows() -> dict[str, list[str]]:
    """The README's proxies.yaml reference table: field path -> its cells (field, type, default, notes); `a.b` / `c`
    rows give `a.b` and `a.c`, and `…proxies[].x` is `registries[].proxies[].x`."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## proxies.yaml reference"):text.index("### Changing it while the proxy serves")]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("| `") or len(cells) < 4:
            continue
        names = [n.strip("` ") for n in cells[0].split(" / ")]
        first = names[0].replace("…proxies[]", "registries[].proxies[]")
        parent = first.rpartition(".")[0]
        for name in [first] + [f"{parent}.{n}" if parent else n for n in names[1:]]:
            rows[name] = cells
    return rows


def test_every_model_field_is_in_the_readme_table():
    """A field may have its own row, or be named in its list's row (`toolchains.proxies[]`: each entry takes ...)."""
    rows = readme_rows()
    missing = []
    for path, _ in model_fields():
        parent, _, leaf = path.rpartition("[].")
        if path not in rows and f"`{leaf}`" not in rows.get(f"{parent}[]", [""])[-1]:
            missing.append(path)
    assert not missing, f"fields missing from README.md's proxies.yaml reference table: {missing}"


@pytest.mark.parametrize("path, field", list(model_fields()), ids=lambda v: v if isinstance(v, str) else "")
def test_the_readme_gives_the_models_default(path, field):
    """Where the README's default column is one literal value (`300`, `64MiB`, `false`), it is the model's."""
    cells = readme_rows().get(path)
    shown = re.fullmatch(r"`([^`]*)`", cells[2]) if cells else None
    if shown is None or "." in shown.group(1) and path.endswith("_ttl"):  # `cache.index_ttl`: another field's
        return
    value = shown.group(1)
    if isinstance(field.default, bool):
        assert value == str(field.default).lower(), path
    elif isinstance(field.default, int):
        assert parse_size(value) == field.default, path
    else:
        assert value == field.default, path
