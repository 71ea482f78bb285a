"""Client work: what one client does with its batches, as pure functions.

These functions see ONE client (`data: [examples, ...]`, `index, mask:
[steps, batch]`, a slice of `fedcore.data.ClientBatches`); algorithms `fc.map`
them over the clients. Steps are scanned by index and each batch is gathered
from the client's examples, so no per-step copy of the data is made.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, Int, PyTree

from . import metrics as _metrics
from .models import Model

__all__ = ["LocalResult", "local_training", "local_evaluation", "local_gradient", "batch_at"]


class LocalResult(NamedTuple):
    """What local training returns: final params, metric states (sums), examples seen, steps taken."""

    params: PyTree
    metric_states: dict[str, Any]
    num_examples: Float[Array, ""]
    num_steps: Int[Array, ""]


def batch_at(client: Any, step: Int[Array, ""]) -> tuple[dict[str, Array], Array]:
    """Batch `step` of one client's `ClientBatches` slice: `(batch dict, mask)`."""
    rows = client.index[step]
    return {k: v[rows] for k, v in client.data.items()}, client.mask[step]


def _tree_where(pred: Array, new: PyTree, old: PyTree) -> PyTree:
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), new, old)


def local_training(
    model: Model,
    optimizer: optax.GradientTransformation,
    params: PyTree,
    client: Any,
    *,
    extra_loss: Callable[[PyTree], Array] | None = None,
    grad_correction: PyTree | None = None,
) -> LocalResult:
    """Runs `optimizer` over one client's batches, one step per non-empty batch.

    Metrics see each batch evaluated with the weights *before* its step (as
    TFF reports them). Empty (padding) steps change nothing. `extra_loss(params)`
    is added to every batch's loss (FedProx's proximal term);
    `grad_correction` is added to every gradient (SCAFFOLD's `c - c_i`).
    The optimizer state starts fresh, as TFF re-initialises it each round.
    """

    def loss_fn(p, batch, mask):
        loss, out = model.batch_outputs(p, batch, mask)
        total = loss if extra_loss is None else loss + extra_loss(p)
        return total, out

    def step(carry, s):
        p, opt_state, states = carry
        batch, mask = batch_at(client, s)
        (_, out), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, batch, mask)
        if grad_correction is not None:
            grads = jax.tree.map(jnp.add, grads, grad_correction)
        updates, new_opt_state = optimizer.update(grads, opt_state, p)
        new_p = optax.apply_updates(p, updates)
        nonempty = jnp.any(mask)
        p, opt_state = _tree_where(nonempty, (new_p, new_opt_state), (p, opt_state))
        return (p, opt_state, _metrics.update_all(model.metrics, states, out)), nonempty

    init = (params, optimizer.init(params), _metrics.init_all(model.metrics))
    (p, _, states), nonempty = jax.lax.scan(step, init, jnp.arange(client.index.shape[0]))
    return LocalResult(p, states, jnp.sum(client.mask).astype(jnp.float32), jnp.sum(nonempty).astype(jnp.int32))


def local_evaluation(model: Model, params: PyTree, client: Any) -> dict[str, Any]:
    """Metric states (sums) of `params` on every batch of one client."""

    def step(states, s):
        batch, mask = batch_at(client, s)
        _, out = model.batch_outputs(params, batch, mask)
        return _metrics.update_all(model.metrics, states, out), None

    states, _ = jax.lax.scan(step, _metrics.init_all(model.metrics), jnp.arange(client.index.shape[0]))
    return states


def local_gradient(model: Model, params: PyTree, client: Any) -> tuple[PyTree, dict[str, Any], Float[Array, ""]]:
    """The gradient of the client's example-mean loss at `params` (all batches), its metric states and example count."""

    def step(carry, s):
        grad_sum, states = carry
        batch, mask = batch_at(client, s)
        (_, out), grads = jax.value_and_grad(model.batch_outputs, has_aux=True)(params, batch, mask)
        count = jnp.sum(mask).astype(jnp.float32)
        grad_sum = jax.tree.map(lambda acc, g: acc + g * count, grad_sum, grads)
        return (grad_sum, _metrics.update_all(model.metrics, states, out)), None

    zeros = jax.tree.map(jnp.zeros_like, params)
    (grad_sum, states), _ = jax.lax.scan(step, (zeros, _metrics.init_all(model.metrics)), jnp.arange(client.index.shape[0]))
    n = jnp.sum(client.mask).astype(jnp.float32)
    return jax.tree.map(lambda g: g / jnp.maximum(n, 1.0), grad_sum), states, n
