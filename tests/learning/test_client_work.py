"""Local training is differentiable and skips padded steps."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fedcore.data import batch_clients
from fedcore.learning import local_training, models

MODEL = models.linear(4, 3)


def _client(n_examples, pad_steps):
    rng = np.random.default_rng(0)
    data = {"x": rng.normal(size=(n_examples, 4)).astype(np.float32), "y": rng.integers(0, 3, n_examples).astype(np.int32)}
    batches = batch_clients([data], batch_size=2, epochs=1, pad_steps=pad_steps)
    return jax.tree.map(lambda a: a[0], batches)


def _final_loss(lr, client):
    result = local_training(MODEL, optax.sgd(lr), MODEL.initial_params, client)
    logits = MODEL.apply(result.params, client.data["x"])
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, client.data["y"]))


def test_grad_through_local_training_matches_finite_differences():
    # Reverse mode must work through the step loop (a loop with a dynamic trip
    # count would refuse it). Central differences in float32 with h=1e-2 on a
    # smooth loss agree with the exact gradient to ~1e-3 relative.
    client = _client(7, pad_steps=16)
    lr, h = 0.3, 1e-2
    grad = jax.grad(_final_loss)(lr, client)
    fd = (_final_loss(lr + h, client) - _final_loss(lr - h, client)) / (2 * h)
    assert abs(float(grad)) > 1e-3
    np.testing.assert_allclose(float(grad), float(fd), rtol=5e-3)


def test_padded_steps_change_nothing_and_are_not_counted():
    # 7 examples in batches of 2: 4 real steps, padded to 4, 8 (block-aligned) or 13 (not).
    results = [local_training(MODEL, optax.sgd(0.3), MODEL.initial_params, _client(7, p)) for p in (4, 8, 13)]
    for r in results:
        assert int(r.num_steps) == 4 and float(r.num_examples) == 7.0
        for a, b in zip(jax.tree.leaves(r.params), jax.tree.leaves(results[0].params)):
            np.testing.assert_array_equal(a, b)
