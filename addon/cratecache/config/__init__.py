"""proxies.yaml -> typed, validated settings.

  defaults.py   every default, in one place
  fields.py     the field types a Python type alone cannot say: ${VAR}, hosts, URLs, sizes, names
  models.py     the file as declared: one pydantic model per section (and the JSON Schema from them)
  load.py       read the file, check it against the models, read secret files, resolve paths -> Settings
  settings.py   what the proxy runs with: frozen dataclasses (Settings, Registry, Toolchains, Upstream, ...)
  policy.py     the supply-chain policy it runs with: frozen dataclasses (Policy, Quarantine, Rule, CrateMatch, ...)
  files.py      regular files of bounded size only (proxies.yaml, secrets)
  errors.py     ConfigError: `file: field: problem` on one line, whatever failed

Every problem is reported as one `ConfigError` whose message names the file, the field (as a path such as
`registries[0].proxies[1].timeout_ms`) and the problem. Parsing is pure: the text, the file's location, the
environment and the reader of secret files (`password_file:` and the like) are passed in.
`python -m cratecache.config --schema` prints the JSON Schema (proxies.schema.json).
"""

from .defaults import (
    BACKENDS,
    DEFAULT_BACKOFF,
    DEFAULT_BACKOFF_AFTER,
    DEFAULT_DIST_HOST,
    DEFAULT_DIST_TTL,
    DEFAULT_INDEX_TTL,
    DEFAULT_LEASE,
    DEFAULT_MAX_CRATE_SIZE,
    DEFAULT_MAX_DIST_FILE_SIZE,
    DEFAULT_MAX_INDEX_SIZE,
    DEFAULT_NEGATIVE_TTL,
    DEFAULT_REVALIDATE_AHEAD,
    DEFAULT_SIZE_LIMIT,
    DEFAULT_TIMEOUT_MS,
    EVICTION_POLICIES,
    MAX_CONFIG_BYTES,
    MAX_SECRET_BYTES,
    TOOLCHAINS,
)
from .errors import ConfigError, shown_url
from .fields import parse_duration, parse_size
from .files import read_regular_file, read_secret
from .load import load_settings, parse_settings
from .policy import AdvisoryPolicy, CrateMatch, Policy, Quarantine, Rule, parse_crate_match
from .settings import CacheSettings, Mirror, Registry, S3Settings, Settings, Source, Toolchains, Upstream

__all__ = [
    "BACKENDS", "DEFAULT_BACKOFF", "DEFAULT_BACKOFF_AFTER", "DEFAULT_DIST_HOST", "DEFAULT_DIST_TTL",
    "DEFAULT_INDEX_TTL", "DEFAULT_LEASE", "DEFAULT_MAX_CRATE_SIZE", "DEFAULT_MAX_DIST_FILE_SIZE",
    "DEFAULT_MAX_INDEX_SIZE", "DEFAULT_NEGATIVE_TTL", "DEFAULT_REVALIDATE_AHEAD", "DEFAULT_SIZE_LIMIT",
    "DEFAULT_TIMEOUT_MS", "EVICTION_POLICIES", "MAX_CONFIG_BYTES", "MAX_SECRET_BYTES", "TOOLCHAINS",
    "CacheSettings", "ConfigError", "Mirror", "Registry", "S3Settings", "Settings", "Source", "Toolchains", "Upstream",
    "load_settings", "parse_settings", "parse_size", "read_regular_file", "read_secret", "shown_url",
    "AdvisoryPolicy", "CrateMatch", "Policy", "Quarantine", "Rule", "parse_crate_match", "parse_duration",
]
