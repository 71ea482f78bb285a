"""Clients grouped for speed (`fc.map` over client data) and populations selected by id (`Cohort`).

Laws:
- A round on `population.select(ids)` equals the round on `batch_clients` of
  the same clients, for every group size (clients sorted by step count and
  vmapped in groups, results put back in the clients' order) and under the
  loop strategy; likewise for FedSGD, evaluation and SCAFFOLD (whose
  per-client ids must follow their clients through the sorting).
- `fc.map` over a cohort returns every client's result in the clients' order.
- Rounds of random cohorts of one size compile once.
Tolerances: the paths differ only in float summation order over a handful of
clients of 4 features, so 1e-5 absolute on O(1) values is ~100x the rounding
and far below any real error (a lost or repeated client moves the mean delta
by ~1e-2).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fedcore as fc
from fedcore.core._batches import num_real_steps
from fedcore.data import batch_clients
from fedcore.data._batching import batch_population
from fedcore.learning import build_fed_eval, build_fed_sgd, build_scaffold, build_weighted_fed_avg
from fedcore.learning.algorithms._process import place_client_data

from ._helpers import MODEL, counting_traces

BATCH, EPOCHS = 3, 2
SIZES = [1, 7, 3, 12, 5, 2, 9, 4]  # step counts 1..8: groups of mixed sizes
CLIENTS = [
    {"x": np.random.default_rng(i).normal(size=(n, 4)).astype(np.float32), "y": np.arange(n, dtype=np.int32) % 3}
    for i, n in enumerate(SIZES)
]
POPULATION = batch_population(CLIENTS, BATCH, epochs=EPOCHS)
FED_AVG = build_weighted_fed_avg(MODEL, optax.sgd(0.1))


def _close(a, b, atol=1e-5):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x, np.float64), np.asarray(y, np.float64), rtol=0, atol=atol)


def _by_batch_clients(process, ids, *extra):
    return process.next(process.initialize(), batch_clients([CLIENTS[i] for i in ids], BATCH, epochs=EPOCHS), *extra)


@settings(max_examples=10)
@given(st.permutations(range(len(SIZES))).map(lambda p: p[:5]), st.sampled_from([None, 1, 2, 3, 5]))
def test_a_cohort_round_equals_the_batch_clients_round(ids, group_size):
    state, metrics = FED_AVG.next(FED_AVG.initialize(), POPULATION.select(np.array(ids), group_size=group_size))
    expected_state, expected_metrics = _by_batch_clients(FED_AVG, ids)
    _close(state.value.params, expected_state.value.params)
    _close(metrics["train"], expected_metrics["train"])
    assert int(metrics["train"]["num_examples"]) == EPOCHS * sum(SIZES[i] for i in ids)


def test_a_cohort_round_under_the_loop_strategy():
    ids = np.array([3, 0, 6])
    with fc.execution("loop"):
        state, metrics = FED_AVG.next(FED_AVG.initialize(), POPULATION.select(ids))
    expected_state, expected_metrics = _by_batch_clients(FED_AVG, ids)
    _close(state.value.params, expected_state.value.params)
    _close(metrics["train"], expected_metrics["train"])


@pytest.mark.parametrize("group_size", [1, 3])
def test_fed_sgd_and_evaluation_on_a_cohort(group_size):
    ids = np.array([4, 1, 7, 2])
    cohort = POPULATION.select(ids, group_size=group_size)
    sgd = build_fed_sgd(MODEL, optax.sgd(0.5))
    _close(sgd.next(sgd.initialize(), cohort)[0].value.params, _by_batch_clients(sgd, ids)[0].value.params)
    evaluate = build_fed_eval(MODEL)
    _close(evaluate.next(evaluate.initialize(), cohort)[1]["eval"], _by_batch_clients(evaluate, ids)[1]["eval"])


def test_scaffold_ids_follow_their_clients_through_the_grouping():
    scaffold = build_scaffold(MODEL, client_learning_rate=0.1, num_clients=len(SIZES))
    ids = np.array([3, 0, 5, 1, 7])  # unsorted by step count: grouping reorders them
    state, _ = scaffold.next(scaffold.initialize(), POPULATION.select(ids, group_size=2), ids)
    expected, _ = _by_batch_clients(scaffold, ids, ids)
    _close(state.value.extra, expected.value.extra)
    _close(state.value.params, expected.value.params)


@pytest.mark.parametrize("group_size", [1, 2, 3, 8])
def test_map_over_a_cohort_returns_results_in_the_clients_order(group_size):
    @fc.computation
    def steps_and_ids(cohort, tag):
        return fc.map(lambda c, t: {"steps": num_real_steps(c.mask), "tag": t}, cohort, tag)

    ids = np.array([7, 0, 3, 5, 1, 6, 2])
    cohort = place_client_data(POPULATION.select(ids, group_size=group_size))
    out = steps_and_ids(cohort, fc.clients_value(jnp.asarray(ids) * 10))
    np.testing.assert_array_equal(out.value["tag"], ids * 10)
    np.testing.assert_array_equal(out.value["steps"], [-(-SIZES[i] * EPOCHS // BATCH) for i in ids])


def test_rounds_of_random_cohorts_compile_once():
    model, traces = counting_traces(MODEL)
    process = build_weighted_fed_avg(model, optax.sgd(0.1))
    state = process.initialize()
    rng = np.random.default_rng(0)
    state, _ = process.next(state, POPULATION.select(rng.choice(len(SIZES), 4, replace=False)))
    per_compile = traces.count
    for _ in range(20):
        state, _ = process.next(state, POPULATION.select(rng.choice(len(SIZES), 4, replace=False)))
    assert traces.count == per_compile, "a new cohort of the same size must not retrace"
    assert int(state.value.round_num) == 21


def test_map_over_a_cohort_rejects_disagreeing_client_counts():
    cohort = place_client_data(POPULATION.select(np.array([0, 1])))
    with pytest.raises(ValueError, match=r"disagree on the number of clients: .*2 clients.*3 clients"):
        fc.map(lambda c, t: t, cohort, fc.clients_value(jnp.ones(3)))


def _step_counting_fed_avg():
    """FedAvg whose loss records every training step that runs (a debug callback fires once per
    executed, vmapped step, also on a branch that a vmapped cond computes and discards)."""
    calls = []

    def counted_loss(predictions, labels):
        jax.debug.callback(lambda: calls.append(1))
        return MODEL.loss(predictions, labels)

    return build_weighted_fed_avg(dataclasses.replace(MODEL, loss=counted_loss), optax.sgd(0.1)), calls


def test_a_vmapped_group_runs_only_up_to_its_largest_client():
    process, calls = _step_counting_fed_avg()
    ids = np.array([0, 4])  # 1 and 4 steps; the population pads every client to 8
    assert POPULATION.index.shape[1] == 8
    jax.block_until_ready(process.next(process.initialize(), POPULATION.select(ids, group_size=2)))
    assert len(calls) == 4, "the group's largest client's 4 steps, not the population's 8"
    calls.clear()
    jax.block_until_ready(process.next(process.initialize(), POPULATION.select(ids, group_size=1)))
    assert len(calls) == 1 + 4, "one client at a time: each runs its own steps"


def test_a_chunk_stops_at_its_largest_client():
    process, calls = _step_counting_fed_avg()
    ids = np.array([0, 4])  # 1 and 4 steps of the population's 8
    with fc.execution("chunked", chunk_size=2):
        state, _ = process.next(process.initialize(), POPULATION.select(ids))
    jax.block_until_ready(state)
    assert len(calls) == 4, "one chunk of 2 clients runs its largest client's 4 steps, not 8"
    expected, _ = _by_batch_clients(FED_AVG, ids)
    _close(state.value.params, expected.value.params)
