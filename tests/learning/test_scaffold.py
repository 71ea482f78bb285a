"""SCAFFOLD: option-II control variates by hand, invariance to client order, training, bad ids."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fedcore as fc
from fedcore import testing as fct
from fedcore.learning import build_scaffold

from ._helpers import (
    MODEL,
    assert_params_close,
    client_datasets,
    counting_traces,
    fixed_batches,
    learnable_clients,
    linear_params,
    np_grad,
    np_local_sgd,
)

LR = 0.1
POPULATION = 3
BATCH, EPOCHS, MAX_EXAMPLES = 4, 2, 8
COUNTED_MODEL, TRACES = counting_traces(MODEL)
SCAFFOLD = build_scaffold(COUNTED_MODEL, client_learning_rate=LR, num_clients=POPULATION)


def _batches(clients):
    return fixed_batches(clients, BATCH, EPOCHS, MAX_EXAMPLES)


def _controls(state):
    extra = state.value.extra
    as_np = lambda tree: (np.asarray(tree.weight, np.float64), np.asarray(tree.bias, np.float64))  # noqa: E731
    return as_np(extra["control"]), as_np(extra["client_controls"])


def _start(params):
    return SCAFFOLD.set_model_weights(SCAFFOLD.initialize(), params)


@given(client_datasets(1, max_examples=MAX_EXAMPLES), linear_params(), st.integers(0, POPULATION - 1))
def test_control_variates_follow_option_two_for_two_rounds(clients, params, client_id):
    (client,) = clients
    data, ids = _batches(clients), np.array([client_id])
    x, y = client["x"], client["y"]
    w = tuple(np.asarray(a, np.float64) for a in (params.weight, params.bias))
    c = (np.zeros_like(w[0]), np.zeros_like(w[1]))  # global control
    table = tuple(np.zeros((POPULATION, *a.shape)) for a in w)  # one control per client of the population

    state = _start(params)
    for round_num in range(2):
        state, metrics = SCAFFOLD.next(state, data, ids)
        # By hand: local SGD on grad + c - c_i, then c_i+ = c_i - c + (x - y_i) / (K lr).
        c_i = tuple(t[client_id] for t in table)
        correction = tuple(a - b for a, b in zip(c, c_i))
        corrected = lambda v, xb, yb: tuple(g + k for g, k in zip(np_grad(v, xb, yb), correction))  # noqa: E731
        y_i, steps = np_local_sgd(w, x, y, BATCH, EPOCHS, LR, corrected)
        new_c_i = tuple(ci - cc + (a - b) / (steps * LR) for ci, cc, a, b in zip(c_i, c, w, y_i))
        # Server: x += mean delta (one client: x = y_i); c += sum(c_i+ - c_i) / population.
        c = tuple(cc + (n - o) / POPULATION for cc, n, o in zip(c, new_c_i, c_i))
        for t, n in zip(table, new_c_i):
            t[client_id] = n
        w = y_i

        assert_params_close(SCAFFOLD.get_model_weights(state), w, what=f"round {round_num} model")
        got_c, got_table = _controls(state)
        for name, got, expected in [("c", got_c, c), ("c_i table", got_table, table)]:
            for g, e in zip(got, expected):
                np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5, err_msg=f"round {round_num} {name}")
        assert int(metrics["train"]["num_batches"]) == steps


@given(client_datasets(POPULATION, max_examples=MAX_EXAMPLES), linear_params(), st.permutations(range(POPULATION)))
def test_scaffold_is_invariant_to_client_order_when_ids_move_with_data(clients, params, permutation):
    ids = np.arange(POPULATION)
    state = _start(params)
    for _ in range(2):  # the second round uses nonzero controls
        reference = SCAFFOLD.next(state, _batches(clients), ids)
        permuted = SCAFFOLD.next(state, _batches([clients[i] for i in permutation]), ids[list(permutation)])
        fct.assert_federated_close(permuted, reference, rtol=1e-5, atol=1e-6, law="SCAFFOLD permutation invariance")
        state = reference[0]


def test_scaffold_trains():
    data = _batches(learnable_clients(POPULATION, MAX_EXAMPLES))
    state = SCAFFOLD.initialize()
    losses = []
    for _ in range(10):
        state, metrics = SCAFFOLD.next(state, data, np.arange(POPULATION))
        losses.append(float(metrics["train"]["loss"]))
    assert losses[-1] < 0.7 * losses[0], losses
    control, _ = _controls(state)
    assert np.abs(control[0]).sum() > 0  # the controls moved


BAD_IDS = pytest.mark.parametrize(
    "ids", [[0, 1, POPULATION], [-1, 0, 1], [0, 1, 1]], ids=["too-big", "negative", "repeated"]
)
ID_MESSAGE = r"client ids must be distinct and in \[0, num_clients\) = \[0, 3\)"


@BAD_IDS
def test_bad_client_ids_raise_at_once(ids):
    data = _batches(learnable_clients(POPULATION, MAX_EXAMPLES))
    with pytest.raises(ValueError, match=ID_MESSAGE):
        SCAFFOLD.next(SCAFFOLD.initialize(), data, ids)


@BAD_IDS
def test_bad_placed_client_ids_raise_at_run_time(ids):
    data = _batches(learnable_clients(POPULATION, MAX_EXAMPLES))
    with pytest.raises(RuntimeError, match=ID_MESSAGE):
        state, _ = SCAFFOLD.next(SCAFFOLD.initialize(), data, fc.clients_value(np.array(ids, np.int32)))
        jax.block_until_ready(state)


def test_client_ids_as_python_lists_compile_once():
    data = _batches(learnable_clients(POPULATION, MAX_EXAMPLES))
    state = SCAFFOLD.initialize()
    SCAFFOLD.next(state, data, np.array([0, 1, 2]))
    traced = TRACES.count
    assert traced > 0
    for ids in ([0, 1, 2], [2, 0, 1], (1, 2, 0), np.array([1, 0, 2])):
        SCAFFOLD.next(state, data, ids)
    assert TRACES.count == traced, "a new list of client ids retraced (and recompiled) the round"


def test_client_ids_must_be_integers():
    data = _batches(learnable_clients(POPULATION, MAX_EXAMPLES))
    with pytest.raises(TypeError, match="client_ids must be a 1-D sequence of ints"):
        SCAFFOLD.next(SCAFFOLD.initialize(), data, [0.0, 1.0, 2.0])


def test_client_ids_must_match_the_clients():
    data = _batches(learnable_clients(POPULATION, MAX_EXAMPLES))
    with pytest.raises(ValueError, match="disagree on the number of clients"):
        SCAFFOLD.next(SCAFFOLD.initialize(), data, np.array([0, 1]))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"client_learning_rate": 0.0, "num_clients": 3}, "client_learning_rate must be > 0"),
        ({"client_learning_rate": 0.1, "num_clients": 0}, "num_clients .* must be >= 1"),
        ({"client_learning_rate": 0.1, "num_clients": 3, "non_finite": "ignore"}, "non_finite must be one of"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_scaffold(MODEL, **kwargs)
