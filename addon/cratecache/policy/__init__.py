"""The supply-chain policy: which crate versions the proxy serves, hides or refuses (issue 29).

  advisories.py   the RustSec advisory database: one advisory file -> Advisory, a checkout -> Database,
                  and a cheap fingerprint of the checkout for the watcher
  decide.py       the verdict on one version: rules, advisories, quarantine -> allow/warn/hide/deny (pure)
  sightings.py    the publish times the proxy keeps per crate (pure)
  rewrite.py      the index file served: hidden versions yanked, kept pubtimes (pure)
  gate.py         `PolicyGate`, the protocol module over Cargo's that applies them (the only I/O: the kept times)
  journal.py      logs, counts and the last decisions; view.py: the status page's section
  databases.py    the advisory databases in use, loaded and re-read
  audit.py        `audit`: the verdicts on a lockfile's packages

Versions and requirements are matched by `cratecache/semver.py` (Cargo's semver crate, ported), which the
configuration uses too.
"""
