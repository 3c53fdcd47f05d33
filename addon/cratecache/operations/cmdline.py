"""mitmdump command lines: every option given once, the user's value winning (pure).

mitmproxy drops every option of a script when one of them is given twice (`--set cargo_status_port=1 --set
cargo_status_port=2` fails the script's deferred options, and mitmdump then runs as a plain forwarding proxy that
intercepts nothing, without an error). So `make run` and the worker launcher never pass one twice: their own
arguments come first, and `merge` drops each of them that the user's arguments set again (by `--set NAME=…`
or by the option's flag, `--listen-port`/`-p`, `--listen-host`). The addon refuses to start when a `cargo_`
option still reaches mitmdump twice (`repeated`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

FLAGS = {"--listen-port": "listen_port", "-p": "listen_port", "--listen-host": "listen_host"}
SCALARS = ("listen_port", "listen_host", "confdir", "flow_detail")  # besides every cargo_ option


@dataclass(frozen=True)
class Item:
    """One argument as given (one or two words), and the option it sets (None: not one we track)."""

    words: tuple[str, ...]
    option: str | None = None
    value: str | None = None


def items(args: Iterable[str]) -> list[Item]:
    out: list[Item] = []
    words = list(args)
    i = 0
    while i < len(words):
        word = words[i]
        flag, eq, inline = word.partition("=")
        if word == "--set" and i + 1 < len(words):
            name, _, value = words[i + 1].partition("=")
            out.append(Item((word, words[i + 1]), name, value))
            i += 2
            continue
        if flag == "--set" and eq:
            name, _, value = inline.partition("=")
            out.append(Item((word,), name, value))
        elif flag in FLAGS and eq:
            out.append(Item((word,), FLAGS[flag], inline))
        elif word in FLAGS and i + 1 < len(words):
            out.append(Item((word, words[i + 1]), FLAGS[word], words[i + 1]))
            i += 2
            continue
        else:
            out.append(Item((word,)))
        i += 1
    return out


def once(option: str | None) -> bool:
    """Whether `option` takes one value (a second one is an error to mitmproxy, not an addition)."""
    return option is not None and (option.startswith("cargo_") or option in SCALARS)


def merge(ours: Iterable[str], theirs: Iterable[str]) -> list[str]:
    """`ours` without what `theirs` sets again, then `theirs`: each single-valued option once, theirs winning.
    Within `theirs`, a single-valued option given twice is kept as its last value."""
    given = items(theirs)
    last = {item.option: index for index, item in enumerate(given) if once(item.option)}
    kept = [item for item in items(ours) if not (once(item.option) and item.option in last)]
    kept += [item for index, item in enumerate(given) if not once(item.option) or last[item.option] == index]
    return [word for item in kept for word in item.words]


def value(args: Iterable[str], option: str) -> str | None:
    """The value `args` give `option` (the last one), or None."""
    found = [item.value for item in items(args) if item.option == option]
    return found[-1] if found else None


def without(args: Iterable[str], option: str) -> list[str]:
    return [word for item in items(args) if item.option != option for word in item.words]


def repeated(deferred: Mapping[str, object], prefix: str = "cargo_") -> list[str]:
    """The options with `prefix` that mitmproxy holds more than one value for, not yet applied (its
    `options.deferred`: a script's options given on the command line before the script registered them)."""
    return sorted(name for name, held in deferred.items()
                  if name.startswith(prefix) and len(getattr(held, "val", None) or ()) > 1)
