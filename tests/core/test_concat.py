"""`fc.concat`: per-client values one after another along the clients axis.

Laws: splitting a value's clients anywhere and concatenating the parts gives
the value back (bit for bit: concat only moves data); sums over a
concatenation are the sums of the parts (up to summation order). Errors name
the offending argument and its type.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fedcore as fc
from fedcore import testing as fct

FEW_COUNTS = st.sampled_from([2, 3, 7])


@given(fct.client_values(num_clients=FEW_COUNTS, dtypes=(np.float32, np.int32), max_leaves=2), st.data())
def test_concat_of_a_split_is_the_value(x, data):
    n = x.num_clients
    cuts = sorted(data.draw(st.lists(st.integers(1, n - 1), max_size=2, unique=True)))
    bounds = [0, *cuts, n]
    parts = [fc.clients_value(jax.tree.map(lambda a, i=i: a[bounds[i] : bounds[i + 1]], x.value)) for i in range(len(bounds) - 1)]
    joined = fc.concat(*parts)
    assert joined.type == x.type and joined.num_clients == n
    for a, b in zip(jax.tree.leaves(joined.value), jax.tree.leaves(x.value)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@given(fct.client_values(num_clients=FEW_COUNTS), st.data())
def test_sum_of_a_concat_is_the_sum_of_its_parts(x, data):
    y = data.draw(fct.client_values(num_clients=FEW_COUNTS, member=x.type.member))
    total = fc.sum(fc.concat(x, y))
    expected = fc.server_value(jax.tree.map(jnp.add, fc.sum(x).value, fc.sum(y).value))
    scale = sum(float(jnp.sum(jnp.abs(a))) for a in jax.tree.leaves((x.value, y.value)))
    fct.assert_federated_close(total, expected, rtol=1e-6, atol=1e-6 * (1 + scale), law="sum of a concat")


def test_concat_inside_a_computation_and_under_the_loop_strategy():
    @fc.computation
    def doubled_then_joined(x, y):
        return fc.concat(fc.map(lambda a: 2 * a, x), y)

    x, y = fc.clients_value(jnp.arange(3.0)), fc.clients_value(jnp.array([10.0]))
    np.testing.assert_array_equal(doubled_then_joined(x, y).value, [0.0, 2.0, 4.0, 10.0])
    with fc.execution("loop"):
        np.testing.assert_array_equal(doubled_then_joined(x, y).value, [0.0, 2.0, 4.0, 10.0])
    assert str(doubled_then_joined.type_signature) == "(<{f32}@CLIENTS,{f32}@CLIENTS> -> {f32}@CLIENTS)"


def test_concat_of_chunked_maps_runs_them():
    with fc.execution("chunked", chunk_size=2):
        a = fc.map(lambda v: v + 1, fc.clients_value(jnp.arange(5.0)))
        joined = fc.concat(a, fc.clients_value(jnp.zeros(1)))
        np.testing.assert_array_equal(joined.value, [1.0, 2.0, 3.0, 4.0, 5.0, 0.0])


def test_concat_of_one_value_is_that_value():
    x = fc.clients_value(jnp.ones((2, 3)))
    assert fc.concat(x) is x


@pytest.mark.parametrize(
    "args, error, message",
    [
        ((), TypeError, "concat needs at least one"),
        ((fc.server_value(jnp.ones(2)),), fc.PlacementError, r"concat \(argument 0\) expects \{T\}@CLIENTS, got f32\[2\]@SERVER"),
        (
            (fc.clients_value(jnp.ones((2, 3))), fc.clients_value(jnp.ones(3), all_equal=True)),
            fc.PlacementError,
            r"concat \(argument 1\) expects \{T\}@CLIENTS \(one value per client\), got the all-equal f32\[3\]@CLIENTS",
        ),
        (
            (fc.clients_value(jnp.ones((2, 3))), fc.clients_value(jnp.ones((2, 4)))),
            fc.PlacementError,
            r"one member type; argument 0 is \{f32\[3\]\}@CLIENTS, argument 1 is \{f32\[4\]\}@CLIENTS",
        ),
        (
            (fc.clients_value(jnp.ones((2, 3))), fc.clients_value(jnp.ones((2, 3), jnp.int32))),
            fc.PlacementError,
            r"argument 1 is \{i32\[3\]\}@CLIENTS",
        ),
    ],
)
def test_bad_arguments_raise(args, error, message):
    with pytest.raises(error, match=message):
        fc.concat(*args)
