"""staging.py: lockfile and toolchain staging through the resolver, over fake registries and dist roots (no sockets)."""

from __future__ import annotations

import asyncio
import io
import re

from cratecache.airgap.staging import Progress, ToolchainPlan, stage, stage_toolchains
from cratecache.protocols import dist
from cratecache.protocols.lockfile import Plan
from cratecache.resolver import Resolver
from cratecache.storage import open_storage

from tests.fake_registry import A_DL, FakeNet, a_download, make_settings, upstream
from tests.fake_registry import A as REGISTRY
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


async def test_a_lockfile_is_staged_a_few_crates_at_a_time_by_as_many_tasks_not_one_per_crate(tmp_path, clock):
    crates = {f"c{i:02}": {"1.0.0": f"crate {i}".encode()} for i in range(60)}
    fake = FakeNet()
    fake.registry(REGISTRY, A_DL, a_download, crates)
    fake.delay = 0.005
    in_flight, seen = [0], {"requests": 0, "tasks": 0}
    handle = fake._handle

    async def counting(request):
        in_flight[0] += 1
        seen["requests"] = max(seen["requests"], in_flight[0])
        seen["tasks"] = max(seen["tasks"], len(asyncio.all_tasks()))
        try:
            return await handle(request)
        finally:
            in_flight[0] -= 1

    fake._handle = counting
    settings = make_settings(tmp_path, [upstream("a", REGISTRY)])
    resolver = Resolver(settings, open_storage(settings.cache), clock=clock, transport=fake.transport())
    wanted = Plan({"crates-io": {name: {"1.0.0": None} for name in crates}})
    try:
        result = await stage(resolver, wanted, Progress(wanted.count(), io.StringIO()), concurrency=4)
    finally:
        await resolver.aclose()
        await resolver.store.close()
    assert (result.fetched, result.failed) == (60, [])
    assert seen["requests"] <= 4
    assert seen["tasks"] < 20  # the workers and the proxy's own few, not one per crate of the lockfile
