"""Client data in TFF's SQLite layout (`tff.simulation.datasets.SqlClientData`), read without TensorFlow.

TFF's current data sets ship as one SQLite file with two tables:

- `examples(split_name, client_id, serialized_example_proto)`: one row per
  example, a serialized `tf.train.Example`;
- `client_metadata(client_id, split_name, num_examples)`: one row per client
  and split.

`SQLiteClientData` opens one split of such a file. Opening reads only the
client ids; a client's rows are read and decoded when `dataset(client_id)` asks
for them (in the table's row order, as TFF's `SqlDataset` reads them).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from . import _example_proto
from ._client_data import ClientData, ClientDataset, _spec_of

__all__ = ["SQLiteClientData"]

_TABLES = {"examples": {"split_name", "client_id", "serialized_example_proto"}, "client_metadata": {"client_id", "split_name"}}


class SQLiteClientData(ClientData):
    """Clients of one split of a TFF SQLite file, each example a `tf.train.Example`, read on demand.

    Args:
        path: the `.sqlite` file (e.g. TFF's `emnist_all.sqlite`).
        split_name: the split to read (`"digits_only_train"`, ...); `None` reads every row of each client.
        keys: maps the returned keys to feature names (`{"x": "pixels", "y": "label"}`); default: every
            feature under its own name.
        shapes: per-example shape of a feature (`{"pixels": (28, 28)}`); default: a scalar for a
            one-value feature, else flat.
        dtypes: dtype a feature is cast to (`{"label": np.int32}`, as TFF casts EMNIST's int64 labels);
            default: float32 for float lists, int64 for int64 lists.

    ```python
    >>> import sqlite3, tempfile, os, numpy as np
    >>> from fedcore.data import SQLiteClientData
    >>> path = os.path.join(tempfile.mkdtemp(), "tiny.sqlite")
    >>> db = sqlite3.connect(path)
    >>> _ = db.execute("CREATE TABLE examples (split_name TEXT, client_id TEXT, serialized_example_proto BLOB)")
    >>> _ = db.execute("CREATE TABLE client_metadata (client_id TEXT, split_name TEXT, num_examples INTEGER)")
    >>> label7 = bytes.fromhex("0a100a0e0a056c6162656c12051a030a0107")  # Example{label: [7]}
    >>> _ = db.execute("INSERT INTO examples VALUES ('train', 'w1', ?)", (label7,))
    >>> _ = db.execute("INSERT INTO client_metadata VALUES ('w1', 'train', 1)")
    >>> db.commit(); db.close()
    >>> cd = SQLiteClientData(path, "train", keys={"y": "label"}, dtypes={"label": np.int32})
    >>> cd.client_ids, cd.dataset("w1")["y"].tolist(), cd.num_examples("w1")
    (('w1',), [7], 1)
    ```
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        split_name: str | None = None,
        *,
        keys: Mapping[str, str] | None = None,
        shapes: Mapping[str, Sequence[int]] | None = None,
        dtypes: Mapping[str, Any] | None = None,
    ):
        self._path = os.fspath(path)
        self._split = split_name
        self._keys = dict(keys) if keys is not None else None
        self._shapes = {k: tuple(v) for k, v in (shapes or {}).items()}
        self._dtypes = dict(dtypes or {})
        if not os.path.isfile(self._path):
            raise FileNotFoundError(f"No SQLite file at {self._path!r}.")
        self._db = self._connect()
        self._check_format()
        self._has_counts = "num_examples" in self._columns("client_metadata")
        query, params = "SELECT DISTINCT client_id FROM client_metadata", ()
        if split_name is not None:
            query, params = query + " WHERE split_name = ?", (split_name,)
        self._ids = tuple(sorted(r[0] for r in self._execute(query, params)))
        if not self._ids:
            splits = sorted(r[0] for r in self._execute("SELECT DISTINCT split_name FROM client_metadata"))
            raise ValueError(
                f"SQLite file {self._path!r} has no clients in split {split_name!r}; its splits are {splits}."
            )

    def _connect(self) -> sqlite3.Connection:
        try:
            # Read-only: a population never writes its file. check_same_thread=False lets data loaders
            # on other threads read clients (sqlite serialises access itself).
            return sqlite3.connect(f"file:{self._path}?mode=ro", uri=True, check_same_thread=False)
        except sqlite3.Error as e:
            raise OSError(self._corrupt(e)) from e

    def _corrupt(self, e: Exception) -> str:
        return (
            f"Could not read the SQLite file {self._path!r}: it is truncated, corrupt or not SQLite ({e}). "
            "Delete it so that it is decompressed/downloaded again, or point to a good copy."
        )

    def _execute(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._db.execute(query, tuple(params)).fetchall()
        except sqlite3.DatabaseError as e:
            raise OSError(self._corrupt(e)) from e

    def _columns(self, table: str) -> set[str]:
        return {r[1] for r in self._execute(f"PRAGMA table_info({table})")}

    def _check_format(self) -> None:
        tables = {r[0] for r in self._execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        for table, needed in _TABLES.items():
            if table not in tables:
                raise ValueError(
                    f"SQLite file {self._path!r} has no table {table!r} (it has {sorted(tables)}); TFF's layout "
                    f"is examples(split_name, client_id, serialized_example_proto) and "
                    f"client_metadata(client_id, split_name, num_examples)."
                )
            missing = needed - self._columns(table)
            if missing:
                raise ValueError(f"SQLite file {self._path!r}: table {table!r} lacks column(s) {sorted(missing)}.")

    @property
    def path(self) -> str:
        """The SQLite file this population reads from."""
        return self._path

    @property
    def split_name(self) -> str | None:
        """The split this population reads (`None`: all rows)."""
        return self._split

    @property
    def client_ids(self) -> tuple[str, ...]:
        return self._ids

    def _where(self, client_id: str) -> tuple[str, tuple[Any, ...]]:
        if self._split is None:
            return "client_id = ?", (client_id,)
        return "client_id = ? AND split_name = ?", (client_id, self._split)

    def _load(self, client_id: str, keys: Sequence[str] | None = None, limit: int = -1) -> ClientDataset:
        where, params = self._where(client_id)
        rows = self._execute(
            f"SELECT serialized_example_proto FROM examples WHERE {where} ORDER BY rowid LIMIT ?", (*params, limit)
        )
        if not rows:
            raise ValueError(f"Client {client_id!r} has no rows in table 'examples' of {self._path!r}.")
        columns: dict[str, list[np.ndarray]] = {}
        for i, (blob,) in enumerate(rows):
            try:
                features = _example_proto.parse_example(blob)
            except _example_proto.MalformedExampleError as e:
                raise ValueError(
                    f"Client {client_id!r}, example {i} in {self._path!r} is not a serialized tf.train.Example ({e})."
                ) from e
            names = self._names(client_id, i, features)
            if i == 0:
                columns = {k: [] for k in names}
            for k, name in names.items():
                columns[k].append(features[name])
        return {k: self._stack(client_id, k, values) for k, values in columns.items()}

    def _names(self, client_id: str, index: int, features: Mapping[str, np.ndarray]) -> dict[str, str]:
        if self._keys is None:
            return {n: n for n in sorted(features)}
        missing = [n for n in self._keys.values() if n not in features]
        if missing:
            raise ValueError(
                f"Client {client_id!r}, example {index} in {self._path!r} lacks feature(s) {missing}; "
                f"it has {sorted(features)}."
            )
        return dict(self._keys)

    def _stack(self, client_id: str, key: str, values: list[np.ndarray]) -> np.ndarray:
        name = self._keys[key] if self._keys is not None else key
        sizes = {v.size for v in values}
        if len(sizes) > 1:
            raise ValueError(
                f"Client {client_id!r}: feature {name!r} has examples of different sizes {sorted(sizes)} in "
                f"{self._path!r}; fixed-size features only."
            )
        size = sizes.pop()
        shape = self._shapes.get(name, () if size == 1 else (size,))
        if int(np.prod(shape)) != size:
            raise ValueError(
                f"Client {client_id!r}: feature {name!r} has {size} values per example, which does not fit "
                f"the shape {shape} given for it."
            )
        stacked = np.stack(values).reshape(len(values), *shape)
        return stacked.astype(self._dtypes[name]) if name in self._dtypes else stacked

    def _compute_element_spec(self) -> dict[str, Any]:
        return _spec_of(self._ids[0], self._load(self._ids[0], limit=1))  # one example tells the spec

    def _num_examples(self, client_id: str) -> int:
        where, params = self._where(client_id)
        if self._has_counts and self._split is not None:
            rows = self._execute(f"SELECT num_examples FROM client_metadata WHERE {where}", params)
            if rows:
                return int(rows[0][0])
        return int(self._execute(f"SELECT COUNT(*) FROM examples WHERE {where}", params)[0][0])

    def close(self) -> None:
        """Close the underlying SQLite connection."""
        self._db.close()

    def __enter__(self) -> SQLiteClientData:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self._path, "split_name": self._split, "keys": self._keys, "shapes": self._shapes,
                "dtypes": self._dtypes}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state.pop("path"), state.pop("split_name"), **state)
