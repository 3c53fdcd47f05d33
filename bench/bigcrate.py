"""Real large `.crate`s (an incompressible data file: 30 MB, and 200 MB) added to the benchmark registry."""

from __future__ import annotations

import gzip
import hashlib
import io
import random
import tarfile

from tests.fixtures.registry import TAR_MTIME, CrateFile, Registry, encode_index

NAME, VERSION = "bench-bigcrate", "1.0.0"
MANIFEST = f"""\
[package]
name = "{NAME}"
version = "{VERSION}"
edition = "2021"
description = "30 MB of incompressible data, for benchmarks"
license = "MIT"
include = ["src/lib.rs", "data.bin"]
"""
LIB_RS = 'pub static DATA: &[u8] = include_bytes!("../data.bin");\n'


def pack(size: int, seed: int = 6, name: str = NAME) -> bytes:
    """A deterministic .crate whose data.bin holds `size` random bytes (so the archive is ~`size`)."""
    files = {"Cargo.toml": MANIFEST.replace(NAME, name).encode(), "src/lib.rs": LIB_RS.encode(),
             "data.bin": random.Random(seed).randbytes(size)}
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for path, data in sorted(files.items()):
            info = tarfile.TarInfo(f"{name}-{VERSION}/{path}")
            info.size, info.mtime, info.mode = len(data), TAR_MTIME, 0o644
            tar.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=1) as gz:
        gz.write(tar_bytes.getvalue())
    return out.getvalue()


def add_big_crate(reg: Registry, size: int = 30 * 1024 * 1024, name: str = NAME) -> CrateFile:
    data = pack(size, name=name)
    crate = CrateFile(name, VERSION, data, hashlib.sha256(data).hexdigest())
    reg.crates[(name, VERSION)] = crate
    entry = {"name": name, "vers": VERSION, "deps": [], "cksum": crate.cksum, "features": {},
             "yanked": False, "links": None, "v": 1}
    reg.index_files[name] = encode_index([entry])
    return crate
