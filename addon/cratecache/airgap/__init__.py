"""Air-gapped sites: staging lockfiles and toolchains, bundles (export, verified import), and the bounded JSON
reader bundles use."""
