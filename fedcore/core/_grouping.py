"""`fc.map` over client data: clients grouped by how many steps they run.

When one argument of `fc.map` is client data, either per-client
`ClientBatches` (`{ClientBatches}@CLIENTS`) or a `Cohort` (clients selected
by id from a device-resident `ClientPopulation`), the mapped function sees one
client's `ClientBatches` and the execution strategy decides how the clients
run:

- strategies with `groups_clients` (the default `vmap`) run them in groups
  of `group_size`: one `lax.scan` over the groups, each group vmapped. With
  groups of more than one client, the clients are sorted by step count first,
  so a group runs as long as its own largest client, never the round's
  largest. Results come back in the clients' order.
- every other strategy maps all clients as it maps any function; the clients
  it vmaps together (a chunk under `chunked`, all of them under `sharded`)
  share the largest step count among them (`jax.lax.pmax` over
  `CLIENTS_AXIS`), and a client run alone (`loop`) gets its own. The
  chunked strategy takes the clients in order of step count
  (`ExecutionStrategy.map_in_order`), so each chunk holds clients of similar
  sizes.

Either way each client's batches carry a `step_bound`, one unbatched value
shared by the clients vmapped together (their largest step count), so a step
loop written with `fedcore.learning._client_work` skips the padded steps past
it with a real `lax.cond` even under `vmap` (a cond on a per-client value
would become a select that computes every padded step).

A `Cohort`'s clients see the population's shared store (`data` holds every
client's examples; their `index` rows say which are theirs); per-client
`ClientBatches` are handed over as they are, each client its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, PyTree

from ._batches import ClientBatches, Cohort, num_real_steps
from ._execution import CLIENTS_AXIS, ExecutionStrategy
from ._values import clients_value, is_placed

__all__ = ["default_group_size", "is_client_data", "place_cohort", "cohort_values", "map_client_data"]


def default_group_size(num_clients: int, backend: str | None = None) -> int:
    """How many clients the `vmap` strategy runs side by side (vmapped) when mapping over client data.

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


def is_client_data(x: Any) -> bool:
    """Whether `x` is client data for `fc.map`: a `Cohort` or per-client `{ClientBatches}@CLIENTS`."""
    return isinstance(x, Cohort) or (is_placed(x) and x.per_client and isinstance(x.value, ClientBatches))


def place_cohort(cohort: Cohort) -> Cohort:
    """The cohort with its population all-equal at CLIENTS and its ids `{i32}@CLIENTS` (placed once)."""
    if is_placed(cohort.population) and is_placed(cohort.ids):
        return cohort
    raw = cohort_values(cohort)
    return Cohort(clients_value(raw.population, all_equal=True), clients_value(raw.ids), cohort.group_size)


def _expand(values: Sequence[Any], in_axes: Sequence[int | None], pos: int):
    """Replaces the client data at `pos` by its parts; returns them with `client(*parts, bound)` and step counts."""
    data = values[pos]
    if isinstance(data, Cohort):
        population, ids = data.population, data.ids
        parts, axes = [population, ids], [None, 0]
        steps = jax.vmap(lambda i: num_real_steps(population.mask[i]))(ids)
        group_size = data.group_size

        def client(pop, i, bound):
            return pop.client(i, bound)
    else:
        parts, axes = [data], [0]
        steps = jax.vmap(num_real_steps)(data.mask)
        group_size = None

        def client(batches, bound):
            return ClientBatches(batches.data, batches.index, batches.mask, bound)

    width = len(parts)
    values = [*values[:pos], *parts, *values[pos + 1 :]]
    in_axes = [*in_axes[:pos], *axes, *in_axes[pos + 1 :]]
    return values, in_axes, client, width, steps, group_size


def map_client_data(
    fn: Callable[..., PyTree],
    values: Sequence[Any],
    in_axes: Sequence[int | None],
    pos: int,
    num_clients: int,
    strategy: ExecutionStrategy,
) -> PyTree:
    """Runs `fn` on every client, `values[pos]` being the client data (a `Cohort` of raw arrays or stacked `ClientBatches`).

    `values` are the arguments' unplaced values, `in_axes` 0 for per-client
    ones and None for all-equal ones. Returns the per-client results stacked
    in the clients' order. This is what `fc.map` does with client data; call
    `fc.map` instead.
    """
    values, in_axes, client, width, steps, group_size = _expand(values, in_axes, pos)

    def on_client(*xs: Any) -> PyTree:  # the last argument is the step bound
        *xs, bound = xs
        return fn(*xs[:pos], client(*xs[pos : pos + width], bound), *xs[pos + width :])

    if not strategy.groups_clients:
        # Each client gets its own step count; under a vmap over CLIENTS_AXIS (all
        # clients, or a chunk of them) the bound is the largest among the clients
        # run together, one unbatched value, so their step loops stop there.
        def with_own_steps(*xs: Any) -> PyTree:
            *xs, own = xs
            return on_client(*xs, jax.lax.pmax(own, CLIENTS_AXIS) if strategy.names_clients_axis else own)

        # Clients of similar step counts together: a chunk runs about as long as each of its clients.
        order = jnp.argsort(steps, stable=True)
        return strategy.map_in_order(with_own_steps, [*values, steps], [*in_axes, 0], num_clients, order)

    size = min(group_size or default_group_size(num_clients), num_clients)
    num_groups = -(-num_clients // size)
    # One client at a time: nothing is padded, no need to sort.
    order = jnp.arange(num_clients) if size == 1 else jnp.argsort(steps, stable=True)
    # Groups of `size` clients, smallest first; the first group repeats the smallest client as padding.
    padding = num_groups * size - num_clients
    groups = order[jnp.maximum(jnp.arange(num_groups * size) - padding, 0)].reshape(num_groups, size)

    def run_group(carry: None, members: Array) -> tuple[None, PyTree]:
        group = [jax.tree.map(lambda a: a[members], v) if axis == 0 else v for v, axis in zip(values, in_axes)]
        bound = jnp.max(steps[members])
        return None, strategy.map(on_client, [*group, bound], [*in_axes, None], size)

    _, stacked = jax.lax.scan(run_group, None, groups)
    by_rank = jax.tree.map(lambda a: a.reshape(num_groups * size, *a.shape[2:])[padding:], stacked)
    if size == 1:
        return by_rank
    return jax.tree.map(lambda a: a[jnp.argsort(order)], by_rank)  # back to the clients' order


def cohort_values(cohort: Cohort) -> Cohort:
    """The cohort with its fields unplaced (what `map_client_data` takes)."""
    unplaced = lambda x: x.value if is_placed(x) else x  # noqa: E731
    return Cohort(unplaced(cohort.population), unplaced(cohort.ids), cohort.group_size)
