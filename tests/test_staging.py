"""staging.py: toolchain staging through the resolver, over fake dist roots (no sockets)."""

from __future__ import annotations

import io
import re

from cratecache.airgap.staging import Progress, ToolchainPlan, stage_toolchains
from cratecache.protocols import dist

from tests.test_dist import HOST, manifest_text
from tests.test_dist_resolver import STABLE, A, Dist, make, net, up  # noqa: F401 (fixtures)


async def test_toolchain_progress_counts_every_step_against_one_total(make, up: Dist):  # noqa: F811
    up.manifest(A, STABLE, manifest_text().encode())
    up.components(A)
    resolver = make()
    out = io.StringIO()
    plan = ToolchainPlan((dist.ToolchainRequest("stable"),), (HOST,), HOST)
    result = await stage_toolchains(resolver, plan, Progress(len(plan.requests), out))
    lines = out.getvalue().splitlines()
    counts = [re.match(r"(\d+)/(\d+) ", line).groups() for line in lines]
    assert result.failed == [] and result.fetched == 4  # the manifest, rustc, cargo, rust-std
    assert counts == [(str(i), "4") for i in range(1, 5)], lines  # 1/4 .. 4/4, never 1/1 then 2/4
