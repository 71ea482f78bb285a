"""Client data: a population of clients, each holding a dict of numpy arrays.

`ClientData` is the federated counterpart of a data set: a sorted tuple of
string client ids and, for each id, that client's examples as a dict of numpy
arrays sharing their leading axis (by default `"x"` and `"y"`). Data is read
per client, on demand: an in-memory population keeps one array per client and
key, an HDF5-backed one reads a client's group only when it is asked for, and
`subset` / `preprocess` return lazy views. It plays the role of TFF's
`tff.simulation.datasets.ClientData` (`client_ids`,
`create_tf_dataset_for_client` -> `dataset`, `element_type_structure` ->
`element_spec`), without TensorFlow.

```python
>>> import numpy as np
>>> from fedcore.data import from_clients_dict
>>> cd = from_clients_dict({
...     "alice": {"x": np.zeros((3, 2), np.float32), "y": np.array([0, 1, 1])},
...     "bob": {"x": np.ones((1, 2), np.float32), "y": np.array([2])},
... })
>>> cd.client_ids, len(cd), cd.dataset("bob")["y"].tolist()
(('alice', 'bob'), 2, [2])
>>> cd.element_spec["x"]
ShapeDtypeStruct(shape=(2,), dtype=float32)
```
"""

from __future__ import annotations

import abc
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from ._summary import DataSummary

__all__ = [
    "ClientData",
    "InMemoryClientData",
    "HDF5ClientData",
    "UnknownClientError",
    "from_clients_dict",
    "describe",
]

ClientDataset = dict[str, np.ndarray]
ElementSpec = dict[str, jax.ShapeDtypeStruct]


class UnknownClientError(KeyError):
    """A client id that the population does not contain."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def _check_client_id(client_id: Any) -> str:
    if not isinstance(client_id, str):
        raise TypeError(
            f"Client ids are strings; got {client_id!r} ({type(client_id).__name__}). "
            f"Convert it with str(...)."
        )
    return client_id


def _spec_of(client_id: str, data: Mapping[str, Any]) -> ElementSpec:
    """Per-example spec of one client's dict; checks it is a non-empty dict of equal-length arrays."""
    if not isinstance(data, Mapping):
        raise TypeError(f"Client {client_id!r}: expected a dict of arrays, got {type(data).__name__}.")
    if not data:
        raise ValueError(f"Client {client_id!r} has no arrays (an empty dict).")
    lengths = {}
    spec = {}
    for key, arr in data.items():
        if not isinstance(key, str):
            raise TypeError(f"Client {client_id!r}: keys are strings, got {key!r}.")
        if not isinstance(arr, np.ndarray):
            raise TypeError(
                f"Client {client_id!r}, key {key!r}: expected a numpy array, got {type(arr).__name__}."
            )
        if arr.ndim == 0:
            raise ValueError(
                f"Client {client_id!r}, key {key!r}: a scalar; every array needs a leading example axis."
            )
        lengths[key] = arr.shape[0]
        spec[key] = jax.ShapeDtypeStruct(arr.shape[1:], arr.dtype)
    if len(set(lengths.values())) != 1:
        raise ValueError(
            f"Client {client_id!r}: arrays disagree on the number of examples: {lengths}."
        )
    if next(iter(lengths.values())) == 0:
        raise ValueError(f"Client {client_id!r} is empty (0 examples); drop it or give it data.")
    return spec


def _format_spec(spec: Mapping[str, jax.ShapeDtypeStruct]) -> str:
    return "{" + ", ".join(f"{k}: {np.dtype(s.dtype).name}{list(s.shape)}" for k, s in spec.items()) + "}"


def _check_against(client_id: str, spec: ElementSpec, expected: ElementSpec, source: str) -> None:
    if spec.keys() != expected.keys():
        raise ValueError(
            f"Client {client_id!r} has keys {sorted(spec)} but {source} has keys {sorted(expected)}; "
            f"every client must hold the same keys."
        )
    for key, s in spec.items():
        e = expected[key]
        if s.shape != e.shape or s.dtype != e.dtype:
            raise ValueError(
                f"Client {client_id!r}, key {key!r}: examples are {np.dtype(s.dtype).name}{list(s.shape)} "
                f"but {source} has {np.dtype(e.dtype).name}{list(e.shape)}; every client must agree "
                f"on per-example shapes and dtypes."
            )


class ClientData(abc.ABC):
    """A population of clients with string ids, each holding a dict of numpy arrays.

    Subclasses implement `client_ids` and `_load`; everything else (checks,
    subsets, lazy preprocessing, summaries) is shared.

    ```python
    >>> import numpy as np
    >>> from fedcore.data import from_clients_dict
    >>> cd = from_clients_dict({"a": {"x": np.arange(4.0), "y": np.array([0, 0, 1, 1])}})
    >>> doubled = cd.preprocess(lambda d: {"x": 2 * d["x"], "y": d["y"]})
    >>> doubled.dataset("a")["x"].tolist()
    [0.0, 2.0, 4.0, 6.0]
    ```
    """

    _spec_cache: ElementSpec | None = None

    # -- to implement -------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def client_ids(self) -> tuple[str, ...]:
        """The ids of all clients, in a fixed order (sorted for the built-in populations)."""

    @abc.abstractmethod
    def _load(self, client_id: str, keys: Sequence[str] | None = None) -> ClientDataset:
        """Read one (known) client's arrays; `keys` restricts which ones (a hint, may be ignored)."""

    def _num_examples(self, client_id: str) -> int:
        data = self._load(client_id)
        return int(next(iter(data.values())).shape[0])

    def _compute_element_spec(self) -> ElementSpec:
        if not self.client_ids:
            raise ValueError("This ClientData has no clients, so it has no element_spec.")
        first = self.client_ids[0]
        return _spec_of(first, self._load(first))

    # -- public API ---------------------------------------------------------------------------
    @property
    def element_spec(self) -> ElementSpec:
        """Per-example shape and dtype of every key, as `jax.ShapeDtypeStruct`s."""
        if self._spec_cache is None:
            self._spec_cache = self._compute_element_spec()
        return dict(self._spec_cache)

    def __len__(self) -> int:
        return len(self.client_ids)

    def __iter__(self) -> Iterator[str]:
        return iter(self.client_ids)

    def __contains__(self, client_id: object) -> bool:
        return client_id in self._id_set

    @property
    def _id_set(self) -> frozenset[str]:
        cached = self.__dict__.get("_id_set_cache")
        if cached is None:
            cached = frozenset(self.client_ids)
            self.__dict__["_id_set_cache"] = cached
        return cached

    def _require(self, client_id: Any) -> str:
        client_id = _check_client_id(client_id)
        if client_id not in self._id_set:
            known = ", ".join(repr(c) for c in self.client_ids[:5])
            more = f", ... ({len(self)} in all)" if len(self) > 5 else ""
            raise UnknownClientError(
                f"Unknown client id {client_id!r}; this population has {known}{more}. "
                f"See `.client_ids`."
            )
        return client_id

    def dataset(self, client_id: str) -> ClientDataset:
        """One client's examples: a dict of numpy arrays with a shared leading axis.

        Raises `UnknownClientError` (a `KeyError`) for an id not in `client_ids`
        and `ValueError` if the client is empty or disagrees with `element_spec`.
        """
        client_id = self._require(client_id)
        data = dict(self._load(client_id))
        spec = _spec_of(client_id, data)
        _check_against(client_id, spec, self.element_spec, "the population's element_spec")
        return data

    def datasets(self, client_ids: Iterable[str] | None = None) -> Iterator[ClientDataset]:
        """Iterate over clients' datasets (all clients, or `client_ids` in the given order)."""
        ids = self.client_ids if client_ids is None else list(client_ids)
        for cid in ids:
            self._require(cid)
        for cid in ids:
            yield self.dataset(cid)

    def num_examples(self, client_id: str) -> int:
        """Number of examples of one client (reads only metadata where the storage allows)."""
        return self._num_examples(self._require(client_id))

    def client_sizes(self) -> dict[str, int]:
        """Number of examples of every client, by id."""
        return {cid: self._num_examples(cid) for cid in self.client_ids}

    def subset(self, client_ids: Iterable[str]) -> ClientData:
        """A lazy view on some clients, in the given order (duplicates and unknown ids are errors)."""
        return _SubsetClientData(self, client_ids)

    def preprocess(
        self, fn: Callable[[ClientDataset], Mapping[str, Any]], *, per_example: bool = False
    ) -> ClientData:
        """A lazy view with `fn` applied when a client is read.

        By default `fn` maps a whole client's dict of arrays to a new dict of
        arrays (vectorised; it may change keys, dtypes or the number of
        examples). With `per_example=True`, `fn` maps one example (a dict of
        per-example arrays) to one example, and the results are stacked.
        """
        if not callable(fn):
            raise TypeError(f"preprocess expects a callable, got {type(fn).__name__}.")
        return _PreprocessedClientData(self, fn, per_example)

    def centralized(self, client_ids: Iterable[str] | None = None) -> ClientDataset:
        """All (or the given) clients' examples concatenated into one dict of arrays."""
        parts = list(self.datasets(client_ids))
        if not parts:
            raise ValueError("centralized() needs at least one client.")
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def describe(self, label_key: str = "y", num_classes: int | None = None) -> DataSummary:
        """Per-client sizes and label histograms; `print()` the result for a table."""
        return describe(self, label_key=label_key, num_classes=num_classes)

    def plot_label_skew(
        self,
        path: str | os.PathLike[str],
        *,
        label_key: str = "y",
        num_classes: int | None = None,
        max_clients: int = 50,
        title: str | None = None,
    ) -> str:
        """Save a stacked bar chart of each client's label counts to `path` (needs matplotlib)."""
        return self.describe(label_key, num_classes).plot(path, max_clients=max_clients, title=title)

    def _labels(self, client_id: str, label_key: str) -> np.ndarray:
        data = self._load(client_id, keys=[label_key])
        if label_key not in data:
            raise KeyError(f"No key {label_key!r} in client {client_id!r}; keys are {sorted(data)}.")
        return np.asarray(data[label_key])

    @classmethod
    def from_clients_dict(cls, clients: Mapping[str, Mapping[str, Any]]) -> InMemoryClientData:
        """An in-memory population from `{client_id: {"x": ..., "y": ...}}`."""
        return InMemoryClientData(clients)

    def __repr__(self) -> str:
        try:
            spec = _format_spec(self.element_spec)
        except Exception:  # noqa: BLE001 - repr must not fail
            spec = "?"
        return f"{type(self).__name__}(num_clients={len(self)}, element_spec={spec})"


class InMemoryClientData(ClientData):
    """Clients held in memory, one numpy array per client and key.

    All clients are checked when it is built: same keys, same per-example
    shapes and dtypes, equal lengths within a client, no empty client. Ids are
    sorted.
    """

    def __init__(self, clients: Mapping[str, Mapping[str, Any]]):
        if not isinstance(clients, Mapping):
            raise TypeError(f"Expected a dict {{client_id: {{key: array}}}}, got {type(clients).__name__}.")
        if not clients:
            raise ValueError("A ClientData needs at least one client; got an empty dict.")
        store: dict[str, ClientDataset] = {}
        expected: ElementSpec | None = None
        first = None
        for cid in sorted(clients, key=lambda c: (not isinstance(c, str), str(c))):
            cid = _check_client_id(cid)
            raw = clients[cid]
            if not isinstance(raw, Mapping):
                raise TypeError(f"Client {cid!r}: expected a dict of arrays, got {type(raw).__name__}.")
            data = {k: np.asarray(v) for k, v in raw.items()}
            spec = _spec_of(cid, data)
            if expected is None:
                expected, first = spec, cid
            else:
                _check_against(cid, spec, expected, f"client {first!r}")
            store[cid] = data
        self._clients = store
        self._ids = tuple(store)
        self._spec_cache = expected

    @property
    def client_ids(self) -> tuple[str, ...]:
        return self._ids

    def _load(self, client_id: str, keys: Sequence[str] | None = None) -> ClientDataset:
        return dict(self._clients[client_id])

    def _num_examples(self, client_id: str) -> int:
        return int(next(iter(self._clients[client_id].values())).shape[0])


def from_clients_dict(clients: Mapping[str, Mapping[str, Any]]) -> InMemoryClientData:
    """An in-memory `ClientData` from `{client_id: {"x": array, "y": array}}`.

    ```python
    >>> import numpy as np
    >>> cd = from_clients_dict({"0": {"x": np.ones((2, 3)), "y": np.array([1, 0])}})
    >>> cd.client_sizes()
    {'0': 2}
    ```
    """
    return InMemoryClientData(clients)


class _SubsetClientData(ClientData):
    def __init__(self, base: ClientData, client_ids: Iterable[str]):
        if isinstance(client_ids, str):
            raise TypeError("subset expects an iterable of client ids, got a single string.")
        ids = tuple(base._require(c) for c in client_ids)
        if len(set(ids)) != len(ids):
            dupes = sorted({c for c in ids if ids.count(c) > 1})
            raise ValueError(f"subset got duplicate client ids: {dupes}.")
        if not ids:
            raise ValueError("subset needs at least one client id.")
        self._base = base
        self._ids = ids

    @property
    def client_ids(self) -> tuple[str, ...]:
        return self._ids

    def _load(self, client_id: str, keys: Sequence[str] | None = None) -> ClientDataset:
        return self._base._load(client_id, keys)

    def _num_examples(self, client_id: str) -> int:
        return self._base._num_examples(client_id)

    def _compute_element_spec(self) -> ElementSpec:
        return self._base.element_spec


class _PreprocessedClientData(ClientData):
    def __init__(self, base: ClientData, fn: Callable[..., Mapping[str, Any]], per_example: bool):
        self._base = base
        self._fn = fn
        self._per_example = per_example

    @property
    def client_ids(self) -> tuple[str, ...]:
        return self._base.client_ids

    def _apply(self, client_id: str, data: ClientDataset) -> ClientDataset:
        if not self._per_example:
            out = self._fn(data)
            if not isinstance(out, Mapping):
                raise TypeError(
                    f"preprocess fn returned {type(out).__name__} for client {client_id!r}; "
                    f"it must return a dict of arrays."
                )
            return {k: np.asarray(v) for k, v in out.items()}
        n = next(iter(data.values())).shape[0]
        examples = []
        for i in range(n):
            out = self._fn({k: v[i] for k, v in data.items()})
            if not isinstance(out, Mapping):
                raise TypeError(
                    f"preprocess fn (per_example=True) returned {type(out).__name__} for an example "
                    f"of client {client_id!r}; it must return a dict of per-example arrays."
                )
            examples.append(out)
        keys = examples[0].keys()
        for ex in examples:
            if ex.keys() != keys:
                raise ValueError(
                    f"preprocess fn returned different keys for examples of client {client_id!r}: "
                    f"{sorted(keys)} vs {sorted(ex.keys())}."
                )
        return {k: np.stack([np.asarray(ex[k]) for ex in examples]) for k in keys}

    def _load(self, client_id: str, keys: Sequence[str] | None = None) -> ClientDataset:
        return self._apply(client_id, self._base.dataset(client_id))

    def _compute_element_spec(self) -> ElementSpec:
        first = self.client_ids[0]
        return _spec_of(first, self._load(first))


class HDF5ClientData(ClientData):
    """Clients stored as HDF5 groups, read on demand (one group per client).

    The file layout is TFF's: `/<group>/<client_id>/<dataset>`, each dataset
    with the client's examples on its leading axis. `keys` maps the returned
    keys to dataset names (e.g. `{"x": "pixels", "y": "label"}`); by default
    every dataset is returned under its own name. Only the client ids and the
    first client's metadata are read when it is opened, so a population of
    thousands of clients opens in milliseconds and uses memory only for the
    clients that are read.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        group: str = "examples",
        keys: Mapping[str, str] | None = None,
    ):
        try:
            import h5py
        except ImportError as e:  # pragma: no cover - h5py is part of the data extra
            raise ImportError('HDF5ClientData needs h5py: pip install "fedcore[data]"') from e
        self._path = os.fspath(path)
        self._group_name = group
        self._keys = dict(keys) if keys is not None else None
        if not os.path.exists(self._path):
            raise FileNotFoundError(f"No HDF5 file at {self._path!r}.")
        try:
            self._file = h5py.File(self._path, "r")
        except OSError as e:
            raise OSError(
                f"Could not read the HDF5 file {self._path!r}: it is truncated or corrupt ({e}). "
                f"Delete it so that it is extracted/downloaded again, or point to a good copy."
            ) from e
        if group not in self._file:
            raise ValueError(
                f"HDF5 file {self._path!r} has no group {group!r} (top level: {sorted(self._file.keys())}); "
                f"expected one subgroup per client under /{group}."
            )
        self._group = self._file[group]
        ids = sorted(self._group.keys())
        if not ids:
            raise ValueError(f"HDF5 file {self._path!r} has no clients under /{group}.")
        self._ids = tuple(ids)
        first = self._group[ids[0]]
        names = self._names(ids[0], first)
        self._spec_cache = {k: jax.ShapeDtypeStruct(first[n].shape[1:], first[n].dtype) for k, n in names.items()}

    def _names(self, client_id: str, grp: Any) -> dict[str, str]:
        if self._keys is None:
            return {n: n for n in grp.keys()}
        missing = [n for n in self._keys.values() if n not in grp]
        if missing:
            raise ValueError(
                f"Client {client_id!r} in {self._path!r} lacks dataset(s) {missing}; it has {sorted(grp.keys())}."
            )
        return dict(self._keys)

    @property
    def path(self) -> str:
        """The HDF5 file this population reads from."""
        return self._path

    @property
    def client_ids(self) -> tuple[str, ...]:
        return self._ids

    def _load(self, client_id: str, keys: Sequence[str] | None = None) -> ClientDataset:
        grp = self._group[client_id]
        names = self._names(client_id, grp)
        if keys is not None and all(k in names for k in keys):
            names = {k: names[k] for k in keys}
        try:
            return {k: grp[n][()] for k, n in names.items()}
        except OSError as e:
            raise OSError(
                f"Could not read client {client_id!r} from {self._path!r}: the file is truncated or "
                f"corrupt ({e}). Delete it so that it is extracted/downloaded again."
            ) from e

    def _num_examples(self, client_id: str) -> int:
        grp = self._group[client_id]
        name = next(iter(self._names(client_id, grp).values()))
        return int(grp[name].shape[0])

    def close(self) -> None:
        """Close the underlying HDF5 file."""
        self._file.close()

    def __enter__(self) -> HDF5ClientData:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self._path, "group": self._group_name, "keys": self._keys}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], group=state["group"], keys=state["keys"])


def describe(client_data: ClientData, label_key: str = "y", num_classes: int | None = None) -> DataSummary:
    """Summarise a population: client sizes and a label histogram per client.

    Reads only `label_key` where the storage allows. Labels must be
    non-negative integers (one per example); `num_classes` defaults to the
    largest label seen plus one.
    """
    ids = client_data.client_ids
    labels = []
    for cid in ids:
        y = client_data._labels(cid, label_key)
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(
                f"describe() needs integer labels of shape (n,) under {label_key!r}; client {cid!r} has "
                f"{y.dtype.name}{list(y.shape)}. Pass label_key= for another key."
            )
        if y.size and y.min() < 0:
            raise ValueError(f"describe() needs non-negative labels; client {cid!r} has label {int(y.min())}.")
        labels.append(y)
    largest = max((int(y.max()) for y in labels if y.size), default=-1)
    if num_classes is None:
        num_classes = largest + 1
    elif largest >= num_classes:
        raise ValueError(f"num_classes={num_classes} but a client has label {largest}.")
    counts = np.stack([np.bincount(y, minlength=num_classes) for y in labels]) if labels else np.zeros((0, num_classes), np.int64)
    sizes = np.array([len(y) for y in labels], dtype=np.int64)
    return DataSummary(client_ids=tuple(ids), num_examples=sizes, label_counts=counts)
