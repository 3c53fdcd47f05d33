"""`make bench`: the proxy measured against its baselines on loopback; writes BENCHMARKS.md (see run.py)."""
