"""One atomic file write, below every layer: temp file, flush, fsync, rename, fsync the directory.

`atomic_writer(path)` yields a file open on a temporary file
`.NAME.<random>.part` in `path`'s directory. When the `with` block ends
normally the file is flushed and `fsync`ed, renamed over `path` with
`os.replace` (atomic on POSIX and Windows), and the directory is `fsync`ed so
the rename itself survives a power cut. If the block raises, the temporary file
is removed and `path` is untouched: a reader sees the old file or the new one,
never half of one.

```python
>>> import pathlib, tempfile
>>> from fedcore._atomic import atomic_writer
>>> p = pathlib.Path(tempfile.mkdtemp()) / "config.toml"
>>> with atomic_writer(p) as f:
...     _ = f.write("rounds = 3\\n")
>>> p.read_text()
'rounds = 3\\n'
>>> sorted(q.name for q in p.parent.iterdir())
['config.toml']
```
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, Literal

__all__ = ["atomic_writer", "fsync_directory", "is_temp_name"]

_SUFFIX = ".part"


def temp_name(name: str) -> str:
    """A fresh temporary name for a file to be renamed to `name`: `.NAME.<16 hex>.part`."""
    return f".{name}.{secrets.token_hex(8)}{_SUFFIX}"


def is_temp_name(temp: str, name_pattern: str) -> bool:
    """Whether `temp` is a temporary name `atomic_writer` makes for a final name matching the regex `name_pattern`."""
    return re.fullmatch(rf"\.(?:{name_pattern})\.[0-9a-f]{{16}}{re.escape(_SUFFIX)}", temp) is not None


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """`fsync` a directory so that renames in it are durable; a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a directory; the rename still happened
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(
    path: str | os.PathLike[str],
    mode: Literal["w", "wb"] = "w",
    *,
    before_replace: Callable[[Path], None] | None = None,
) -> Iterator[IO[Any]]:
    """Write `path` atomically: yields a file on a temporary sibling, renamed over `path` on success.

    Args:
        path: the final file; its directory is created if missing.
        mode: `"w"` (text, UTF-8) or `"wb"` (bytes).
        before_replace: called with the temporary path after it is written and
            fsynced, just before the rename (a test hook: raising there
            simulates a crash mid-write).

    The temporary file is created with `O_EXCL` and the usual permissions
    (`0o666` less the umask), so the final file has the permissions a plain
    `open(path, "w")` would give it.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_writer writes whole files: mode must be 'w' or 'wb', got {mode!r}.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = path.with_name(temp_name(path.name))
        try:
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:  # 64 random bits collided: draw again
            continue
    try:
        with os.fdopen(fd, mode, **({} if mode == "wb" else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_directory(path.parent)
