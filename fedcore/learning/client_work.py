"""Client work: what one client does with its batches, as pure functions.

These functions see ONE client (`data: [examples, ...]`, `index, mask:
[steps, batch]`, a slice of `fedcore.data.ClientBatches`); algorithms map
them over the clients with `map_clients`. Each batch is gathered by index
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

import fedcore.core as fc

from ..core.batches import ClientBatches, ClientPopulation, Cohort, num_real_steps
from . import metrics as _metrics
from .models import Model

__all__ = [
    "LocalResult",
    "local_training",
    "local_evaluation",
    "local_gradient",
    "batch_at",
    "map_clients",
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

    Scans the padded steps in blocks of `block`; a `lax.cond` skips every block
    (and then every step) past the client's last batch. Skipped work costs
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

    def one_block(carry, first):
        run = lambda c: jax.lax.scan(one_step, c, first + jnp.arange(block))[0]  # noqa: E731
        return jax.lax.cond(first < last, run, skip, carry), None

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


def default_group_size(num_clients: int, backend: str | None = None) -> int:
    """How many clients `map_clients` runs side by side (vmapped) under the default `vmap` strategy.

    On CPU, 1: clients run one after another inside the jitted round, as
    measured fastest there (XLA:CPU gains nothing from batching small
    per-client models, see docs/performance.md). On accelerators, about an
    eighth of the round: 8 groups of similar step counts, each group vmapped.

    ```python
    >>> default_group_size(50, "cpu"), default_group_size(50, "gpu"), default_group_size(3, "gpu")
    (1, 7, 1)
    ```
    """
    backend = backend or jax.default_backend()
    return 1 if backend == "cpu" else max(1, -(-num_clients // 8))


def _is_client_data(x: Any) -> bool:
    return isinstance(x, Cohort) or (fc.is_placed(x) and isinstance(x.value, ClientBatches))


def _take(x: fc.FederatedValue, positions: Array) -> fc.FederatedValue:
    """The clients `positions` of a per-client value, in that order."""
    return fc.clients_value(jax.tree.map(lambda a: a[positions], x.value))


def map_clients(fn: Callable[..., PyTree], *args: Any) -> fc.FederatedValue:
    """`fc.map(fn, *args)` where one argument is the round's client data; `fn` sees one client's batches.

    The client data is `{ClientBatches}@CLIENTS` or a placed `Cohort` (a
    population's selected clients, gathered by id from the device-resident
    store: no client data is copied). Under the default `vmap` strategy the
    clients run in groups of `group_size` (the cohort's, else
    `default_group_size`): one `lax.scan` over the groups, each group
    vmapped. Clients are sorted by step count first, so a group's loop runs
    as long as its own largest client, never the round's largest; with
    groups of one client nothing is padded. Results come back in the
    clients' order. Other strategies map all clients as they do for `fc.map`.

    ```python
    >>> # out = map_clients(client_update, fc.broadcast(params), client_data)
    ```
    """
    positions = [i for i, a in enumerate(args) if _is_client_data(a)]
    if len(positions) != 1:
        raise TypeError(
            "map_clients needs exactly one client-data argument ({ClientBatches}@CLIENTS or a placed Cohort), "
            f"got {len(positions)}."
        )
    (pos,) = positions
    data, before, after = args[pos], args[:pos], args[pos + 1 :]
    grouped = type(fc.current_strategy()) is fc.VmapStrategy
    if isinstance(data, Cohort):
        population, ids, group_size = data.population, data.ids, data.group_size
    elif grouped:
        population = fc.clients_value(ClientPopulation.from_batches(data.value), all_equal=True)
        ids, group_size = fc.clients_value(jnp.arange(data.num_clients, dtype=jnp.int32)), None
    else:
        return fc.map(fn, *args)

    def on_client(*xs: Any, step_bound: Array | None = None) -> PyTree:
        return fn(*xs[:pos], xs[pos].client(xs[pos + 1], step_bound), *xs[pos + 2 :])

    def bounded(*xs: Any) -> PyTree:  # the last argument is the step bound
        return on_client(*xs[:-1], step_bound=xs[-1])

    everyone = [*before, population, ids, *after]
    steps = jax.vmap(lambda i: num_real_steps(population.value.mask[i]))(ids.value)
    if not grouped:
        # One bound for the whole cohort: a strategy that vmaps chunks of it stops there.
        return fc.map(bounded, *everyone, fc.clients_value(jnp.max(steps), all_equal=True))
    per_client = [fc.is_placed(x) and x.per_client for x in everyone]
    num_clients = ids.num_clients
    if any(x.num_clients != num_clients for x, pc in zip(everyone, per_client) if pc):
        detail = ", ".join(f"{x.type} with {x.num_clients} clients" for x, pc in zip(everyone, per_client) if pc)
        raise ValueError(f"map_clients: per-client arguments disagree on the number of clients: {detail}.")
    width = min(group_size or default_group_size(num_clients), num_clients)
    num_groups = -(-num_clients // width)
    # One client at a time: nothing is padded, no need to sort.
    order = jnp.arange(num_clients) if width == 1 else jnp.argsort(steps, stable=True)
    # Groups of `width` clients, smallest first; the first group repeats the smallest client as padding.
    padding = num_groups * width - num_clients
    groups = order[jnp.maximum(jnp.arange(num_groups * width) - padding, 0)].reshape(num_groups, width)

    def run_group(carry: None, members: Array) -> tuple[None, PyTree]:
        group = [_take(x, members) if pc else x for x, pc in zip(everyone, per_client)]
        # The group's largest step count, one value for all its clients (unbatched under
        # vmap): their step loops skip the steps past it with a real `lax.cond` (a cond on
        # a per-client value would become a select, computing every padded step).
        bound = fc.clients_value(jnp.max(steps[members]), all_equal=True)
        return None, fc.map(bounded, *group, bound).value

    _, stacked = jax.lax.scan(run_group, None, groups)
    by_rank = jax.tree.map(lambda a: a.reshape(num_groups * width, *a.shape[2:])[padding:], stacked)
    if width == 1:
        return fc.clients_value(by_rank)
    return _take(fc.clients_value(by_rank), jnp.argsort(order))  # back to the clients' order
