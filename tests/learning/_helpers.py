"""Shared pieces of the learning tests: a tiny softmax-regression problem and a float64 numpy reference.

The model is `models.linear(FEATURES, CLASSES)` (logits `W x + b`); its loss
and gradient have a closed form, so the references below are independent
of JAX. Hypothesis strategies draw data of a fixed padded shape (sizes vary,
shapes do not) so that one compiled program serves every example.
"""

from __future__ import annotations

import dataclasses
import math

import equinox as eqx
import hypothesis.extra.numpy as hnp
import jax
import numpy as np
from hypothesis import strategies as st

from fedcore.data import batch_clients
from fedcore.learning import models

FEATURES = 4
CLASSES = 3
MODEL = models.linear(FEATURES, CLASSES)

_coordinates = st.floats(-2.0, 2.0, width=32, allow_subnormal=False)


@st.composite
def client_datasets(draw, num_clients: int, min_examples: int = 1, max_examples: int = 8) -> list[dict]:
    """`num_clients` clients of `min..max_examples` examples with features in [-2, 2] and labels in [0, CLASSES)."""
    clients = []
    for _ in range(num_clients):
        n = draw(st.integers(min_examples, max_examples))
        x = draw(hnp.arrays(np.float32, (n, FEATURES), elements=_coordinates))
        y = draw(hnp.arrays(np.int32, (n,), elements=st.integers(0, CLASSES - 1)))
        clients.append({"x": x, "y": y})
    return clients


@st.composite
def linear_params(draw):
    """Parameters for `MODEL` (weight [CLASSES, FEATURES], bias [CLASSES]) in [-1, 1]."""
    elements = st.floats(-1.0, 1.0, width=32, allow_subnormal=False)
    weight = draw(hnp.arrays(np.float32, (CLASSES, FEATURES), elements=elements))
    bias = draw(hnp.arrays(np.float32, (CLASSES,), elements=elements))
    return as_params(weight, bias)


def as_params(weight, bias):
    """A `MODEL` parameter pytree holding the given arrays."""
    return eqx.tree_at(
        lambda p: (p.weight, p.bias), MODEL.initial_params, (jax.numpy.asarray(weight), jax.numpy.asarray(bias))
    )


def to_numpy(params) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(params.weight, np.float64), np.asarray(params.bias, np.float64)


def fixed_batches(clients, batch_size: int, epochs: int, max_examples: int, **kwargs):
    """`batch_clients` padded to the shape of `max_examples`-example clients, whatever the drawn sizes."""
    steps = math.ceil(max_examples * epochs / batch_size)
    kwargs = {"pad_steps": steps, "pad_examples": max_examples, **kwargs}
    return batch_clients(clients, batch_size, epochs=epochs, **kwargs)


# ----------------------------------------------------------------------------- numpy reference


def np_logits(w, x):
    weight, bias = w
    return np.asarray(x, np.float64) @ weight.T + bias


def np_losses(w, x, y) -> np.ndarray:
    """Per-example softmax cross-entropy, float64."""
    z = np_logits(w, x)
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -log_p[np.arange(len(y)), y]


def np_correct(w, x, y) -> np.ndarray:
    return (np.argmax(np_logits(w, x), axis=1) == y).astype(np.float64)


def np_grad(w, x, y):
    """Gradient of the mean softmax cross-entropy over `(x, y)` w.r.t. `(weight, bias)`."""
    z = np_logits(w, x)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(y)), y] -= 1.0
    g = p / len(y)
    return g.T @ np.asarray(x, np.float64), g.sum(axis=0)


def np_sgd_step(w, grad, lr):
    return tuple(a - lr * g for a, g in zip(w, grad))


def np_local_sgd(w, x, y, batch_size: int, epochs: int, lr: float, grad_fn=None):
    """Plain local SGD over `.repeat(epochs).batch(batch_size)` of one client; returns (params, num_steps).

    `grad_fn(w, xb, yb)` replaces the loss gradient (e.g. to add a correction).
    """
    grad_fn = grad_fn or np_grad
    order = np.concatenate([np.arange(len(y))] * epochs)
    steps = 0
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        w = np_sgd_step(w, grad_fn(w, x[rows], y[rows]), lr)
        steps += 1
    return w, steps


def assert_params_close(actual, expected, rtol: float = 1e-5, atol: float = 1e-5, what: str = "params") -> None:
    got = to_numpy(actual) if not isinstance(actual, tuple) else actual
    for name, a, e in zip(("weight", "bias"), got, expected):
        np.testing.assert_allclose(a, e, rtol=rtol, atol=atol, err_msg=f"{what}: {name}")


def learnable_clients(num_clients: int = 4, examples: int = 24, seed: int = 0) -> list[dict]:
    """Clients whose labels are a fixed linear function of the features (so loss can decrease a lot)."""
    rng = np.random.default_rng(seed)
    truth = rng.normal(size=(FEATURES, CLASSES))
    clients = []
    for _ in range(num_clients):
        x = rng.normal(size=(examples, FEATURES)).astype(np.float32)
        clients.append({"x": x, "y": np.argmax(x @ truth, axis=1).astype(np.int32)})
    return clients


class TracedLoss:
    """A loss that counts its calls. Under `jit` Python runs only while JAX traces, so for a
    jitted round the count goes up once per trace (= once per compile), never when it runs."""

    def __init__(self, loss):
        self.loss = loss
        self.count = 0

    def __call__(self, predictions, labels):
        self.count += 1
        return self.loss(predictions, labels)


def counting_traces(model):
    """`(model with a TracedLoss, that TracedLoss)`."""
    loss = TracedLoss(model.loss)
    return dataclasses.replace(model, loss=loss), loss
