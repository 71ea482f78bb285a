"""Federated types: TFF notation, equality, and the type signature of computations."""

from typing import NamedTuple

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fedcore as fc
from fedcore import testing as fct
from fedcore.core._types import format_structure

F32 = np.dtype("float32")


def test_tensor_types_print_dtype_and_shape():
    assert str(fc.TensorType((784,), F32)) == "f32[784]"
    assert str(fc.TensorType((), np.dtype("int32"))) == "i32"
    assert str(fc.TensorType((2, 3), np.dtype("uint8"))) == "u8[2,3]"
    assert str(fc.type_of(jnp.zeros(2, jnp.bfloat16))) == "bf16[2]"


def test_placed_types_use_tff_notation():
    x = jnp.zeros(784)
    assert str(fc.type_of(fc.server_value(x))) == "f32[784]@SERVER"
    assert str(fc.type_of(fc.broadcast(fc.server_value(x)))) == "f32[784]@CLIENTS"
    assert str(fc.type_of(fc.clients_value(jnp.zeros((5, 784))))) == "{f32[784]}@CLIENTS"


class Pair(NamedTuple):
    loss: jnp.ndarray
    count: jnp.ndarray


class Linear(eqx.Module):
    weight: jnp.ndarray
    bias: jnp.ndarray


def test_structures_print_named_and_unnamed():
    assert str(fc.server_value({"a": jnp.zeros(3), "b": jnp.int32(0)}).type) == "<a=f32[3],b=i32>@SERVER"
    assert str(fc.server_value((jnp.float32(0), jnp.int32(0))).type) == "<f32,i32>@SERVER"
    per_client = fc.clients_value({"w": jnp.zeros((4, 2)), "b": jnp.zeros(4)})
    assert str(per_client.type) == "{<b=f32,w=f32[2]>}@CLIENTS"  # dict keys in pytree (sorted) order
    nested = fc.server_value({"m": (jnp.zeros(2), {"k": jnp.zeros((1, 2))})})
    assert str(nested.type) == "<m=<f32[2],<k=f32[1,2]>>>@SERVER"
    assert str(fc.server_value(Pair(jnp.float32(0), jnp.int32(0))).type) == "<loss=f32,count=i32>@SERVER"
    assert str(fc.server_value(Linear(jnp.zeros((2, 3)), jnp.zeros(2))).type) == "Linear<weight=f32[2,3],bias=f32[2]>@SERVER"
    assert format_structure(None) == "<>"


@given(fct.member_types(dtypes=(np.float32, np.int32)), fct.client_counts(1, 8), st.data())
def test_type_of_a_client_value_is_its_member_at_clients(member, n, data):
    x = data.draw(fct.client_values(num_clients=n, member=member))
    t = fc.type_of(x)
    assert t == fc.FederatedType(member, fc.CLIENTS, False)
    assert str(t) == "{" + format_structure(member) + "}@CLIENTS"
    assert fc.type_of(fc.mean(x)).placement is fc.SERVER


@given(fct.member_types(dtypes=(np.float32, np.int32)))
def test_types_are_equal_exactly_when_member_placement_and_all_equal_agree(member):
    server = fc.FederatedType(member, fc.SERVER, True)
    everywhere = fc.FederatedType(member, fc.CLIENTS, True)
    per_client = fc.FederatedType(member, fc.CLIENTS, False)
    assert server == fc.FederatedType(member, fc.SERVER, True)
    assert hash(server) == hash(fc.FederatedType(member, fc.SERVER, True))
    assert len({server, everywhere, per_client}) == 3
    assert server != everywhere and everywhere != per_client
    assert fc.same_type(server, server) and not fc.same_type(server, per_client)
    other = fc.FederatedType((member, member), fc.SERVER, True)
    assert server != other


def test_type_equality_compares_shapes_and_dtypes():
    a = fc.type_of(fc.server_value(jnp.zeros(3)))
    assert a == fc.type_of(fc.server_value(jnp.ones(3)))
    assert a != fc.type_of(fc.server_value(jnp.zeros(4)))
    assert a != fc.type_of(fc.server_value(jnp.zeros(3, jnp.int32)))
    assert a != "f32[3]@SERVER"


def test_server_types_are_always_all_equal():
    with pytest.raises(ValueError, match="SERVER-placed type is always all-equal"):
        fc.FederatedType(fc.TensorType((), F32), fc.SERVER, False)


def test_placement_error_is_a_type_error():
    assert issubclass(fc.PlacementError, TypeError)
    assert str(fc.SERVER) == "SERVER" and repr(fc.CLIENTS) == "CLIENTS"


@fc.computation
def _scaled_mean(x, s):
    return fc.apply(lambda m, k: m * k, fc.mean(x), s)


@fc.computation
def _federated_mean(x):
    return fc.mean(x)


def test_computation_type_signatures():
    _scaled_mean(fc.clients_value(jnp.ones((4, 3))), fc.server_value(jnp.float32(2)))
    assert str(_scaled_mean.type_signature) == "(<{f32[3]}@CLIENTS,f32@SERVER> -> f32[3]@SERVER)"
    sig = _federated_mean.trace(fc.FederatedType({"w": fc.TensorType((2,), F32)}, fc.CLIENTS, False))
    assert str(sig) == "({<w=f32[2]>}@CLIENTS -> <w=f32[2]>@SERVER)"
    assert isinstance(sig, fc.FunctionType)


def test_signature_with_unplaced_and_structured_results():
    @fc.computation
    def stats(x, scale):
        return {"mean": fc.mean(x), "max": fc.max(x)}, scale * 2

    stats.trace(fc.FederatedType(fc.TensorType((), F32), fc.CLIENTS, False), fc.TensorType((), F32))
    assert str(stats.type_signature) == "(<{f32}@CLIENTS,f32> -> <<max=f32@SERVER,mean=f32@SERVER>,f32>)"


def test_equal_types_print_and_hash_alike_whatever_the_dict_order():
    t = fc.TensorType((), F32)
    ba = fc.FederatedType({"b": t, "a": t}, fc.CLIENTS, False)
    ab = fc.FederatedType({"a": t, "b": t}, fc.CLIENTS, False)
    assert ba == ab and hash(ba) == hash(ab)
    assert str(ba) == str(ab) == "{<a=f32,b=f32>}@CLIENTS"
