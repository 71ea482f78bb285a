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
