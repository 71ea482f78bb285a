"""Federated EMNIST (TFF's version): handwritten characters partitioned by writer.

TFF published the data as two archives in its public `tff-datasets-public`
bucket, each holding `<prefix>_train.h5` and `<prefix>_test.h5`:

| `only_digits` | archive | writers | train examples |
| --- | --- | --- | --- |
| `True` | `fed_emnist_digitsonly.tar.bz2` | 3,383 | 341,873 |
| `False` | `fed_emnist.tar.bz2` | 3,400 | 671,585 |

Each HDF5 file has one group per writer id under `/examples`, holding
`pixels` (N, 28, 28) float32 in [0, 1] with **1.0 = background** (inverted
relative to MNIST) and `label` (N,) int32: 0-9 digits, 10-35 `A`-`Z`, 36-61
`a`-`z`. `load_data` returns writer-partitioned `(train, test)` populations
read lazily from the HDF5 files (a writer's group is read when asked for), with
`x` = pixels and `y` = label.

TFF's current loader downloads the same data as one SQLite file instead,
`emnist_all.sqlite.lzma` (cached as `emnist_all.sqlite`; table
`examples(split_name, client_id, serialized_example_proto)` of
`tf.train.Example`s with `pixels` float32 (28, 28) and `label` int64, and
`client_metadata(client_id, split_name, num_examples)`; splits
`digits_only_train`, `digits_only_test`, `all_train`, `all_test`).
`load_data(path=...)` reads that file too, `.sqlite` or `.sqlite.lzma` (the
latter decompressed while streaming into the cache), without TensorFlow,
a client's examples read when asked for; the arrays are the same as from
the HDF5 files. By default pixels are returned as stored (TFF's
raw values); `invert=True` gives MNIST polarity (1.0 = ink) and `flatten=True`
gives (N, 784).

Downloads are cached under `cache_dir` (default `$FEDCORE_CACHE_DIR` or
`~/.cache/fedcore`) in `emnist/`, verified by SHA-256 and written atomically.

```python
>>> from fedcore.data.datasets import emnist
>>> train, test = emnist.load_data(only_digits=True)  # doctest: +SKIP
>>> len(train), train.element_spec["x"].shape  # doctest: +SKIP
(3383, (28, 28))
```
"""

from __future__ import annotations

import lzma
import os
from pathlib import Path

import numpy as np

from ..._atomic import atomic_writer
from .._client_data import ClientData, HDF5ClientData
from .._sqlite import SQLiteClientData
from ..download import CorruptArchiveError, default_cache_dir, extract_tar, fetch, sha256_file

__all__ = ["load_data", "DEFAULT_BASE_URL", "ARCHIVES", "SQLITE_NAME", "SQLITE_SPLITS", "NUM_CLIENTS", "NUM_TRAIN_EXAMPLES"]

DEFAULT_BASE_URL = "https://storage.googleapis.com/tff-datasets-public"
"""Where TFF published the archives; override with `base_url=` or `$FEDCORE_EMNIST_BASE_URL`."""

ARCHIVES: dict[bool, tuple[str, str]] = {
    True: ("fed_emnist_digitsonly", "55333deb8546765427c385710ca5e7301e16f4ed8b60c1dc5ae224b42bd5b14b"),
    False: ("fed_emnist", "fe1ed5a502cea3a952eb105920bff8cffb32836b5173cb18a57a32c3606f3ea0"),
}
"""`only_digits` -> (file prefix, SHA-256 of `<prefix>.tar.bz2`)."""

SQLITE_NAME = "emnist_all.sqlite"
"""TFF's current single-file format (downloaded by TFF as `emnist_all.sqlite.lzma`)."""

SQLITE_SPLITS: dict[bool, tuple[str, str]] = {True: ("digits_only_train", "digits_only_test"), False: ("all_train", "all_test")}
"""`only_digits` -> the (train, test) `split_name`s of `emnist_all.sqlite`."""

_CHUNK = 1 << 20

NUM_CLIENTS = {True: 3383, False: 3400}
NUM_TRAIN_EXAMPLES = {True: 341_873, False: 671_585}


def _h5_names(prefix: str) -> list[str]:
    return [f"{prefix}_train.h5", f"{prefix}_test.h5"]


def _extract(archive: Path, dest: Path, prefix: str, sha256: str | None) -> None:
    if sha256 is not None:
        got = sha256_file(archive)
        if got != sha256.lower():
            raise CorruptArchiveError(
                f"Archive {archive} has sha256 {got}, expected {sha256.lower()}: it is truncated, corrupt "
                f"or a different file. Delete it and run again to download it anew, or pass sha256= "
                f"for a file you trust."
            )
    extract_tar(archive, dest, _h5_names(prefix))


def _decompress(archive: Path, dest: Path) -> Path:
    """Streams an `.lzma`/`.xz` archive into `dest` (atomically: a truncated archive leaves nothing)."""
    try:
        with lzma.open(archive, "rb") as src, atomic_writer(dest, "wb") as out:
            for chunk in iter(lambda: src.read(_CHUNK), b""):
                out.write(chunk)
    except (lzma.LZMAError, EOFError) as e:
        raise CorruptArchiveError(
            f"Archive {archive} is truncated or corrupt ({e}); nothing was cached. Delete it and download "
            f"it again, or point to a good copy."
        ) from e
    return dest


def _sqlite_file(p: Path, cache: Path) -> Path | None:
    """The SQLite file `p` names or holds (decompressing `.lzma` into the cache), or `None`."""
    if p.is_dir():
        for name in (SQLITE_NAME, SQLITE_NAME + ".lzma"):
            if (p / name).is_file():
                return _sqlite_file(p / name, cache)
        return None
    if p.suffix in (".lzma", ".xz"):
        cached = cache / p.with_suffix("").name
        return cached if cached.is_file() else _decompress(p, cached)
    if p.suffix in (".sqlite", ".db"):
        return p
    return None


def _locate(
    only_digits: bool, cache_dir: str | os.PathLike[str] | None, path: str | os.PathLike[str] | None,
    base_url: str | None, sha256: str | None,
) -> tuple[Path, Path] | Path:
    prefix, known_sha = ARCHIVES[only_digits]
    sha = known_sha if sha256 is None else sha256
    names = _h5_names(prefix)
    archive_name = f"{prefix}.tar.bz2"
    cache = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / "emnist"
    if path is not None:
        p = Path(path).expanduser()
        if p.is_file() and (sqlite := _sqlite_file(p, cache)) is not None:
            return sqlite
        if p.is_file():  # the archive itself
            _extract(p, cache, prefix, sha)
            return cache / names[0], cache / names[1]
        if not p.is_dir():
            raise FileNotFoundError(
                f"path={str(p)!r} does not exist; pass a directory holding {names[0]} and {names[1]} "
                f"(or {archive_name}), or the archive itself."
            )
        if all((p / n).is_file() for n in names):
            return p / names[0], p / names[1]
        if (p / archive_name).is_file():
            _extract(p / archive_name, cache, prefix, sha)
            return cache / names[0], cache / names[1]
        if (sqlite := _sqlite_file(p, cache)) is not None:
            return sqlite
        present = sorted(q.name for q in p.iterdir())[:10]
        raise FileNotFoundError(
            f"{str(p)!r} holds neither {names[0]} + {names[1]} nor {archive_name} nor TFF's {SQLITE_NAME}[.lzma] "
            f"(it has {present}). "
            f"Download {archive_name} from {DEFAULT_BASE_URL} and put it (or the extracted .h5 files) there, "
            f"or drop path= to download into the cache."
        )
    if all((cache / n).is_file() for n in names):
        return cache / names[0], cache / names[1]
    base = base_url or os.environ.get("FEDCORE_EMNIST_BASE_URL") or DEFAULT_BASE_URL
    archive = fetch(f"{base.rstrip('/')}/{archive_name}", sha256=sha, cache_dir=cache)
    _extract(archive, cache, prefix, sha)
    return cache / names[0], cache / names[1]


def _transform(invert: bool, flatten: bool):
    def fn(d: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = np.asarray(d["x"], dtype=np.float32)
        if invert:
            x = 1.0 - x
        if flatten:
            x = x.reshape(x.shape[0], -1)
        return {"x": x, "y": np.asarray(d["y"], dtype=np.int32)}

    return fn


def load_data(
    only_digits: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    path: str | os.PathLike[str] | None = None,
    *,
    base_url: str | None = None,
    sha256: str | None = None,
    invert: bool = False,
    flatten: bool = False,
) -> tuple[ClientData, ClientData]:
    """Federated EMNIST as `(train, test)` populations keyed by writer id.

    Args:
      only_digits: the 10-class digits-only version (3,383 writers) or the
        62-class one (3,400 writers).
      cache_dir: where downloads are cached (an `emnist/` folder inside);
        default `$FEDCORE_CACHE_DIR` or `~/.cache/fedcore`.
      path: use local files instead of downloading: a directory holding
        `<prefix>_train.h5` and `<prefix>_test.h5` (or `<prefix>.tar.bz2`, or
        TFF's `emnist_all.sqlite` / `emnist_all.sqlite.lzma`), or one of those
        files itself (archives are extracted/decompressed into the cache).
      base_url: where to download `<prefix>.tar.bz2` from (`http(s)://` or
        `file://`); default `$FEDCORE_EMNIST_BASE_URL` or TFF's bucket.
      sha256: expected SHA-256 of the archive; default TFF's published one.
      invert: return `1 - pixels` (1.0 = ink, as in MNIST) instead of TFF's raw values.
      flatten: return `x` as (N, 784) instead of (N, 28, 28).

    Returns:
      `(train, test)`: `ClientData` with `x` float32 (N, 28, 28) (or (N, 784))
      and `y` int32 (N,), the same writer ids in both.
    """
    found = _locate(bool(only_digits), cache_dir, path, base_url, sha256)
    keys = {"x": "pixels", "y": "label"}
    if isinstance(found, Path):  # TFF's SQLite file: both splits in one file
        options = {"keys": keys, "shapes": {"pixels": (28, 28)}, "dtypes": {"pixels": np.float32, "label": np.int32}}
        train_split, test_split = SQLITE_SPLITS[bool(only_digits)]
        train, test = SQLiteClientData(found, train_split, **options), SQLiteClientData(found, test_split, **options)
    else:
        train, test = HDF5ClientData(found[0], keys=keys), HDF5ClientData(found[1], keys=keys)
    spec = train.element_spec
    needs = invert or flatten or spec["x"].dtype != np.float32 or spec["y"].dtype != np.int32
    if not needs:
        return train, test
    fn = _transform(invert, flatten)
    return train.preprocess(fn), test.preprocess(fn)
