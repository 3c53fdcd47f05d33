"""upstreams.py: status outcomes, error descriptions, the per-upstream client and the priority walk."""

from __future__ import annotations

import base64
import tracemalloc
from types import SimpleNamespace

import httpx
import pytest
from cratecache.config import Upstream
from cratecache.upstreams.client import Attempt, UpstreamClient, UpstreamError, describe_error, status_outcome, summary, walk

PASSWORD = "hunter2-s3cret"
TOKEN = base64.b64encode(f"ci:{PASSWORD}".encode()).decode()


@pytest.mark.parametrize("status, outcome", [
    (200, "ok"), (304, "not_modified"), (404, "not_found"), (410, "not_found"), (451, "not_found"),
    (401, "failed"), (403, "failed"), (429, "failed"), (500, "failed"), (503, "failed"),
])
def test_status_outcome(status, outcome):
    assert status_outcome(status) == outcome


@pytest.mark.parametrize("error, expected", [
    (httpx.ConnectError("[Errno 111] Connection refused"), "connection failed: [Errno 111] Connection refused"),
    (httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] self-signed"), "TLS error: [SSL: CERTIFICATE_VERIFY_FAILED]"),
    (httpx.ReadTimeout("read"), "timed out after 750 ms (ReadTimeout)"),
    (httpx.ConnectTimeout("connect"), "timed out after 750 ms (ConnectTimeout)"),
    (httpx.TooManyRedirects("Exceeded maximum allowed redirects."), "too many redirects"),
    (httpx.RemoteProtocolError("peer closed connection"), "RemoteProtocolError: peer closed connection"),
    (UpstreamError("checksum mismatch for foo 1.0.0"), "checksum mismatch for foo 1.0.0"),
    (ValueError("odd\n  multi-line\ttext"), "ValueError: odd multi-line text"),
])
def test_describe_error_is_one_line(error, expected):
    text = describe_error(error, 750)
    assert text.startswith(expected)
    assert "\n" not in text


def test_describe_error_shortens_long_messages():
    assert len(describe_error(httpx.ConnectError("x" * 1000), 1)) < 200


# -- the client ----------------------------------------------------------------------------------

def authenticated(handler, **fields) -> UpstreamClient:
    up = Upstream(name="a", url="https://a.test/index/", username="ci", password=PASSWORD, timeout_ms=750, **fields)
    return UpstreamClient(up, transport=httpx.MockTransport(handler))


@pytest.mark.parametrize("error", [httpx.ConnectError, httpx.ReadTimeout, httpx.RemoteProtocolError,
                                   httpx.ConnectTimeout])
async def test_failure_descriptions_never_contain_the_password(error):
    def handler(request: httpx.Request) -> httpx.Response:
        raise error(f"failed on {request.url}", request=request)

    client = authenticated(handler)

    async def attempt(c: UpstreamClient):
        await c.get(c.url("3/f/foo"))
        raise AssertionError("unreachable")

    result, attempts = await walk([client], attempt)
    await client.aclose()
    assert result is None and attempts[0].outcome == "failed"
    for text in (attempts[0].detail, summary(attempts), repr(client.upstream)):
        assert PASSWORD not in text and TOKEN not in text


@pytest.mark.parametrize("url, sends_auth", [
    ("https://a.test/index/3/f/foo", True),
    ("https://a.test/dl/foo/1.0.0/download", True),  # same origin, another path
    ("https://A.TEST:443/dl/foo", True),  # same origin, spelt with case and the default port
    ("https://a.test:8443/dl/foo", False),  # another port
    ("http://a.test/dl/foo", False),  # another scheme
    ("https://cdn.a.test/dl/foo", False),  # another host
])
async def test_credentials_only_to_the_index_origin(url, sends_auth):
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=b"ok")

    client = authenticated(handler)
    got = await client.get(url)
    await client.aclose()
    assert (got.status, got.body) == (200, b"ok")
    assert seen[0].headers.get("authorization") == (f"Basic {TOKEN}" if sends_auth else None)


async def test_credentials_dropped_on_redirect_to_another_origin():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.host == "a.test":
            return httpx.Response(302, headers={"Location": "https://cdn.test/foo.crate"})
        return httpx.Response(200, content=b"crate")

    client = authenticated(handler, download_hosts=("cdn.test",))
    got = await client.get("https://a.test/dl/foo/1.0.0/download")
    await client.aclose()
    assert got.body == b"crate"
    assert [r.headers.get("authorization") for r in seen] == [f"Basic {TOKEN}", None]


async def test_cookies_an_upstream_sets_are_never_sent_back():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=b"ok", headers={"Set-Cookie": "session=abc; Path=/"})

    client = authenticated(handler)
    for _ in range(2):
        assert (await client.get("https://a.test/index/se/rd/serde")).body == b"ok"
    await client.aclose()
    assert [r.headers.get("cookie") for r in seen] == [None, None]


def test_client_ignores_proxy_settings_from_the_environment():
    """A proxy whose users export HTTPS_PROXY must not loop back into itself. (httpx skips environment
    proxies whenever a transport is given, so only the setting itself can be checked here.)"""
    client = UpstreamClient(Upstream(name="a", url="https://a.test/index/"))
    assert client.client.trust_env is False


# -- the walk ------------------------------------------------------------------------------------

def fake(name: str) -> SimpleNamespace:
    upstream = SimpleNamespace(timeout_ms=100, username=None, password=None)
    return SimpleNamespace(name=name, key=f"reg/{name}", upstream=upstream)


def scripted(**results):
    """An attempt function answering per client name; an exception in the script is raised."""
    asked: list[str] = []

    async def attempt(client):
        asked.append(client.name)
        outcome, result = results[client.name]
        if isinstance(outcome, Exception):
            raise outcome
        return Attempt(client.name, outcome, f"HTTP {dict(ok=200, not_found=404, failed=503)[outcome]}"), result

    return attempt, asked


async def test_walk_tries_in_order_and_stops_at_first_success():
    attempt, asked = scripted(a=("not_found", None), b=("failed", None), c=("ok", "from c"), d=("ok", "from d"))
    result, attempts = await walk([fake("a"), fake("b"), fake("c"), fake("d")], attempt)
    assert result == "from c"
    assert asked == ["a", "b", "c"]
    assert [(a.upstream, a.outcome) for a in attempts] == [("a", "not_found"), ("b", "failed"), ("c", "ok")]
    assert all(a.ms >= 0 for a in attempts)


async def test_walk_turns_an_exception_into_a_failed_attempt_and_goes_on():
    attempt, asked = scripted(a=(httpx.ConnectError("refused"), None), b=("ok", "from b"))
    result, attempts = await walk([fake("a"), fake("b")], attempt)
    assert (result, asked) == ("from b", ["a", "b"])
    assert str(attempts[0]) == "a: connection failed: refused"


async def test_a_timeout_that_did_not_wait_is_not_reported_as_a_wait():
    """A broken pooled connection raised "ReadTimeout" within milliseconds; reporting "timed out after 100 ms" named
    a time that was never spent. The reason then gives the time it took and the error's own message."""
    attempt, _ = scripted(a=(httpx.ReadTimeout("Timeout on reading data from socket"), None))
    _, attempts = await walk([fake("a")], attempt)
    assert attempts[0].detail.startswith("ReadTimeout after ")
    assert attempts[0].detail.endswith(" ms, before its 100 ms timeout: Timeout on reading data from socket")


@pytest.mark.parametrize("elapsed, expected", [
    (None, "timed out after 750 ms (ReadTimeout)"),
    (751.0, "timed out after 750 ms (ReadTimeout)"),
    (4.2, "ReadTimeout after 4 ms, before its 750 ms timeout: read"),
])
def test_a_timeout_is_described_with_the_time_spent(elapsed, expected):
    assert describe_error(httpx.ReadTimeout("read"), 750, elapsed) == expected


async def test_walk_without_answer_returns_every_attempt():
    attempt, asked = scripted(a=("not_found", None), b=(UpstreamError("invalid index file"), None))
    result, attempts = await walk([fake("a"), fake("b")], attempt)
    assert result is None
    assert summary(attempts) == "a: HTTP 404; b: invalid index file"


async def test_walk_over_no_upstream():
    attempt, asked = scripted()
    assert await walk([], attempt) == (None, [])
    assert summary([]) == "no active upstream"


async def test_walk_masks_credentials_a_library_put_in_an_error_message():
    client = fake("a")
    client.upstream.username, client.upstream.password = "ci", PASSWORD
    attempt, _ = scripted(a=(httpx.ConnectError(f"cannot reach https://ci:{PASSWORD}@a.test/"), None))
    _, attempts = await walk([client], attempt)
    assert PASSWORD not in str(attempts[0]) and "***" in str(attempts[0])


async def test_a_full_connection_pool_never_puts_the_upstream_into_back_off():
    from cratecache.upstreams.health import Health

    health = Health(backoff=30, threshold=3)
    pool_full, asked = scripted(a=(httpx.PoolTimeout("no free connection"), None), b=("ok", "from b"))
    for _ in range(10):  # a burst of misses waiting for a pooled connection to a
        await walk([fake("a"), fake("b")], pool_full, health, clock=lambda: 100.0)
    assert health.skip_reason("reg/a", 100.0) is None
    refused, _ = scripted(a=(httpx.ConnectError("connection refused"), None), b=("ok", "from b"))
    for _ in range(3):
        await walk([fake("a"), fake("b")], refused, health, clock=lambda: 100.0)
    assert health.skip_reason("reg/a", 100.0).startswith("backing off")  # a real outage still does


class Streamed(httpx.AsyncByteStream):
    """A body that arrives as a network one does, 16 KiB at a time (httpx reads a bytes body at once)."""

    def __init__(self, data: bytes):
        self.data = data

    async def __aiter__(self):
        for at in range(0, len(self.data), 16384):
            yield self.data[at:at + 16384]


def gzip_bomb(layers: int, size: int) -> bytes:
    import gzip

    data = b"\0" * size
    for _ in range(layers):
        data = gzip.compress(data, 9)
    return data


@pytest.mark.parametrize(("encoding", "layers"), [("gzip", 1), ("gzip, gzip", 2)])
async def test_a_compressed_answer_is_limited_by_its_decoded_size_while_it_is_decoded(encoding, layers):
    bomb = gzip_bomb(layers, 256 << 20)  # 256 MiB of zeros, a few hundred KiB (or bytes) on the wire
    transport = httpx.MockTransport(lambda request: httpx.Response(200, stream=Streamed(bomb),
                                                                   headers={"Content-Encoding": encoding}))
    client = UpstreamClient(Upstream(name="a", url="https://a.example/"), transport=transport)
    tracemalloc.start()
    try:
        with pytest.raises(UpstreamError, match=r"answer too large: more than 1048576 bytes|unsupported Content-Encoding"):
            await client.get("https://a.example/x", max_bytes=1 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    await client.aclose()
    assert peak < 16 << 20, f"{peak >> 20} MiB allocated while refusing it"  # never inflated whole


async def test_a_gzip_answer_within_the_limit_is_decoded():
    import gzip

    body = b"line of an index file\n" * 1000
    transport = httpx.MockTransport(lambda r: httpx.Response(200, stream=Streamed(gzip.compress(body)),
                                                             headers={"Content-Encoding": "gzip"}))
    client = UpstreamClient(Upstream(name="a", url="https://a.example/"), transport=transport)
    got = await client.get("https://a.example/x", max_bytes=1 << 20)
    await client.aclose()
    assert got.body == body


@pytest.mark.parametrize(("index", "download_hosts", "url", "allowed"), [
    ("https://index.crates.io/", (), "https://static.crates.io/crates/serde/1.0.0/download", True),  # a sibling
    ("https://corp.example/artifactory/api/cargo/x/index/", (), "https://corp.example/artifactory/dl/serde", True),
    ("http://127.0.0.1:9000/index/", (), "http://127.0.0.1:9000/crates/serde/1.0.0/download", True),  # same origin
    ("http://127.0.0.1:9000/index/", (), "http://127.0.0.1:18091/status.json", False),  # another port
    ("https://mirror.example/", (), "http://127.0.0.1:18091/status.json", False),
    ("https://mirror.example/", (), "http://169.254.169.254/latest/meta-data/", False),
    ("https://index.crates.io/", (), "https://evil.crates.io.attacker.example/x", False),
    ("https://index.crates.io/", (), "https://a.b.crates.io/x", False),  # not a sibling: deeper
    ("https://mirror.example/", ("cdn.example",), "https://cdn.example/serde.crate", True),
    ("https://mirror.example/", ("cdn.example:8443",), "https://cdn.example:8443/serde.crate", True),
    ("https://mirror.example/", ("cdn.example",), "https://cdn.example:8443/serde.crate", False),
    ("https://mirror.example/", (), "file:///etc/passwd", False),
])
def test_downloads_go_only_to_hosts_the_operator_configured(index, download_hosts, url, allowed):
    from cratecache.upstreams.client import download_allowed

    assert download_allowed(url, Upstream(name="a", url=index, download_hosts=download_hosts)) is allowed


MIRROR = "https://mirror.example/index/"


@pytest.mark.parametrize(("index", "source", "target", "download_hosts", "reason"), [
    (MIRROR, "https://mirror.example/dl/x", "https://mirror.example/other/x", (), None),
    (MIRROR, "http://mirror.example/dl/x", "https://mirror.example/dl/x", (), None),  # up to https: same host
    ("https://index.example.com/", "https://index.example.com/x", "https://static.example.com/x", (), None),  # sibling
    (MIRROR, "https://mirror.example/x", "https://bucket.s3.example/x?X-Amz-Signature=1", ("bucket.s3.example",), None),
    (MIRROR, "https://mirror.example/x", "https://bucket.s3.example/x", (), "neither its own host"),
    (MIRROR, "https://mirror.example/x", "http://mirror.example/x", (), "from https to plain http"),
    (MIRROR, "https://mirror.example/x", "http://127.0.0.1:8081/status.json", (), "from https to plain http"),
    (MIRROR, "http://mirror.example/x", "http://127.0.0.1:8081/status.json", (), "neither its own host"),
    (MIRROR, "http://mirror.example/x", "http://169.254.169.254/latest/meta-data/", (), "neither its own host"),
    (MIRROR, "http://mirror.example/x", "http://[::1]/x", (), "neither its own host"),
    (MIRROR, "http://mirror.example/x", "ftp://mirror.example/x", (), "not http(s) (ftp)"),
])
def test_redirects_go_only_where_a_dl_may(index, source, target, download_hosts, reason):
    from cratecache.upstreams.client import redirect_refusal

    up = Upstream(name="a", url=index, download_hosts=download_hosts)
    refused = redirect_refusal(httpx.URL(source), httpx.URL(target), up)
    assert refused == reason if reason is None else refused.startswith(reason)


def test_only_an_upstreams_own_host_and_download_hosts_may_be_internal_addresses():
    from cratecache.upstreams.client import configured_hosts

    up = Upstream(name="a", url="http://127.0.0.1:9000/index/", download_hosts=("cdn.corp:8443", "files.corp"))
    assert configured_hosts(up) == ("127.0.0.1", "cdn.corp:8443", "files.corp")


@pytest.mark.parametrize(("address", "refusal"), [
    ("93.184.216.34", None), ("2606:4700::1111", None),
    ("127.0.0.1", "a loopback address"), ("::1", "a loopback address"), ("::ffff:127.0.0.1", "a loopback address"),
    ("169.254.169.254", "a link-local address"), ("fe80::1%eth0", "a link-local address"),
    ("10.1.2.3", "a private address"), ("192.168.0.1", "a private address"), ("fd00::1", "a private address"),
    ("0.0.0.0", "a private address"), ("100.64.0.1", "not a public address"), ("224.0.0.1", "a multicast address"),
])
def test_which_addresses_a_name_that_is_not_configured_may_resolve_to(address, refusal):
    from cratecache.upstreams.transport import address_refusal

    assert address_refusal(address) == refusal


def test_making_a_client_reads_no_ca_file_on_the_event_loop(tmp_path):
    """Clients are made at start and at every reload, on the event loop: their CA file is read by the transport in a
    thread at first use (a FIFO or a slow disk there stalled every client of the proxy)."""
    import os
    import threading

    fifo = tmp_path / "ca.pem"
    os.mkfifo(fifo)
    up = Upstream(name="a", url="https://a.example/", ca_bundle=str(fifo))
    made = threading.Thread(target=UpstreamClient, args=(up,), daemon=True)
    made.start()
    made.join(timeout=5)
    blocked = made.is_alive()
    try:  # lets a reader blocked on it go (an empty CA file then fails to load)
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:  # nobody is reading it
        pass
    assert not blocked
