"""boundary/tokens.py: the mirror's tokens file (parsed, matched by hash, re-read when it changes) and
`python -m cratecache token add`."""

from __future__ import annotations

import hashlib
import logging

import pytest
import yaml
from cratecache import cli
from cratecache.boundary.tokens import TOKEN_PREFIX, TokenFile, new_token, owner, parse_tokens, token_line


def line(name: str, token: str) -> str:
    return f"{name}:sha256:{hashlib.sha256(token.encode()).hexdigest()}"


def test_a_token_is_known_by_its_hash_and_names_its_owner():
    lines = parse_tokens(f"# CI\n{line('alice', 'tok-a')}\n\n  {line('ci-project-7', 'tok-b')}  \n")
    assert owner(lines, "tok-a") == "alice"
    assert owner(lines, "tok-b") == "ci-project-7"
    assert owner(lines, "Bearer tok-b") == "ci-project-7"  # what curl users send
    assert owner(lines, "tok-c") is None
    assert owner(lines, "tok-a ") == "alice" and owner(lines, "tok-") is None
    assert owner(lines, "") is None and owner(lines, None) is None


def test_two_tokens_of_one_owner_both_work():
    lines = parse_tokens(f"{line('alice', 'old')}\n{line('alice', 'new')}\n")
    assert owner(lines, "old") == owner(lines, "new") == "alice"


@pytest.mark.parametrize("text, message", [
    ("alice:tok-a\n", "line 1: expected NAME:sha256:<64 lowercase hex digits>"),
    ("# ok\nalice:sha256:" + "A" * 64 + "\n", "line 2"),
    ("alice:sha256:" + "a" * 63 + "\n", "line 1"),
    ("-x:sha256:" + "a" * 64 + "\n", "line 1"),
    ("ccm_pasted-token-by-mistake\n", "line 1"),
])
def test_a_bad_line_is_an_error_that_never_echoes_it(text, message):
    with pytest.raises(ValueError) as info:
        parse_tokens(text)
    assert message in str(info.value)
    assert "tok-a" not in str(info.value) and "pasted" not in str(info.value)


def test_made_tokens_are_random_recognisable_and_stored_as_their_hash():
    token, other = new_token(), new_token()
    assert token != other and token.startswith(TOKEN_PREFIX) and len(token) >= 40
    assert token_line("alice", token) == line("alice", token)
    assert token not in token_line("alice", token)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_file_is_re_read_when_it_changes_and_a_broken_one_keeps_the_last_good(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    path, clock = tmp_path / "tokens", Clock()
    tokens = TokenFile(str(path), clock)
    assert tokens.owner("tok-a") is None  # no file yet: every token refused
    assert "does not exist" in caplog.text

    path.write_text(line("alice", "tok-a") + "\n")
    assert tokens.owner("tok-a") is None  # looked at once a second at most
    clock.now += 1.0
    assert tokens.owner("tok-a") == "alice"

    with path.open("a") as f:
        f.write("garbage\n")
    clock.now += 1.0
    assert tokens.owner("tok-a") == "alice"  # kept
    assert "not applied (line 2: expected NAME:sha256:" in caplog.text

    path.write_text(line("bob", "tok-b") + "\n")  # alice's line removed: revoked
    clock.now += 1.0
    assert tokens.owner("tok-a") is None and tokens.owner("tok-b") == "bob"
    assert "tok-a" not in caplog.text and "tok-b" not in caplog.text


def test_token_add_prints_the_token_once_and_appends_its_hash(tmp_path, capsys):
    tokens = tmp_path / "tokens"
    tokens.write_text(line("alice", "tok-a"))  # no newline at its end
    config = tmp_path / "proxies.yaml"
    config.write_text(yaml.safe_dump({
        "cache": {"directory": str(tmp_path / "cache")},
        "registries": [{"name": "corp", "index_host": "corp.example", "proxies": [{"name": "up", "url": "https://u/"}]}],
        "mirror": {"listen": ":8090", "public_url": "https://gw:8090", "auth": "tokens", "tokens_file": "tokens"}}))

    assert cli.main(["--proxies", str(config), "token", "add", "ci-project-7"]) == 0

    out, err = capsys.readouterr()
    token = out.strip()
    assert token.startswith(TOKEN_PREFIX) and "\n" not in token
    assert "token for ci-project-7 added to" in err and token not in err
    assert tokens.read_text() == line("alice", "tok-a") + "\n" + line("ci-project-7", token) + "\n"
    assert owner(parse_tokens(tokens.read_text()), token) == "ci-project-7"


def test_token_add_makes_the_file_private_and_refuses_bad_names_and_a_config_without_tokens(tmp_path, capsys):
    config = tmp_path / "proxies.yaml"
    doc = {"cache": {"directory": str(tmp_path / "cache")},
           "registries": [{"name": "corp", "index_host": "corp.example", "proxies": [{"name": "up", "url": "https://u/"}]}],
           "mirror": {"listen": ":8090", "public_url": "https://gw:8090", "auth": "tokens", "tokens_file": "t"}}
    config.write_text(yaml.safe_dump(doc))
    assert cli.main(["--proxies", str(config), "token", "add", "alice"]) == 0
    assert (tmp_path / "t").stat().st_mode & 0o777 == 0o600
    assert cli.main(["--proxies", str(config), "token", "add", "al:ice"]) == 2
    assert "not a token name" in capsys.readouterr().err

    del doc["mirror"]
    config.write_text(yaml.safe_dump(doc))
    assert cli.main(["--proxies", str(config), "token", "add", "alice"]) == 2
    assert "has no mirror.tokens_file" in capsys.readouterr().err
