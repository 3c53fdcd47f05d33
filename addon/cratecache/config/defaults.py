"""Every default of proxies.yaml, in one place: the models (models.py) declare them, the settings (settings.py)
and other modules (bundle.py's limits) use the same constants."""

DEFAULT_DIRECTORY = ".cache/cargo"  # relative to the configuration file's folder
DEFAULT_CA_DIRECTORY = "certs"  # likewise: the CA beside the configuration (a checkout: its certs/)
DEFAULT_SIZE_LIMIT = 20 * 1000**3
DEFAULT_INDEX_TTL = 300
DEFAULT_EVICTION_POLICY = "least-recently-used"
DEFAULT_NEGATIVE_TTL = 60
DEFAULT_BACKOFF = 30
DEFAULT_BACKOFF_AFTER = 3
DEFAULT_LEASE = 20  # below Cargo's 30 s timeout
DEFAULT_REVALIDATE_AHEAD = 256  # index files revalidated ahead of Cargo per expired one it asks for
DEFAULT_MAX_CRATE_SIZE = 64 * 1024**2
DEFAULT_MAX_INDEX_SIZE = 16 * 1024**2
DEFAULT_BACKEND = "disk"
DEFAULT_REGION = "us-east-1"
DEFAULT_TIMEOUT_MS = 5000
DEFAULT_DIST_HOST = "static.rust-lang.org"
DEFAULT_DIST_TTL = 3600
DEFAULT_MAX_DIST_FILE_SIZE = 2 * 1024**3  # rustc is ~70 MB, rust-docs ~20 MB; a whole toolchain well below this
MAX_CONFIG_BYTES = 1024**2  # proxies.yaml
MAX_SECRET_BYTES = 64 * 1024  # a password_file and the like: one line
TOOLCHAINS = "toolchains"  # the name of the dist source in logs, metrics and upstream health (not a registry name)
MIRROR_TOOLCHAINS_PATH = "rustup"  # the mirror serves the toolchains under <public_url>/rustup/ (not a registry name)
EVICTION_POLICIES = ("least-recently-used", "least-recently-stored", "least-frequently-used", "none")
BACKENDS = ("disk", "s3")
LOG_FORMATS = ("text", "json")
DEFAULT_LOG_FORMAT = "text"
