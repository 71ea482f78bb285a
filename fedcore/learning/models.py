"""Functional models: trainable parameters, a forward pass, a loss, metrics.

`from_equinox` wraps an equinox module the way TFF's `from_keras_model` wraps
a Keras model. The trainable parameters (every inexact array of the module)
travel through federated computations; everything else stays static.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from . import losses as _losses
from . import metrics as _metrics
from ._conv import CONV_IMPLEMENTATIONS, Conv2d, ConvImplementation, conv2d_valid, conv_implementation_for

__all__ = [
    "Model",
    "from_equinox",
    "DEFAULT_METRICS",
    "linear",
    "mlp",
    "cnn",
    "Conv2d",
    "conv2d_valid",
    "conv_implementation_for",
    "CONV_IMPLEMENTATIONS",
]

DEFAULT_METRICS: tuple[_metrics.Metric, ...] = (
    _metrics.mean_loss(),
    _metrics.accuracy(),
    _metrics.num_examples(),
    _metrics.num_batches(),
)


@dataclasses.dataclass(frozen=True, eq=False)
class Model:
    """A functional model.

    - `initial_params`: the trainable arrays (a pytree; for equinox models, the
      module with its non-trainable leaves set to None);
    - `static`: the non-trainable rest, recombined with `eqx.combine`;
    - `loss(predictions, labels) -> per-example losses`;
    - `metrics`: `Metric`s computed on every batch;
    - `input_key`, `label_key`: which entries of a batch dict feed the model.
    """

    initial_params: PyTree
    static: Any
    loss: Callable[[Array, Array], Array]
    metrics: tuple[_metrics.Metric, ...] = DEFAULT_METRICS
    input_key: str = "x"
    label_key: str = "y"
    batched: bool = False

    def apply(self, params: PyTree, inputs: Array) -> Array:
        """Predictions for a batch of inputs."""
        module = eqx.combine(params, self.static)
        return module(inputs) if self.batched else jax.vmap(module)(inputs)

    def batch_outputs(self, params: PyTree, batch: dict[str, Array], mask: Array) -> tuple[Array, _metrics.BatchOutput]:
        """Masked mean loss of a batch and what the metrics need to see of it."""
        predictions = self.apply(params, batch[self.input_key])
        labels = batch[self.label_key]
        per_example = self.loss(predictions, labels)
        mask = mask.astype(per_example.dtype)
        mean = jnp.sum(per_example * mask) / jnp.maximum(jnp.sum(mask), 1.0)
        return mean, _metrics.BatchOutput(predictions, labels, mask, per_example)


def from_equinox(
    make_model: Callable[[PRNGKeyArray], eqx.Module],
    loss: Callable[[Array, Array], Array] = _losses.sparse_softmax_cross_entropy,
    metrics: Sequence[_metrics.Metric] = DEFAULT_METRICS,
    *,
    key: PRNGKeyArray | None = None,
    input_key: str = "x",
    label_key: str = "y",
    batched: bool = False,
) -> Model:
    """Wraps an equinox module constructor (`key -> module`) as a `Model`.

    The module maps one example to its prediction (it is vmapped over the
    batch) unless `batched=True`. Trainable parameters are its inexact arrays
    (`eqx.partition(module, eqx.is_inexact_array)`).

    `metrics` are added to `loss`, `num_examples` and `num_batches`, which
    are always reported (as TFF's `from_keras_model` does).

    ```python
    >>> import equinox as eqx, jax
    >>> model = from_equinox(lambda k: eqx.nn.Linear(784, 10, key=k), key=jax.random.key(0))
    >>> model.apply(model.initial_params, jax.numpy.zeros((2, 784))).shape
    (2, 10)
    ```
    """
    if key is None:
        key = jax.random.key(0)
    module = make_model(key)
    if not isinstance(module, eqx.Module):
        raise TypeError(f"make_model must return an equinox Module, got {type(module).__name__}.")
    params, static = eqx.partition(module, eqx.is_inexact_array)
    if not jax.tree.leaves(params):
        raise ValueError("The model has no trainable (floating-point) arrays.")
    for m in metrics:
        _metrics.check_metric(m)
    names = [m.name for m in metrics]
    if len(set(names)) != len(names):
        raise ValueError(f"Metric names must be unique, got {names}.")
    # As TFF's from_keras_model: loss, num_examples and num_batches are always reported.
    always = [m for m in (_metrics.mean_loss(), _metrics.num_examples(), _metrics.num_batches()) if m.name not in names]
    return Model(params, static, loss, (*always[:1], *metrics, *always[1:]), input_key, label_key, batched)


class _Linear(eqx.Module):
    weight: Float[Array, "out in"]
    bias: Float[Array, " out"]

    def __call__(self, x: Array) -> Array:
        return self.weight @ x.reshape(-1) + self.bias


def linear(
    in_features: int = 784, num_classes: int = 10, *, zero_init: bool = True, key: PRNGKeyArray | None = None
) -> Model:
    """The seed tutorial's model: softmax regression `x -> W x + b` (logits), zero-initialised by default.

    ```python
    >>> model = linear(784, 10)
    >>> float(abs(model.initial_params.weight).sum())
    0.0
    ```
    """

    def make(k):
        if zero_init:
            return _Linear(jnp.zeros((num_classes, in_features)), jnp.zeros((num_classes,)))
        layer = eqx.nn.Linear(in_features, num_classes, key=k)
        return _Linear(layer.weight, layer.bias)

    return from_equinox(make, key=key)


def mlp(
    in_features: int = 784, num_classes: int = 10, hidden: Sequence[int] = (200, 200), *, key: PRNGKeyArray | None = None
) -> Model:
    """A ReLU multi-layer perceptron (McMahan et al. 2017's 2NN by default).

    ```python
    >>> mlp(784, 10).apply(mlp(784, 10).initial_params, jax.numpy.zeros((3, 784))).shape
    (3, 10)
    ```
    """

    def make(k):
        return eqx.nn.MLP(in_features, num_classes, width_size=hidden[0], depth=len(hidden), key=k)

    if len(set(hidden)) != 1:
        raise ValueError(f"mlp uses equal hidden widths (equinox's MLP); got {hidden}.")
    return from_equinox(lambda k: _Flatten(make(k)), key=key)


class _Flatten(eqx.Module):
    inner: eqx.Module

    def __call__(self, x):
        return self.inner(x.reshape(-1))


class _CNN(eqx.Module):
    conv1: Conv2d
    conv2: Conv2d
    dense1: eqx.nn.Linear
    dense2: eqx.nn.Linear

    def __call__(self, x: Float[Array, "batch ..."]) -> Float[Array, "batch classes"]:
        # Batched: the custom-VJP convolution's weight gradient is one
        # convolution over the batch, not a per-example one summed by vmap.
        x = x.reshape(-1, 28, 28, 1)
        x = jax.nn.relu(self.conv1(x))
        x = jax.nn.relu(self.conv2(x))
        n, h, w, c = x.shape
        x = x[:, : h // 2 * 2, : w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
        x = jax.nn.relu(x.reshape(n, -1) @ self.dense1.weight.T + self.dense1.bias)
        return x @ self.dense2.weight.T + self.dense2.bias


def cnn(num_classes: int = 10, *, conv: ConvImplementation = "auto", key: PRNGKeyArray | None = None) -> Model:
    """The small CNN of the benchmarks: Conv32-Conv64 (3x3) - MaxPool2 - Dense128 - Dense(num_classes), for 28x28 inputs (flat 784 or 28x28).

    `conv` picks the convolutions' implementation (see `conv2d_valid`):
    "auto" (resolved now, by `jax.default_backend()`), "im2col", "nhwc_vjp"
    or "native". The parameters are the same arrays for all of them.

    ```python
    >>> m = cnn()
    >>> m.apply(m.initial_params, jax.numpy.zeros((2, 784))).shape
    (2, 10)
    >>> m.static.conv1.implementation == conv_implementation_for(jax.default_backend())
    True
    ```
    """

    def make(k):
        k1, k2, k3, k4 = jax.random.split(k, 4)
        return _CNN(
            Conv2d(1, 32, 3, implementation=conv, key=k1),
            Conv2d(32, 64, 3, implementation=conv, key=k2),
            eqx.nn.Linear(12 * 12 * 64, 128, key=k3),
            eqx.nn.Linear(128, num_classes, key=k4),
        )

    return from_equinox(make, key=key, batched=True)
