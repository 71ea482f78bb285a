"""`fc.map` over client data (`fedcore.core._grouping`).

Laws:
- Mapping over a `Cohort` or `{ClientBatches}@CLIENTS` gives every client's
  result in the clients' order, for every group size and every strategy
  (clients are sorted by step count and run in groups; the grouping must be
  invisible).
- Each client sees its own batches, with a step bound at least its own step
  count (exactly its own when it runs alone).
- Per-client `ClientBatches` are handed over as they are: a function reading
  a client's `data` directly sees that client's examples, not a shared store.
The values are small integers summed in float32, so the comparisons are exact.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fedcore as fc
from fedcore.core._batches import ClientBatches, ClientPopulation, num_real_steps

STEPS = [1, 7, 3, 8, 5, 2, 6, 4]  # real steps per client, padded to 8
BATCH = 2


def _batches() -> ClientBatches:
    """Client c has STEPS[c] full batches; example values encode (client, slot)."""
    c, s = len(STEPS), max(STEPS)
    x = (np.arange(c)[:, None, None] * 1000 + np.arange(s * BATCH).reshape(s, BATCH)[None]).astype(np.float32)
    mask = np.arange(s)[None, :, None] < np.array(STEPS)[:, None, None]
    return ClientBatches.from_materialized({"x": x, "mask": np.broadcast_to(mask, (c, s, BATCH))})


BATCHES = _batches()
POPULATION = ClientPopulation.from_batches(BATCHES)


def _summary(client: ClientBatches, tag):
    """What a client sees: its step count, the sum of its real examples (read by index), its tag, its bound."""
    x = client.data["x"][client.index]
    return {
        "steps": num_real_steps(client.mask),
        "total": jnp.sum(jnp.where(client.mask, x, 0.0)),
        "tag": tag,
        "bound": client.step_bound,
    }


def _expected(ids):
    x = np.asarray(BATCHES.materialize()["x"])
    mask = np.asarray(BATCHES.mask)
    return np.array([STEPS[i] for i in ids]), np.array([np.sum(np.where(mask[i], x[i], 0.0)) for i in ids])


MAP_SUMMARY = fc.computation(lambda data, tag: fc.map(lambda c, t: _summary(c, t), data, tag))
STRATEGIES = [fc.VmapStrategy(), fc.LoopStrategy(), fc.ChunkedStrategy(chunk_size=3)]


@settings(max_examples=15)
@given(
    st.permutations(range(len(STEPS))).flatmap(lambda p: st.integers(1, len(p)).map(lambda k: p[:k])),
    st.sampled_from([None, 1, 2, 3, 8]),
    st.sampled_from(STRATEGIES),
)
def test_a_map_over_a_cohort_returns_every_clients_result_in_order(ids, group_size, strategy):
    ids = np.array(ids)
    with fc.execution(strategy):
        out = MAP_SUMMARY(POPULATION.select(ids, group_size=group_size), fc.clients_value(jnp.asarray(ids) * 10))
    steps, totals = _expected(ids)
    np.testing.assert_array_equal(out.value["tag"], ids * 10)
    np.testing.assert_array_equal(out.value["steps"], steps)
    np.testing.assert_array_equal(out.value["total"], totals)
    assert np.all(out.value["bound"] >= steps), "a client's step bound must cover its own steps"
    if group_size == 1 and isinstance(strategy, fc.VmapStrategy):
        np.testing.assert_array_equal(out.value["bound"], steps)


@pytest.mark.parametrize("strategy", STRATEGIES, ids=lambda s: s.name)
def test_a_map_over_client_batches_hands_each_client_its_own_data(strategy):
    def own_data(client):  # reads `data` directly, not by index
        return {"sum": jnp.sum(client.data["x"]), "rows": client.data["x"].shape[0]}

    with fc.execution(strategy):
        out = fc.computation(lambda d: fc.map(own_data, d))(fc.clients_value(BATCHES))
    np.testing.assert_array_equal(out.value["sum"], np.asarray(BATCHES.data["x"]).sum(axis=1))
    assert set(np.asarray(out.value["rows"]).tolist()) == {max(STEPS) * BATCH}


def test_a_map_over_client_batches_gives_the_same_summaries_as_over_the_cohort():
    tags = fc.clients_value(jnp.arange(len(STEPS)))
    by_batches = MAP_SUMMARY(fc.clients_value(BATCHES), tags)
    by_cohort = MAP_SUMMARY(POPULATION.select(np.arange(len(STEPS))), tags)
    for key in ("steps", "total", "tag"):
        np.testing.assert_array_equal(by_batches.value[key], by_cohort.value[key])


def test_an_unplaced_cohort_is_accepted_outside_computations():
    out = fc.map(lambda c: num_real_steps(c.mask), POPULATION.select(np.array([3, 0])))
    np.testing.assert_array_equal(out.value, [STEPS[3], STEPS[0]])
    assert out.type.all_equal is False


def test_at_most_one_client_data_argument():
    cohort = POPULATION.select(np.array([0, 1]))
    with pytest.raises(TypeError, match=r"at most one client-data argument.*got 2"):
        fc.map(lambda a, b: a, cohort, cohort)


def test_client_counts_must_agree_with_the_cohort():
    cohort = POPULATION.select(np.array([0, 1]))
    with pytest.raises(ValueError, match=r"disagree on the number of clients: .*2 clients.*3 clients"):
        fc.map(lambda c, t: t, cohort, fc.clients_value(jnp.ones(3)))


def test_the_other_arguments_must_be_placed_at_clients():
    cohort = POPULATION.select(np.array([0, 1]))
    with pytest.raises(fc.PlacementError, match=r"map \(argument 1\) expects a CLIENTS value"):
        fc.map(lambda c, t: t, cohort, fc.server_value(jnp.ones(())))


def test_default_group_size_per_backend():
    assert [fc.default_group_size(k, "cpu") for k in (1, 10, 200)] == [1, 1, 1]
    assert [fc.default_group_size(k, "gpu") for k in (1, 10, 200)] == [1, 2, 25]


def test_gradients_flow_through_a_grouped_map():
    """d/dw of sum_clients w * total_c is the sum of the totals, grouped or not."""

    def weighted_total(w, group_size):
        out = fc.map(lambda c, w: w * _summary(c, 0)["total"], POPULATION.select(np.arange(8), group_size), w)
        return jnp.sum(out.value)

    for g in (1, 3):
        grad = jax.grad(lambda w: weighted_total(fc.clients_value(w, all_equal=True), g))(jnp.float32(1.0))
        np.testing.assert_allclose(grad, _expected(range(8))[1].sum(), rtol=1e-6)


def test_other_strategies_bound_each_client_by_the_clients_run_with_it():
    ids = np.array([0, 1, 5, 2, 6, 7])  # steps 1 7 2 3 6 4
    steps = np.array([STEPS[i] for i in ids])
    tags = fc.clients_value(jnp.zeros(len(ids)))
    with fc.execution("chunked", chunk_size=3):
        chunked = MAP_SUMMARY(POPULATION.select(ids), tags).value["bound"]
    # Chunks of clients sorted by step count, {1, 2, 3} and {4, 6, 7}: each bounded by its own largest.
    np.testing.assert_array_equal(chunked, [3, 7, 3, 3, 7, 7])
    with fc.execution("loop"):
        alone = MAP_SUMMARY(POPULATION.select(ids), tags).value["bound"]
    np.testing.assert_array_equal(alone, steps)  # run alone: its own step count


@fc.computation
def _weighted_totals(cohort, weight):
    totals = fc.map(lambda c: _summary(c, 0)["total"], cohort)
    return fc.mean(totals, weight), fc.sum(fc.map(lambda t, w: t * w, totals, weight))


@pytest.mark.parametrize("chunk_size", [1, 3, 4, 8])
def test_chunks_in_step_order_keep_outside_weights_with_their_clients(chunk_size):
    """The chunked strategy runs a cohort's clients sorted by step count; a weight from outside the map must follow."""
    ids = np.array([3, 0, 6, 1, 7, 2])
    weight = fc.clients_value(jnp.arange(1.0, 7.0))
    expected = _weighted_totals(POPULATION.select(ids), weight)
    with fc.execution("chunked", chunk_size=chunk_size):
        got = _weighted_totals(POPULATION.select(ids), weight)
    _, totals = _expected(ids)
    np.testing.assert_allclose(float(expected[0].value), np.average(totals, weights=np.arange(1.0, 7.0)), rtol=1e-6)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(float(g.value), float(e.value), rtol=1e-6)
