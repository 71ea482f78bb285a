"""Partitioners: split centralised `(x, y)` data into a population of clients.

Each partitioner returns an in-memory `ClientData` with keys `"x"` and `"y"`,
is deterministic given its seed, and assigns every example to exactly one
client (nothing lost, nothing duplicated). Client ids are zero-padded
integers (`"00"`, `"01"`, ...) so that they sort in client order.

```python
>>> import numpy as np
>>> from fedcore.data import partition
>>> x, y = np.arange(100.0)[:, None], np.repeat(np.arange(10), 10)
>>> cd = partition.dirichlet(x, y, num_clients=5, alpha=0.5, seed=0)
>>> len(cd), sum(cd.client_sizes().values())
(5, 100)
>>> partition.iid(x, y, num_clients=4, seed=0).client_sizes()
{'0': 25, '1': 25, '2': 25, '3': 25}
```
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from jaxtyping import Integer, Shaped

from ._client_data import InMemoryClientData

__all__ = ["iid", "dirichlet", "pathological", "by_key", "from_indices"]


def _check_xy(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 0 or y.ndim == 0:
        raise ValueError("x and y need a leading example axis (got a scalar).")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y disagree on the number of examples: {x.shape[0]} vs {y.shape[0]}.")
    if x.shape[0] == 0:
        raise ValueError("Cannot partition an empty data set (0 examples).")
    return x, y


def _check_labels(y: np.ndarray, who: str) -> np.ndarray:
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{who} needs integer class labels y of shape (n,); got {y.dtype.name}{list(y.shape)}.")
    return y


def _check_num_clients(num_clients: Any, n: int) -> int:
    if isinstance(num_clients, bool) or not isinstance(num_clients, (int, np.integer)):
        raise TypeError(f"num_clients must be an int, got {type(num_clients).__name__}.")
    if num_clients < 1:
        raise ValueError(f"num_clients must be at least 1, got {num_clients}.")
    if num_clients > n:
        raise ValueError(
            f"Cannot give {num_clients} clients at least one example each from {n} examples; "
            f"use num_clients <= {n}."
        )
    return int(num_clients)


def _client_ids(num_clients: int) -> list[str]:
    width = len(str(num_clients - 1))
    return [f"{i:0{width}d}" for i in range(num_clients)]


def from_indices(
    x: Shaped[np.ndarray, "n ..."], y: Shaped[np.ndarray, "n ..."], indices: Sequence[np.ndarray],
    client_ids: Sequence[str] | None = None,
) -> InMemoryClientData:
    """A `ClientData` whose client `i` holds examples `indices[i]` of `(x, y)`."""
    x, y = _check_xy(x, y)
    ids = _client_ids(len(indices)) if client_ids is None else list(client_ids)
    if len(ids) != len(indices):
        raise ValueError(f"{len(ids)} client ids for {len(indices)} index arrays.")
    clients = {}
    for cid, idx in zip(ids, indices):
        idx = np.asarray(idx, dtype=np.int64)
        clients[cid] = {"x": x[idx], "y": y[idx]}
    return InMemoryClientData(clients)


def iid(
    x: Shaped[np.ndarray, "n ..."], y: Shaped[np.ndarray, "n ..."], num_clients: int, seed: int = 0
) -> InMemoryClientData:
    """Shuffle, then split into `num_clients` clients whose sizes differ by at most one.

    ```python
    >>> import numpy as np
    >>> iid(np.zeros((10, 2)), np.zeros(10, int), num_clients=3).client_sizes()
    {'0': 4, '1': 3, '2': 3}
    ```
    """
    x, y = _check_xy(x, y)
    num_clients = _check_num_clients(num_clients, len(x))
    perm = np.random.default_rng(seed).permutation(len(x))
    return from_indices(x, y, np.array_split(perm, num_clients))


def dirichlet(
    x: Shaped[np.ndarray, "n ..."],
    y: Integer[np.ndarray, " n"],
    num_clients: int,
    alpha: float,
    seed: int = 0,
    *,
    min_size: int = 1,
    max_tries: int = 1000,
) -> InMemoryClientData:
    """Label skew: for each class, split its examples among clients by proportions `~ Dir(alpha)`.

    The construction of Hsu et al. (2019) / Yurochkin et al. (2019): for every
    class `c`, draw `p_c ~ Dirichlet(alpha * 1_K)` over the `K` clients and give
    client `k` a fraction `p_c[k]` of class `c`'s (shuffled) examples. Small
    `alpha` (0.1) gives each client few classes; large `alpha` (100) is close
    to iid. The draw is repeated until every client has at least `min_size`
    examples (at most `max_tries` times).

    ```python
    >>> import numpy as np
    >>> cd = dirichlet(np.zeros((1000, 1)), np.arange(1000) % 10, num_clients=10, alpha=0.1, seed=0)
    >>> min(cd.client_sizes().values()) >= 1
    True
    ```
    """
    x, y = _check_xy(x, y)
    y = _check_labels(y, "dirichlet")
    num_clients = _check_num_clients(num_clients, len(x))
    if not np.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"alpha must be a positive number, got {alpha}.")
    if min_size < 1:
        raise ValueError(f"min_size must be at least 1 (a client cannot be empty), got {min_size}.")
    if min_size * num_clients > len(x):
        raise ValueError(
            f"min_size={min_size} for {num_clients} clients needs {min_size * num_clients} examples; "
            f"only {len(x)} given."
        )
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    by_class = [np.flatnonzero(y == c) for c in classes]
    smallest = 0
    for _ in range(max_tries):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
        for idx in by_class:
            idx = rng.permutation(idx)
            p = rng.dirichlet(np.full(num_clients, float(alpha)))
            cuts = np.floor(np.cumsum(p)[:-1] * len(idx)).astype(np.int64)
            for k, chunk in enumerate(np.split(idx, cuts)):
                parts[k].append(chunk)
        indices = [np.sort(np.concatenate(p)) for p in parts]
        smallest = min(len(i) for i in indices)
        if smallest >= min_size:
            return from_indices(x, y, indices)
    raise ValueError(
        f"dirichlet could not give every client at least min_size={min_size} examples in {max_tries} "
        f"draws (alpha={alpha}, {num_clients} clients, {len(x)} examples; last smallest client: {smallest}). "
        f"Lower min_size, raise alpha, or use fewer clients."
    )


def pathological(
    x: Shaped[np.ndarray, "n ..."],
    y: Integer[np.ndarray, " n"],
    num_clients: int,
    shards_per_client: int = 2,
    seed: int = 0,
) -> InMemoryClientData:
    """McMahan et al. (2017)'s non-iid split: sort by label, cut into shards, deal shards to clients.

    The examples are sorted by label (ties in a seeded random order), cut into
    `num_clients * shards_per_client` shards of (nearly) equal size, and each
    client gets `shards_per_client` shards at random, so most clients see only
    about `shards_per_client` labels (MNIST: 100 clients x 2 shards of 300).

    ```python
    >>> import numpy as np
    >>> cd = pathological(np.zeros((200, 1)), np.arange(200) // 20, num_clients=10, shards_per_client=2)
    >>> int(cd.describe().classes_per_client.max()) <= 2
    True
    ```
    """
    x, y = _check_xy(x, y)
    y = _check_labels(y, "pathological")
    num_clients = _check_num_clients(num_clients, len(x))
    if isinstance(shards_per_client, bool) or not isinstance(shards_per_client, (int, np.integer)) or shards_per_client < 1:
        raise ValueError(f"shards_per_client must be a positive int, got {shards_per_client!r}.")
    num_shards = num_clients * int(shards_per_client)
    if num_shards > len(x):
        raise ValueError(
            f"{num_clients} clients x {shards_per_client} shards = {num_shards} shards, more than the "
            f"{len(x)} examples; lower num_clients or shards_per_client."
        )
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(len(x))
    order = shuffled[np.argsort(y[shuffled], kind="stable")]
    shards = np.array_split(order, num_shards)
    deal = rng.permutation(num_shards).reshape(num_clients, int(shards_per_client))
    indices = [np.sort(np.concatenate([shards[s] for s in row])) for row in deal]
    return from_indices(x, y, indices)


def by_key(
    x: Shaped[np.ndarray, "n ..."], y: Shaped[np.ndarray, "n ..."], keys: Shaped[np.ndarray, " n"]
) -> InMemoryClientData:
    """Natural partition: one client per distinct `keys` value (e.g. writer or user ids).

    Client ids are `str(key)` (sorted as strings, like every `ClientData`);
    examples keep their input order within a client.

    ```python
    >>> import numpy as np
    >>> cd = by_key(np.arange(4.0), np.array([0, 1, 0, 1]), keys=np.array(["w2", "w1", "w2", "w1"]))
    >>> cd.client_ids, cd.dataset("w2")["x"].tolist()
    (('w1', 'w2'), [0.0, 2.0])
    ```
    """
    x, y = _check_xy(x, y)
    keys = np.asarray(keys)
    if keys.ndim != 1 or keys.shape[0] != x.shape[0]:
        raise ValueError(f"keys must have shape ({x.shape[0]},), one per example; got {list(keys.shape)}.")
    try:
        uniq, inverse = np.unique(keys, return_inverse=True)
    except TypeError as e:
        raise TypeError(f"by_key needs keys of one sortable type (e.g. all str or all int): {e}") from e
    ids = [str(k) for k in uniq]
    if len(set(ids)) != len(ids):
        raise ValueError("Distinct keys map to the same client id string; use keys whose str() differ.")
    order = np.argsort(inverse, kind="stable")
    bounds = np.cumsum(np.bincount(inverse, minlength=len(uniq)))[:-1]
    return from_indices(x, y, np.split(order, bounds), client_ids=ids)
