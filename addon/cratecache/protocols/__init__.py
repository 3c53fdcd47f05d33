"""Protocol modules over the engine: each says what its paths are, where they live upstream, what verifies them
and whether they may change; the engine (`../engine`) does the fetching, verifying and storing.

  base.py        `Protocol`, the interface every protocol module implements
  cargo.py       Cargo's sparse registries: config.json, index files, crates (uses sparse.py)
  cargo_ahead.py revalidating index files ahead of Cargo (uses ahead.py)
  rustup.py      rustup's dist tree: manifests with their .sha256, components against the manifests (uses dist.py)
"""
