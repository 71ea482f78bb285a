"""Checkpoints: a process state written atomically, with a header that refuses the wrong structure.

A checkpoint file holds three parts:

1. the magic line `FEDCORE-CHECKPOINT 1`;
2. a one-line JSON header: the round, the state's federated type (its
   *fingerprint*, e.g. `ServerState<params.weight=f32[10,784],...>@SERVER`), a
   user *tag* (a JSON mapping such as `{"algorithm": "fedavg"}`) and the size
   and SHA-256 of the payload;
3. the payload: the state's leaves, written by `equinox.tree_serialise_leaves`
   (never pickle). Reading needs a template of the same structure, such as
   `process.initialize()`.

Files are written to a hidden temporary file, flushed, `fsync`ed and renamed
into place, so a crash leaves either the old set of checkpoints or the new one,
never half a file under a checkpoint's name. A truncated or corrupt file is
detected (size and hash) and reported as `CorruptCheckpointError`; a checkpoint
of another structure or tag as `IncompatibleCheckpointError`, naming both.

```python
>>> import tempfile, fedcore as fc, jax.numpy as jnp
>>> state = fc.server_value({"w": jnp.arange(3.0)})
>>> d = tempfile.mkdtemp()
>>> manager = CheckpointManager(d, keep=2)
>>> _ = manager.save(state, round_num=5, tag={"algorithm": "demo"})
>>> restored = manager.restore(fc.server_value({"w": jnp.zeros(3)}), tag={"algorithm": "demo"})
>>> restored.round_num, restored.state.value["w"].tolist()
(5, [0.0, 1.0, 2.0])
```
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import equinox as eqx
import jax

import fedcore.core as fc
from fedcore._atomic import atomic_writer, is_temp_name

__all__ = [
    "CheckpointError",
    "CorruptCheckpointError",
    "IncompatibleCheckpointError",
    "Checkpoint",
    "CheckpointManager",
    "state_fingerprint",
    "save_checkpoint",
    "load_checkpoint",
    "read_checkpoint_header",
]

MAGIC = b"FEDCORE-CHECKPOINT 1\n"
FORMAT_VERSION = 1
_MAX_HEADER_BYTES = 1 << 20
_NAME = re.compile(r"^ckpt-(\d+)\.eqx$")
# The temporary names of a torn save: `.ckpt-N.eqx.tmp.<pid>` (fedcore <= 0.1) and
# `atomic_writer`'s `.ckpt-N.eqx.<random>.part`. Nothing else in the directory is touched.
_OLD_TEMP = re.compile(r"^\.ckpt-\d+\.eqx\.tmp\.\d+$")


def _is_stale_temp(name: str) -> bool:
    return _OLD_TEMP.match(name) is not None or is_temp_name(name, r"ckpt-\d+\.eqx")

# Test hook: called with the temporary path after it is written and fsynced,
# before it is renamed into place (tests use it to kill a run mid-checkpoint).
_before_rename: Callable[[Path], None] | None = None


class CheckpointError(Exception):
    """A checkpoint cannot be used."""


class CorruptCheckpointError(CheckpointError):
    """A checkpoint file is truncated, corrupt or not a fedcore checkpoint."""


class IncompatibleCheckpointError(CheckpointError):
    """A checkpoint holds a state of another structure, or was written by another configuration."""


class Checkpoint(NamedTuple):
    """A loaded checkpoint: the state, the number of rounds completed, its tag and where it came from."""

    state: Any
    round_num: int
    tag: dict[str, Any]
    path: Path


def state_fingerprint(state: Any) -> str:
    """The state's federated type as a string: what a checkpoint must match to be loaded into it.

    ```python
    >>> import fedcore as fc, jax.numpy as jnp
    >>> state_fingerprint(fc.server_value(jnp.zeros(3)))
    'f32[3]@SERVER'
    ```
    """
    return str(fc.type_of(state))


def _normalise_tag(tag: Mapping[str, Any] | None) -> dict[str, Any]:
    if tag is None:
        return {}
    if not isinstance(tag, Mapping):
        raise TypeError(f"A checkpoint tag is a mapping of JSON values, got {type(tag).__name__}.")
    try:
        return json.loads(json.dumps(dict(tag), sort_keys=True))
    except (TypeError, ValueError) as e:
        raise TypeError(f"A checkpoint tag must hold only JSON values (str, int, float, bool, lists, dicts): {e}") from e


def save_checkpoint(
    path: str | os.PathLike[str], state: Any, round_num: int, *, tag: Mapping[str, Any] | None = None
) -> Path:
    """Writes `state` (after `round_num` rounds) to `path` atomically: temp file, fsync, rename.

    `tag` is a JSON mapping stored in the header and checked on loading (put
    there what must not change on resume: algorithm, model, seed...).

    ```python
    >>> import tempfile, os, fedcore as fc, jax.numpy as jnp
    >>> p = save_checkpoint(os.path.join(tempfile.mkdtemp(), "ckpt-000001.eqx"), fc.server_value(jnp.ones(2)), 1)
    >>> read_checkpoint_header(p)["round"]
    1
    ```
    """
    if isinstance(round_num, bool) or not isinstance(round_num, int) or round_num < 0:
        raise ValueError(f"round_num must be a non-negative int, got {round_num!r}.")
    path = Path(path)
    payload = io.BytesIO()
    eqx.tree_serialise_leaves(payload, jax.device_get(state))
    data = payload.getvalue()
    header = {
        "format": FORMAT_VERSION,
        "round": round_num,
        "fingerprint": state_fingerprint(state),
        "tag": _normalise_tag(tag),
        "payload_bytes": len(data),
        "payload_sha256": hashlib.sha256(data).hexdigest(),
    }
    with atomic_writer(path, "wb", before_replace=_before_rename) as f:
        f.write(MAGIC)
        f.write(json.dumps(header, sort_keys=True).encode() + b"\n")
        f.write(data)
    return path


def _read(path: Path) -> tuple[dict[str, Any], int]:
    """The header and the payload's offset; raises CorruptCheckpointError on a bad magic or header."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise CheckpointError(f"No checkpoint file at {path}.") from None
    with f:
        magic = f.read(len(MAGIC))
        if magic != MAGIC:
            raise CorruptCheckpointError(
                f"{path} is not a fedcore checkpoint (it does not start with {MAGIC.strip().decode()!r}); "
                "it may be truncated to nothing or another kind of file."
            )
        line = f.readline(_MAX_HEADER_BYTES)
        if not line.endswith(b"\n"):
            raise CorruptCheckpointError(f"{path}: the checkpoint header is truncated.")
        try:
            header = json.loads(line)
        except ValueError as e:
            raise CorruptCheckpointError(f"{path}: the checkpoint header is not valid JSON ({e}).") from None
        offset = f.tell()
    required = {"format", "round", "fingerprint", "tag", "payload_bytes", "payload_sha256"}
    if not isinstance(header, dict) or not required <= set(header):
        raise CorruptCheckpointError(f"{path}: the checkpoint header lacks {sorted(required - set(header or {}))}.")
    if header["format"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {header['format']}; this fedcore reads format {FORMAT_VERSION}."
        )
    return header, offset


def read_checkpoint_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON header of a checkpoint (round, fingerprint, tag, payload size and hash), without the payload."""
    return _read(Path(path))[0]


def _describe(fingerprint: str, tag: Mapping[str, Any]) -> str:
    tags = ", ".join(f"{k}={v!r}" for k, v in sorted(tag.items()))
    return f"state {fingerprint}" + (f" ({tags})" if tags else "")


def load_checkpoint(
    path: str | os.PathLike[str], template: Any, *, tag: Mapping[str, Any] | None = None
) -> Checkpoint:
    """Reads a checkpoint into the structure of `template` (e.g. `process.initialize()`).

    Raises `IncompatibleCheckpointError` if the checkpoint's state type or its
    tag differ from the template's and `tag` (the message names both), and
    `CorruptCheckpointError` if the file is truncated or corrupt.
    """
    path = Path(path)
    header, offset = _read(path)
    expected = state_fingerprint(template)
    want_tag = _normalise_tag(tag) if tag is not None else None
    if header["fingerprint"] != expected or (want_tag is not None and header["tag"] != want_tag):
        here = _describe(expected, want_tag if want_tag is not None else header["tag"])
        raise IncompatibleCheckpointError(
            f"Checkpoint {path} does not fit this run: it holds {_describe(header['fingerprint'], header['tag'])}, "
            f"but this run has {here}. Resume with the configuration that wrote it, or start a new run "
            "in another directory."
        )
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    if len(data) != header["payload_bytes"]:
        raise CorruptCheckpointError(
            f"{path} is truncated: its payload has {len(data)} bytes, the header says {header['payload_bytes']}."
        )
    if hashlib.sha256(data).hexdigest() != header["payload_sha256"]:
        raise CorruptCheckpointError(f"{path} is corrupt: its payload does not match the SHA-256 in its header.")
    try:
        state = eqx.tree_deserialise_leaves(io.BytesIO(data), template)
    except Exception as e:  # noqa: BLE001 - any failure here means a bad file
        raise CorruptCheckpointError(f"{path}: the payload cannot be read into the template ({e}).") from e
    return Checkpoint(state, int(header["round"]), header["tag"], path)


class CheckpointManager:
    """The checkpoints of one run in a directory: `ckpt-<round>.eqx`, the last `keep` kept.

    `save` writes atomically and then deletes all but the newest `keep`;
    `restore` loads the newest loadable one, falling back past corrupt files
    (with a warning) but never past an incompatible one.
    """

    def __init__(self, directory: str | os.PathLike[str], keep: int = 3):
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ValueError(f"keep (checkpoints to keep) must be an int >= 1, got {keep!r}.")
        self.directory = Path(directory)
        self.keep = keep

    def path_for(self, round_num: int) -> Path:
        """Where the checkpoint after `round_num` rounds goes."""
        return self.directory / f"ckpt-{round_num:06d}.eqx"

    def checkpoints(self) -> list[tuple[int, Path]]:
        """`(round, path)` of every checkpoint file, oldest first (temporary files are ignored)."""
        if not self.directory.is_dir():
            return []
        found = []
        for p in self.directory.iterdir():
            m = _NAME.match(p.name)
            if m and p.is_file():
                found.append((int(m.group(1)), p))
        return sorted(found)

    def latest_round(self) -> int | None:
        """The round of the newest checkpoint file (not checked for corruption), or None."""
        found = self.checkpoints()
        return found[-1][0] if found else None

    def save(self, state: Any, round_num: int, *, tag: Mapping[str, Any] | None = None) -> Path:
        """Writes the checkpoint of `round_num`, then prunes old checkpoints and stale temporary files."""
        path = save_checkpoint(self.path_for(round_num), state, round_num, tag=tag)
        for _, old in self.checkpoints()[: -self.keep]:
            old.unlink(missing_ok=True)
        for stale in self.directory.iterdir():
            if _is_stale_temp(stale.name):
                stale.unlink(missing_ok=True)
        return path

    def restore(self, template: Any, *, tag: Mapping[str, Any] | None = None) -> Checkpoint | None:
        """The newest loadable checkpoint, or None if there is none.

        Corrupt files are skipped with a warning; if every file is corrupt,
        raises `CorruptCheckpointError` listing them.
        """
        found = self.checkpoints()
        problems = []
        for _, path in reversed(found):
            try:
                return load_checkpoint(path, template, tag=tag)
            except CorruptCheckpointError as e:
                problems.append(str(e))
                warnings.warn(f"Skipping a corrupt checkpoint: {e}", stacklevel=2)
        if problems:
            raise CorruptCheckpointError(
                f"No loadable checkpoint in {self.directory}: " + " | ".join(problems)
                + " Delete these files to start over, or restore a copy."
            )
        return None
