"""config: the `policy:` section and registries[].policy -> Settings.policy / Registry.policy (effective), and
one-line ConfigErrors naming the field."""

from __future__ import annotations

import copy
import types
import typing
from pathlib import Path

import pytest
import yaml
from cratecache.config import (
    AdvisoryPolicy,
    ConfigError,
    CrateMatch,
    Policy,
    Quarantine,
    Rule,
    load_settings,
    models,
    parse_crate_match,
    parse_duration,
    parse_settings,
)
from cratecache.config.load import merged
from cratecache.operations import reload
from cratecache.semver import parse_req, parse_version

from tests.fixtures.rustsec import SNAPSHOT as SNAPSHOT_DIR

SNAPSHOT = SNAPSHOT_DIR
FILE = Path("/etc/cargo-cache/proxies.yaml")


def registry(name: str, host: str, **fields) -> dict:
    return {"name": name, "index_host": host, "proxies": [{"name": "up", "url": f"https://up.{host}/"}], **fields}


BASE = {"registries": [registry("crates-io", "index.crates.io"), registry("corp", "corp.example")]}


def doc(policy: dict | None = None, corp: dict | None = None) -> dict:
    out = copy.deepcopy(BASE)
    if policy is not None:
        out["policy"] = policy
    if corp is not None:
        out["registries"][1]["policy"] = corp
    return out


def parse(document: dict | str, env: dict | None = None, path: Path = FILE):
    text = document if isinstance(document, str) else yaml.safe_dump(document)
    return parse_settings(text, path, env or {})


def parse_error(document: dict | str, env: dict | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(document, env)
    assert "\n" not in str(info.value)
    return info.value


@pytest.fixture
def database(tmp_path: Path) -> Path:
    """A checkout of the advisory database as the runtime reads it: a folder with crates/."""
    (tmp_path / "advisory-db" / "crates").mkdir(parents=True)
    return tmp_path / "advisory-db"


ISSUE_EXAMPLE = """
policy:
  dry_run: false
  quarantine: {min_age: 3d, pinned: allow, exempt: ["serde", "tokio@1.48.0", "corp-*"], missing_pubtime: first-seen}
  advisories: {database: DATABASE, malicious: deny, vulnerable: hide, informational: warn, ignore: [RUSTSEC-2023-0071]}
  rules:
    - deny: "openssl-src@<300.0.0"
      reason: "OpenSSL 1.1 is out of support here"
    - allow: "acme-*"
registries:
  - name: crates-io
    index_host: index.crates.io
    proxies: [{name: crates-io, url: "https://index.crates.io/"}]
  - name: corp
    index_host: corp.example
    proxies: [{name: corp, url: "https://corp.example/index/"}]
    policy: { quarantine: { min_age: 0 } }
"""


def test_the_issues_example(database: Path):
    settings = parse(ISSUE_EXAMPLE.replace("DATABASE", str(database)))
    expected = Policy(
        dry_run=False,
        quarantine=Quarantine(min_age=3 * 86400, pinned="allow", missing_pubtime="first-seen", exempt=(
            CrateMatch("serde", "serde"), CrateMatch("tokio@1.48.0", "tokio", parse_req("=1.48.0")),
            CrateMatch("corp-*", "corp-*"))),
        advisories=AdvisoryPolicy(database=str(database), malicious="deny", vulnerable="hide", informational="warn",
                                  ignore=("RUSTSEC-2023-0071",)),
        rules=(Rule("deny", CrateMatch("openssl-src@<300.0.0", "openssl-src", parse_req("<300.0.0")),
                    "OpenSSL 1.1 is out of support here"),
               Rule("allow", CrateMatch("acme-*", "acme-*"))))
    assert settings.policy == expected
    crates_io, corp = settings.registries
    assert crates_io.policy == expected  # no policy of its own: the global one
    assert corp.policy.quarantine.min_age == 0
    assert corp.policy.quarantine.exempt == expected.quarantine.exempt  # the rest of the section: the global one
    assert (corp.policy.advisories, corp.policy.rules) == (expected.advisories, expected.rules)
    assert expected.active and corp.policy.active  # the database and the rules still apply


def test_without_a_policy_section_nothing_is_decided():
    settings = parse(BASE)
    assert settings.policy == Policy() and not settings.policy.active
    assert all(r.policy == Policy() for r in settings.registries)
    assert settings.policy == Policy(dry_run=False, quarantine=Quarantine(0, "allow", (), "first-seen"),
                                     advisories=AdvisoryPolicy(None, "deny", "hide", "warn", ()), rules=())


def test_an_empty_or_null_section_is_the_defaults():
    assert parse(doc({})).policy == Policy()
    assert parse(doc({"quarantine": None, "advisories": {}, "rules": []})).policy == Policy()
    assert parse(doc(corp={})).registries[1].policy == Policy()


def test_the_shipped_file_has_no_policy():
    settings = load_settings(Path(__file__).resolve().parent.parent / "proxies.yaml", env={})
    assert settings.policy == Policy() and all(r.policy == Policy() for r in settings.registries)


@pytest.mark.parametrize("policy, active", [
    ({"quarantine": {"min_age": "1s"}}, True),
    ({"quarantine": {"min_age": 0, "pinned": "deny", "exempt": ["serde"]}}, False),
    ({"rules": [{"warn": "serde"}]}, True),
    ({"dry_run": True}, False),
])
def test_active_when_there_is_something_to_decide(policy, active):
    assert parse(doc(policy)).policy.active is active


def test_a_database_makes_it_active(database: Path):
    assert parse(doc({"advisories": {"database": str(database)}})).policy.active


# -- durations --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, seconds", [
    ("3d", 259200), ("12h", 43200), ("90m", 5400), ("30s", 30), ("0", 0), ("600", 600), (0, 0), (600, 600),
    (" 2d ", 172800), ("0d", 0),
])
def test_durations(value, seconds):
    assert parse_duration(value) == seconds
    assert parse(doc({"quarantine": {"min_age": value}})).policy.quarantine.min_age == seconds


@pytest.mark.parametrize("value, problem", [
    ("3w", "expected a duration such as 3d, 12h, 90m, 30s or plain seconds, got '3w'"),
    ("1.5h", "expected a duration such as 3d, 12h, 90m, 30s or plain seconds, got '1.5h'"),
    ("-1", "expected a duration such as 3d, 12h, 90m, 30s or plain seconds, got '-1'"),
    ("d", "expected a duration such as 3d, 12h, 90m, 30s or plain seconds, got 'd'"),
    ("3D", "expected a duration such as 3d, 12h, 90m, 30s or plain seconds, got '3D'"),
    (-1, "must not be negative"),
    (True, "expected a duration such as 3d, 12h, 90m, 30s or plain seconds, got a boolean"),
    (1.5, "expected a duration such as 3d, 12h, 90m, 30s or plain seconds, got a number"),
    ("99999999999999999d", "duration '99999999999999999d' is too long"),
])
def test_duration_errors(value, problem):
    with pytest.raises(ValueError, match="^" + problem.replace(".", r"\.").replace("(", r"\(") + "$"):
        parse_duration(value)
    error = parse_error(doc({"quarantine": {"min_age": value}}))
    assert (error.field, error.problem) == ("policy.quarantine.min_age", problem)


# -- crate matches ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, name, requirement", [
    ("serde", "serde", None),
    ("corp-*", "corp-*", None),
    ("Serde_JSON", "serde_json", None),
    ("tokio@1.48.0", "tokio", "=1.48.0"),  # a plain version: exactly it
    ("tokio@1.48", "tokio", "=1.48"),  # a partial one: any 1.48.x, as Cargo's package ids
    ("tokio@1.0.0-rc.1", "tokio", "=1.0.0-rc.1"),
    ("openssl-src@<300.0.0", "openssl-src", "<300.0.0"),
    ("openssl-src@>=1.2, <1.5", "openssl-src", ">=1.2, <1.5"),
    ("time@^0.1", "time", "^0.1"),
    ("time@~0.1.2", "time", "~0.1.2"),
    ("any@*", "any", "*"),
    ("lib?[0-9]", "lib?[0-9]", None),
])
def test_parse_crate_match(text, name, requirement):
    match = parse_crate_match(text)
    assert (match.text, match.name) == (text, name)
    assert match.requirement == (None if requirement is None else parse_req(requirement))


@pytest.mark.parametrize("text, crate, version, matches", [
    ("serde", "serde", "1.0.0", True),
    ("serde", "SERDE", "1.0.0", True),  # names match case-insensitively
    ("serde", "serde_json", "1.0.0", False),
    ("corp-*", "corp-tools", "0.1.0", True),
    ("corp-*", "acme-corp-tools", "0.1.0", False),
    ("Corp-*", "corp-x", "0.1.0", True),
    ("lib?", "liba", "0.1.0", True),
    ("lib[0-9]", "lib7", "0.1.0", True),
    ("lib[!0-9]", "lib7", "0.1.0", False),
    ("tokio@1.48.0", "tokio", "1.48.0", True),
    ("tokio@1.48.0", "tokio", "1.48.1", False),
    ("tokio@1.48", "tokio", "1.48.7", True),
    ("tokio@1.48", "tokio", "1.49.0", False),
    ("openssl-src@<300.0.0", "openssl-src", "111.28.2+1.1.1w", True),
    ("openssl-src@<300.0.0", "openssl-src", "300.2.1+3.2.0", False),
])
def test_a_crate_match_matches(text, crate, version, matches):
    assert parse_crate_match(text).matches(crate, parse_version(version)) is matches


@pytest.mark.parametrize("text, problem", [
    ("", "'' is not a crate match: the name (before any '@') takes letters, digits, '-', '_' and the globs * ? [...]"),
    ("@1.0.0", "'@1.0.0' is not a crate match: the name (before any '@') takes letters, digits"),
    ("ser de", "'ser de' is not a crate match: the name"),
    ("serde/json", "'serde/json' is not a crate match: the name"),
    ("tokio@", "'tokio@' is not a crate match: no version or requirement after '@'"),
    ("tokio@ ", "'tokio@ ' is not a crate match: no version or requirement after '@'"),
    ("openssl-src@<three", "'openssl-src@<three': the version requirement does not parse ("),
    ("tokio@1.2.3.4", "'tokio@1.2.3.4': the version requirement does not parse ("),
])
def test_crate_match_errors_name_the_text(text, problem):
    with pytest.raises(ValueError) as info:
        parse_crate_match(text)
    assert str(info.value).startswith(problem)


def test_equal_crate_matches_are_equal_and_hash_alike():
    a, b = parse_crate_match("tokio@>=1.40, <1.48"), parse_crate_match("tokio@>=1.40, <1.48")
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1


# -- errors -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("policy, corp, field, problem", [
    ("on", None, "policy", "expected a mapping, got a string"),
    ({"cooldown": "3d"}, None, "policy.cooldown", "unknown field (allowed: dry_run, quarantine, advisories, rules)"),
    ({"dry_run": "yes"}, None, "policy.dry_run", "expected true or false, got a string"),
    ({"quarantine": []}, None, "policy.quarantine", "expected a mapping, got a list"),
    ({"quarantine": {"age": 1}}, None, "policy.quarantine.age",
     "unknown field (allowed: min_age, pinned, exempt, missing_pubtime)"),
    ({"quarantine": {"pinned": "maybe"}}, None, "policy.quarantine.pinned", "expected one of allow, deny"),
    ({"quarantine": {"exempt": "serde"}}, None, "policy.quarantine.exempt", "expected a list of crate matches"),
    ({"quarantine": {"exempt": ["serde", "bad name"]}}, None, "policy.quarantine.exempt[1]",
     "'bad name' is not a crate match: the name (before any '@') takes letters, digits, '-', '_' and the globs "
     "* ? [...]"),
    ({"quarantine": {"exempt": ["tokio@"]}}, None, "policy.quarantine.exempt[0]",
     "'tokio@' is not a crate match: no version or requirement after '@'"),
    ({"quarantine": {"exempt": [3]}}, None, "policy.quarantine.exempt[0]", "expected a string, got an integer"),
    ({"quarantine": {"missing_pubtime": "never"}}, None, "policy.quarantine.missing_pubtime",
     "expected one of first-seen, allow"),
    ({"advisories": {"database": ""}}, None, "policy.advisories.database", "expected a path"),
    ({"advisories": {"malicious": "warn"}}, None, "policy.advisories.malicious", "expected one of hide, deny"),
    ({"advisories": {"vulnerable": "allow"}}, None, "policy.advisories.vulnerable", "expected one of warn, hide, deny"),
    ({"advisories": {"informational": "deny"}}, None, "policy.advisories.informational", "expected one of warn, hide"),
    ({"advisories": {"ignore": "RUSTSEC-2023-0071"}}, None, "policy.advisories.ignore", "expected a list of advisory ids"),
    ({"advisories": {"ignore": ["RUSTSEC-2023-0071", "GHSA-c8wc-98gm-7x5c"]}}, None, "policy.advisories.ignore[1]",
     "'GHSA-c8wc-98gm-7x5c' is not a RustSec advisory id (RUSTSEC-YYYY-NNNN; its GHSA- or CVE- aliases are not "
     "accepted)"),
    ({"advisories": {"ignore": ["CVE-2023-1234"]}}, None, "policy.advisories.ignore[0]",
     "'CVE-2023-1234' is not a RustSec advisory id (RUSTSEC-YYYY-NNNN; its GHSA- or CVE- aliases are not accepted)"),
    ({"advisories": {"ignore": ["rustsec-2023-0071"]}}, None, "policy.advisories.ignore[0]",
     "'rustsec-2023-0071' is not a RustSec advisory id (RUSTSEC-YYYY-NNNN; its GHSA- or CVE- aliases are not "
     "accepted)"),
    ({"rules": {"deny": "x"}}, None, "policy.rules", "expected a list of rules"),
    ({"rules": ["serde"]}, None, "policy.rules[0]", "expected a mapping, got a string"),
    ({"rules": [{"allow": "a"}, {}]}, None, "policy.rules[1]",
     "expected one of allow, warn, hide, deny (with the crates it is about)"),
    ({"rules": [{"reason": "no"}]}, None, "policy.rules[0]",
     "expected one of allow, warn, hide, deny (with the crates it is about)"),
    ({"rules": [{"hide": "a", "deny": "a"}]}, None, "policy.rules[0].deny", "set one of hide and deny per rule, not both"),
    ({"rules": [{"deny": "a", "because": "no"}]}, None, "policy.rules[0].because",
     "unknown field (allowed: allow, warn, hide, deny, reason)"),
    ({"rules": [{"deny": "openssl-src@<three"}]}, None, "policy.rules[0].deny",
     "'openssl-src@<three': the version requirement does not parse ("),
    ({"rules": [{"deny": "a", "reason": "two\nlines"}]}, None, "policy.rules[0].reason", "expected one line of text"),
    ({"rules": [{"deny": "a", "reason": " "}]}, None, "policy.rules[0].reason", "expected one line of text"),
    (None, "off", "registries[1].policy", "expected a mapping, got a string"),
    (None, {"cooldown": 0}, "registries[1].policy.cooldown",
     "unknown field (allowed: dry_run, quarantine, advisories, rules)"),
    (None, {"quarantine": {"min_age": "soon"}}, "registries[1].policy.quarantine.min_age",
     "expected a duration such as 3d, 12h, 90m, 30s or plain seconds, got 'soon'"),
    (None, {"quarantine": {"age": 0}}, "registries[1].policy.quarantine.age",
     "unknown field (allowed: min_age, pinned, exempt, missing_pubtime)"),
    (None, {"advisories": {"vulnerable": "allow"}}, "registries[1].policy.advisories.vulnerable",
     "expected one of warn, hide, deny"),
    (None, {"rules": [{}]}, "registries[1].policy.rules[0]",
     "expected one of allow, warn, hide, deny (with the crates it is about)"),
    (None, {"quarantine": {"exempt": ["x@<<1"]}}, "registries[1].policy.quarantine.exempt[0]",
     "'x@<<1': the version requirement does not parse ("),
])
def test_errors_name_the_field(policy, corp, field, problem):
    error = parse_error(doc(policy, corp))
    assert error.field == field
    assert error.problem.startswith(problem) if problem.endswith("(") else error.problem == problem
    assert str(error) == f"{FILE}: {field}: {error.problem}"


def test_a_rules_requirement_error_names_the_rule_and_the_requirement():
    error = parse_error(doc({"rules": [{"allow": "serde"}, {"deny": "openssl-src@<300.0.x.y", "reason": "old"}]}))
    assert error.field == "policy.rules[1].deny"
    assert "'openssl-src@<300.0.x.y'" in error.problem and "does not parse" in error.problem


# -- the advisory database ---------------------------------------------------------------------------------------

def test_the_database_must_exist(tmp_path: Path):
    missing = tmp_path / "advisory-db"
    error = parse_error(doc({"advisories": {"database": str(missing)}}))
    assert error.field == "policy.advisories.database"
    assert error.problem == (f"no such directory: {missing} (expected a checkout of the RustSec advisory database, "
                             "https://github.com/rustsec/advisory-db)")


def test_the_database_must_have_a_crates_folder(tmp_path: Path):
    (tmp_path / "advisory-db").mkdir()
    error = parse_error(doc({"advisories": {"database": str(tmp_path / "advisory-db")}}))
    assert error.field == "policy.advisories.database"
    assert error.problem.startswith(f"no such directory: {tmp_path / 'advisory-db' / 'crates'} (")


def test_the_database_must_be_a_folder(tmp_path: Path):
    (tmp_path / "advisory-db").write_text("")
    error = parse_error(doc({"advisories": {"database": str(tmp_path / "advisory-db")}}))
    assert error.problem.startswith(f"not a directory: {tmp_path / 'advisory-db'} (")


def test_a_relative_database_is_relative_to_the_file(database: Path):
    config = database.parent / "proxies.yaml"
    config.write_text(yaml.safe_dump(doc({"advisories": {"database": "advisory-db"}})))
    assert load_settings(config, env={}).policy.advisories.database == str(database)


def test_the_database_may_come_from_the_environment(database: Path):
    settings = parse(doc({"advisories": {"database": "${ADVISORY_DB}"}}), env={"ADVISORY_DB": str(database)})
    assert settings.policy.advisories.database == str(database)


@pytest.mark.skipif(not SNAPSHOT.is_dir(), reason="the RustSec snapshot is not on this machine")
def test_the_real_snapshot_is_a_database():
    assert parse(doc({"advisories": {"database": str(SNAPSHOT)}})).policy.advisories.database == str(SNAPSHOT)


def test_a_registrys_missing_database_names_the_registrys_field(tmp_path: Path, database: Path):
    error = parse_error(doc({"advisories": {"database": str(database)}},
                            {"advisories": {"database": str(tmp_path / "nowhere")}}))
    assert error.field == "registries[1].policy.advisories.database"
    assert error.problem.startswith(f"no such directory: {tmp_path / 'nowhere'} (")


def test_a_missing_database_on_a_live_reload_keeps_the_running_settings(tmp_path: Path, database: Path):
    config = tmp_path / "proxies.yaml"
    config.write_text(yaml.safe_dump(doc({"advisories": {"database": str(database)}})))
    first = reload.read(str(config))
    assert first.error is None and first.settings.policy.advisories.database == str(database)
    (database / "crates").rmdir()
    again = reload.read(str(config))
    assert again.settings is None
    assert (again.error.field, again.error.problem.split(" (")[0]) == (
        "policy.advisories.database", f"no such directory: {database / 'crates'}")


# -- a registry's own policy ---------------------------------------------------------------------------------------

GLOBAL = {
    "dry_run": True,
    "quarantine": {"min_age": "3d", "pinned": "deny", "exempt": ["serde", "corp-*"]},
    "advisories": {"vulnerable": "deny", "ignore": ["RUSTSEC-2023-0071"]},
    "rules": [{"deny": "openssl-src", "reason": "no"}, {"allow": "acme-*"}],
}


def test_a_registrys_policy_is_merged_over_the_global_one_key_by_key():
    settings = parse(doc(GLOBAL, {"quarantine": {"min_age": "1h"}, "advisories": {"informational": "hide"}}))
    crates_io, corp = settings.registries
    assert crates_io.policy == settings.policy
    assert corp.policy.quarantine == Quarantine(min_age=3600, pinned="deny", missing_pubtime="first-seen",
                                                exempt=settings.policy.quarantine.exempt)
    assert corp.policy.advisories == AdvisoryPolicy(vulnerable="deny", informational="hide",
                                                    ignore=("RUSTSEC-2023-0071",))
    assert corp.policy.rules == settings.policy.rules and corp.policy.dry_run is True
    assert settings.policy.quarantine.min_age == 3 * 86400 and settings.policy.advisories.informational == "warn"


@pytest.mark.parametrize("own, field, replaced", [
    ({"rules": [{"warn": "left-pad"}]}, "rules", (Rule("warn", parse_crate_match("left-pad")),)),
    ({"rules": []}, "rules", ()),
    ({"quarantine": {"exempt": ["tokio"]}}, "exempt", (parse_crate_match("tokio"),)),
    ({"quarantine": {"exempt": []}}, "exempt", ()),
    ({"advisories": {"ignore": ["RUSTSEC-2020-0071"]}}, "ignore", ("RUSTSEC-2020-0071",)),
    ({"advisories": {"ignore": []}}, "ignore", ()),
])
def test_a_list_given_by_a_registry_replaces_the_global_one(own, field, replaced):
    policy = parse(doc(GLOBAL, own)).registries[1].policy
    shown = {"rules": policy.rules, "exempt": policy.quarantine.exempt, "ignore": policy.advisories.ignore}
    assert shown[field] == replaced


def test_a_registry_may_have_a_policy_without_a_global_one(database: Path):
    settings = parse(doc(None, {"quarantine": {"min_age": "90m"}, "advisories": {"database": str(database)}}))
    crates_io, corp = settings.registries
    assert settings.policy == crates_io.policy == Policy()
    assert corp.policy == Policy(quarantine=Quarantine(min_age=5400),
                                 advisories=AdvisoryPolicy(database=str(database)))


def test_a_registry_may_switch_dry_run_and_the_quarantine_off():
    corp = parse(doc(GLOBAL, {"dry_run": False, "quarantine": {"min_age": 0}})).registries[1]
    assert corp.policy.dry_run is False and corp.policy.quarantine.min_age == 0
    assert corp.policy.quarantine.pinned == "deny"


def test_null_in_a_registrys_policy_keeps_the_global_value():
    corp = parse(doc(GLOBAL, {"quarantine": {"min_age": None}, "rules": None})).registries[1]
    assert corp.policy == parse(doc(GLOBAL)).policy


def test_merged():
    base = {"a": 1, "b": {"c": 2, "d": [1, 2]}, "e": [3]}
    assert merged(base, {}) == base
    assert merged(base, {"b": {"d": []}, "e": [4, 5]}) == {"a": 1, "b": {"c": 2, "d": []}, "e": [4, 5]}
    assert merged(base, {"a": 9, "b": {"c": 3}}) == {"a": 9, "b": {"c": 3, "d": [1, 2]}, "e": [3]}
    assert base == {"a": 1, "b": {"c": 2, "d": [1, 2]}, "e": [3]}  # not changed


def test_the_override_model_has_every_field_of_the_section_optional():
    def fields(model, prefix=""):
        for name, f in model.model_fields.items():
            optional = typing.get_origin(f.annotation) in (typing.Union, types.UnionType)
            inner = typing.get_args(f.annotation)[0] if optional else f.annotation
            if isinstance(inner, type) and issubclass(inner, models.Section):
                yield from fields(inner, f"{prefix}{name}.")
            else:
                yield prefix + name

    override = typing.get_args(models.Registry.model_fields["policy"].annotation)[0]
    assert list(fields(override)) == list(fields(models.Policy))
    assert "quarantine.min_age" in list(fields(override))
    assert override.model_validate({}).model_dump(exclude_unset=True) == {}


# -- reload --------------------------------------------------------------------------------------------------------

def test_the_same_file_loaded_twice_gives_equal_settings(tmp_path: Path, database: Path):
    config = tmp_path / "proxies.yaml"
    config.write_text(ISSUE_EXAMPLE.replace("DATABASE", str(database)))
    first, second = load_settings(config, env={}), load_settings(config, env={})
    assert first == second and hash(first.policy) == hash(second.policy)
    assert first.registries[1].policy == second.registries[1].policy
    assert reload.plan(first, second).changes == ()


def test_a_changed_policy_is_not_equal(database: Path):
    text = ISSUE_EXAMPLE.replace("DATABASE", str(database))
    before, after = parse(text), parse(text.replace("min_age: 3d", "min_age: 2d"))
    assert before.policy != after.policy and before.registries[0].policy != after.registries[0].policy
    assert before.registries[1].policy == after.registries[1].policy  # its own min_age: 0 wins either way
