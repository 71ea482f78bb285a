"""Non-finite client updates: `non_finite="raise"` stops the run, `"drop"` gives them weight 0."""

from __future__ import annotations

import jax
import numpy as np
import optax
import pytest
from hypothesis import given

from fedcore.learning import build_fed_sgd, build_scaffold, build_weighted_fed_avg

from ._helpers import (
    MODEL,
    assert_params_close,
    client_datasets,
    fixed_batches,
    linear_params,
    np_local_sgd,
    to_numpy,
)

LR, BATCH, EPOCHS, MAX_EXAMPLES = 0.1, 4, 2, 8
RAISE = build_weighted_fed_avg(MODEL, optax.sgd(LR))
DROP = build_weighted_fed_avg(MODEL, optax.sgd(LR), non_finite="drop")
NOT_FINITE = r"A client's model update is not finite"
BAD_INPUTS = r"Client 1 \(position 1 in this round's client data\) has NaN or Inf in its inputs 'x'"


def _batches(clients):
    return fixed_batches(clients, BATCH, EPOCHS, MAX_EXAMPLES)


def _poison(client):
    return {"x": np.full_like(client["x"], np.nan), "y": client["y"]}


def _run(process, clients, *args, params=None):
    state = process.initialize() if params is None else process.set_model_weights(process.initialize(), params)
    state, metrics = process.next(state, _batches(clients), *args)
    return jax.block_until_ready(state), metrics


@given(client_datasets(3, max_examples=MAX_EXAMPLES), linear_params())
def test_drop_gives_a_nan_client_weight_zero(clients, params):
    clients = [clients[0], _poison(clients[1]), clients[2]]
    state, metrics = _run(DROP, clients, params=params)
    assert int(metrics["num_non_finite_updates"]) == 1
    # The result is FedAvg over the two finite clients.
    w0 = to_numpy(params)
    good = [clients[0], clients[2]]
    models = [np_local_sgd(w0, c["x"], c["y"], BATCH, EPOCHS, LR)[0] for c in good]
    sizes = np.array([len(c["y"]) for c in good], np.float64)
    expected = tuple((sizes[0] * models[0][k] + sizes[1] * models[1][k]) / sizes.sum() for k in range(2))
    assert_params_close(DROP.get_model_weights(state), expected)
    # The client's metrics are still summed as it reported them (as TFF does): its loss is NaN.
    assert np.isnan(float(metrics["train"]["loss"]))
    assert int(metrics["train"]["num_examples"]) == sum(len(c["y"]) for c in clients) * EPOCHS


def test_raise_stops_with_a_clear_message_at_run_time():
    clients = [{"x": np.ones((4, 4), np.float32), "y": np.zeros(4, np.int32)}] * 2
    _run(RAISE, clients)  # finite: fine
    with pytest.raises(RuntimeError, match=BAD_INPUTS + r".*learning rate is not the cause.*non_finite='drop'"):
        _run(RAISE, [clients[0], _poison(clients[1])])


def test_an_overflowing_update_raises_the_same_error():
    # Finite data, but steps so large that the logits overflow to inf and the update to NaN.
    clients = [{"x": np.ones((4, 4), np.float32), "y": np.zeros(4, np.int32)}]
    clients.append({"x": np.full((4, 4), 1e30, np.float32), "y": np.arange(4, dtype=np.int32) % 3})
    with pytest.raises(RuntimeError, match=NOT_FINITE + r" \(NaN or Inf\): the client learning rate may be too high"):
        _run(RAISE, clients)


def test_every_client_dropped_says_so():
    clients = [_poison({"x": np.ones((4, 4), np.float32), "y": np.zeros(4, np.int32)})] * 2
    with pytest.raises(RuntimeError, match=r"Every client's update this round was NaN or Inf, so all 2 were dropped"):
        _run(DROP, clients)


def test_fed_sgd_and_scaffold_drop_and_count_non_finite_updates():
    good = {"x": np.ones((4, 4), np.float32), "y": np.zeros(4, np.int32)}
    clients = [good, _poison(good)]
    _, metrics = _run(build_fed_sgd(MODEL, optax.sgd(0.5), non_finite="drop"), clients)
    assert int(metrics["num_non_finite_updates"]) == 1
    scaffold = build_scaffold(MODEL, LR, num_clients=2, non_finite="drop")
    state, metrics = _run(scaffold, clients, np.array([0, 1]))
    assert int(metrics["num_non_finite_updates"]) == 1
    assert np.all(np.isfinite(to_numpy(scaffold.get_model_weights(state))[0]))


@pytest.mark.parametrize("builder", [build_weighted_fed_avg, build_fed_sgd])
def test_unknown_policy_is_rejected(builder):
    args = (MODEL, optax.sgd(LR)) if builder is build_weighted_fed_avg else (MODEL,)
    with pytest.raises(ValueError, match=r"non_finite must be one of \('raise', 'drop'\), got 'skip'"):
        builder(*args, non_finite="skip")
