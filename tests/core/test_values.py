"""Placed values: construction, pytree behaviour, and errors on bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fedcore as fc
from fedcore import testing as fct


@given(fct.pytrees(dtypes=(np.float32, np.int32)), st.integers(1, 6), st.data())
def test_a_list_of_client_pytrees_stacks_on_a_leading_axis(member_tree, n, data):
    member = fc.type_of(member_tree)
    clients = [data.draw(fct.pytrees(member)) for _ in range(n)]
    x = fc.clients_value(clients)
    assert x.per_client and x.num_clients == n
    assert x.type == fc.FederatedType(member, fc.CLIENTS, False)
    for i, client in enumerate(clients):
        jax.tree.map(lambda stacked, c, i=i: np.testing.assert_array_equal(stacked[i], c), x.value, client)


@given(fct.pytrees(dtypes=(np.float32, np.int32)))
def test_server_and_all_equal_values_keep_the_member(tree):
    s = fc.server_value(tree)
    assert s.placement is fc.SERVER and s.all_equal and s.num_clients is None
    everywhere = fc.clients_value(tree, all_equal=True)
    assert everywhere.placement is fc.CLIENTS and everywhere.all_equal and not everywhere.per_client
    assert everywhere.type.member == s.type.member == fc.type_of(tree)


def test_values_are_pytrees_that_pass_through_jit():
    x = fc.clients_value({"w": jnp.ones((3, 2))})
    assert len(jax.tree.leaves(x)) == 1
    doubled = jax.jit(lambda v: fc.map(lambda a: {"w": 2 * a["w"]}, v))(x)
    assert doubled.type == x.type
    np.testing.assert_array_equal(doubled.value["w"], 2 * np.ones((3, 2)))


def test_indexing_selects_inside_the_member_and_keeps_the_placement():
    x = fc.clients_value({"loss": jnp.arange(3.0), "n": jnp.ones(3, jnp.int32)})
    assert str(x["loss"].type) == "{f32}@CLIENTS"
    assert str(fc.server_value((jnp.zeros(2), jnp.int32(1)))[1].type) == "i32@SERVER"


def test_indexing_an_array_member_indexes_each_client_not_the_clients():
    x = fc.clients_value(jnp.arange(12.0).reshape(4, 3))
    first = x[0]
    assert str(first.type) == "{f32}@CLIENTS" and first.num_clients == 4
    np.testing.assert_array_equal(first.value, [0.0, 3.0, 6.0, 9.0])
    assert x[1:].num_clients == 4 and str(x[1:].type) == "{f32[2]}@CLIENTS"
    np.testing.assert_array_equal(fc.server_value(jnp.arange(3.0))[2].value, 2.0)
    np.testing.assert_array_equal(fc.broadcast(fc.server_value(jnp.arange(3.0)))[2].value, 2.0)
    for strategy, options in [("vmap", {}), ("loop", {}), ("chunked", {"chunk_size": 3})]:  # chunked: a deferred member
        with fc.execution(strategy, **options):
            y = fc.map(lambda a: a + 1, x)[0]
        np.testing.assert_array_equal(np.asarray(y), [1.0, 4.0, 7.0, 10.0], err_msg=strategy)


def test_float_and_array_conversions():
    assert float(fc.server_value(jnp.float32(2.5))) == 2.5
    np.testing.assert_array_equal(np.asarray(fc.clients_value(jnp.arange(3))), [0, 1, 2])
    with pytest.raises(fc.PlacementError, match=r"float\(\) needs a single value; got the per-client value \{f32\}@CLIENTS"):
        float(fc.clients_value(jnp.arange(3.0)))


def test_repr_shows_type_and_small_values():
    assert repr(fc.server_value(jnp.array([1.0, 2.0]))) == "FederatedValue(f32[2]@SERVER: [1.0, 2.0])"
    assert repr(fc.clients_value({"a": jnp.zeros((2, 9)), "b": jnp.zeros(2)})) == "FederatedValue({<a=f32[9],b=f32>}@CLIENTS)"


def test_is_placed():
    assert fc.is_placed(fc.server_value(1.0)) and not fc.is_placed(jnp.ones(2))


@pytest.mark.parametrize(
    ("values", "error", "message"),
    [
        ([], ValueError, "empty list: a CLIENTS value needs at least one client"),
        (jnp.zeros((0, 3)), ValueError, "zero clients"),
        ({"a": jnp.zeros((0,)), "b": jnp.zeros((0, 2))}, ValueError, "zero clients"),
        (jnp.float32(1.0), ValueError, "every leaf needs a leading clients axis; got a scalar leaf"),
        ({"a": jnp.zeros(3), "b": jnp.zeros(4)}, ValueError, r"leaves disagree on the number of clients: \[3, 4\]"),
        ([jnp.zeros(2), (jnp.zeros(2),)], ValueError, "client 1 has structure"),
        ([jnp.zeros(2), jnp.zeros(3)], ValueError, r"clients disagree on a leaf's shape \(\[\(2,\), \(3,\)\]\)"),
        ({}, ValueError, "no arrays: the number of clients is unknown"),
    ],
    ids=["empty-list", "zero-axis", "zero-axis-tree", "scalar", "counts", "structure", "shapes", "no-arrays"],
)
def test_clients_value_rejects_bad_input(values, error, message):
    with pytest.raises(error, match=message):
        fc.clients_value(values)


def test_placing_a_placed_value_again_is_a_placement_error():
    s = fc.server_value(jnp.ones(2))
    with pytest.raises(fc.PlacementError, match=r"server_value expects an unplaced pytree; got f32\[2\]@SERVER"):
        fc.server_value(s)
    with pytest.raises(fc.PlacementError, match=r"clients_value expects an unplaced pytree; got f32\[2\]@SERVER"):
        fc.clients_value(s)


def test_a_server_value_is_always_all_equal():
    with pytest.raises(ValueError, match="SERVER-placed value is always all-equal"):
        fc.FederatedValue(jnp.ones(2), fc.SERVER, False)
