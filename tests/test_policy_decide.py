"""The policy's decisions (decide.py): pure, against the real RustSec snapshot where advisories matter."""


import pytest
from cratecache.config.policy import AdvisoryPolicy, Policy, Quarantine, Rule, parse_crate_match
from cratecache.policy import advisories
from cratecache.policy.decide import decide, decide_all, duration, timestamp

from tests.fixtures.rustsec import SNAPSHOT as SNAPSHOT_DIR

SNAPSHOT = SNAPSHOT_DIR
DAY = 86400
NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def database():
    return advisories.load(SNAPSHOT)


def quarantine(**fields) -> Policy:
    return Policy(quarantine=Quarantine(**({"min_age": 3 * DAY} | fields)))


def test_young_version_is_hidden_until_it_is_old_enough():
    verdict = decide(quarantine(), None, "coolcrate", "1.1.0", NOW - DAY, NOW)
    assert verdict.action == "hide" and verdict.hidden and verdict.refusal is None
    assert verdict.until == NOW + 2 * DAY
    assert verdict.findings[0].label == "hide:quarantine"
    assert verdict.findings[0].message == (f"cargo-cache policy: coolcrate 1.1.0 is in quarantine until "
                                           f"{timestamp(NOW + 2 * DAY)} (min_age 3d)")
    assert decide(quarantine(), None, "coolcrate", "1.1.0", NOW - DAY, NOW + 2 * DAY).findings == ()
    assert decide(quarantine(), None, "coolcrate", "1.0.0", None, NOW).findings == ()  # unknown age: old


def test_pinned_deny_refuses_the_download():
    verdict = decide(quarantine(pinned="deny"), None, "coolcrate", "1.1.0", NOW - 60, NOW)
    assert verdict.action == "deny" and verdict.refusal.label == "deny:quarantine"


def test_exempt_names_versions_and_globs():
    exempt = tuple(parse_crate_match(t) for t in ("serde", "tokio@1.48.0", "corp-*"))
    policy = quarantine(exempt=exempt)
    young = NOW - 60
    assert decide(policy, None, "serde", "1.0.300", young, NOW).findings == ()
    assert decide(policy, None, "Serde", "1.0.300", young, NOW).findings == ()  # names ignore case
    assert decide(policy, None, "tokio", "1.48.0", young, NOW).findings == ()
    assert decide(policy, None, "tokio", "1.48.1", young, NOW).action == "hide"  # name@version is that version only
    assert decide(policy, None, "corp-auth", "0.1.0", young, NOW).findings == ()
    assert decide(policy, None, "serde_json", "1.0.0", young, NOW).action == "hide"


def test_malicious_advisory_denies(database):
    malicious = next(a for adv in database.by_crate.values() for a in adv if a.kind == "malicious")
    policy = Policy(advisories=AdvisoryPolicy(database=str(SNAPSHOT)))
    verdict = decide(policy, database, malicious.package, "0.1.0", None, NOW)
    assert verdict.refusal is not None and verdict.refusal.reason == malicious.id
    assert verdict.refusal.category == "malicious"
    assert f"{malicious.id} (malicious)" in verdict.refusal.message


def test_vulnerable_range_hides_patched_does_not_ignore_lifts(database):
    # RUSTSEC-2016-0001: openssl before 0.9.0
    policy = Policy(advisories=AdvisoryPolicy(database=str(SNAPSHOT)))
    old = decide(policy, database, "openssl", "0.8.3", None, NOW)
    assert "hide:RUSTSEC-2016-0001" in {f.label for f in old.findings} and old.hidden and old.refusal is None
    assert "RUSTSEC-2016-0001" not in {f.reason for f in decide(policy, database, "openssl", "0.9.0", None,
                                                                  NOW).findings}
    ignoring = Policy(advisories=AdvisoryPolicy(database=str(SNAPSHOT), ignore=("RUSTSEC-2016-0001",)))
    assert "RUSTSEC-2016-0001" not in {f.reason for f in decide(ignoring, database, "openssl", "0.8.3", None,
                                                                  NOW).findings}
    warning = Policy(advisories=AdvisoryPolicy(database=str(SNAPSHOT), vulnerable="warn"))
    assert not decide(warning, database, "openssl", "0.8.3", None, NOW).hidden


def test_rules_first_match_allow_beats_advisories_and_quarantine(database):
    rules = (Rule("allow", parse_crate_match("openssl@0.8.3")),
             Rule("deny", parse_crate_match("openssl@<0.10"), "OpenSSL 1.0 is out of support here"),
             Rule("allow", parse_crate_match("openssl")))
    policy = Policy(quarantine=Quarantine(min_age=3 * DAY),
                    advisories=AdvisoryPolicy(database=str(SNAPSHOT)), rules=rules)
    assert decide(policy, database, "openssl", "0.8.3", NOW - 60, NOW).findings == ()
    denied = decide(policy, database, "openssl", "0.9.5", None, NOW)
    assert denied.refusal.reason == "rule"
    assert denied.refusal.message == "cargo-cache policy: openssl 0.9.5: OpenSSL 1.0 is out of support here"
    assert decide(policy, database, "openssl", "0.10.70", NOW - 60, NOW).findings == ()  # third rule


def test_decide_all_lists_only_what_it_decided_about():
    verdicts = decide_all(quarantine(), None, "coolcrate", {"1.0.0": None, "1.1.0": NOW - 60, "1.2.0": NOW - 9 * DAY},
                          NOW)
    assert list(verdicts) == ["1.1.0"]


def test_duration_text():
    assert [duration(s) for s in (3 * DAY, 7200, 90 * 60, 45, 0)] == ["3d", "2h", "90m", "45s", "0s"]
