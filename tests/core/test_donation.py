"""`fc.computation(donate="first")`: the first argument's buffers are donated, the others kept."""

import jax.numpy as jnp
import numpy as np
import pytest

import fedcore as fc


@fc.computation(donate="first")
def add_client_sum(state, x):
    return fc.apply(lambda s, t: s + t, state, fc.sum(x))


def test_the_first_argument_is_donated_and_the_others_are_not():
    state, data = fc.server_value(jnp.ones(3)), fc.clients_value(jnp.arange(6.0).reshape(2, 3))
    new = add_client_sum(state, data)
    np.testing.assert_array_equal(new.value, [4.0, 6.0, 8.0])
    assert state.value.is_deleted(), "the state's buffer should be donated"
    assert not data.value.is_deleted(), "client data must survive the round"
    again = add_client_sum(new, data)  # a donated-state loop runs round after round
    np.testing.assert_array_equal(again.value, [7.0, 11.0, 15.0])


def test_the_loop_strategy_runs_eagerly_and_donates_nothing():
    state, data = fc.server_value(jnp.ones(3)), fc.clients_value(jnp.ones((2, 3)))
    with fc.execution("loop"):
        np.testing.assert_array_equal(add_client_sum(state, data).value, [3.0, 3.0, 3.0])
    assert not state.value.is_deleted()


def test_unknown_donation_mode_raises():
    with pytest.raises(ValueError, match="donate must be 'none', 'first'.*got 'second'"):
        fc.computation(lambda x: x, donate="second")


@fc.computation
def _add_sum(state, x):
    return fc.apply(lambda s, t: s + t, state, fc.sum(x))


def test_donating_gives_the_same_results_and_consumes_the_state():
    data = fc.clients_value(jnp.arange(6.0).reshape(2, 3))
    kept = fc.server_value(jnp.ones(3))
    expected = _add_sum(kept, data)
    donated = fc.server_value(jnp.ones(3))
    got = _add_sum.donating()(donated, data)
    np.testing.assert_array_equal(got.value, expected.value)
    assert donated.value.is_deleted() and not kept.value.is_deleted()
    assert _add_sum.donating() is _add_sum.donating(), "one donating version, compiled once"
    assert add_client_sum.donating() is add_client_sum


def test_a_donating_process_consumes_each_old_state():
    process = fc.IterativeProcess(
        initialize=lambda: fc.server_value(jnp.zeros(3)),
        next=lambda s, x: (fc.apply(lambda a, b: a + b, s, fc.sum(x)), fc.sum(x)),
    )
    donating = process.donating()
    assert donating.next_fn is process.next_fn.donating() and process.next_fn._donate == "none"
    s0 = donating.initialize()
    s1, _ = donating.next(s0, fc.clients_value(jnp.ones((2, 3))))
    s2, _ = donating.next(s1, fc.clients_value(jnp.ones((2, 3))))
    np.testing.assert_array_equal(s2.value, [4.0, 4.0, 4.0])
    assert s0.value.is_deleted() and s1.value.is_deleted()
