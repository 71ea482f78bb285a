"""`fc.map` over client data: clients grouped by how many steps they run.

When one argument of `fc.map` is client data, either per-client
`ClientBatches` (`{ClientBatches}@CLIENTS`) or a `Cohort` (clients selected
by id from a device-resident `ClientPopulation`), the mapped function sees one
client's `ClientBatches` and the execution strategy decides how the clients
run:

- the default `vmap` strategy runs them in groups (`map_in_groups`)
  of `group_size`: one `lax.scan` over the groups, each group vmapped. With
  groups of more than one client, the clients are sorted by step count first,
  so a group runs as long as its own largest client, never the round's
  largest. Results come back in the clients' order.
- the other built-in strategies map all clients as they map any function
  (`map_by_steps`); the clients
  it vmaps together (a chunk under `chunked`, all of them under `sharded`)
  share the largest step count among them (`jax.lax.pmax` over
  `CLIENTS_AXIS`), and a client run alone (`loop`) gets its own. The
  chunked strategy takes the clients in order of step count, so each chunk
  holds clients of similar sizes.

Which of the two runs is each strategy's own choice, made in its
`ExecutionStrategy.map_client_data`.

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
from ._placements import CLIENTS_AXIS
from ._values import clients_value, is_placed

__all__ = ["default_group_size", "is_client_data", "place_cohort", "cohort_values", "map_by_steps", "map_in_groups"]


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


def _on_client(fn: Callable[..., PyTree], pos: int, width: int, client: Callable[..., Any]) -> Callable[..., PyTree]:
    def on_client(*xs: Any) -> PyTree:  # the last argument is the step bound
        *xs, bound = xs
        return fn(*xs[:pos], client(*xs[pos : pos + width], bound), *xs[pos + width :])

    return on_client


def map_by_steps(
    map_in_order: Callable[..., PyTree],
    fn: Callable[..., PyTree],
    values: Sequence[Any],
    in_axes: Sequence[int | None],
    pos: int,
    num_clients: int,
    *,
    shared_bound: bool,
) -> PyTree:
    """Maps every client at once, each bounded by its own step count; for strategies that do not group.

    `map_in_order(fn, args, in_axes, num_clients, order)` is the strategy's
    map, told that running the clients in `order` (sorted by step count) is
    cheaper; it returns the results in the clients' own order. With
    `shared_bound`, the strategy vmaps over `CLIENTS_AXIS` and the clients run
    together share the largest step count among them (`jax.lax.pmax`), one
    unbatched value, so their step loops stop there.
    """
    values, in_axes, client, width, steps, _ = _expand(values, in_axes, pos)
    on_client = _on_client(fn, pos, width, client)

    def with_own_steps(*xs: Any) -> PyTree:
        *xs, own = xs
        return on_client(*xs, jax.lax.pmax(own, CLIENTS_AXIS) if shared_bound else own)

    order = jnp.argsort(steps, stable=True)
    return map_in_order(with_own_steps, [*values, steps], [*in_axes, 0], num_clients, order)


def map_in_groups(
    map_group: Callable[..., PyTree],
    fn: Callable[..., PyTree],
    values: Sequence[Any],
    in_axes: Sequence[int | None],
    pos: int,
    num_clients: int,
) -> PyTree:
    """Maps the clients in groups of similar step counts: one `lax.scan` over groups, each `map_group`ped.

    `map_group(fn, args, in_axes, size)` is the strategy's map (the `vmap`
    strategy's). Returns the results stacked in the clients' order.
    """
    values, in_axes, client, width, steps, group_size = _expand(values, in_axes, pos)
    on_client = _on_client(fn, pos, width, client)
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
        return None, map_group(on_client, [*group, bound], [*in_axes, None], size)

    _, stacked = jax.lax.scan(run_group, None, groups)
    by_rank = jax.tree.map(lambda a: a.reshape(num_groups * size, *a.shape[2:])[padding:], stacked)
    if size == 1:
        return by_rank
    return jax.tree.map(lambda a: a[jnp.argsort(order)], by_rank)  # back to the clients' order


def cohort_values(cohort: Cohort) -> Cohort:
    """The cohort with its fields unplaced (what the strategies' `map_client_data` takes)."""
    unplaced = lambda x: x.value if is_placed(x) else x  # noqa: E731
    return Cohort(unplaced(cohort.population), unplaced(cohort.ids), cohort.group_size)
