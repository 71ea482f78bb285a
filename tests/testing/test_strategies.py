"""fedcore.testing.strategies draws what it promises: placements, client counts, shapes, bounds."""

import jax
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fedcore as fc
from fedcore.testing import strategies as fst

F32 = np.dtype("float32")
I32 = np.dtype("int32")
ALLOWED_SHAPES = set(fst.DEFAULT_SHAPES)


def _leaf_types(t):
    return jax.tree.leaves(t.member, is_leaf=lambda x: isinstance(x, fc.TensorType))


@given(fst.client_values(num_clients=fst.client_counts(1, 64), max_leaves=3))
def test_client_values_are_per_client_with_bounded_shapes(x):
    assert x.placement is fc.CLIENTS and x.per_client
    assert 1 <= x.num_clients <= 64
    leaves = _leaf_types(x.type)
    assert 1 <= len(leaves) <= 3
    for t in leaves:
        assert t.shape in ALLOWED_SHAPES and t.dtype == F32
    for leaf in jax.tree.leaves(x.value):
        assert leaf.shape[0] == x.num_clients
        assert np.all(np.isfinite(leaf)) and np.all(np.abs(leaf) <= 100)


@given(st.data())
def test_client_values_take_a_fixed_count_and_member(data):
    n = data.draw(st.integers(1, 9))
    member = {"w": fc.TensorType((3,), F32), "c": fc.TensorType((), I32)}
    x = data.draw(fst.client_values(num_clients=n, member=member))
    assert x.num_clients == n
    assert x.type == fc.FederatedType(member, fc.CLIENTS, False)
    assert np.all(np.abs(np.asarray(x.value["c"])) <= 1000)


@given(fst.server_values(dtypes=(np.float32, np.int32)))
def test_server_values_are_server_placed(x):
    assert x.placement is fc.SERVER and x.all_equal
    assert {t.dtype for t in _leaf_types(x.type)} <= {F32, I32}


@given(fst.pytrees({"a": (fc.TensorType((2, 3), F32), fc.TensorType((), I32))}))
def test_pytrees_fill_a_given_member(tree):
    assert str(fc.core._types.format_structure(fc.type_of(tree))) == "<a=<f32[2,3],i32>>"


@given(fst.member_types(max_leaves=1))
def test_member_types_with_one_leaf_is_a_tensor_type(t):
    assert isinstance(t, fc.TensorType)


@given(fst.weighted_client_values(num_clients=st.sampled_from([1, 5, 64]), min_weight=0.5, max_weight=2.0))
def test_weights_are_positive_and_match_the_clients(xw):
    x, w = xw
    assert str(w.type) == "{f32}@CLIENTS"
    assert w.num_clients == x.num_clients
    assert np.all(np.asarray(w.value) >= 0.5) and np.all(np.asarray(w.value) <= 2.0)


@given(fst.weights(3, min_value=0.1, max_value=0.1))
def test_weights_bounds_are_rounded_to_float32(w):
    # 0.1 is not a float32 (hypothesis rejects such bounds for width-32 floats);
    # the strategy rounds it to the nearest float32.
    np.testing.assert_array_equal(np.asarray(w.value), np.full(3, 0.1, np.float32))


def test_invalid_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="min_value must be at least 1"):
        fst.client_counts(0, 3)
    with pytest.raises(ValueError, match="below min_value"):
        fst.client_counts(5, 3)
    with pytest.raises(ValueError, match="0 < min_value <= max_value"):
        fst.weights(3, min_value=0.0)
    with pytest.raises(ValueError, match="no default elements"):
        fst.default_elements(np.complex64)
    with pytest.raises(ValueError, match="at least one shape"):
        fst.tensor_types(shapes=())


def test_bad_member_or_count_raises_when_drawn():
    @given(fst.pytrees({"w": (3,)}))
    def draw_bad_member(tree):
        pass

    with pytest.raises(TypeError, match="pytree of fc.TensorType"):
        draw_bad_member()

    @given(fst.client_values(num_clients=0))
    def draw_no_clients(x):
        pass

    with pytest.raises(ValueError, match="num_clients must be at least 1"):
        draw_no_clients()
