"""Fixtures for the data tests: small TFF-layout HDF5 files, archives and a loopback HTTP server."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest


def write_tff_h5(path: Path, clients: dict[str, tuple[np.ndarray, np.ndarray]]) -> Path:
    """Write `{writer: (pixels, label)}` in TFF's EMNIST layout: /examples/<writer>/{pixels,label}."""
    import h5py

    with h5py.File(path, "w") as f:
        g = f.create_group("examples")
        for cid, (pixels, label) in clients.items():
            w = g.create_group(cid)
            w.create_dataset("pixels", data=pixels)
            w.create_dataset("label", data=label)
    return path


def fake_emnist_clients(seed: int, writers: list[str], max_n: int = 6, num_classes: int = 10):
    rng = np.random.default_rng(seed)
    out = {}
    for w in writers:
        n = int(rng.integers(1, max_n + 1))
        pixels = rng.random((n, 28, 28), dtype=np.float32)
        label = rng.integers(0, num_classes, n).astype(np.int32)
        out[w] = (pixels, label)
    return out


WRITERS = ["f0002_11", "f0000_14", "f0001_41", "f0003_07"]


@pytest.fixture(scope="session")
def emnist_source(tmp_path_factory):
    """A directory with fake `fed_emnist_digitsonly` and `fed_emnist` .h5 files and their .tar.bz2 archives.

    Returns (dir, {prefix: {"train": clients, "test": clients, "sha256": archive sha}}).
    """
    root = tmp_path_factory.mktemp("emnist_source")
    info = {}
    for prefix, classes in (("fed_emnist_digitsonly", 10), ("fed_emnist", 62)):
        train = fake_emnist_clients(1, WRITERS, num_classes=classes)
        test = fake_emnist_clients(2, WRITERS, max_n=3, num_classes=classes)
        h5dir = root / f"{prefix}_h5"
        h5dir.mkdir()
        write_tff_h5(h5dir / f"{prefix}_train.h5", train)
        write_tff_h5(h5dir / f"{prefix}_test.h5", test)
        archive = root / f"{prefix}.tar.bz2"
        with tarfile.open(archive, "w:bz2") as tar:
            for split in ("train", "test"):
                tar.add(h5dir / f"{prefix}_{split}.h5", arcname=f"{prefix}_{split}.h5")
        sha = hashlib.sha256(archive.read_bytes()).hexdigest()
        info[prefix] = {"train": train, "test": test, "sha256": sha, "h5dir": h5dir, "archive": archive}
    return root, info


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass


class _TruncatingHandler(_QuietHandler):
    """Announces the full Content-Length but sends only half the body, then closes."""

    def do_GET(self):
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        body = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        self.close_connection = True


@contextlib.contextmanager
def serve(directory: Path, truncate: bool = False):
    """Serve `directory` over HTTP on 127.0.0.1 (a free port) in a thread; yields the base URL."""
    handler = functools.partial(_TruncatingHandler if truncate else _QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
