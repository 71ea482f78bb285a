"""Functional models: trainable parameters, a forward pass, a loss, metrics.

`from_equinox` wraps an equinox module the way TFF's `from_keras_model` wraps
a Keras model. The trainable parameters (every inexact array of the module)
travel through federated computations; everything else stays static.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from . import losses as _losses
from . import metrics as _metrics

__all__ = [
    "Model",
    "from_equinox",
    "DEFAULT_METRICS",
    "linear",
    "mlp",
    "cnn",
    "Conv2d",
    "Conv2dIm2col",
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


ConvImplementation = Literal["auto", "im2col", "nhwc_vjp", "native"]
CONV_IMPLEMENTATIONS: tuple[str, ...] = ("auto", "im2col", "nhwc_vjp", "native")
_NHWC = ("NHWC", "HWIO", "NHWC")


def conv_implementation_for(backend: str) -> str:
    """What `implementation="auto"` resolves to on a JAX backend ("cpu", "gpu", "tpu", ...).

    On XLA:CPU `"im2col"` (`lax.conv`'s own backward is ~40x slower inside
    loops there, jax issue 12868; im2col measured ~12% faster per step than
    `"nhwc_vjp"` on an idle machine, and 4x faster with clients vmapped
    together, where a convolution with per-client weights becomes a grouped
    one); elsewhere `"native"` (cuDNN / TPU convolutions).

    ```python
    >>> conv_implementation_for("cpu"), conv_implementation_for("gpu")
    ('im2col', 'native')
    ```
    """
    return "im2col" if backend == "cpu" else "native"


def _conv_native(x: Float[Array, "n h w cin"], weight: Float[Array, "kh kw cin cout"], padding: Any = "VALID") -> Array:
    return jax.lax.conv_general_dilated(x, weight, (1, 1), padding, dimension_numbers=_NHWC)


def _conv_im2col(x: Float[Array, "n h w cin"], weight: Float[Array, "kh kw cin cout"]) -> Float[Array, "n h2 w2 cout"]:
    kh, kw, cin, cout = weight.shape
    h, w = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    patches = jnp.concatenate([x[:, i : i + h, j : j + w, :] for i in range(kh) for j in range(kw)], axis=-1)
    return patches @ weight.reshape(kh * kw * cin, cout)


@jax.custom_vjp
def _conv_nhwc_vjp(x: Float[Array, "n h w cin"], weight: Float[Array, "kh kw cin cout"]) -> Float[Array, "n h2 w2 cout"]:
    return _conv_native(x, weight)


def _conv_nhwc_vjp_fwd(x, weight):
    return _conv_native(x, weight), (x, weight)


def _conv_nhwc_vjp_bwd(residuals, g):
    # Both gradients are forward, channels-last convolutions, which XLA:CPU runs
    # fast inside loops (the transposed convolutions autodiff emits are not).
    x, weight = residuals
    kh, kw, _, _ = weight.shape
    flipped = weight[::-1, ::-1].transpose(0, 1, 3, 2)  # [kh, kw, cout, cin]
    dx = _conv_native(g, flipped, ((kh - 1, kh - 1), (kw - 1, kw - 1)))
    # dw[i, j, c, o] = sum_{n, y, z} x[n, y + i, z + j, c] g[n, y, z, o]: a convolution
    # whose "batch" is c, whose contracted "features" are the examples n.
    dw = _conv_native(x.transpose(3, 1, 2, 0), g.transpose(1, 2, 0, 3))  # [cin, kh, kw, cout]
    return dx, dw.transpose(1, 2, 0, 3)


_conv_nhwc_vjp.defvjp(_conv_nhwc_vjp_fwd, _conv_nhwc_vjp_bwd)


def conv2d_valid(
    x: Float[Array, "*batch h w cin"], weight: Float[Array, "kh kw cin cout"], implementation: ConvImplementation = "auto"
) -> Float[Array, "*batch h2 w2 cout"]:
    """A stride-1 'valid' 2-D convolution (cross-correlation, as `lax.conv`), channels last, no bias.

    `implementation` picks how it is computed (same values and gradients, to
    float rounding; weights are `[kh, kw, in, out]` for all):

    - `"im2col"`: the kh*kw shifted slices concatenated, then one matmul;
    - `"nhwc_vjp"`: `lax.conv` forward with a custom backward made of two
      forward channels-last convolutions (fast inside `lax.scan` on XLA:CPU;
      it supports reverse-mode differentiation only, not `jax.jvp`);
    - `"native"`: `lax.conv_general_dilated` and its own autodiff;
    - `"auto"`: `conv_implementation_for(jax.default_backend())`, resolved now.

    ```python
    >>> x, w = jnp.ones((2, 5, 5, 3)), jnp.ones((3, 3, 3, 4))
    >>> conv2d_valid(x, w, "im2col").shape, float(conv2d_valid(x, w, "nhwc_vjp")[0, 0, 0, 0])
    ((2, 3, 3, 4), 27.0)
    ```
    """
    implementation = _resolve_conv_implementation(implementation)
    batch = x.shape[:-3]
    x = x.reshape((-1,) + x.shape[-3:])
    if implementation == "im2col":
        y = _conv_im2col(x, weight)
    elif implementation == "nhwc_vjp":
        y = _conv_nhwc_vjp(x, weight)
    else:
        y = _conv_native(x, weight)
    return y.reshape(batch + y.shape[1:])


def _resolve_conv_implementation(implementation: str) -> str:
    if implementation not in CONV_IMPLEMENTATIONS:
        raise ValueError(f"conv implementation must be one of {CONV_IMPLEMENTATIONS}, got {implementation!r}.")
    return conv_implementation_for(jax.default_backend()) if implementation == "auto" else implementation


class Conv2d(eqx.Module):
    """A stride-1 'valid' 2-D convolution with bias, channels last, computed by `conv2d_valid`.

    Weights are `[kh, kw, in, out]`, initialised uniform in +-1/sqrt(fan_in)
    (weight and bias); `implementation` ("auto" resolved at construction, by
    `jax.default_backend()`) is a static field, so the parameters are the same
    arrays whatever the implementation and can be moved between them.
    Accepts one example `[h, w, in]` or a batch `[..., h, w, in]`.

    ```python
    >>> conv = Conv2d(1, 8, 3, key=jax.random.key(0))
    >>> conv.implementation in CONV_IMPLEMENTATIONS, conv(jnp.zeros((4, 28, 28, 1))).shape
    (True, (4, 26, 26, 8))
    ```
    """

    weight: Float[Array, "kh kw cin cout"]
    bias: Float[Array, " cout"]
    implementation: str = eqx.field(static=True)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        implementation: ConvImplementation = "auto",
        key: PRNGKeyArray,
    ):
        wkey, bkey = jax.random.split(key)
        fan_in = in_channels * kernel_size * kernel_size
        lim = 1.0 / jnp.sqrt(fan_in)
        self.weight = jax.random.uniform(wkey, (kernel_size, kernel_size, in_channels, out_channels), minval=-lim, maxval=lim)
        self.bias = jax.random.uniform(bkey, (out_channels,), minval=-lim, maxval=lim)
        self.implementation = _resolve_conv_implementation(implementation)

    def __call__(self, x: Float[Array, "*batch h w cin"]) -> Float[Array, "*batch h2 w2 cout"]:
        return conv2d_valid(x, self.weight, self.implementation) + self.bias


def Conv2dIm2col(in_channels: int, out_channels: int, kernel_size: int, *, key: PRNGKeyArray) -> Conv2d:
    """`Conv2d(..., implementation="im2col")` (kept for backward compatibility).

    ```python
    >>> Conv2dIm2col(2, 3, 3, key=jax.random.key(0)).implementation
    'im2col'
    ```
    """
    return Conv2d(in_channels, out_channels, kernel_size, implementation="im2col", key=key)


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
