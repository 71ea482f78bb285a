"""LEAF's FEMNIST (and any LEAF-format JSON data set) as a `ClientData`.

LEAF (Caldas et al., 2018; BSD-2-Clause) stores federated data as JSON files
with three keys:

```
{"users": ["f0000_14", ...],
 "num_samples": [143, ...],
 "user_data": {"f0000_14": {"x": [[...784 floats...], ...], "y": [3, ...]}, ...}}
```

A data directory usually holds several such files (LEAF's `train/` or
`test/` folder after its preprocessing scripts); `load_leaf` reads one file
or every `*.json` file of a directory and merges their users. FEMNIST pixels
are stored flattened (784 values, 1.0 = background, as in TFF's EMNIST).

```python
>>> from fedcore.data.datasets import femnist
>>> train = femnist.load_leaf("leaf/data/femnist/data/train")  # doctest: +SKIP
```
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .._client_data import InMemoryClientData

__all__ = ["load_leaf", "LeafFormatError"]


class LeafFormatError(ValueError):
    """A file that is not valid LEAF JSON."""


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix == ".json" and p.is_file())
        if not files:
            raise FileNotFoundError(f"No .json files in {str(path)!r}; expected LEAF data files there.")
        return files
    raise FileNotFoundError(f"No LEAF data at {str(path)!r} (neither a file nor a directory).")


def _read_file(f: Path, x_dtype: Any, num_classes: int | None) -> dict[str, dict[str, np.ndarray]]:
    def bad(msg: str) -> LeafFormatError:
        return LeafFormatError(
            f"{f}: {msg}. A LEAF file is a JSON object with 'users', 'num_samples' and "
            f"'user_data' = {{user: {{'x': [...], 'y': [...]}}}}."
        )

    try:
        with open(f, encoding="utf-8") as fh:
            blob = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise bad(f"not valid JSON (truncated or corrupt?): {e}") from e
    if not isinstance(blob, dict):
        raise bad(f"top level is a {type(blob).__name__}, not an object")
    for key in ("users", "user_data"):
        if key not in blob:
            raise bad(f"missing key {key!r} (has {sorted(blob)})")
    users, user_data = blob["users"], blob["user_data"]
    if not isinstance(users, list) or not isinstance(user_data, dict):
        raise bad("'users' must be a list and 'user_data' an object")
    if len(set(users)) != len(users):
        raise bad("'users' lists a user twice")
    if set(map(str, users)) != set(user_data):
        only_users = sorted(set(map(str, users)) - set(user_data))[:5]
        only_data = sorted(set(user_data) - set(map(str, users)))[:5]
        raise bad(f"'users' and 'user_data' disagree (only in users: {only_users}; only in user_data: {only_data})")
    num_samples = blob.get("num_samples")
    if num_samples is not None and (not isinstance(num_samples, list) or len(num_samples) != len(users)):
        raise bad("'num_samples' must be a list with one count per user")
    out = {}
    for i, u in enumerate(users):
        u = str(u)
        d = user_data[u]
        if not isinstance(d, dict) or "x" not in d or "y" not in d:
            raise bad(f"user {u!r} needs 'x' and 'y'")
        try:
            x = np.asarray(d["x"], dtype=x_dtype)
            y = np.asarray(d["y"])
        except (ValueError, TypeError) as e:
            raise bad(f"user {u!r}: 'x'/'y' are not rectangular numeric arrays ({e})") from e
        if y.ndim != 1 or not (np.issubdtype(y.dtype, np.integer) or y.size == 0 or np.all(np.mod(y, 1) == 0)):
            raise bad(f"user {u!r}: 'y' must be a list of integer labels")
        if len(x) != len(y):
            raise bad(f"user {u!r} has {len(x)} x but {len(y)} y")
        if num_samples is not None and num_samples[i] != len(y):
            raise bad(f"user {u!r}: num_samples says {num_samples[i]} but it has {len(y)} examples")
        if len(y) == 0:
            raise bad(f"user {u!r} has no examples")
        outside = (y < 0) | (False if num_classes is None else y >= num_classes)
        if np.any(outside):
            j = int(np.argmax(outside))
            classes = "labels are class indices >= 0" if num_classes is None else f"labels lie in [0, {num_classes})"
            raise bad(f"user {u!r} has the label {y[j]} (example {j}); {classes}: fix the file or pass num_classes=")
        out[u] = {"x": x, "y": y.astype(np.int32)}
    return out


def load_leaf(
    path: str | os.PathLike[str], *, x_dtype: Any = np.float32, num_classes: int | None = 62
) -> InMemoryClientData:
    """Read LEAF JSON (one file, or every `*.json` in a directory) into a `ClientData`.

    Returns keys `x` (N, D) `x_dtype` and `y` (N,) int32, one client per LEAF
    user. A user appearing in two files, a malformed file, users that
    disagree on the shape of `x`, or a label outside `[0, num_classes)` raise
    errors naming the file and user.

    Args:
        path: a LEAF `.json` file or a directory of them.
        x_dtype: the dtype of the features.
        num_classes: labels must lie in `[0, num_classes)`: 62 for FEMNIST
            (digits, upper and lower case letters); `None` only refuses
            negative labels (other LEAF data sets).
    """
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1):
        raise ValueError(f"load_leaf: num_classes must be a positive int or None, got {num_classes!r}.")
    clients: dict[str, dict[str, np.ndarray]] = {}
    origin: dict[str, Path] = {}
    for f in _files(Path(path).expanduser()):
        for u, d in _read_file(f, x_dtype, num_classes).items():
            if u in clients:
                raise LeafFormatError(f"User {u!r} appears in both {origin[u]} and {f}; each user must be in one file.")
            clients[u] = d
            origin[u] = f
    if not clients:
        raise LeafFormatError(f"No users in the LEAF data at {str(path)!r}.")
    try:
        return InMemoryClientData(clients)
    except ValueError as e:
        raise LeafFormatError(f"LEAF data at {str(path)!r} is inconsistent: {e}") from e
