"""Protocol modules over the engine: each says what its paths are, where they live upstream, what verifies them
and whether they may change; the engine (`../engine`) does the fetching, verifying and storing.

  base.py        `Protocol`, the interface every protocol module implements
  routes.py      the routes they answer (`ConfigRoute`, `IndexRoute`, `CrateRoute`, `DistRoute`) and their keys
  cargo.py       Cargo's sparse registries: config.json, index files, crates (uses sparse.py)
  cargo_ahead.py revalidating index files ahead of Cargo (uses ahead.py)
  rustup.py      rustup's dist tree: manifests with their .sha256, components against the manifests (uses dist.py)
  vouched.py     what the held manifests vouch for: parsed once off the loop, hash tables kept beside them
  sparse.py      Cargo's sparse protocol: names, index layout, dl templates, index files (pure)
  dist.py        rustup's dist layout: what a path is, what verifies it, which names move, manifests (pure)
  lockfile.py    Cargo.lock -> the registry packages to stage
  ahead.py       which index files Cargo will ask for next, which are in use (pure)
  reasks.py      whether a client asks again for an index file (Cargo's signal after a publish; pure)
  pairs.py       which manifest hash each client was given in a .sha256, so it gets that manifest (pure)
"""
