"""`model_aggregator=` in every algorithm: the aggregate replaces the mean, its state is carried
round after round in `ServerState.aggregator`, its measurements land in `metrics["aggregator"]`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fedcore as fc
from fedcore import aggregators as fa
from fedcore.learning import (
    build_fed_prox,
    build_fed_sgd,
    build_scaffold,
    build_unweighted_fed_avg,
    build_weighted_fed_avg,
)

from ._helpers import MODEL, assert_params_close, fixed_batches, learnable_clients, to_numpy

NUM_CLIENTS, MAX_EXAMPLES, BATCH, EPOCHS = 3, 8, 4, 2


def _batches():
    return fixed_batches(learnable_clients(NUM_CLIENTS, MAX_EXAMPLES), BATCH, EPOCHS, MAX_EXAMPLES)


def counting_mean() -> fa.Aggregator:
    """The weighted mean, counting its rounds in its state and reporting the count and the weights' sum."""

    def init(template, key=None):
        del template, key
        return fc.server_value(jnp.int32(0))

    def next_(state, values, weights=None):
        total = fc.sum(weights) if weights is not None else fc.server_value(jnp.float32(-1.0))
        count = fc.apply(lambda c: c + 1, state)
        measurements = fc.apply(lambda c, t: {"rounds_seen": c, "total_weight": t}, count, total)
        return fa.AggregatorOutput(count, fc.mean(values, weights), measurements)

    return fa.Aggregator(init, next_)


BUILDERS = {
    "fed_avg": lambda agg: build_weighted_fed_avg(MODEL, optax.sgd(0.1), model_aggregator=agg),
    "fed_prox": lambda agg: build_fed_prox(MODEL, optax.sgd(0.1), proximal_strength=0.1, model_aggregator=agg),
    "fed_sgd": lambda agg: build_fed_sgd(MODEL, optax.sgd(0.5), model_aggregator=agg),
    "scaffold": lambda agg: build_scaffold(MODEL, 0.1, num_clients=NUM_CLIENTS, model_aggregator=agg),
}


def _run(process, state, data):
    args = (jnp.arange(NUM_CLIENTS),) if "Scaffold" in type(process).__name__ else ()
    return process.next(state, data, *args)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_state_is_carried_and_measurements_reported(name):
    default, counted = BUILDERS[name](None), BUILDERS[name](counting_mean())
    data = _batches()
    state, ref_state = counted.initialize(), default.initialize()
    for round_num in (1, 2):
        state, metrics = _run(counted, state, data)
        ref_state, ref_metrics = _run(default, ref_state, data)
        assert int(state.value.aggregator) == round_num
        assert int(metrics["aggregator"]["rounds_seen"]) == round_num
        assert ref_metrics.value["aggregator"] == {}
        # The counting aggregator aggregates as the default mean does: same model, bit for bit.
        np.testing.assert_array_equal(
            np.asarray(counted.get_model_weights(state).weight), np.asarray(default.get_model_weights(ref_state).weight)
        )
    # Example weighting hands the aggregator the examples processed; uniform weighting hands it no weights.
    expected_weight = -1.0 if name == "scaffold" else float(metrics["train"]["num_examples"])
    assert float(metrics["aggregator"]["total_weight"]) == expected_weight


def test_a_sum_aggregator_moves_the_model_by_the_sum_of_deltas():
    """Unweighted FedAvg with `fa.sum()` and server lr 1 == unweighted FedAvg (mean) with server lr K."""
    summed = build_unweighted_fed_avg(MODEL, optax.sgd(0.1), optax.sgd(1.0), model_aggregator=fa.sum())
    scaled = build_unweighted_fed_avg(MODEL, optax.sgd(0.1), optax.sgd(float(NUM_CLIENTS)))
    data = _batches()
    a, _ = summed.next(summed.initialize(), data)
    b, _ = scaled.next(scaled.initialize(), data)
    assert_params_close(summed.get_model_weights(a), to_numpy(scaled.get_model_weights(b)), rtol=1e-5, atol=1e-6)


def test_weighted_fed_avg_with_an_unweighted_reducer_says_so():
    process = build_weighted_fed_avg(MODEL, optax.sgd(0.1), model_aggregator=fa.sum())
    with pytest.raises(TypeError, match="takes no weights"):
        process.next(process.initialize(), _batches())


def test_the_aggregator_key_reaches_init():
    seen = []

    def init(template, key=None):
        seen.append(None if key is None else np.asarray(key).tolist())
        return fc.server_value(())

    agg = fa.Aggregator(init, fa.mean().next)
    build_weighted_fed_avg(MODEL, optax.sgd(0.1), model_aggregator=agg, model_aggregator_key=jax.random.PRNGKey(7)).initialize()
    build_weighted_fed_avg(MODEL, optax.sgd(0.1), model_aggregator=agg).initialize()
    assert seen == [np.asarray(jax.random.PRNGKey(7)).tolist(), None]


@pytest.mark.parametrize(
    "bad, message",
    [
        (fa.mean, "got the function 'mean'; call it: mean()"),
        (fa.Stage(wrap=lambda inner: inner, name="clip"), "the stage 'clip' alone"),
        ("mean", "must be an fa.Aggregator"),
    ],
)
def test_builders_refuse_what_is_not_an_aggregator(bad, message):
    for build in BUILDERS.values():
        with pytest.raises(TypeError, match=message.replace("(", r"\(").replace(")", r"\)")):
            build(bad)


@pytest.mark.parametrize("name", ["fed_avg", "fed_sgd"])
def test_client_weighting_functions_receive_the_local_result_in_every_algorithm(name):
    build = {"fed_avg": lambda w: build_weighted_fed_avg(MODEL, optax.sgd(0.1), client_weighting=w),
             "fed_sgd": lambda w: build_fed_sgd(MODEL, optax.sgd(0.5), client_weighting=w)}[name]
    seen = []

    def by_examples(result):
        seen.append(sorted(result._fields))
        return result.num_examples

    default, custom = build(fc.learning.ClientWeighting.NUM_EXAMPLES), build(by_examples)
    data = fixed_batches(learnable_clients(NUM_CLIENTS, 5) + learnable_clients(1, 8, seed=1), BATCH, EPOCHS, 8)
    a, _ = default.next(default.initialize(), data)
    b, _ = custom.next(custom.initialize(), data)
    assert seen and seen[0] == ["metric_states", "num_examples", "num_steps", "params"]
    np.testing.assert_array_equal(np.asarray(default.get_model_weights(a).weight), np.asarray(custom.get_model_weights(b).weight))
