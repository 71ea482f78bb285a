"""Execution strategies: how a federated `map` and its reductions run.

The strategy is explicit state chosen with a context manager, never a hidden
global flag:

```python
>>> import fedcore as fc
>>> with fc.execution("loop"):
...     pass  # computations called here run the reference per-client loop
```

Computations compile once per strategy (the strategy is part of their cache
key), so switching strategies never reuses a program traced for another.
"""

from __future__ import annotations

import abc
import contextlib
import contextvars
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import PyTree

__all__ = [
    "ExecutionStrategy",
    "VmapStrategy",
    "LoopStrategy",
    "execution",
    "current_strategy",
    "register_strategy",
    "CLIENTS_AXIS",
]

#: The axis name of the clients under strategies that vmap them (`names_clients_axis`):
#: a client function may reduce over the clients run together with it, e.g.
#: `jax.lax.pmax(x, CLIENTS_AXIS)`.
CLIENTS_AXIS = "clients"


class ExecutionStrategy(abc.ABC):
    """How per-client work runs. Subclasses implement `map` (and may override reductions).

    Strategies must be hashable and compare equal when they would compile the
    same program: computations cache one compiled program per strategy.
    """

    name: ClassVar[str]
    #: Whether computations run under `jax.jit` (the loop strategy runs eagerly,
    #: so a debugger or a print statement sees every client).
    jit: ClassVar[bool] = True
    #: Whether `fc.map` over client data (a `Cohort` or `{ClientBatches}@CLIENTS`)
    #: runs the clients in groups of similar step counts, one `lax.scan` over the
    #: groups with each group `map`ped (see `fedcore.core._grouping`). Strategies
    #: without it receive every client at once (`map_in_order`), each client
    #: bounded by the largest step count among the clients vmapped with it.
    groups_clients: ClassVar[bool] = False
    #: Whether `map` runs the client function under `jax.vmap(..., axis_name=CLIENTS_AXIS)`
    #: (all clients, or a chunk of them), so collectives over `CLIENTS_AXIS` work in it.
    names_clients_axis: ClassVar[bool] = False

    @abc.abstractmethod
    def map(
        self,
        fn: Callable[..., PyTree],
        args: Sequence[PyTree],
        in_axes: Sequence[int | None],
        num_clients: int,
    ) -> PyTree:
        """Applies `fn` per client; per-client args (`in_axes` 0) carry clients on axis 0.

        Returns the results stacked on a leading clients axis.
        """

    def map_in_order(
        self,
        fn: Callable[..., PyTree],
        args: Sequence[PyTree],
        in_axes: Sequence[int | None],
        num_clients: int,
        order: jax.Array | None,
    ) -> PyTree:
        """`map`, with a hint: running the clients in `order` (a permutation) is cheaper.

        The results are stacked in the clients' own order either way. The
        chunked strategy follows the hint (chunks of clients of similar step
        counts); the others ignore it.
        """
        return self.map(fn, args, in_axes, num_clients)

    def sum(self, x: PyTree) -> PyTree:
        """Sums a stacked per-client pytree over its leading clients axis."""
        return jax.tree.map(lambda a: jnp.sum(a, axis=0), x)

    def weighted_sum(self, x: PyTree, weight: jax.Array) -> PyTree:
        """`sum_i weight[i] * x[i]` over the clients axis, leaf by leaf."""
        return jax.tree.map(lambda a: jnp.tensordot(weight.astype(a.dtype), a, axes=1), x)

    def place_clients(self, x: PyTree) -> PyTree:
        """Lays out a stacked per-client pytree for this strategy (identity by default)."""
        return x

    def __hash__(self) -> int:
        return hash((type(self), tuple(sorted(vars(self).items()))))

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and vars(self) == vars(other)

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in sorted(vars(self).items()))
        return f"{type(self).__name__}({opts})"


class VmapStrategy(ExecutionStrategy):
    """The default: the whole `map` is one vmapped XLA operation.

    All-equal arguments (such as a broadcast model) enter with `in_axes=None`,
    so they are never copied per client. A map over client data runs the
    clients in groups of similar step counts (`fedcore.core._grouping`): one
    client at a time on CPU, about an eighth of them per group elsewhere.
    """

    name = "vmap"
    groups_clients = True
    names_clients_axis = True

    def map(self, fn, args, in_axes, num_clients):
        return jax.vmap(fn, in_axes=tuple(in_axes), axis_name=CLIENTS_AXIS)(*args)


class LoopStrategy(ExecutionStrategy):
    """The reference: a Python loop over clients, run eagerly (no `jit` around the round).

    Simple and debuggable; other strategies are tested against it. The
    per-client function is compiled once per `map` and reused for every
    client (`jit_clients=True`, the default); `jit_clients=False` runs it
    op by op, so breakpoints and prints inside it see every client.
    """

    name = "loop"
    jit = False

    def __init__(self, jit_clients: bool = True):
        self.jit_clients = bool(jit_clients)

    def map(self, fn, args, in_axes, num_clients):
        if self.jit_clients:
            fn = eqx.filter_jit(fn)
        outputs = []
        for i in range(num_clients):
            client_args = [
                jax.tree.map(lambda a, i=i: a[i], arg) if axis == 0 else arg
                for arg, axis in zip(args, in_axes)
            ]
            outputs.append(fn(*client_args))
        return jax.tree.map(lambda *xs: jnp.stack(xs), *outputs)

    def sum(self, x):
        def loop_sum(a):
            total = a[0]
            for i in range(1, a.shape[0]):
                total = total + a[i]
            return total

        return jax.tree.map(loop_sum, x)

    def weighted_sum(self, x, weight):
        def loop_weighted_sum(a):
            w = weight.astype(a.dtype)
            total = w[0] * a[0]
            for i in range(1, a.shape[0]):
                total = total + w[i] * a[i]
            return total

        return jax.tree.map(loop_weighted_sum, x)


_STRATEGIES: dict[str, type[ExecutionStrategy]] = {}


def register_strategy(cls: type[ExecutionStrategy]) -> type[ExecutionStrategy]:
    """Makes a strategy class available by its `name` to `fc.execution(name, ...)`."""
    _STRATEGIES[cls.name] = cls
    return cls


register_strategy(VmapStrategy)
register_strategy(LoopStrategy)

_CURRENT: contextvars.ContextVar[ExecutionStrategy] = contextvars.ContextVar(
    "fedcore_execution_strategy", default=VmapStrategy()
)


def current_strategy() -> ExecutionStrategy:
    """The strategy in force (the innermost `fc.execution` block; `vmap` outside any)."""
    return _CURRENT.get()


@contextlib.contextmanager
def execution(strategy: str | ExecutionStrategy = "vmap", **options: Any) -> Iterator[ExecutionStrategy]:
    """Runs the enclosed computations with the given execution strategy.

    ```python
    >>> import fedcore as fc
    >>> with fc.execution("vmap") as s:
    ...     print(s.name)
    vmap
    ```
    """
    if isinstance(strategy, str):
        if strategy not in _STRATEGIES:
            raise ValueError(
                f"Unknown execution strategy {strategy!r}; known: {sorted(_STRATEGIES)}."
            )
        strategy = _STRATEGIES[strategy](**options)
    elif options:
        raise TypeError("Options go with a strategy name, not with a strategy instance.")
    token = _CURRENT.set(strategy)
    try:
        yield strategy
    finally:
        _CURRENT.reset(token)
