"""The benchmark upstream: the real-crate registry (plus one 30 MB crate) on disk, served by nginx.

Layout under `root/www` (static files only, so nginx answers with sendfile, ETag and Last-Modified):

    index/config.json                     {"dl": "http://127.0.0.1:PORT/crates"}: the upstream as itself
    index/<sparse path>                   index files
    crates/<name>/<version>/download      .crate files, at the path Cargo's default `dl` asks for

`/mitm-index/` serves the same index files with a config.json whose `dl` is crates.io's
(`https://static.crates.io/crates`): the plain-mitmdump baseline maps index.crates.io to it,
so downloads come back through that proxy, as they do through the addon. `/relay-index/` serves them with
`root/relay-config.json`, which a scenario writes when it puts a relay in front of nginx (its `dl` names the relay).
`/policy-index/` (`www/policy-index/`) is the same registry whose every index line carries an old `pubtime`
(`OLD_PUBTIME`), for the policy scenario: a quarantine then decides on every version and hides none. The other
scenarios never ask for it, so their bytes are unchanged.

nginx logs only conditional requests (If-None-Match or If-Modified-Since), to `root/conditional.log` as
`STATUS URI`: the proof that a proxy revalidated (`Nginx.conditional()` counts them). Nothing else is logged.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.fixtures.registry import Registry, index_path

CRATES_IO_DL = "https://static.crates.io/crates"
OLD_PUBTIME = "2020-01-01T00:00:00Z"  # older than any quarantine


def with_pubtime(data: bytes, pubtime: str = OLD_PUBTIME) -> bytes:
    """An index file whose every line carries `pubtime` (replacing any it had); blank lines are dropped."""
    lines = [json.loads(line) for line in data.splitlines() if line.strip()]
    return b"".join(json.dumps(line | {"pubtime": pubtime}, separators=(",", ":")).encode() + b"\n"
                    for line in lines)


def write_tree(reg: Registry, root: Path, port: int) -> Path:
    """Write `reg` for nginx under `root/www`; returns that directory."""
    www = root / "www"
    for name, data in reg.index_files.items():
        path = www / "index" / index_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path = www / "policy-index" / index_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(with_pubtime(data))
    for crate in reg.crates.values():
        path = www / "crates" / crate.name / crate.version / "download"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(crate.data)
    for index in ("index", "policy-index"):
        (www / index / "config.json").write_text(json.dumps({"dl": f"http://127.0.0.1:{port}/crates"}))
    (root / "mitm-config.json").write_text(json.dumps({"dl": CRATES_IO_DL}))
    for path in [root, *root.rglob("*")]:  # nginx's workers run as nobody
        path.chmod(0o755 if path.is_dir() else 0o644)
    return www


NGINX_CONF = """\
daemon off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    log_format conditional '$status $request_uri';
    map "$http_if_none_match$http_if_modified_since" $conditional {{ "" 0; default 1; }}
    access_log {root}/conditional.log conditional if=$conditional;
    client_body_temp_path {root}/tmp/body;
    proxy_temp_path {root}/tmp/proxy;
    fastcgi_temp_path {root}/tmp/fastcgi;
    uwsgi_temp_path {root}/tmp/uwsgi;
    scgi_temp_path {root}/tmp/scgi;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 120s;
    keepalive_requests 1000000;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {root}/www;
        location = /index/config.json {{ default_type application/json; }}
        location /index/ {{ default_type text/plain; }}
        location = /policy-index/config.json {{ default_type application/json; }}
        location /policy-index/ {{ default_type text/plain; }}
        location = /mitm-index/config.json {{ default_type application/json; alias {root}/mitm-config.json; }}
        location /mitm-index/ {{ default_type text/plain; alias {root}/www/index/; }}
        location = /relay-index/config.json {{ default_type application/json; alias {root}/relay-config.json; }}
        location /relay-index/ {{ default_type text/plain; alias {root}/www/index/; }}
        location /crates/ {{ }}
    }}
}}
"""


def nginx_binary() -> str:
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)
    if found is None:
        raise RuntimeError("nginx is not installed (make bench installs it)")
    return found


@dataclass
class Nginx:
    """One nginx master + worker in the foreground, serving `root/www` on 127.0.0.1:port."""

    root: Path
    port: int
    process: subprocess.Popen | None = None

    @property
    def index_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/index/"

    @property
    def policy_index_url(self) -> str:
        """The index whose lines all carry `OLD_PUBTIME`."""
        return f"http://127.0.0.1:{self.port}/policy-index/"

    @property
    def mitm_index_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mitm-index/"

    @property
    def crates_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/crates/"

    def conditional(self) -> dict[str, int]:
        """Conditional requests nginx has answered so far, by status ("304", "200", ...)."""
        path = self.root / "conditional.log"
        counts: dict[str, int] = {}
        for line in path.read_text().splitlines() if path.exists() else []:
            status = line.split(" ", 1)[0]
            counts[status] = counts.get(status, 0) + 1
        return counts

    def version(self) -> str:
        out = subprocess.run([nginx_binary(), "-v"], capture_output=True, text=True)
        return (out.stderr or out.stdout).strip().split("/")[-1]

    def start(self, timeout: float = 10) -> Nginx:
        (self.root / "tmp").mkdir(exist_ok=True)
        conf = self.root / "nginx.conf"
        conf.write_text(NGINX_CONF.format(root=self.root, port=self.port))
        self.process = subprocess.Popen(
            [nginx_binary(), "-p", str(self.root), "-e", str(self.root / "nginx-error.log"), "-c", str(conf)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.process.returncode}: {self.error_log()}")
            try:
                with urllib.request.urlopen(self.index_url + "config.json", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nginx did not start within {timeout}s: {self.error_log()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: fast shutdown of master and worker
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def error_log(self) -> str:
        path = self.root / "nginx-error.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""
