"""cargo-cache: a caching proxy for Cargo and rustup (a mitmproxy addon); see README.md."""

from . import sqlitelib as _sqlitelib  # noqa: F401  (first: the SQLite every module of the process uses)
