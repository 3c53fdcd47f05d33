"""status.py: the status server's Basic auth never blocks the event loop, costs the same for unknown users,
remembers a success briefly, is bounded under a flood, and reads its htpasswd file only if it is a regular file."""

from __future__ import annotations

import asyncio
import base64
import os
from pathlib import Path

import bcrypt
import httpx
import pytest
from cratecache.operations.status import StatusAuth, StatusServer, Verified, Verifier

pytestmark = pytest.mark.timeout(60)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def htpasswd(tmp_path: Path, rounds: int, **users: str) -> Path:
    path = tmp_path / "htpasswd"
    path.write_text("".join(f"{user}:{bcrypt.hashpw(pw.encode(), bcrypt.gensalt(rounds)).decode()}\n"
                            for user, pw in users.items()))
    return path


async def snapshot() -> dict:
    return {}


async def metrics() -> bytes:
    return b""


async def test_a_bcrypt_check_runs_off_the_loop_so_healthz_answers_meanwhile(tmp_path: Path):
    """Wrong passwords used to be checked on the event loop: 100 of them took every other answer from 3 ms to
    2.7 s. Here a check costs ~1 s (bcrypt cost 14); /healthz is answered while two of them run."""
    auth = StatusAuth.parse(f"@{htpasswd(tmp_path, 14, ops='right')}", "/healthz")
    server = StatusServer("127.0.0.1", 0, snapshot, metrics, auth)
    await server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        async with httpx.AsyncClient(timeout=30) as client:
            checks = [asyncio.create_task(client.get(base + "/status.json", auth=(user, "wrong")))
                      for user in ("ops", "nobody")]
            await asyncio.sleep(0.1)  # both requests are in: their checks have begun
            health = await client.get(base + "/healthz")
            assert health.status_code == 200
            assert not any(check.done() for check in checks)  # answered while both checks were still running
            assert [(await check).status_code for check in checks] == [401, 401]
    finally:
        await server.stop()


def test_an_unknown_user_is_checked_against_the_costliest_hash(tmp_path: Path):
    """So a refusal takes as long whether or not the user name exists."""
    cheap, costly = (bcrypt.hashpw(pw, bcrypt.gensalt(rounds)).decode() for pw, rounds in ((b"a", 4), (b"b", 6)))
    (tmp_path / "htpasswd").write_text(f"cheap:{cheap}\ncostly:{costly}\n")
    auth = StatusAuth.parse(f"@{tmp_path / 'htpasswd'}", "")
    assert auth.decoy == "costly"
    assert not auth.check("nobody", "b")  # checked against costly's hash, and refused though it matches
    assert not auth.check("cheap", "b") and auth.check("cheap", "a") and auth.check("costly", "b")


def test_a_success_is_remembered_for_a_while_by_a_hash_of_the_credentials():
    now = [1000.0]
    verified = Verified(seconds=60, size=2, clock=lambda: now[0])
    verified.add("ops", "right")
    assert ("ops", "right") in verified and ("ops", "wrong") not in verified
    assert all(b"right" not in key for key in verified._until)
    now[0] += 61
    assert ("ops", "right") not in verified
    for i in range(3):
        verified.add("ops", str(i))
    assert ("ops", "0") not in verified and ("ops", "2") in verified  # at most `size`, oldest out first


async def test_a_flood_waits_in_a_bounded_queue_and_the_rest_is_told_busy(tmp_path: Path):
    auth = StatusAuth.parse(f"@{htpasswd(tmp_path, 12, ops='right')}", "")
    verifier = Verifier(auth, threads=1, waiting=2)
    try:
        answers = await asyncio.gather(*(verifier.allows("/", basic("ops", f"wrong{i}")) for i in range(5)))
        assert answers.count(False) == 2 and answers.count(Verifier.BUSY) == 3
        assert await verifier.allows("/", basic("ops", "right")) is True
        assert await verifier.allows("/", basic("ops", "right")) is True  # remembered: no second bcrypt
        assert ("ops", "right") in verifier.verified
    finally:
        verifier.close()


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_an_htpasswd_that_is_not_a_regular_file_is_refused_without_reading_it(tmp_path: Path, kind: str):
    path = Path("/dev/zero")
    if kind == "fifo":
        path = tmp_path / "htpasswd"
        os.mkfifo(path)
    with pytest.raises(ValueError, match="not a regular file"):
        StatusAuth.parse(f"@{path}")
