"""`batch_clients` is tf.data's `.repeat(epochs).batch(batch_size)`, padded to a few bucketed shapes.

Batches are compared with a pure-Python model of the tf.data pipeline below,
slot by slot: which example fills each slot, and the short last batch.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np
import optax
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedcore.core import ClientBatches
from fedcore.data import batch_clients
from fedcore.data._batching import bucket_size
from fedcore.learning import build_weighted_fed_avg, losses, models


def tf_repeat_batch(orders: list[list[int]], batch_size: int) -> list[list[int]]:
    """tf.data's `ds.repeat(len(orders)).batch(batch_size)` (drop_remainder=False) over example ids.

    `orders[e]` is the order of the examples in epoch `e` (`range(n)` without
    shuffling). `repeat` chains the epochs into one stream and `batch` cuts it
    into consecutive batches, so batches cross epoch boundaries and only the
    very last one may be short.
    """
    stream = [i for order in orders for i in order]
    return [stream[start : start + batch_size] for start in range(0, len(stream), batch_size)]


def _clients(sizes: list[int], features: int = 2) -> list[dict[str, np.ndarray]]:
    # Every example carries its (client, example) id, so a slot tells which example fills it.
    return [
        {
            "x": np.stack([np.full(features, 1000 * c + i, np.float32) for i in range(n)]).reshape(n, features),
            "y": np.arange(n, dtype=np.int32) + 1000 * c,
        }
        for c, n in enumerate(sizes)
    ]


def _batches_of(b: ClientBatches, client: int) -> list[list[int]]:
    """The example ids in each non-empty batch of `client`; checks real slots come first."""
    index, mask = np.asarray(b.index)[client], np.asarray(b.mask)[client]  # numpy: no per-shape compiles
    out = []
    for step in range(index.shape[0]):
        real = int(mask[step].sum())
        assert mask[step, :real].all() and not mask[step, real:].any(), "real slots must come first"
        if real:
            out.append(index[step, :real].tolist())
    steps = [bool(m.any()) for m in mask]
    assert steps == sorted(steps, reverse=True), "empty (padding) steps must come last"
    return out


sizes_lists = st.lists(st.integers(1, 12), min_size=1, max_size=4)
batch_sizes = st.integers(1, 7)
epoch_counts = st.integers(1, 3)


@given(sizes_lists, batch_sizes, epoch_counts)
def test_batches_are_tf_data_repeat_then_batch(sizes, batch_size, epochs):
    clients = _clients(sizes)
    b = batch_clients(clients, batch_size, epochs=epochs)
    x, y = np.asarray(b.data["x"]), np.asarray(b.data["y"])
    for c, n in enumerate(sizes):
        expected = tf_repeat_batch([list(range(n))] * epochs, batch_size)
        got = _batches_of(b, c)
        assert got == expected
        assert len(got[-1]) == ((n * epochs) % batch_size or batch_size)  # the short last batch
        for step, rows in enumerate(got):  # the data behind the index is the client's examples
            np.testing.assert_array_equal(y[c, rows], clients[c]["y"][rows])
            np.testing.assert_array_equal(x[c, rows], clients[c]["x"][rows])
    assert b.num_clients == len(sizes) and b.batch_size == batch_size


@given(sizes_lists, batch_sizes, epoch_counts)
def test_shapes_are_bucketed_to_powers_of_two(sizes, batch_size, epochs):
    b = batch_clients(_clients(sizes), batch_size, epochs=epochs)
    needed_steps = max(math.ceil(n * epochs / batch_size) for n in sizes)
    assert b.num_steps == bucket_size(needed_steps) and b.num_steps >= needed_steps
    assert b.num_steps & (b.num_steps - 1) == 0 and b.num_steps < 2 * needed_steps
    n = b.data["x"].shape[1]
    assert n & (n - 1) == 0 and max(sizes) <= n < 2 * max(sizes)
    exact = batch_clients(_clients(sizes), batch_size, epochs=epochs, pad_steps=None, pad_examples=None)
    assert exact.num_steps == needed_steps and exact.data["x"].shape[1] == max(sizes)


@given(sizes_lists, batch_sizes, epoch_counts, st.integers(0, 5), st.integers(0, 5))
def test_padding_steps_and_examples_changes_no_batch(sizes, batch_size, epochs, extra_steps, extra_examples):
    clients = _clients(sizes)
    exact = batch_clients(clients, batch_size, epochs=epochs, pad_steps=None, pad_examples=None)
    padded = batch_clients(
        clients,
        batch_size,
        epochs=epochs,
        pad_steps=exact.num_steps + extra_steps,
        pad_examples=max(sizes) + extra_examples,
    )
    assert padded.num_steps == exact.num_steps + extra_steps
    assert padded.data["x"].shape[1] == max(sizes) + extra_examples
    for c in range(len(sizes)):
        assert _batches_of(padded, c) == _batches_of(exact, c)
    assert not np.asarray(padded.mask)[:, exact.num_steps :].any()
    assert int(np.asarray(padded.mask).sum()) == sum(sizes) * epochs


def test_materialize_gathers_the_explicit_batches():
    b = batch_clients(_clients([3, 5]), 2, epochs=2)
    m = b.materialize()
    assert m["x"].shape == (2, b.num_steps, 2, 2) and m["mask"].shape == (2, b.num_steps, 2)
    # Client 1, epoch 1 then 2: 0 1 | 2 3 | 4 0 | 1 2 | 3 4 -> its third batch is [4, 0].
    np.testing.assert_array_equal(m["y"][1, 2], [1004, 1000])
    back = ClientBatches.from_materialized(m).materialize()
    for k in m:
        real = np.asarray(m["mask"])
        np.testing.assert_array_equal(np.asarray(back[k])[real], np.asarray(m[k])[real])


# ----------------------------------------------------------------------------- shuffling


@given(sizes_lists, batch_sizes, epoch_counts, st.integers(0, 2**31 - 1))
def test_shuffled_batches_are_repeat_batch_of_per_epoch_permutations(sizes, batch_size, epochs, seed):
    b = batch_clients(_clients(sizes), batch_size, epochs=epochs, shuffle=True, key=jax.random.key(seed))
    for c, n in enumerate(sizes):
        visits = [i for batch in _batches_of(b, c) for i in batch]
        orders = [visits[e * n : (e + 1) * n] for e in range(epochs)]
        assert all(sorted(order) == list(range(n)) for order in orders), "each epoch visits every example once"
        assert _batches_of(b, c) == tf_repeat_batch(orders, batch_size)
    again = batch_clients(_clients(sizes), batch_size, epochs=epochs, shuffle=True, key=jax.random.key(seed))
    np.testing.assert_array_equal(again.index, b.index)  # reproducible from the key


def test_shuffling_depends_on_the_key_and_reshuffles_every_epoch():
    clients = _clients([50, 40])
    one = batch_clients(clients, 10, epochs=3, shuffle=True, key=jax.random.key(0))
    two = batch_clients(clients, 10, epochs=3, shuffle=True, key=jax.random.key(1))
    assert not np.array_equal(one.index, two.index)
    visits = np.asarray(one.index[0]).ravel()[: 50 * 3].reshape(3, 50)
    assert not np.array_equal(visits[0], visits[1]) and not np.array_equal(visits[1], visits[2])
    assert not np.array_equal(visits[0], np.arange(50))
    # Clients are shuffled independently, and a legacy uint32 key works too.
    assert not np.array_equal(np.asarray(one.index[0]).ravel()[:40], np.asarray(one.index[1]).ravel()[:40])
    legacy = batch_clients(clients, 10, epochs=3, shuffle=True, key=jax.random.PRNGKey(0))
    legacy_again = batch_clients(clients, 10, epochs=3, shuffle=True, key=jax.random.PRNGKey(0))
    np.testing.assert_array_equal(legacy.index, legacy_again.index)


# ----------------------------------------------------------------------------- bucketing bounds compiles

ROUNDS, CLIENTS_PER_ROUND, MAX_SIZE, BATCH, EPOCHS = 100, 5, 1000, 16, 1


def shape_bound(max_size: int, batch_size: int, epochs: int) -> int:
    """How many `(steps, examples)` shapes pow2 bucketing can produce for clients of 1..max_size examples.

    Both padded sizes are nondecreasing functions of the round's largest client
    `m`: `N = pow2(m)` and `S = pow2(ceil(m * epochs / batch_size))`. Along
    increasing `m`, the pair changes only when N or S steps up, so there are at
    most `#N + #S - 1` pairs, with `#N = ceil(log2 max_size) + 1` and
    `#S = ceil(log2 ceil(max_size * epochs / batch_size)) + 1`.
    """
    values_n = math.ceil(math.log2(max_size)) + 1
    values_s = math.ceil(math.log2(math.ceil(max_size * epochs / batch_size))) + 1
    return values_n + values_s - 1


def _random_rounds(seed: int = 0):
    rng = np.random.default_rng(seed)
    for _ in range(ROUNDS):
        sizes = np.clip(rng.lognormal(mean=3.0, sigma=0.6, size=CLIENTS_PER_ROUND).astype(int), 1, MAX_SIZE)
        yield [
            {"x": rng.normal(size=(n, 4)).astype(np.float32), "y": rng.integers(0, 3, n).astype(np.int32)}
            for n in sizes
        ]


class _TracedLoss:
    """The model's loss, counting its calls: under `jit` that is once per trace (= per compile)."""

    def __init__(self):
        self.count = 0

    def __call__(self, predictions, labels):
        self.count += 1
        return losses.sparse_softmax_cross_entropy(predictions, labels)


def test_bucketing_bounds_the_shapes_and_compiles_of_100_random_rounds():
    assert shape_bound(MAX_SIZE, BATCH, EPOCHS) == 11 + 7 - 1
    traced_loss = _TracedLoss()
    process = build_weighted_fed_avg(dataclasses.replace(models.linear(4, 3), loss=traced_loss), optax.sgd(0.1))
    state = process.initialize()
    bucketed, exact, compiles = set(), set(), 0
    for clients in _random_rounds():
        b = batch_clients(clients, BATCH, epochs=EPOCHS)
        shape = (b.num_steps, b.data["x"].shape[1])
        exact.add((max(math.ceil(len(c["y"]) * EPOCHS / BATCH) for c in clients), max(len(c["y"]) for c in clients)))
        before = traced_loss.count
        state, metrics = process.next(state, b)
        traced = traced_loss.count > before
        assert traced == (shape not in bucketed), f"round of shape {shape}: traced={traced}, seen before={shape in bucketed}"
        compiles += traced
        bucketed.add(shape)
    assert len(bucketed) <= shape_bound(MAX_SIZE, BATCH, EPOCHS)
    assert compiles == len(bucketed), "one compile per bucketed shape, and nothing else recompiles"
    assert len(exact) >= 5 * len(bucketed), (len(exact), len(bucketed))  # without buckets: a compile most rounds
    assert int(state.value.round_num) == ROUNDS and np.isfinite(float(metrics["train"]["loss"]))


# ----------------------------------------------------------------------------- bad input

GOOD = {"x": np.zeros((3, 2), np.float32), "y": np.zeros(3, np.int32)}
EMPTY = {"x": np.zeros((0, 2)), "y": np.zeros(0)}
NO_Y = {"x": np.zeros((3, 2))}
UNEVEN = {"x": np.zeros((3, 2)), "y": np.zeros(4)}
WIDE = {"x": np.zeros((3, 5)), "y": np.zeros(3)}


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"client_datasets": []}, ValueError, "batch_clients got no clients"),
        ({"client_datasets": [GOOD, EMPTY]}, ValueError, "Client 1 has no examples"),
        ({"client_datasets": [GOOD, {}]}, ValueError, "Client 1 must be a non-empty dict of arrays"),
        ({"client_datasets": [GOOD, "abc"]}, ValueError, "Client 1 must be a non-empty dict of arrays, got str"),
        ({"client_datasets": [GOOD, NO_Y]}, ValueError, r"Client 1 has keys \['x'\], but client 0 has \['x', 'y'\]"),
        ({"client_datasets": [UNEVEN]}, ValueError, "Client 0's arrays disagree on the number of examples"),
        ({"client_datasets": [GOOD, WIDE]}, ValueError, r"Client 1's 'x' has example shape \(5,\), but client 0's"),
        ({"batch_size": 0}, ValueError, "batch_size must be a positive integer, got 0"),
        ({"batch_size": -2}, ValueError, "batch_size must be a positive integer, got -2"),
        ({"batch_size": 2.5}, ValueError, "batch_size must be a positive integer, got 2.5"),
        ({"batch_size": "4"}, ValueError, "batch_size must be a positive integer, got '4'"),
        ({"epochs": 0}, ValueError, "epochs must be a positive integer, got 0"),
        ({"shuffle": True}, ValueError, "shuffle=True needs a PRNG key"),
        ({"pad_steps": 1}, ValueError, "2 exceeds the fixed bucket size 1"),
        ({"pad_examples": 2}, ValueError, "3 exceeds the fixed bucket size 2"),
        ({"pad_steps": "pow3"}, ValueError, "bucket must be 'pow2', an int or None, got 'pow3'"),
    ],
)
def test_bad_input_raises_a_clear_error(kwargs, error, message):
    args = {"client_datasets": [GOOD, GOOD], "batch_size": 2, **kwargs}
    with pytest.raises(error, match=message):
        batch_clients(**args)


def test_bucket_sizes():
    assert [bucket_size(n) for n in (1, 2, 3, 5, 16, 17)] == [1, 2, 4, 8, 16, 32]
    assert bucket_size(13, 20) == 20 and bucket_size(13, None) == 13
