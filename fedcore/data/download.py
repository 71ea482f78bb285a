"""Downloading and caching data files: checksummed, atomic, resumable by retry.

Files go to a cache directory (`FEDCORE_CACHE_DIR`, else `~/.cache/fedcore`).
Every write goes to a temporary file in the destination directory, is
flushed and `fsync`ed, checked, and only then renamed into place, so an
interrupted download or extraction never leaves a partial file under the
final name: running again simply starts over.

```python
>>> import hashlib, pathlib, tempfile
>>> from fedcore.data.download import fetch
>>> src = pathlib.Path(tempfile.mkdtemp()) / "hello.txt"
>>> _ = src.write_bytes(b"hello")
>>> digest = hashlib.sha256(b"hello").hexdigest()
>>> fetch(src.as_uri(), sha256=digest, cache_dir=tempfile.mkdtemp()).read_bytes()
b'hello'
```
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import tarfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from fedcore._atomic import atomic_writer

__all__ = [
    "DownloadError",
    "ChecksumError",
    "CorruptArchiveError",
    "default_cache_dir",
    "fetch",
    "sha256_file",
    "extract_tar",
]

_CHUNK = 1 << 20


class DownloadError(OSError):
    """A file could not be downloaded (not found, unreachable, or cut short)."""


class ChecksumError(DownloadError):
    """A file's SHA-256 differs from the expected one."""


class CorruptArchiveError(OSError):
    """An archive is truncated, corrupt, or lacks an expected member."""


def default_cache_dir() -> Path:
    """`$FEDCORE_CACHE_DIR` if set, else `~/.cache/fedcore`."""
    env = os.environ.get("FEDCORE_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fedcore"


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _filename_of(url: str) -> str:
    name = os.path.basename(urllib.parse.urlparse(url).path)
    if not name:
        raise ValueError(f"Cannot tell a file name from URL {url!r}; pass filename=.")
    return name


def fetch(
    url: str,
    *,
    sha256: str | None,
    cache_dir: str | os.PathLike[str] | None = None,
    filename: str | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download `url` into `cache_dir` (once) and return the local path.

    An existing cached file is returned as is. A new download is streamed to
    a temporary file, checked against `sha256` (hex; `None` skips the check)
    and its announced length, then renamed into place. Works for `http(s)://`
    and `file://` URLs. Raises `DownloadError` if the file cannot be fetched
    or arrives truncated, `ChecksumError` if its checksum differs.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    dest = cache / (filename or _filename_of(url))
    if dest.exists():
        return dest
    hint = (
        f"Check the URL, or download the file yourself and place it at {dest} "
        f"(or pass the data set's path= argument)."
    )
    try:
        response = urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 - URL is the caller's
    except urllib.error.HTTPError as e:
        raise DownloadError(f"Could not download {url}: HTTP {e.code} {e.reason}. {hint}") from e
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(f"Could not download {url}: {reason}. {hint}") from e
    digest = hashlib.sha256()
    received = 0
    with response:
        length = response.headers.get("Content-Length")
        expected_len = int(length) if length and length.isdigit() else None
        with atomic_writer(dest, "wb") as out:
            while True:
                try:
                    chunk = response.read(_CHUNK)
                except (http.client.HTTPException, OSError) as e:
                    raise DownloadError(
                        f"Download of {url} was cut short after {received} bytes ({e!r}). "
                        f"Nothing was cached; run again to retry."
                    ) from e
                if not chunk:
                    break
                digest.update(chunk)
                out.write(chunk)
                received += len(chunk)
            if expected_len is not None and received != expected_len:
                raise DownloadError(
                    f"Download of {url} is truncated: got {received} of {expected_len} bytes. "
                    f"Nothing was cached; run again to retry."
                )
            if sha256 is not None and digest.hexdigest() != sha256.lower():
                raise ChecksumError(
                    f"Checksum mismatch for {url}: expected sha256 {sha256.lower()}, got "
                    f"{digest.hexdigest()} ({received} bytes). The download is corrupt or truncated, "
                    f"or the URL serves a different file; nothing was cached. Run again to retry, "
                    f"or pass the right sha256= if you meant a different file."
                )
    return dest


def extract_tar(
    archive: str | os.PathLike[str], dest_dir: str | os.PathLike[str], members: Sequence[str]
) -> list[Path]:
    """Extract the named members (matched by base name) of a tar archive into `dest_dir`.

    Each member is streamed to a temporary file and renamed into place only
    after every member was read in full, so a truncated or corrupt archive
    leaves nothing behind. Raises `CorruptArchiveError` naming what to do.
    """
    archive = Path(archive)
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    advice = f"Delete {archive} and run again to download it anew, or point to a good copy."
    # Every member's atomic writer stays open until all are read: an error
    # anywhere unwinds them all (temps removed), success renames them all.
    with contextlib.ExitStack() as writers:
        found = set()
        try:
            with tarfile.open(archive, "r:*") as tar:
                for info in tar:
                    base = os.path.basename(info.name)
                    if info.isfile() and base in members and base not in found:
                        src = tar.extractfile(info)
                        assert src is not None
                        out = writers.enter_context(atomic_writer(dest / base, "wb"))
                        for chunk in iter(lambda: src.read(_CHUNK), b""):
                            out.write(chunk)
                        found.add(base)
        except (tarfile.TarError, EOFError, OSError, ValueError) as e:
            raise CorruptArchiveError(f"Archive {archive} is truncated or corrupt ({e}). {advice}") from e
        missing = [m for m in members if m not in found]
        if missing:
            raise CorruptArchiveError(f"Archive {archive} lacks {missing}. {advice}")
    return [dest / m for m in members]
