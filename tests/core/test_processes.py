"""Iterative processes: initialize/next over rounds, a fixed state type."""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fedcore as fc
from fedcore import testing as fct

F32 = np.dtype("float32")


def _initialize():
    return fc.server_value({"total": jnp.zeros(3), "round": jnp.int32(0)})


def _next(state, x):
    total = fc.sum(x)
    new_state = fc.apply(lambda s, t: {"total": s["total"] + t, "round": s["round"] + 1}, state, total)
    return new_state, fc.mean(x)


_COUNTER = fc.IterativeProcess(initialize=_initialize, next=_next)


@given(
    fct.client_values(num_clients=st.sampled_from([1, 3, 64]), member=fc.TensorType((3,), F32)),
    st.integers(1, 4),
)
def test_rounds_accumulate_state(x, rounds):
    state = _COUNTER.initialize()
    for _ in range(rounds):
        state, metrics = _COUNTER.next(state, x)
    assert int(state["round"]) == rounds
    # The same float32 sum added `rounds` times: a few roundings of a number of size n * 100.
    expected = rounds * np.sum(np.asarray(x.value, np.float64), axis=0)
    np.testing.assert_allclose(state.value["total"], expected, rtol=1e-5, atol=fct.summation_atol(x) * rounds)
    assert str(metrics.type) == "f32[3]@SERVER"


def test_state_type_is_traced_from_initialize(count_compiles):
    def initialize():
        return fc.server_value({"w": jnp.zeros((2, 3)), "round": jnp.int32(0)})

    p = fc.IterativeProcess(initialize=initialize, next=lambda s: (s, s))
    with count_compiles() as c:
        assert str(p.state_type) == "<round=i32,w=f32[2,3]>@SERVER"
    assert c.count == 0  # shapes only: nothing compiled or run
    state = p.initialize()
    assert p.next(state)[0].type == p.state_type


def test_processes_accept_computations_and_run_under_any_strategy():
    p = fc.IterativeProcess(initialize=fc.computation(_initialize), next=fc.computation(_next))
    x = fc.clients_value(jnp.arange(6.0).reshape(2, 3))
    results = {}
    for strategy in ("vmap", "loop"):
        with fc.execution(strategy):
            state, _ = p.next(p.initialize(), x)
        results[strategy] = np.asarray(state.value["total"])
    np.testing.assert_array_equal(results["vmap"], [3.0, 5.0, 7.0])
    np.testing.assert_array_equal(results["loop"], results["vmap"])


@pytest.mark.parametrize(
    ("change", "before", "after"),
    [
        (lambda s: fc.apply(lambda a: a[None], s), "f32@SERVER", "f32[1]@SERVER"),
        (lambda s: fc.apply(lambda a: a.astype(jnp.int32), s), "f32@SERVER", "i32@SERVER"),
        (lambda s: fc.broadcast(s), "f32@SERVER", "f32@CLIENTS"),
        (lambda s: fc.apply(lambda a: {"a": a}, s), "f32@SERVER", "<a=f32>@SERVER"),
    ],
    ids=["shape", "dtype", "placement", "structure"],
)
def test_next_must_keep_the_state_type(change, before, after):
    p = fc.IterativeProcess(initialize=lambda: fc.server_value(jnp.float32(0)), next=lambda s: (change(s), ()))
    with pytest.raises(TypeError) as info:
        p.next(p.initialize())
    message = str(info.value)
    assert f"it was given {before} and returned {after}" in message
    assert "state type must stay fixed" in message


def test_next_must_return_a_state_and_metrics():
    p = fc.IterativeProcess(initialize=lambda: fc.server_value(jnp.float32(0)), next=lambda s: s)
    with pytest.raises(TypeError, match=r"must return \(state, metrics\); got FederatedValue"):
        p.next(p.initialize())
