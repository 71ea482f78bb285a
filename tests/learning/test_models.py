"""Models, losses, client work and the learning process's API: behaviour and bad-input errors."""

from __future__ import annotations


import equinox as eqx
import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fedcore as fc
import fedcore.learning
import fedcore.learning._conv
from fedcore.data import batch_clients
from fedcore.learning import (
    build_fed_eval,
    build_fed_prox,
    build_weighted_fed_avg,
    from_equinox,
    local_gradient,
    local_training,
    losses,
    metrics,
    models,
)

from ._helpers import CLASSES, FEATURES, MODEL, as_params, client_datasets, linear_params, np_grad, np_losses, to_numpy

logits_arrays = hnp.arrays(np.float32, (5, CLASSES), elements=st.floats(-10, 10, width=32, allow_subnormal=False))
label_arrays = hnp.arrays(np.int32, (5,), elements=st.integers(0, CLASSES - 1))


# ----------------------------------------------------------------------------- losses


@given(logits_arrays, label_arrays)
def test_softmax_cross_entropy_is_minus_log_softmax_of_the_label(logits, labels):
    z = logits.astype(np.float64)
    log_p = z - z.max(1, keepdims=True) - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True))
    expected = -log_p[np.arange(5), labels]
    np.testing.assert_allclose(losses.sparse_softmax_cross_entropy(logits, labels), expected, rtol=1e-5, atol=1e-5)


@given(hnp.arrays(np.float32, (5, CLASSES), elements=st.floats(-3, 3, width=32)), label_arrays)
def test_cross_entropy_on_probabilities_matches_the_logits_version(logits, labels):
    # |logits| <= 3 keeps every probability far from the clipping bounds [1e-7, 1 - 1e-7].
    probs = jax.nn.softmax(logits)
    np.testing.assert_allclose(
        losses.sparse_cross_entropy_on_probs(probs, labels),
        losses.sparse_softmax_cross_entropy(logits, labels),
        rtol=1e-5,
        atol=1e-6,
    )


def test_cross_entropy_on_probabilities_clips_zero_probabilities():
    probs = jnp.array([[1.0, 0.0, 0.0]])
    clipped = float(losses.sparse_cross_entropy_on_probs(probs, jnp.array([1]))[0])
    assert clipped == pytest.approx(-np.log(1e-7), rel=1e-5)


def test_mean_squared_error_averages_each_example():
    predictions = jnp.array([[1.0, 3.0], [0.0, 0.0]])
    targets = jnp.array([[0.0, 0.0], [2.0, 0.0]])
    np.testing.assert_allclose(losses.mean_squared_error(predictions, targets), [5.0, 2.0])


# ----------------------------------------------------------------------------- models


@given(client_datasets(1, min_examples=4, max_examples=4), linear_params(), hnp.arrays(np.bool_, (4,)))
def test_a_batch_loss_is_the_mean_over_real_examples_only(clients, params, mask):
    x, y = clients[0]["x"], clients[0]["y"]
    loss, out = MODEL.batch_outputs(params, {"x": x, "y": y}, jnp.asarray(mask))
    expected = np_losses(to_numpy(params), x, y)[mask].mean() if mask.any() else 0.0
    assert float(loss) == pytest.approx(expected, rel=1e-5, abs=1e-6)
    np.testing.assert_array_equal(out.mask, mask.astype(np.float32))


def test_linear_is_zero_initialised_unless_asked():
    zero = models.linear(FEATURES, CLASSES)
    assert not np.any(to_numpy(zero.initial_params)[0])
    random = models.linear(FEATURES, CLASSES, zero_init=False, key=jax.random.key(1))
    weight = np.asarray(random.initial_params.weight)
    assert weight.shape == (CLASSES, FEATURES) and np.abs(weight).sum() > 0


def test_from_equinox_trains_only_the_floating_point_arrays():
    class WithCounter(eqx.Module):
        layer: eqx.nn.Linear
        offset: jax.Array  # integer: static, not trained

        def __call__(self, x):
            return self.layer(x) + self.offset

    model = from_equinox(lambda k: WithCounter(eqx.nn.Linear(3, 2, key=k), jnp.array([1, 2])))
    leaves = jax.tree.leaves(model.initial_params)
    assert len(leaves) == 2 and all(jnp.issubdtype(a.dtype, jnp.floating) for a in leaves)
    out = model.apply(model.initial_params, jnp.zeros((4, 3)))
    np.testing.assert_allclose(out, np.broadcast_to(np.asarray(model.initial_params.layer.bias) + [1, 2], (4, 2)))


def test_a_batched_module_sees_the_whole_batch():
    model = from_equinox(lambda k: eqx.nn.Linear(3, 2, key=k), batched=False)
    batched = from_equinox(lambda k: _BatchedLinear(eqx.nn.Linear(3, 2, key=k)), batched=True)
    x = jnp.arange(12.0).reshape(4, 3)
    expected = model.apply(model.initial_params, x)
    np.testing.assert_allclose(batched.apply(batched.initial_params, x), expected, rtol=1e-6)


class _BatchedLinear(eqx.Module):
    inner: eqx.nn.Linear

    def __call__(self, xs):
        assert xs.ndim == 2
        return jax.vmap(self.inner)(xs)


def test_mlp_has_the_documented_shapes():
    # (cnn() runs in its docstring example.)
    mlp = models.mlp(784, 10, hidden=(16, 16))
    flat = jax.ShapeDtypeStruct((2, 784), jnp.float32)
    assert eqx.filter_eval_shape(mlp.apply, mlp.initial_params, flat).shape == (2, 10)
    shapes = [tuple(a.shape) for a in jax.tree.leaves(mlp.initial_params)]
    assert shapes == [(16, 784), (16,), (16, 16), (16,), (10, 16), (10,)]


def test_im2col_convolution_equals_lax_convolution():
    conv = models.Conv2d(2, 3, 3, implementation="im2col", key=jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (6, 7, 2))
    expected = jax.lax.conv_general_dilated(
        x[None], conv.weight, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )[0] + conv.bias
    np.testing.assert_allclose(conv(x), expected, rtol=1e-5, atol=1e-5)


CONVS = ("im2col", "nhwc_vjp", "native")


def _cnn_sgd_steps(model, params, xs, ys):
    """Three SGD steps inside lax.scan: the final params and each step's loss."""

    def step(p, batch):
        x, y = batch
        loss, grad = jax.value_and_grad(lambda q: model.batch_outputs(q, {"x": x, "y": y}, jnp.ones(len(y), bool))[0])(p)
        return jax.tree.map(lambda a, g: a - 0.1 * g, p, grad), loss

    return jax.jit(lambda p: jax.lax.scan(step, p, (xs, ys)))(params)


def test_cnn_convolution_implementations_agree_in_outputs_gradients_and_under_scan():
    cnns = {conv: models.cnn(conv=conv, key=jax.random.key(3)) for conv in CONVS}
    reference = cnns["im2col"]
    for model in cnns.values():  # the same parameter arrays whatever the implementation
        assert eqx.tree_equal(jax.tree.leaves(model.initial_params), jax.tree.leaves(reference.initial_params))
    x = jax.random.normal(jax.random.key(4), (5, 784))
    y = jax.random.randint(jax.random.key(5), (5,), 0, 10)
    mask = jnp.ones(5, bool)
    loss = lambda m: lambda p: m.batch_outputs(p, {"x": x, "y": y}, mask)[0]  # noqa: E731
    expected_out = reference.apply(reference.initial_params, x)
    expected_grad = jax.grad(loss(reference))(reference.initial_params)
    xs, ys = jax.random.normal(jax.random.key(6), (3, 4, 784)), jax.random.randint(jax.random.key(7), (3, 4), 0, 10)
    expected_scan = _cnn_sgd_steps(reference, reference.initial_params, xs, ys)
    for conv, model in cnns.items():
        np.testing.assert_allclose(model.apply(model.initial_params, x), expected_out, rtol=1e-5, atol=1e-6, err_msg=conv)
        grad = jax.grad(loss(model))(model.initial_params)
        for got, want in zip(jax.tree.leaves(grad), jax.tree.leaves(expected_grad)):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * float(jnp.abs(want).max()), err_msg=conv)
        params, losses_ = _cnn_sgd_steps(model, model.initial_params, xs, ys)
        np.testing.assert_allclose(losses_, expected_scan[1], rtol=1e-5, err_msg=conv)
        for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(expected_scan[0])):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=conv)


@pytest.mark.parametrize("conv", CONVS)
def test_conv2d_valid_gradients_match_lax_convolution_one_example_or_a_batch(conv):
    w = jax.random.normal(jax.random.key(8), (3, 2, 4, 5))  # non-square kernel, odd channels
    x = jax.random.normal(jax.random.key(9), (2, 3, 7, 6, 4))  # two batch dimensions
    native = lambda x, w: models.conv2d_valid(x, w, "native")  # noqa: E731
    mine = lambda x, w: models.conv2d_valid(x, w, conv)  # noqa: E731
    np.testing.assert_allclose(mine(x, w), native(x, w), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mine(x[0, 0], w), native(x[0, 0], w), rtol=1e-5, atol=1e-5)
    cot = jax.random.normal(jax.random.key(10), native(x, w).shape)
    got = jax.grad(lambda x, w: jnp.vdot(mine(x, w), cot), argnums=(0, 1))(x, w)
    want = jax.grad(lambda x, w: jnp.vdot(native(x, w), cot), argnums=(0, 1))(x, w)
    for g, e in zip(got, want):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)


def test_auto_convolution_is_resolved_per_backend_at_construction():
    assert models.conv_implementation_for("cpu") == "im2col"
    assert models.conv_implementation_for("gpu") == models.conv_implementation_for("tpu") == "native"
    conv = models.Conv2d(1, 2, 3, key=jax.random.key(0))
    assert conv.implementation == models.conv_implementation_for(jax.default_backend())
    assert models.Conv2d(1, 2, 3, implementation="im2col", key=jax.random.key(0)).implementation == "im2col"
    assert not hasattr(models, "Conv2dIm2col")  # the 0.1 shim is gone
    with pytest.raises(ValueError, match="conv implementation must be one of"):
        models.cnn(conv="fft")


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: from_equinox(lambda k: jnp.zeros(3)), TypeError, "must return an equinox Module, got ArrayImpl"),
        (lambda: from_equinox(lambda k: _Static(jnp.arange(3))), ValueError, "no trainable"),
        (
            lambda: from_equinox(lambda k: eqx.nn.Linear(2, 2, key=k), metrics=[metrics.accuracy()] * 2),
            ValueError,
            "Metric names must be unique",
        ),
        (lambda: models.mlp(784, 10, hidden=(32, 16)), ValueError, "equal hidden widths"),
        (lambda: build_weighted_fed_avg(MODEL, optax.sgd(0.1), proximal_strength=-1.0), ValueError, "proximal_strength must be"),
        (lambda: build_fed_prox(MODEL, optax.sgd(0.1), proximal_strength=-0.5), ValueError, "proximal_strength must be >= 0"),
    ],
    ids=["not-a-module", "no-float-arrays", "duplicate-metrics", "unequal-mlp", "negative-mu", "negative-prox-mu"],
)
def test_bad_model_and_algorithm_arguments_raise(call, error, message):
    with pytest.raises(error, match=message):
        call()


class _Static(eqx.Module):
    table: jax.Array

    def __call__(self, x):
        return x


# ----------------------------------------------------------------------------- client work

_local_training = jax.jit(lambda params, client: local_training(MODEL, optax.sgd(0.1), params, client))
_local_gradient = jax.jit(lambda params, client: local_gradient(MODEL, params, client))


def _one_client(client, **kwargs):
    b = batch_clients([client], 2, pad_steps=8, pad_examples=8, **kwargs)
    return jax.tree.map(lambda a: a[0], b)


@given(client_datasets(1, max_examples=8), linear_params())
def test_local_training_counts_real_steps_and_examples(clients, params):
    (client,) = clients
    n = len(client["y"])
    result = _local_training(params, _one_client(client))
    assert int(result.num_steps) == -(-n // 2)
    assert float(result.num_examples) == n
    assert int(result.metric_states["num_batches"]) == -(-n // 2)


@given(client_datasets(1, max_examples=8), linear_params())
def test_local_gradient_is_the_gradient_of_the_example_mean_loss(clients, params):
    (client,) = clients
    grad, _, n = _local_gradient(params, _one_client(client))
    expected = np_grad(to_numpy(params), client["x"], client["y"])
    np.testing.assert_allclose(grad.weight, expected[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(grad.bias, expected[1], rtol=1e-4, atol=1e-5)
    assert float(n) == len(client["y"])


# ----------------------------------------------------------------------------- the process API

EVAL = build_fed_eval(MODEL)


def test_client_data_may_be_batches_a_materialized_dict_or_placed():
    client = {"x": np.ones((3, FEATURES), np.float32), "y": np.array([0, 1, 2], np.int32)}
    batches = batch_clients([client, client], 2, pad_steps=2, pad_examples=4)
    state = EVAL.initialize()
    reference = float(EVAL.next(state, batches)[1]["eval"]["loss"])
    assert float(EVAL.next(state, fc.clients_value(batches))[1]["eval"]["loss"]) == reference
    assert float(EVAL.next(state, batches.materialize())[1]["eval"]["loss"]) == pytest.approx(reference)


def test_bad_client_data_raises():
    state = EVAL.initialize()
    with pytest.raises(TypeError, match="Client data must be fedcore.data.batch_clients"):
        EVAL.next(state, [np.zeros(3)])
    batches = batch_clients([{"x": np.ones((3, FEATURES), np.float32), "y": np.zeros(3, np.int32)}], 2)
    with pytest.raises(fc.PlacementError, match="Client data must be per-client"):
        EVAL.next(state, fc.clients_value(batches, all_equal=True))


def test_model_weights_round_trip_and_reject_other_shapes():
    params = as_params(np.ones((CLASSES, FEATURES), np.float32), np.arange(CLASSES, dtype=np.float32))
    state = EVAL.set_model_weights(EVAL.initialize(), params)
    np.testing.assert_array_equal(EVAL.get_model_weights(state).bias, np.arange(CLASSES))
    with pytest.raises(TypeError, match="do not match the model's"):
        EVAL.set_model_weights(state, as_params(np.ones((2, 2), np.float32), np.zeros(2, np.float32)))
