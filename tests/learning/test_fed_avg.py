"""Laws of FedAvg, FedProx and FedSGD, checked against a float64 numpy reference.

Every process is built once at import and every hypothesis example uses data
of the same padded shape, so each test compiles its round once.
"""

from __future__ import annotations

import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fedcore as fc
from fedcore import testing as fct
from fedcore.learning import (
    build_fed_prox,
    build_fed_sgd,
    build_unweighted_fed_avg,
    build_weighted_fed_avg,
)

from ._helpers import (
    MODEL,
    assert_params_close,
    client_datasets,
    fixed_batches,
    learnable_clients,
    linear_params,
    np_grad,
    np_local_sgd,
    np_losses,
    np_sgd_step,
    to_numpy,
)

LR = 0.1
MU = 0.5
NUM_CLIENTS, MAX_EXAMPLES, BATCH, EPOCHS = 3, 8, 4, 2

FEDAVG = build_weighted_fed_avg(MODEL, optax.sgd(LR), optax.sgd(1.0))
UNWEIGHTED = build_unweighted_fed_avg(MODEL, optax.sgd(LR), optax.sgd(1.0))
BY_STEPS = build_weighted_fed_avg(MODEL, optax.sgd(LR), optax.sgd(1.0), client_weighting=lambda r: r.num_steps)
PROX_ZERO = build_fed_prox(MODEL, optax.sgd(LR), proximal_strength=0.0)
PROX = build_fed_prox(MODEL, optax.sgd(LR), proximal_strength=MU)
FEDSGD = build_fed_sgd(MODEL, optax.sgd(0.5))

three_clients = client_datasets(NUM_CLIENTS, max_examples=MAX_EXAMPLES)


def _batches(clients, **kwargs):
    return fixed_batches(clients, BATCH, EPOCHS, MAX_EXAMPLES, **kwargs)


def _start(process, params):
    return process.set_model_weights(process.initialize(), params)


def _weighted_mean(models, weights):
    weights = np.asarray(weights, np.float64)
    return tuple(sum(w * m[k] for w, m in zip(weights, models)) / weights.sum() for k in range(2))


def _np_fed_avg(w0, clients, grad_fn=None):
    """The numpy FedAvg round: each client's local SGD model, weighted by examples processed."""
    models = [np_local_sgd(w0, c["x"], c["y"], BATCH, EPOCHS, LR, grad_fn)[0] for c in clients]
    return _weighted_mean(models, [len(c["y"]) * EPOCHS for c in clients])


@given(three_clients, linear_params())
def test_fed_avg_equals_the_numpy_reference(clients, params):
    state, metrics = FEDAVG.next(_start(FEDAVG, params), _batches(clients))
    assert_params_close(FEDAVG.get_model_weights(state), _np_fed_avg(to_numpy(params), clients))
    assert int(metrics["train"]["num_examples"]) == sum(len(c["y"]) for c in clients) * EPOCHS
    assert int(metrics["num_non_finite_updates"]) == 0


@given(three_clients, linear_params(), st.permutations(range(NUM_CLIENTS)))
def test_fed_avg_is_invariant_to_the_order_of_clients(clients, params, permutation):
    state = _start(FEDAVG, params)
    reference = FEDAVG.next(state, _batches(clients))
    permuted = FEDAVG.next(state, _batches([clients[i] for i in permutation]))
    # Only the order of a 3-term weighted sum changes: a few float32 roundings of the result.
    fct.assert_federated_close(permuted, reference, rtol=1e-6, atol=1e-6, law="FedAvg permutation invariance")


@given(client_datasets(1, max_examples=BATCH), linear_params())
def test_fed_avg_with_one_client_one_batch_one_step_is_one_sgd_step(clients, params):
    (client,) = clients
    data = fixed_batches(clients, BATCH, 1, MAX_EXAMPLES, pad_steps=_batches(clients).num_steps)  # 1 step + padding
    state, metrics = FEDAVG.next(_start(FEDAVG, params), data)
    w0 = to_numpy(params)
    expected = np_sgd_step(w0, np_grad(w0, client["x"], client["y"]), LR)
    assert_params_close(FEDAVG.get_model_weights(state), expected)
    # The batch's metrics are taken before its step: the loss at the global model.
    assert float(metrics["train"]["loss"]) == pytest.approx(np_losses(w0, client["x"], client["y"]).mean(), rel=1e-5)
    assert int(metrics["train"]["num_batches"]) == 1


@given(three_clients, linear_params())
def test_fed_sgd_is_full_batch_gradient_descent_on_the_union(clients, params):
    # Two epochs visit every example twice: the same example-mean gradient as one.
    state, metrics = FEDSGD.next(_start(FEDSGD, params), _batches(clients))
    x = np.concatenate([c["x"] for c in clients])
    y = np.concatenate([c["y"] for c in clients])
    w0 = to_numpy(params)
    assert_params_close(FEDSGD.get_model_weights(state), np_sgd_step(w0, np_grad(w0, x, y), 0.5))
    assert float(metrics["train"]["loss"]) == pytest.approx(np_losses(w0, x, y).mean(), rel=1e-5)
    assert int(metrics["train"]["num_examples"]) == len(y) * EPOCHS


@given(three_clients, linear_params())
def test_padding_steps_and_examples_never_changes_a_round(clients, params):
    pad_steps, pad_examples = 7, 13
    state = _start(FEDAVG, params)
    reference = FEDAVG.next(state, _batches(clients))
    padded_data = _batches(clients, pad_steps=pad_steps, pad_examples=pad_examples)
    assert padded_data.num_steps == pad_steps and padded_data.data["x"].shape[1] == pad_examples
    padded = FEDAVG.next(state, padded_data)
    fct.assert_federated_close(padded, reference, rtol=1e-6, atol=1e-7, law="FedAvg padding invariance")


@settings(max_examples=2)  # the loop strategy runs eagerly: about a second a round
@given(three_clients, linear_params())
def test_loop_and_vmap_execution_agree(clients, params):
    state = _start(FEDAVG, params)

    def one_round(s, d):
        return FEDAVG.next(s, d)

    fct.check_strategies_agree(one_round, state, _batches(clients), rtol=1e-5, atol=1e-6)


@given(three_clients, linear_params())
def test_client_weighting_example_count_uniform_and_custom(clients, params):
    w0 = to_numpy(params)
    # With server SGD(1.0), a one-client round returns that client's trained model.
    alone = [to_numpy(FEDAVG.get_model_weights(FEDAVG.next(_start(FEDAVG, params), _batches([c]))[0])) for c in clients]
    for name, process, weights in [
        ("weighted", FEDAVG, [len(c["y"]) * EPOCHS for c in clients]),
        ("unweighted", UNWEIGHTED, [1.0] * NUM_CLIENTS),
        ("by local steps", BY_STEPS, [-(-len(c["y"]) * EPOCHS // BATCH) for c in clients]),
    ]:
        state, _ = process.next(_start(process, params), _batches(clients))
        assert_params_close(process.get_model_weights(state), _weighted_mean(alone, weights), what=name)
    assert alone[0][0].shape == w0[0].shape


@given(three_clients, linear_params())
def test_fed_prox_with_mu_zero_is_fed_avg(clients, params):
    data = _batches(clients)
    prox = PROX_ZERO.next(_start(PROX_ZERO, params), data)
    avg = FEDAVG.next(_start(FEDAVG, params), data)
    fct.assert_federated_close(prox, avg, rtol=0.0, atol=0.0, law="FedProx(mu=0) == FedAvg")


@given(three_clients, linear_params())
def test_fed_prox_clients_descend_loss_plus_proximal_term(clients, params):
    w0 = to_numpy(params)

    def prox_grad(w, x, y):  # gradient of loss + mu/2 |w - w0|^2
        return tuple(g + MU * (a - a0) for g, a, a0 in zip(np_grad(w, x, y), w, w0))

    state, _ = PROX.next(_start(PROX, params), _batches(clients))
    assert_params_close(PROX.get_model_weights(state), _np_fed_avg(w0, clients, prox_grad))


@given(client_datasets(NUM_CLIENTS, max_examples=BATCH), linear_params())
def test_fed_prox_reports_the_model_loss_without_the_proximal_term(clients, params):
    # At most BATCH examples, two epochs: two local steps at most. The first is the same for
    # FedProx and FedAvg (the proximal gradient is 0 at w0), so both evaluate batch 2 at the
    # same w1, where the proximal term is > 0. Equal reports mean the term is not in them.
    data = _batches(clients)
    _, prox = PROX.next(_start(PROX, params), data)
    _, avg = FEDAVG.next(_start(FEDAVG, params), data)
    fct.assert_federated_close(prox, avg, rtol=1e-6, atol=1e-7, law="FedProx reports the plain loss")


def test_fed_prox_pulls_client_models_towards_the_global_model():
    data = _batches(learnable_clients(num_clients=1, examples=MAX_EXAMPLES))
    distances = []
    for mu, process in [(0.0, FEDAVG), (MU, PROX), (5.0, build_fed_prox(MODEL, optax.sgd(LR), proximal_strength=5.0))]:
        state, _ = process.next(process.initialize(), data)  # one client, server SGD(1): its model
        distances.append(float(np.sqrt(sum(np.sum(a**2) for a in to_numpy(process.get_model_weights(state))))))
    assert distances[0] > distances[1] > distances[2] > 0.0


@pytest.mark.parametrize(
    "server_optimizer",
    [optax.adam(0.05), optax.yogi(0.05), optax.adagrad(0.3)],
    ids=["FedAdam", "FedYogi", "FedAdagrad"],
)
def test_adaptive_server_optimizers_train(server_optimizer):
    process = build_weighted_fed_avg(MODEL, optax.sgd(LR), server_optimizer)
    data = _batches(learnable_clients(NUM_CLIENTS, MAX_EXAMPLES))
    state = process.initialize()
    losses = []
    for _ in range(10):
        state, metrics = process.next(state, data)
        losses.append(float(metrics["train"]["loss"]))
    assert losses[-1] < 0.8 * losses[0], losses
    assert sum(b < a for a, b in zip(losses, losses[1:])) >= 7, losses
    assert int(state.value.round_num) == 10


def test_state_type_is_fixed_and_metrics_follow_tff_layout():
    state = FEDAVG.initialize()
    assert str(fc.type_of(state)).endswith("@SERVER")
    new_state, metrics = FEDAVG.next(state, _batches(learnable_clients(NUM_CLIENTS, MAX_EXAMPLES)))
    assert fc.same_type(fc.type_of(state), fc.type_of(new_state))
    assert set(metrics.value) == {"client_work", "train", "num_non_finite_updates", "aggregator"}
    assert metrics.value["aggregator"] == {}
    assert set(metrics.value["train"]) == {"loss", "accuracy", "num_examples", "num_batches"}
    for name, value in metrics.value["train"].items():  # the short alias holds the same numbers
        assert float(metrics.value["client_work"]["train"][name]) == float(value)
    assert int(new_state.value.round_num) == 1
