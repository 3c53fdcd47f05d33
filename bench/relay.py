"""A TCP relay that puts a network's latency between a proxy and its upstream (no tc/netem needed).

    python -m bench.relay --port LISTEN --target 127.0.0.1:PORT --delay-ms 20

Every chunk read from one side is written to the other `delay` seconds after it was read, in both directions,
in order (one queue per direction; bandwidth is not limited). A new connection also pays the TCP handshake's
round trip: what the client sends first reaches the target no earlier than three one-way delays after the
client connected (SYN, SYN-ACK, then the data), as it would over a real link; the relay itself accepts at once.
The relay runs in its own process, so that the proxy and the bench keep their cores (and GILs). It prints
`listening` once bound and one `connection N` line per connection accepted (`Relay.connections()` counts them).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness import ROOT, free_port


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float, not_before: float) -> None:
    """Copy reader to writer, each chunk `delay` after it was read (and not before `not_before`), in order."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def read() -> None:
        try:
            while data := await reader.read(256 * 1024):
                queue.put_nowait((max(loop.time() + delay, not_before), data))
        except (ConnectionError, OSError):
            pass
        queue.put_nowait((max(loop.time() + delay, not_before), b""))

    reading = asyncio.create_task(read())
    try:
        while True:
            due, data = await queue.get()
            if (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        reading.cancel()


async def _serve(port: int, host: str, target_port: int, delay: float) -> None:
    count = 0

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        nonlocal count
        count += 1
        print(f"connection {count}", flush=True)
        accepted = asyncio.get_running_loop().time()
        try:
            upstream_r, upstream_w = await asyncio.open_connection(host, target_port)
        except OSError:
            client_w.close()
            return
        try:
            await asyncio.gather(_pipe(client_r, upstream_w, delay, accepted + 3 * delay),
                                 _pipe(upstream_r, client_w, delay, 0.0))
        finally:
            for w in (client_w, upstream_w):
                w.close()
                with contextlib.suppress(Exception):
                    await w.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=4096)
    print("listening", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="port to listen on (127.0.0.1)")
    parser.add_argument("--target", required=True, help="HOST:PORT to relay to")
    parser.add_argument("--delay-ms", type=float, default=20.0, help="one-way delay (default 20 ms)")
    args = parser.parse_args()
    host, _, port = args.target.rpartition(":")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.port, host, int(port), args.delay_ms / 1000))


@dataclass
class Relay:
    """The relay in its own process, listening on 127.0.0.1:port, its output (one line per connection) in `log`."""

    target_port: int
    delay_ms: float
    log: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10) -> Relay:
        from .procs import clean_env, track  # here, not at the top: the relay process need not import mitmproxy

        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as out:
            self.process = track(subprocess.Popen(
                [sys.executable, "-m", "bench.relay", "--port", str(self.port), "--target",
                 f"127.0.0.1:{self.target_port}", "--delay-ms", str(self.delay_ms)],
                cwd=ROOT, env=clean_env(), stdout=out, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + timeout
        while "listening" not in self.log.read_text(errors="replace"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the relay did not start: {self.log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.02)
        return self

    def connections(self) -> int:
        """Connections accepted so far."""
        return self.log.read_text(errors="replace").count("connection ")

    def stop(self) -> None:
        from .procs import stop

        stop(self.process)

    def __enter__(self) -> Relay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    main()
