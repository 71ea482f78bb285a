"""Hand-written FedAvg rounds in plain JAX + optax: what fedcore is measured against.

Both baselines train the same models (written out below as plain functions
of a params dict, with the FLOPs of `fedcore.learning.models`), on the same
batches (`.repeat(epochs).batch(batch_size)` of each client's examples), with
the same client and server optimizers, and compute the same metrics (loss
and accuracy sums, example counts):

- `LoopRound` (a): a Python loop over the round's clients calling one jitted
  client update (a `lax.scan` over the client's batches), then a jitted
  weighted mean. What most JAX users write first: the batches cut on the
  host each round (`data="host"`, one compile per distinct batch count); or
  (a') a stronger variant with every client's examples kept on the device
  and batches gathered by index inside the scan (`data="device"`).
- `VmapRound` (b): one jitted function that vmaps the client update over the
  round's clients, padded to the round's largest batch count, and averages
  (DrJAX-style). The best a careful user writes by hand: examples on the
  device once, each round only the padded index tables; one compile per
  distinct round maximum.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fedcore.learning import models

__all__ = ["linear_apply", "cnn_apply", "params_as_dict", "ClientTables", "LoopRound", "VmapRound"]


# ----------------------------------------------------------------------------- models


def linear_apply(p: dict[str, jax.Array], x: jax.Array) -> jax.Array:
    """Softmax regression logits, `x: [batch, 784]`."""
    return x @ p["w"].T + p["b"]


def _conv(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    """'valid' 3x3 convolution of `x: [batch, h, w, cin]`, by the same algorithm as fedcore's `models.cnn()`.

    `conv2d_valid(..., "auto")` is what `cnn()` resolves to on this backend
    (on CPU `lax.conv` with a channels-last custom backward), so the
    baselines and fedcore compare round mechanics, not convolution algorithms.
    """
    return models.conv2d_valid(x, w, "auto") + b


def cnn_apply(p: dict[str, jax.Array], x: jax.Array) -> jax.Array:
    """Conv32-Conv64 (3x3) - MaxPool2 - Dense128 - Dense10 logits, `x: [batch, 784]`."""
    x = x.reshape(-1, 28, 28, 1)
    x = jax.nn.relu(_conv(x, p["c1w"], p["c1b"]))
    x = jax.nn.relu(_conv(x, p["c2w"], p["c2b"]))
    n, h, w, c = x.shape
    x = x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4)).reshape(n, -1)
    x = jax.nn.relu(x @ p["d1w"].T + p["d1b"])
    return x @ p["d2w"].T + p["d2b"]


def params_as_dict(params: Any) -> dict[str, jax.Array]:
    """fedcore's initial parameters of `models.linear()` / `models.cnn()` as a plain dict (same values)."""
    if hasattr(params, "conv1"):
        return {
            "c1w": params.conv1.weight, "c1b": params.conv1.bias,
            "c2w": params.conv2.weight, "c2b": params.conv2.bias,
            "d1w": params.dense1.weight, "d1b": params.dense1.bias,
            "d2w": params.dense2.weight, "d2b": params.dense2.bias,
        }  # fmt: skip
    return {"w": params.weight, "b": params.bias}


# ----------------------------------------------------------------------------- one client


def make_client_update(apply: Callable, optimizer: optax.GradientTransformation) -> Callable:
    """`update(params, x, y, index, mask) -> (delta, num_examples, loss_sum, correct)` for ONE client.

    `x, y`: the examples the index points into; `index, mask: [steps, batch]`.
    Steps whose mask is empty change nothing.
    """

    def loss_fn(p, xb, yb, m):
        logits = apply(p, xb)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, yb)
        m = m.astype(jnp.float32)
        return jnp.sum(losses * m) / jnp.maximum(jnp.sum(m), 1.0), (losses, logits)

    def update(params, x, y, index, mask):
        def step(carry, s):
            p, opt_state, loss_sum, correct = carry
            rows, m = index[s], mask[s]
            (_, (losses, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, x[rows], y[rows], m)
            updates, new_opt_state = optimizer.update(grads, opt_state, p)
            new_p = optax.apply_updates(p, updates)
            keep = jnp.any(m)
            p, opt_state = jax.tree.map(lambda a, b: jnp.where(keep, a, b), (new_p, new_opt_state), (p, opt_state))
            mf = m.astype(jnp.float32)
            hits = (jnp.argmax(logits, -1) == y[rows]).astype(jnp.float32)
            return (p, opt_state, loss_sum + jnp.sum(losses * mf), correct + jnp.sum(hits * mf)), None

        init = (params, optimizer.init(params), jnp.float32(0), jnp.float32(0))
        (p, _, loss_sum, correct), _ = jax.lax.scan(step, init, jnp.arange(index.shape[0]))
        delta = jax.tree.map(jnp.subtract, p, params)
        return delta, jnp.sum(mask).astype(jnp.float32), loss_sum, correct

    return update


# ----------------------------------------------------------------------------- client data


class ClientTables:
    """Every client's examples (on device, once) and batch index tables (`repeat(epochs).batch(batch_size)`)."""

    def __init__(self, clients: Sequence[dict[str, np.ndarray]], batch_size: int, epochs: int):
        self.batch_size = batch_size
        self.sizes = np.array([len(c["y"]) for c in clients])
        self.steps = -(-self.sizes * epochs // batch_size)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]])
        self.host_x = [c["x"] for c in clients]
        self.host_y = [c["y"] for c in clients]
        self.x = [jax.device_put(c["x"]) for c in clients]
        self.y = [jax.device_put(c["y"]) for c in clients]
        self.pool_x = jax.device_put(np.concatenate([c["x"] for c in clients]))
        self.pool_y = jax.device_put(np.concatenate([c["y"] for c in clients]))
        self.local_index, self.local_mask = [], []
        for n, s in zip(self.sizes, self.steps):
            visits = np.tile(np.arange(n), epochs)
            index = np.zeros(s * batch_size, np.int32)
            mask = np.zeros(s * batch_size, bool)
            index[: visits.size], mask[: visits.size] = visits, True
            self.local_index.append(index.reshape(s, batch_size))
            self.local_mask.append(mask.reshape(s, batch_size))
        self.device_index = [jax.device_put(i) for i in self.local_index]
        self.device_mask = [jax.device_put(m) for m in self.local_mask]

    def padded(self, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """The clients' index tables into the pooled examples, padded to their largest step count."""
        s_max = int(self.steps[ids].max())
        index = np.zeros((len(ids), s_max, self.batch_size), np.int32)
        mask = np.zeros((len(ids), s_max, self.batch_size), bool)
        for k, i in enumerate(ids):
            s = self.steps[i]
            index[k, :s] = self.local_index[i] + self.offsets[i]
            index[k, s:] = self.offsets[i]
            mask[k, :s] = self.local_mask[i]
        return index, mask


# ----------------------------------------------------------------------------- rounds


def _server_update(params, delta_sum, weight_sum):
    return jax.tree.map(lambda p, d: p + d / weight_sum, params, delta_sum)  # server SGD(1.0)


class LoopRound:
    """(a) A Python loop over clients calling a jitted client update; the weighted mean accumulates on device.

    `data="host"`: each round, every client's batches are cut on the host
    (numpy, `repeat(epochs).batch(batch_size)`) and sent to the device, as
    a tf.data-style input pipeline does; one compile per distinct batch
    count. `data="device"`: every client's examples and index table were put
    on the device once and each step gathers its batch by index (the data
    access of fedcore's populations); one compile per distinct
    (examples, batches) shape.
    """

    def __init__(self, apply: Callable, optimizer: optax.GradientTransformation, tables: ClientTables, data: str = "device"):
        if data not in ("host", "device"):
            raise ValueError(f"data must be 'host' or 'device', got {data!r}")
        self.tables, self.data = tables, data
        self._arange = {}
        self.client_update = jax.jit(make_client_update(apply, optimizer))
        self.accumulate = jax.jit(
            lambda acc, delta, w, loss, correct: (
                jax.tree.map(lambda a, d: a + w * d, acc[0], delta),
                acc[1] + w,
                acc[2] + loss,
                acc[3] + correct,
            )
        )
        self.finish = jax.jit(lambda params, acc: (_server_update(params, acc[0], acc[1]), acc[2] / acc[1], acc[3] / acc[1]))

    def __call__(self, params, ids):
        t = self.tables
        acc = (jax.tree.map(jnp.zeros_like, params), jnp.float32(0), jnp.float32(0), jnp.float32(0))
        for i in ids:
            if self.data == "host":
                rows = t.local_index[i].reshape(-1)
                steps = int(t.steps[i])
                if steps not in self._arange:
                    self._arange[steps] = jax.device_put(np.arange(steps * t.batch_size, dtype=np.int32).reshape(steps, -1))
                x, y = jax.device_put(t.host_x[i][rows]), jax.device_put(t.host_y[i][rows])
                index, mask = self._arange[steps], jax.device_put(t.local_mask[i])
            else:
                x, y, index, mask = t.x[i], t.y[i], t.device_index[i], t.device_mask[i]
            delta, w, loss, correct = self.client_update(params, x, y, index, mask)
            acc = self.accumulate(acc, delta, w, loss, correct)
        new_params, loss, accuracy = self.finish(params, acc)
        return new_params, {"loss": loss, "accuracy": accuracy}


class VmapRound:
    """(b) One jitted round: the client update vmapped over clients padded to the round's max, then averaged."""

    def __init__(self, apply: Callable, optimizer: optax.GradientTransformation, tables: ClientTables):
        self.tables = tables
        client_update = make_client_update(apply, optimizer)

        @jax.jit
        def round_fn(params, pool_x, pool_y, index, mask):
            delta, w, loss, correct = jax.vmap(client_update, in_axes=(None, None, None, 0, 0))(
                params, pool_x, pool_y, index, mask
            )
            delta_sum = jax.tree.map(lambda d: jnp.tensordot(w, d, axes=1), delta)
            total = jnp.sum(w)
            return _server_update(params, delta_sum, total), {"loss": loss.sum() / total, "accuracy": correct.sum() / total}

        self.round_fn = round_fn

    def __call__(self, params, ids):
        index, mask = self.tables.padded(ids)
        return self.round_fn(params, self.tables.pool_x, self.tables.pool_y, index, mask)
