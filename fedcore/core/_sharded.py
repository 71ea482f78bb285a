"""Sharded execution: the clients axis is split over the devices of a mesh.

Under `fc.execution("sharded", mesh=...)`, per-client arguments and results
of `fc.map` are constrained to `NamedSharding(mesh, P(axis))` (their leading,
clients axis is partitioned over the mesh axis; all-equal arguments such as
a broadcast model are replicated). XLA's SPMD partitioner then runs each
device's clients on that device, and `fc.sum`/`fc.mean` over clients become a
local reduction plus one all-reduce across devices. When the number of
clients is not a multiple of the number of devices, XLA pads the clients
axis inside the program and masks the padding out of every reduction.

Every argument of a jitted computation gets an explicit layout before the
call (`place_arguments`): per-client arrays whose client count divides the
number of shards are split over the clients axis, every other array is
replicated, arrays already on the mesh's devices keep their layout. Without
it, XLA chose the inputs' layouts itself once a committed mesh array (the
previous round's state) was among them, and picked splits that cannot be
expressed for uneven cohorts (issue 12's `IndivisibleError` at round 2).
An uneven cohort's data is therefore held whole on every device: for cohorts
too large for that, choose a cohort size divisible by the device count.

Multi-host: start every process with `jax.distributed.initialize(...)`; the
mesh then spans every process's devices, and `ShardedStrategy.place_local_clients`
builds the global per-client arrays from each process's own clients.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec
from jaxtyping import PyTree

from ._execution import ExecutionStrategy, register_strategy
from ._grouping import map_by_steps
from ._placements import CLIENTS_AXIS
from ._values import FederatedValue, is_placed

__all__ = ["ShardedStrategy"]


def _automatic(mesh: Mesh) -> Mesh:
    """`mesh` with every axis in automatic (SPMD-partitioner) mode, as sharding constraints need."""
    if all(t == AxisType.Auto for t in mesh.axis_types):
        return mesh
    return Mesh(mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,) * len(mesh.axis_names))


class ShardedStrategy(ExecutionStrategy):
    """Partitions the clients over the devices of a `jax.sharding.Mesh`.

    `mesh` defaults to every device (of every process) on one axis named
    `"clients"`; `axis` names the mesh axis (or axes) the clients are split
    over, by default all of them. Results equal the `vmap` strategy's up to
    float rounding (the sum over clients is a tree of per-device sums).

    ```python
    >>> import fedcore as fc, jax, jax.numpy as jnp
    >>> mesh = jax.make_mesh((jax.device_count(),), ("clients",))
    >>> @fc.computation
    ... def mean_square(x):
    ...     return fc.mean(fc.map(lambda a: a * a, x))
    >>> with fc.execution("sharded", mesh=mesh):
    ...     print(float(mean_square(fc.clients_value(jnp.arange(5.0)))))
    6.0
    ```
    """

    name = "sharded"

    def __init__(self, mesh: Mesh | None = None, axis: str | Sequence[str] | None = None):
        if mesh is None:
            mesh = jax.make_mesh((jax.device_count(),), ("clients",), axis_types=(AxisType.Auto,))
        if not isinstance(mesh, Mesh):
            raise TypeError(f"sharded execution expects a jax.sharding.Mesh as mesh, got {type(mesh).__name__}.")
        names = tuple(mesh.axis_names) if axis is None else ((axis,) if isinstance(axis, str) else tuple(axis))
        unknown = [a for a in names if a not in mesh.axis_names]
        if unknown or not names:
            raise ValueError(
                f"sharded execution: axis {axis!r} is not an axis of the mesh; its axes are {tuple(mesh.axis_names)}."
            )
        self.mesh = _automatic(mesh)
        self.axis = names

    @property
    def clients_sharding(self) -> NamedSharding:
        """The sharding of a per-client array: leading axis split over `axis`, the rest replicated."""
        return NamedSharding(self.mesh, PartitionSpec(self.axis))

    @property
    def num_shards(self) -> int:
        """How many parts the clients axis is split into."""
        return int(np.prod([self.mesh.shape[a] for a in self.axis]))

    def _constrain(self, tree: PyTree) -> PyTree:
        sharding = self.clients_sharding

        def constrain(a: Any) -> Any:
            # Outside a computation (eager intrinsics), an uneven client count
            # cannot be laid out on the mesh: leave such a value where it is.
            if isinstance(a, jax.core.Tracer) or np.shape(a)[0] % self.num_shards == 0:
                return jax.lax.with_sharding_constraint(a, sharding)
            return a

        return jax.tree.map(constrain, tree)

    def map(self, fn, args, in_axes, num_clients):
        args = [self._constrain(a) if axis == 0 else a for a, axis in zip(args, in_axes)]
        return self._constrain(jax.vmap(fn, in_axes=tuple(in_axes), axis_name=CLIENTS_AXIS)(*args))

    def map_client_data(self, fn, args, in_axes, data_position, num_clients):
        # All clients vmapped at once: they share the largest step count among them.
        return map_by_steps(
            lambda f, a, ax, n, order: self.map(f, a, ax, n), fn, args, in_axes, data_position, num_clients,
            shared_bound=True,
        )

    def sum(self, x, *, as_float=False):
        return super().sum(self._constrain(x), as_float=as_float)

    def weighted_sum(self, x, weight):
        return super().weighted_sum(self._constrain(x), self._constrain(weight))

    def min(self, x):
        return super().min(self._constrain(x))

    def max(self, x):
        return super().max(self._constrain(x))

    def place_clients(self, x: PyTree) -> PyTree:
        """Puts a stacked per-client pytree on the mesh, clients split over `axis`.

        Optional (computations lay out their arguments), but placing data once
        saves a transfer every round. A client count that is not a multiple
        of `num_shards` cannot be split outside a computation: such data is
        replicated (and split inside each computation).
        """
        return jax.tree.map(lambda a: self._place_leaf(a, per_client=True), x)

    def _on_mesh(self, a: Any) -> bool:
        return isinstance(a, jax.Array) and a.committed and a.sharding.device_set == set(self.mesh.devices.flat)

    def _place_leaf(self, a: Any, per_client: bool) -> Any:
        if isinstance(a, jax.core.Tracer) or not hasattr(a, "shape") or self._on_mesh(a):
            return a
        if per_client and np.ndim(a) and np.shape(a)[0] % self.num_shards == 0:
            return jax.device_put(a, self.clients_sharding)
        return jax.device_put(a, NamedSharding(self.mesh, PartitionSpec()))

    def place_arguments(self, args: tuple[Any, ...]) -> tuple[Any, ...]:
        """Every placed argument laid out on the mesh: see the module's docstring.

        With several processes the arguments are left as they are: build them
        with `place_local_clients` and `place_replicated`.
        """
        if jax.process_count() > 1:
            return args

        def place(v: Any) -> Any:
            if not is_placed(v):
                return v
            value = jax.tree.map(lambda a: self._place_leaf(a, v.per_client), v.value)
            return FederatedValue(value, v.placement, v.all_equal)

        return jax.tree.map(place, args, is_leaf=is_placed)

    def place_local_clients(self, local: PyTree) -> PyTree:
        """Multi-host: the global per-client pytree made of every process's own clients.

        Each process passes its clients (leading axis); the result holds all
        of them, ordered by process index, split over the mesh. Every process
        must pass the same number of clients, a multiple of its number of
        devices on the mesh.

        ```python
        >>> import fedcore as fc, jax, jax.numpy as jnp
        >>> s = fc.ShardedStrategy()
        >>> s.place_local_clients(jnp.zeros((jax.local_device_count(), 3))).shape[0] == jax.device_count()
        True
        ```
        """
        sharding = self.clients_sharding
        return jax.tree.map(lambda a: jax.make_array_from_process_local_data(sharding, np.asarray(a)), local)

    def place_replicated(self, x: PyTree) -> PyTree:
        """Multi-host: `x` (equal on every process, e.g. a server value) replicated on every device of the mesh."""
        sharding = NamedSharding(self.mesh, PartitionSpec())
        return jax.tree.map(lambda a: jax.make_array_from_process_local_data(sharding, np.asarray(a)), x)


register_strategy(ShardedStrategy)
