"""Client work: what one client does with its batches, as pure functions.

These functions see ONE client (`data: [examples, ...]`, `index, mask:
[steps, batch]`, a slice of `fedcore.data.ClientBatches`); algorithms map
them over the clients with `fc.map`, which groups clients by step count
(`fedcore.core._grouping`). Each batch is gathered by index
from the client's examples inside the loop, so the data is never copied, and
the loop stops after the client's last non-empty batch: padding steps cost
nothing, even when clients with fewer steps are vmapped with larger ones
(the vmapped loop runs as long as its largest client).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, Int, PyTree

from ..core._batches import num_real_steps
from ..core._grouping import default_group_size
from . import metrics as _metrics
from .models import Model

__all__ = [
    "LocalResult",
    "local_training",
    "local_evaluation",
    "local_gradient",
    "batch_at",
    "default_group_size",
]


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


def _run_real_steps(
    step: Callable[..., Any],
    init: Any,
    mask: Array,
    block: int = 8,
    bound: Array | None = None,
    work: Callable[[Array, Any], Any] | None = None,
) -> Any:
    """`carry = step(s, carry)` for the client's real steps (up to its last non-empty batch).

    Scans the padded steps in blocks of `block`; per block, a `lax.switch`
    runs it whole (it ends before the client's last batch), skips it (it
    starts after), or runs it with a `lax.cond` per step (the block holding
    the last batch): only that block pays for per-step conditionals (~5% of
    a small model's step on CPU). Skipped work costs
    nothing when clients run one after another (a select when vmapped, unless
    `bound` is given), and,
    unlike a loop with a dynamic trip count, this stays reverse-mode
    differentiable (`jax.grad` through rounds). `bound`, if given, is shared
    by every client vmapped together (their largest step count): blocks past
    it are skipped by a real `lax.cond` even when vmapped.

    With `work(s, carry) -> aux`, each step is `carry = step(s, carry, aux)`
    and only `work` (the expensive, carry-free part, e.g. a gradient) sits in
    the step's `lax.cond`, zeros when skipped (`step` must then change
    nothing, as for an empty batch): XLA copies a conditional's carried
    buffers, which for a large model cost ~10% of a step.
    """
    num_steps = mask.shape[0]
    num_real = num_real_steps(mask)
    block = block if num_steps % block == 0 else 1
    skip = lambda c: c  # noqa: E731

    # With a shared `bound`, steps between a client's last batch and the bound run
    # on all-empty batches, which change nothing; the conds stay real under vmap.
    last = num_real if bound is None else bound

    def one_step(carry, s):
        if work is None:
            return jax.lax.cond(s < last, lambda c: step(s, c), skip, carry), None
        shapes = jax.eval_shape(work, s, carry)
        nothing = lambda: jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), shapes)  # noqa: E731
        return step(s, carry, jax.lax.cond(s < last, lambda: work(s, carry), nothing)), None

    def every_step(carry, s):  # a block that ends before `last`: no step to skip
        return (step(s, carry) if work is None else step(s, carry, work(s, carry))), None

    def one_block(carry, first):
        steps = first + jnp.arange(block)
        full = lambda c: jax.lax.scan(every_step, c, steps)[0]  # noqa: E731
        partial = lambda c: jax.lax.scan(one_step, c, steps)[0]  # noqa: E731
        if block == 1:
            return jax.lax.cond(first < last, full, skip, carry), None
        # 0: past `last` (skipped), 1: `last` falls inside (per-step conds), 2: whole block runs.
        branch = (first < last).astype(jnp.int32) + (first + block <= last).astype(jnp.int32)
        return jax.lax.switch(branch, [skip, partial, full], carry), None

    carry, _ = jax.lax.scan(one_block, init, jnp.arange(0, num_steps, block))
    return carry


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

    def gradient(s, carry):  # a skipped step gets zeros: an empty batch, which changes nothing
        batch, mask = batch_at(client, s)
        (_, out), grads = jax.value_and_grad(loss_fn, has_aux=True)(carry[0], batch, mask)
        return grads, out, mask

    def step(s, carry, work):
        p, opt_state, states, steps = carry
        grads, out, mask = work
        if grad_correction is not None:
            grads = jax.tree.map(jnp.add, grads, grad_correction)
        updates, new_opt_state = optimizer.update(grads, opt_state, p)
        new_p = optax.apply_updates(p, updates)
        nonempty = jnp.any(mask)
        p, opt_state = _tree_where(nonempty, (new_p, new_opt_state), (p, opt_state))
        return p, opt_state, _metrics.update_all(model.metrics, states, out), steps + nonempty.astype(jnp.int32)

    init = (params, optimizer.init(params), _metrics.init_all(model.metrics), jnp.int32(0))
    p, _, states, steps = _run_real_steps(step, init, client.mask, bound=client.step_bound, work=gradient)
    return LocalResult(p, states, jnp.sum(client.mask).astype(jnp.float32), steps)


def local_evaluation(model: Model, params: PyTree, client: Any) -> dict[str, Any]:
    """Metric states (sums) of `params` on every batch of one client."""

    def step(s, states):
        batch, mask = batch_at(client, s)
        _, out = model.batch_outputs(params, batch, mask)
        return _metrics.update_all(model.metrics, states, out)

    return _run_real_steps(step, _metrics.init_all(model.metrics), client.mask, bound=client.step_bound)


def local_gradient(model: Model, params: PyTree, client: Any) -> tuple[PyTree, dict[str, Any], Float[Array, ""]]:
    """The gradient of the client's example-mean loss at `params` (all batches), its metric states and example count."""

    def step(s, carry):
        grad_sum, states = carry
        batch, mask = batch_at(client, s)
        (_, out), grads = jax.value_and_grad(model.batch_outputs, has_aux=True)(params, batch, mask)
        count = jnp.sum(mask).astype(jnp.float32)
        grad_sum = jax.tree.map(lambda acc, g: acc + g * count, grad_sum, grads)
        return grad_sum, _metrics.update_all(model.metrics, states, out)

    zeros = jax.tree.map(jnp.zeros_like, params)
    init = (zeros, _metrics.init_all(model.metrics))
    grad_sum, states = _run_real_steps(step, init, client.mask, bound=client.step_bound)
    n = jnp.sum(client.mask).astype(jnp.float32)
    return jax.tree.map(lambda g: g / jnp.maximum(n, 1.0), grad_sum), states, n
