"""One module per scenario of issue 6; each `run(bench) -> Section`."""
