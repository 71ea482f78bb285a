"""`batch_population`: a whole population batched once, every client's examples stored once.

Law: client i of the population sees exactly the batches that `batch_clients`
gives it (the same examples in the same slots, with or without shuffling),
and the store holds every example once, unpadded.
"""

import jax
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedcore.data._batching import batch_clients, batch_population


def _clients(sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [{"x": rng.normal(size=(n, 3)).astype(np.float32), "y": rng.integers(0, 5, n).astype(np.int32)} for n in sizes]


@given(
    st.lists(st.integers(1, 9), min_size=1, max_size=4),
    st.integers(1, 4),
    st.integers(1, 3),
    st.booleans(),
    st.integers(0, 3),
)
def test_every_client_gets_batch_clients_batches(sizes, batch_size, epochs, shuffle, seed):
    clients = _clients(sizes, seed)
    key = jax.random.key(seed) if shuffle else None
    population = batch_population(clients, batch_size, epochs, shuffle=shuffle, key=key)
    batches = batch_clients(clients, batch_size, epochs, shuffle=shuffle, key=key, pad_steps=None, pad_examples=None)
    assert population.data["x"].shape == (sum(sizes), 3)  # every example once, no padding
    assert population.index.shape == batches.index.shape
    # Compared in numpy (no per-shape XLA compiles): the store rows each slot reads.
    index, mask, local_index = np.asarray(population.index), np.asarray(population.mask), np.asarray(batches.index)
    np.testing.assert_array_equal(mask, np.asarray(batches.mask))
    for k in ("x", "y"):
        store, local = np.asarray(population.data[k]), np.asarray(batches.data[k])
        for i in range(len(sizes)):
            np.testing.assert_array_equal(store[index[i]][mask[i]], local[i][local_index[i]][mask[i]])


def test_example():
    clients = _clients([20, 27, 90])
    population = batch_population(clients, batch_size=20, epochs=10)
    assert population.data["x"].shape == (137, 3) and population.index.shape == (3, 45, 20)
    assert int(population.mask[0].sum()) == 200 and int(population.mask[2].sum()) == 900
    # Client 1's rows follow client 0's in the store.
    assert int(population.index[1].min()) == 20 and int(population.index[1].max()) == 46


@pytest.mark.parametrize(
    "clients, kwargs, message",
    [
        ([], {}, "batch_population got no clients"),
        (_clients([2]), {"batch_size": 0}, "batch_size must be a positive integer"),
        (_clients([2]), {"epochs": 0}, "epochs must be a positive integer"),
        (_clients([2]), {"shuffle": True}, "shuffle=True needs a PRNG key"),
        ([{"x": np.zeros((2, 3)), "y": np.zeros(3)}], {}, "disagree on the number of examples"),
        ([{"x": np.zeros((2, 3))}, {"z": np.zeros((2, 3))}], {}, "Client 1 has keys"),
        ([{"x": np.zeros((2, 3))}, {"x": np.zeros((2, 4))}], {}, r"Client 1's 'x' has example shape \(4,\)"),
        ([{"x": np.zeros((0, 3))}], {}, "Client 0 has no examples"),
    ],
)
def test_bad_input_raises(clients, kwargs, message):
    kwargs = {"batch_size": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        batch_population(clients, **kwargs)
