"""The download cache: checksums, atomic writes, truncation and missing files, over file:// and loopback HTTP."""

from __future__ import annotations

import hashlib
import io
import tarfile

import pytest

from fedcore.data.download import (
    ChecksumError,
    CorruptArchiveError,
    DownloadError,
    default_cache_dir,
    extract_tar,
    fetch,
    sha256_file,
)

from .conftest import serve

PAYLOAD = bytes(range(256)) * 5000  # 1.28 MB: several read chunks
SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def source(tmp_path):
    d = tmp_path / "src"
    d.mkdir()
    (d / "blob.bin").write_bytes(PAYLOAD)
    return d


def _leftovers(cache):
    return sorted(p.name for p in cache.rglob("*")) if cache.exists() else []


def test_fetch_file_url_verifies_and_caches(source, tmp_path):
    cache = tmp_path / "cache"
    path = fetch((source / "blob.bin").as_uri(), sha256=SHA, cache_dir=cache)
    assert path == cache / "blob.bin" and path.read_bytes() == PAYLOAD
    assert sha256_file(path) == SHA
    (source / "blob.bin").unlink()  # a cached file is not fetched again
    assert fetch((source / "blob.bin").as_uri(), sha256=SHA, cache_dir=cache) == path
    assert _leftovers(cache) == ["blob.bin"]
    named = fetch(path.as_uri(), sha256=None, cache_dir=tmp_path / "other", filename="renamed.bin")
    assert named.name == "renamed.bin" and named.read_bytes() == PAYLOAD


def test_fetch_over_loopback_http(source, tmp_path):
    with serve(source) as base:
        path = fetch(f"{base}/blob.bin", sha256=SHA.upper(), cache_dir=tmp_path / "cache")
    assert path.read_bytes() == PAYLOAD


def test_checksum_mismatch_caches_nothing(source, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumError, match=r"Checksum mismatch .* expected sha256 0{64}.*nothing was cached"):
        fetch((source / "blob.bin").as_uri(), sha256="0" * 64, cache_dir=cache)
    assert _leftovers(cache) == []


def test_truncated_http_download_caches_nothing_and_a_retry_succeeds(source, tmp_path):
    cache = tmp_path / "cache"
    with serve(source, truncate=True) as base:
        with pytest.raises(DownloadError, match=r"(cut short|truncated).*run again to retry"):
            fetch(f"{base}/blob.bin", sha256=SHA, cache_dir=cache)
    assert _leftovers(cache) == []
    with serve(source) as base:
        assert fetch(f"{base}/blob.bin", sha256=SHA, cache_dir=cache).read_bytes() == PAYLOAD


def test_missing_files_say_what_to_do(source, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match=r"Could not download .*nope\.bin.*place it at .*nope\.bin"):
        fetch((source / "nope.bin").as_uri(), sha256=SHA, cache_dir=cache)
    with serve(source) as base:
        with pytest.raises(DownloadError, match=r"HTTP 404.*Check the URL"):
            fetch(f"{base}/nope.bin", sha256=SHA, cache_dir=cache)
    with pytest.raises(DownloadError, match="Could not download"):
        fetch("http://127.0.0.1:9/blob.bin", sha256=SHA, cache_dir=cache, timeout=2)  # closed port
    with pytest.raises(ValueError, match="Cannot tell a file name"):
        fetch("file:///", sha256=None, cache_dir=cache)
    assert _leftovers(cache) == []


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("FEDCORE_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("FEDCORE_CACHE_DIR")
    assert default_cache_dir().parts[-2:] == (".cache", "fedcore")


def _tar(path, members, mode="w:bz2"):
    with tarfile.open(path, mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_extract_tar_writes_only_the_named_members(tmp_path):
    archive = _tar(tmp_path / "a.tar.bz2", {"dir/one.h5": b"1" * 100, "two.h5": b"2" * 50, "skip.txt": b"x"})
    out = extract_tar(archive, tmp_path / "out", ["one.h5", "two.h5"])
    assert [p.name for p in out] == ["one.h5", "two.h5"]
    assert (tmp_path / "out" / "one.h5").read_bytes() == b"1" * 100
    assert _leftovers(tmp_path / "out") == ["one.h5", "two.h5"]


def test_extract_tar_truncated_or_incomplete_archive_leaves_nothing(tmp_path):
    good = _tar(tmp_path / "a.tar.bz2", {"one.h5": PAYLOAD, "two.h5": PAYLOAD})
    truncated = tmp_path / "t.tar.bz2"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CorruptArchiveError, match=r"t\.tar\.bz2 is truncated or corrupt.*Delete .* run again"):
        extract_tar(truncated, tmp_path / "out", ["one.h5", "two.h5"])
    assert _leftovers(tmp_path / "out") == []
    with pytest.raises(CorruptArchiveError, match=r"lacks \['three.h5'\]"):
        extract_tar(good, tmp_path / "out", ["one.h5", "three.h5"])
    assert _leftovers(tmp_path / "out") == []
    junk = tmp_path / "junk.tar.bz2"
    junk.write_bytes(b"not an archive")
    with pytest.raises(CorruptArchiveError, match="truncated or corrupt"):
        extract_tar(junk, tmp_path / "out", ["one.h5"])


def test_an_interrupted_download_leaves_no_partial_file(monkeypatch, tmp_path):
    class Response(io.BytesIO):
        headers = {"Content-Length": str(len(PAYLOAD))}
        calls = 0

        def read(self, n=-1):
            Response.calls += 1
            if Response.calls == 2:
                raise KeyboardInterrupt  # e.g. Ctrl-C mid-download
            return super().read(n)

    monkeypatch.setattr("urllib.request.urlopen", lambda url, timeout: Response(PAYLOAD))
    cache = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        fetch("http://127.0.0.1/blob.bin", sha256=SHA, cache_dir=cache)
    assert _leftovers(cache) == []
