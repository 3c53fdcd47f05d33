"""The supply-chain policy: which crate versions the proxy serves, hides or refuses (issue 29).

  semver.py       Cargo's versions and version requirements, matched as Cargo's `semver` crate (1.x) does
  advisories.py   the RustSec advisory database: one advisory file -> Advisory, a checkout -> Database,
                  and a cheap fingerprint of the checkout for the watcher

The decisions themselves (quarantine, advisories, rules -> allow/warn/hide/deny) come on top of these.
"""
