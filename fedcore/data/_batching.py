"""Client batching: per-client example dicts -> one stacked, padded pytree.

`batch_clients` reproduces tf.data's `ds.repeat(epochs).batch(batch_size)` for
every client at once. To keep memory proportional to the data (not to
`epochs`), each client's examples are stored once and the batches are an
index table into them: `ClientBatches(data=[C, N, ...], index=[C, S, B],
mask=[C, S, B])`. The learning layer gathers batch `s` inside the jitted
round; `materialize()` returns the explicit `[clients, steps, batch, ...]`
arrays.

Step and example counts are padded to buckets (powers of two by default) so
that rounds with different clients reuse a few compiled programs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from ..core._batches import ClientBatches, ClientPopulation

__all__ = ["ClientBatches", "ClientPopulation", "batch_clients", "batch_population", "bucket_size"]


def bucket_size(n: int, bucket: str | int | None = "pow2") -> int:
    """Rounds `n` up to a bucket: next power of two (`"pow2"`), a fixed maximum (an int), or `n` itself (`None`).

    ```python
    >>> bucket_size(13), bucket_size(13, 20), bucket_size(13, None)
    (16, 20, 13)
    ```
    """
    if bucket is None:
        return n
    if bucket == "pow2":
        return 1 << max(0, math.ceil(math.log2(max(n, 1))))
    if isinstance(bucket, (int, np.integer)):
        if n > bucket:
            raise ValueError(f"{n} exceeds the fixed bucket size {bucket}; raise the maximum.")
        return int(bucket)
    raise ValueError(f"bucket must be 'pow2', an int or None, got {bucket!r}.")


def _client_length(i: int, client: Mapping[str, Any]) -> int:
    if not isinstance(client, Mapping) or not client:
        raise ValueError(f"Client {i} must be a non-empty dict of arrays, got {type(client).__name__}.")
    lengths = {k: len(v) for k, v in client.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"Client {i}'s arrays disagree on the number of examples: {lengths}.")
    n = next(iter(lengths.values()))
    if n == 0:
        raise ValueError(f"Client {i} has no examples; drop empty clients before batching.")
    return n


def _check_clients(
    op: str, client_datasets: Sequence[Mapping[str, Any]], batch_size: Any, epochs: Any, shuffle: bool, key: Any
) -> tuple[list[int], set[str]]:
    """Validates batching arguments; returns every client's example count and the keys."""
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if not isinstance(epochs, (int, np.integer)) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}.")
    if len(client_datasets) == 0:
        raise ValueError(f"{op} got no clients.")
    if shuffle and key is None:
        raise ValueError("shuffle=True needs a PRNG key (key=jax.random.key(seed)).")
    lengths = [_client_length(i, c) for i, c in enumerate(client_datasets)]
    keys = set(client_datasets[0])
    for i, c in enumerate(client_datasets):
        if set(c) != keys:
            raise ValueError(f"Client {i} has keys {sorted(c)}, but client 0 has {sorted(keys)}.")
    return lengths, keys


def _index_tables(
    lengths: Sequence[int], offsets: Sequence[int], slots: int, epochs: int, shuffle: bool, key: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Every client's visits (`epochs` passes, in order or reshuffled per epoch) as `[clients, slots]` rows and mask."""
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel()) if shuffle else None
    index = np.zeros((len(lengths), slots), np.int32)
    mask = np.zeros((len(lengths), slots), bool)
    for i, (n, offset) in enumerate(zip(lengths, offsets)):
        order = [rng.permutation(n) if rng is not None else np.arange(n) for _ in range(epochs)]
        visits = np.concatenate(order)
        index[i, : visits.size] = visits + offset
        # Padding slots point at the client's own first example (never read as data: mask False).
        index[i, visits.size :] = offset
        mask[i, : visits.size] = True
    return index, mask


def batch_clients(
    client_datasets: Sequence[Mapping[str, Any]],
    batch_size: int,
    epochs: int = 1,
    shuffle: bool = False,
    key: jax.Array | None = None,
    *,
    pad_steps: str | int | None = "pow2",
    pad_examples: str | int | None = "pow2",
) -> ClientBatches:
    """Batches several clients' data as tf.data's `.repeat(epochs).batch(batch_size)` would.

    Each client's examples run in order (or reshuffled every epoch when
    `shuffle=True`, reproducibly from `key`), `epochs` times, cut into batches
    of `batch_size`; batches run across epoch boundaries, so only a client's
    very last batch can be short. Clients with fewer steps are padded with
    empty steps up to a common, bucketed step count (`pad_steps`).

    ```python
    >>> import numpy as np
    >>> clients = [{"x": np.zeros((20, 784), np.float32), "y": np.zeros(20, np.int32)},
    ...            {"x": np.zeros((27, 784), np.float32), "y": np.zeros(27, np.int32)}]
    >>> b = batch_clients(clients, batch_size=20, epochs=10)
    >>> b.index.shape, int(b.mask[1].sum())
    ((2, 16, 20), 270)
    ```
    """
    lengths, keys = _check_clients("batch_clients", client_datasets, batch_size, epochs, shuffle, key)
    num_steps = bucket_size(max(math.ceil(n * epochs / batch_size) for n in lengths), pad_steps)
    num_examples = bucket_size(max(lengths), pad_examples)
    index, mask = _index_tables(lengths, [0] * len(lengths), num_steps * batch_size, epochs, shuffle, key)

    data = {}
    for k in sorted(keys):
        first = np.asarray(client_datasets[0][k])
        stacked = np.zeros((len(lengths), num_examples, *first.shape[1:]), first.dtype)
        for i, c in enumerate(client_datasets):
            arr = np.asarray(c[k])
            if arr.shape[1:] != first.shape[1:]:
                raise ValueError(
                    f"Client {i}'s '{k}' has example shape {arr.shape[1:]}, but client 0's is {first.shape[1:]}."
                )
            stacked[i, : arr.shape[0]] = arr
        data[k] = jax.device_put(stacked)
    shape = (len(lengths), num_steps, batch_size)
    # device_put, not jnp.asarray: the latter compiles a copy for every new shape (~10 ms each).
    return ClientBatches(data, jax.device_put(index.reshape(shape)), jax.device_put(mask.reshape(shape)))


def batch_population(
    client_datasets: Sequence[Mapping[str, Any]],
    batch_size: int,
    epochs: int = 1,
    shuffle: bool = False,
    key: jax.Array | None = None,
) -> ClientPopulation:
    """Batches a whole population once, for rounds that each select a few of its clients.

    The batches are `batch_clients`'s (the same visit order for the same
    `key`), but every client's examples go into one store on device, each
    stored once and unpadded; each round passes only the ids of its clients
    (`population.select(ids)`), whose batches are gathered inside the jitted
    round. Every round has the same shapes (one compile per cohort size).
    The visit order is fixed when the population is built: rebuild it with
    another `key` to reshuffle.

    ```python
    >>> import numpy as np
    >>> clients = [{"x": np.zeros((n, 784), np.float32), "y": np.zeros(n, np.int32)} for n in (20, 27, 90)]
    >>> population = batch_population(clients, batch_size=20, epochs=10)
    >>> population.data["x"].shape, population.index.shape
    ((137, 784), (3, 45, 20))
    >>> cohort = population.select(np.array([2, 0]))  # then: process.next(state, cohort)
    ```
    """
    lengths, keys = _check_clients("batch_population", client_datasets, batch_size, epochs, shuffle, key)
    num_steps = max(math.ceil(n * epochs / batch_size) for n in lengths)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    if int(offsets[-1]) + lengths[-1] > np.iinfo(np.int32).max:
        raise ValueError("batch_population: more than 2**31 examples in total; split the population.")
    index, mask = _index_tables(lengths, offsets, num_steps * batch_size, epochs, shuffle, key)
    data = {}
    for k in sorted(keys):
        arrays = [np.asarray(c[k]) for c in client_datasets]
        for i, arr in enumerate(arrays):
            if arr.shape[1:] != arrays[0].shape[1:]:
                raise ValueError(
                    f"Client {i}'s '{k}' has example shape {arr.shape[1:]}, but client 0's is {arrays[0].shape[1:]}."
                )
        data[k] = jax.device_put(np.concatenate(arrays))
    shape = (len(lengths), num_steps, batch_size)
    return ClientPopulation(data, jax.device_put(index.reshape(shape)), jax.device_put(mask.reshape(shape)))
