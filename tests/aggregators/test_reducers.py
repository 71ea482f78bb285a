"""fa.mean and fa.sum: the plain reducers agree with the core's intrinsics, inside a computation too."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fedcore as fc
from fedcore import aggregators as fa
from fedcore.aggregators._random import initial_key, per_client_keys, split_round_key


def _run(agg, values, weights=None):
    @fc.computation
    def round_(x, w=None):
        out = agg.next(agg.init(jnp.zeros(values.shape[1:])), x, w)
        return out.result, out.measurements

    x = fc.clients_value(values)
    return round_(x) if weights is None else round_(x, fc.clients_value(weights))


def test_mean_is_the_weighted_mean():
    x = np.array([[1.0, 2.0], [3.0, 6.0], [5.0, -1.0]], np.float32)
    w = np.array([1.0, 2.0, 5.0], np.float32)
    result, measurements = _run(fa.mean(), x, w)
    np.testing.assert_allclose(result.value, (w[:, None] * x).sum(0) / w.sum(), rtol=1e-6)
    assert measurements.value == {}


def test_mean_without_weights_is_the_plain_mean():
    x = np.array([[1.0], [3.0]], np.float32)
    np.testing.assert_allclose(_run(fa.mean(), x)[0].value, [2.0])


def test_sum_sums_and_refuses_weights():
    x = np.array([[1.0], [3.0]], np.float32)
    np.testing.assert_allclose(_run(fa.sum(), x)[0].value, [4.0])
    with pytest.raises(TypeError, match="takes no weights"):
        _run(fa.sum(), x, np.ones(2, np.float32))


def test_per_client_keys_differ_by_client_and_by_round():
    key = initial_key(None)
    r1, carried = split_round_key(key)
    r2, _ = split_round_key(carried)
    like = fc.clients_value(jnp.zeros((4, 1)))
    k1 = np.asarray(per_client_keys(fc.server_value(r1), like).value)
    k2 = np.asarray(per_client_keys(fc.server_value(r2), like).value)
    assert len({tuple(k) for k in k1} | {tuple(k) for k in k2}) == 8
    np.testing.assert_array_equal(k1, per_client_keys(fc.server_value(r1), like).value)


def test_initial_key_refuses_a_seed_integer():
    with pytest.raises(TypeError, match="PRNGKey"):
        initial_key(jnp.array(3))
    np.testing.assert_array_equal(initial_key(jax.random.key(3)), jax.random.PRNGKey(3))
