"""Computations: placement errors before compiling, type signatures, composition, caching, gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fedcore as fc
from fedcore import testing as fct

F32 = np.dtype("float32")
EPS = float(np.finfo(np.float32).eps)
CLIENTS_F32_3 = fc.FederatedType(fc.TensorType((3,), F32), fc.CLIENTS, False)
SERVER_F32_3 = fc.FederatedType(fc.TensorType((3,), F32), fc.SERVER, True)
SERVER_F32 = fc.FederatedType(fc.TensorType((), F32), fc.SERVER, True)


@fc.computation
def _scaled_mean(x, s):
    return fc.apply(lambda m, k: m * k, fc.mean(x), s)


def test_trace_raises_placement_errors_before_anything_compiles(count_compiles):
    seen = []

    @fc.computation
    def average(x):
        seen.append(type(x.value))
        return fc.mean(x)

    with count_compiles() as c, pytest.raises(fc.PlacementError, match=r"mean expects \{T\}@CLIENTS, got f32\[3\]@SERVER"):
        average.trace(SERVER_F32_3)
    assert c.count == 0
    assert seen and not issubclass(seen[0], np.ndarray)  # traced with abstract values, no data
    with count_compiles() as c:
        sig = average.trace(CLIENTS_F32_3, num_clients=5)
    assert c.count == 0 and str(sig) == "({f32[3]}@CLIENTS -> f32[3]@SERVER)"


def test_parameter_types_check_at_definition(count_compiles):
    with count_compiles() as c, pytest.raises(fc.PlacementError, match=r"broadcast expects T@SERVER, got \{f32\[3\]\}@CLIENTS"):

        @fc.computation(parameter_types=[CLIENTS_F32_3])
        def bad(x):
            return fc.broadcast(x)

    assert c.count == 0

    @fc.computation(parameter_types=[CLIENTS_F32_3, SERVER_F32])
    def good(x, s):
        return fc.apply(jnp.multiply, fc.mean(x), s)

    assert str(good.type_signature) == "(<{f32[3]}@CLIENTS,f32@SERVER> -> f32[3]@SERVER)"


def test_wrongly_placed_call_fails_at_trace_time_without_compiling(count_compiles):
    s = fc.server_value(jnp.ones(3))
    with count_compiles() as c, pytest.raises(fc.PlacementError, match=r"mean expects \{T\}@CLIENTS, got f32\[3\]@SERVER"):
        _scaled_mean(s, fc.server_value(jnp.float32(2)))
    assert c.count == 0


def test_type_signature_is_known_after_the_first_call():
    @fc.computation
    def fresh(x):
        return fc.sum(x)

    with pytest.raises(ValueError, match="fresh: the type signature is known after the first call"):
        fresh.type_signature
    assert repr(fresh) == "Computation(fresh)"
    fresh(fc.clients_value(jnp.ones((2, 3))))
    assert str(fresh.type_signature) == "({f32[3]}@CLIENTS -> f32[3]@SERVER)"
    assert repr(fresh) == "Computation(fresh ({f32[3]}@CLIENTS -> f32[3]@SERVER))"


def test_a_computation_compiles_once_per_shape(count_compiles):
    @fc.computation
    def doubled_sum(x):
        return fc.sum(fc.map(lambda a: 2 * a, x))

    x = fc.clients_value(jnp.ones((4, 2)))
    doubled_sum(x)
    with count_compiles() as c:
        for _ in range(3):
            np.testing.assert_array_equal(doubled_sum(x).value, [8.0, 8.0])
    assert c.count == 0
    with count_compiles() as c:
        doubled_sum(fc.clients_value(jnp.ones((5, 2))))  # a new number of clients: a new program
    assert c.count >= 1


@fc.computation
def _centered(x):
    m = fc.mean(x)
    return fc.map(jnp.subtract, x, fc.broadcast(m))


@fc.computation
def _variance(x):
    d = _centered(x)  # a computation calling another
    return fc.mean(fc.map(jnp.square, d))


@given(fct.client_values(num_clients=st.sampled_from([2, 5]), member=fc.TensorType((3,), F32)))
def test_computations_compose(x):
    v = fct.check_strategies_agree(_variance, x, rtol=1e-5, atol=1e-3)
    # Two float32 passes over values |x| <= 100: tolerance relative to the scale of x**2.
    np.testing.assert_allclose(np.asarray(v.value), np.var(np.asarray(x.value, np.float64), axis=0),
                               rtol=1e-5, atol=64 * EPS * 100**2)
    assert str(_variance.type_signature) == "({f32[3]}@CLIENTS -> f32[3]@SERVER)"
    assert str(_centered.type_signature) == "({f32[3]}@CLIENTS -> {f32[3]}@CLIENTS)"


def _loss(p, x, w):
    per_client = fc.map(lambda pi, xi: jnp.sum((pi * xi - 1.0) ** 2), fc.broadcast(p), x)
    return fc.mean(per_client, w)


_loss_computation = fc.computation(_loss)


def _hand_written_loss(p, x, w):
    return jnp.sum(w * jnp.sum((p * x - 1.0) ** 2, axis=1)) / jnp.sum(w)


_SMALL = st.floats(-3.0, 3.0, width=32)
_hand_written_grad = jax.jit(jax.grad(_hand_written_loss))


@settings(max_examples=10)  # every new client count compiles the gradient program
@given(
    fct.weighted_client_values(num_clients=st.sampled_from([1, 4, 64]), member=fc.TensorType((3,), F32), elements=_SMALL),
    fct.pytrees(fc.TensorType((3,), F32), elements=_SMALL),
)
def test_grad_through_a_computation_matches_the_hand_written_maths(xw, p):
    x, w = xw
    expected = _hand_written_grad(p, x.value, w.value)
    # Per-client gradient terms 2 w_i (p x_i - 1) x_i / sum(w), summed in different
    # orders: within the summation bound of their magnitude (see test_execution).
    terms = 2 * np.asarray(w.value)[:, None] * (np.asarray(p) * np.asarray(x.value) - 1) * np.asarray(x.value)
    atol = 4 * x.num_clients * EPS * np.max(np.abs(terms)) / np.min(np.asarray(w.value))
    g = jax.grad(lambda q: _loss_computation(fc.server_value(q), x, w).value)(p)
    np.testing.assert_allclose(g, expected, rtol=1e-5, atol=atol)


def test_grad_under_the_loop_strategy_matches_too():
    # The loop strategy differentiates an eager Python loop over clients.
    x = fc.clients_value(jnp.array([[1.0, 2.0, 0.0], [0.5, -1.0, 2.0], [3.0, 0.0, -2.0]]))
    w = fc.clients_value(jnp.array([1.0, 3.0, 0.5]))
    p = jnp.array([0.1, -0.2, 0.3])
    with fc.execution("loop"):
        g = jax.grad(lambda q: _loss_computation(fc.server_value(q), x, w).value)(p)
    # Three clients, terms of size ~10: a few float32 roundings.
    np.testing.assert_allclose(g, _hand_written_grad(p, x.value, w.value), rtol=1e-5, atol=1e-5)


def test_grad_with_respect_to_a_placed_value():
    x = fc.clients_value(jnp.array([[1.0, 2.0, 0.0], [0.5, -1.0, 2.0]]))
    w = fc.clients_value(jnp.array([1.0, 3.0]))
    p = fc.server_value(jnp.array([0.1, 0.2, 0.3]))
    g = jax.grad(lambda q: _loss_computation(q, x, w).value)(p)
    assert isinstance(g, fc.FederatedValue) and g.type == p.type
    np.testing.assert_allclose(g.value, jax.grad(_hand_written_loss)(p.value, x.value, w.value), rtol=1e-6)


def test_a_computation_works_as_a_method():
    class Scaler:
        def __init__(self, k):
            self.k = k

        @fc.computation
        def run(self, x):
            return fc.apply(lambda m: m * self.k, fc.mean(x))

    assert float(Scaler(3.0).run(fc.clients_value(jnp.array([1.0, 3.0])))) == 6.0


def test_a_no_argument_signature_prints_as_tff_does():
    import jax.numpy as jnp

    import fedcore as fc

    make_zero = fc.computation(lambda: fc.server_value(jnp.float32(0)))
    make_zero()
    assert str(make_zero.type_signature) == "( -> f32@SERVER)"
