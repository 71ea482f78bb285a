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

from ._grouping import map_by_steps, map_in_groups
from ._placements import CLIENTS_AXIS

__all__ = [
    "ExecutionStrategy",
    "VmapStrategy",
    "LoopStrategy",
    "execution",
    "current_strategy",
    "register_strategy",
    "CLIENTS_AXIS",
]

def float_dtype(dtype: Any) -> Any:
    """`dtype` if it is inexact, else float32: the dtype sums and means of `dtype` are taken in."""
    return dtype if jnp.issubdtype(dtype, jnp.inexact) else jnp.float32


def merge_stacked(partials: PyTree, merge: Callable[[PyTree, PyTree], PyTree]) -> PyTree:
    """Merges stacked partials `[k, ...]` into one: a balanced tree of vmapped pairwise `merge`s."""
    k = jax.tree.leaves(partials)[0].shape[0]
    while k > 1:
        half = k // 2
        left = jax.tree.map(lambda a: a[:half], partials)
        right = jax.tree.map(lambda a: a[half : 2 * half], partials)
        merged = jax.vmap(merge)(left, right)
        if k % 2:
            merged = jax.tree.map(lambda m, a: jnp.concatenate([m, a[2 * half :]]), merged, partials)
        partials, k = merged, half + k % 2
    return jax.tree.map(lambda a: a[0], partials)


def _weight_array(weight: PyTree) -> jax.Array:
    return jax.tree.leaves(weight)[0]


class ExecutionStrategy(abc.ABC):
    """How per-client work runs: one method per primitive that touches the clients axis.

    The intrinsics (`fc.map`, `fc.mean`, `fc.sum`, `fc.min`, `fc.max`,
    `fc.aggregate`, `fc.secure_sum`, `fc.collect` ...) check their arguments'
    types, call one of these methods on `current_strategy()` with the
    arguments' unplaced members, and place the result. A per-client member is
    whatever this strategy's `map` returned (stacked arrays, or a lazy value
    of the strategy's own that only its methods read) or stacked arrays
    (`[num_clients, ...]` per leaf) placed by the user. Only `map` is
    abstract; the others default to operations on stacked arrays.

    Strategies must be hashable and compare equal when they would compile the
    same program: computations cache one compiled program per strategy. A
    user's strategy is made available by name with `register_strategy`:

    ```python
    >>> import fedcore as fc, jax, jax.numpy as jnp
    >>> @fc.register_strategy
    ... class Unrolled(fc.ExecutionStrategy):
    ...     # Traces the client function once per client (a Python loop inside the jitted program).
    ...     name = "unrolled"
    ...     def map(self, fn, args, in_axes, num_clients):
    ...         per_client = [fn(*(jax.tree.map(lambda a: a[i], x) if axis == 0 else x
    ...                            for x, axis in zip(args, in_axes))) for i in range(num_clients)]
    ...         return jax.tree.map(lambda *xs: jnp.stack(xs), *per_client)
    >>> with fc.execution("unrolled"):
    ...     print(round(float(fc.mean(fc.map(lambda a: a * a, fc.clients_value(jnp.arange(3.0))))), 4))
    1.6667
    ```
    """

    name: ClassVar[str]
    #: Whether computations run under `jax.jit` (the loop strategy runs eagerly,
    #: so a debugger or a print statement sees every client).
    jit: ClassVar[bool] = True

    @abc.abstractmethod
    def map(
        self,
        fn: Callable[..., PyTree],
        args: Sequence[PyTree],
        in_axes: Sequence[int | None],
        num_clients: int,
    ) -> PyTree:
        """Applies `fn` per client; per-client args (`in_axes` 0) carry clients on axis 0.

        Returns the per-client results (stacked on a leading clients axis, or
        a lazy value this strategy's other methods read).
        """

    def map_client_data(
        self,
        fn: Callable[..., PyTree],
        args: Sequence[PyTree],
        in_axes: Sequence[int | None],
        data_position: int,
        num_clients: int,
    ) -> PyTree:
        """`map` where `args[data_position]` is client data (a `Cohort` or stacked `ClientBatches`).

        `fn` receives one client's `ClientBatches` there. The default maps all
        clients with `map`, each bounded by its own step count
        (`fedcore.core._grouping.map_by_steps`).
        """
        return map_by_steps(
            lambda f, a, ax, n, order: self.map(f, a, ax, n), fn, args, in_axes, data_position, num_clients,
            shared_bound=False,
        )

    def sum(self, x: PyTree, *, as_float: bool = False) -> PyTree:
        """Sums per-client values over the clients, leaf by leaf (in float with `as_float`)."""
        if as_float:
            x = jax.tree.map(lambda a: a.astype(float_dtype(a.dtype)), x)
        return jax.tree.map(lambda a: jnp.sum(a, axis=0), x)

    def weighted_sum(self, x: PyTree, weight: PyTree) -> PyTree:
        """`sum_i weight[i] * x[i]` over the clients, leaf by leaf, in float.

        `weight` is a per-client member with one scalar leaf (one weight per client).
        """
        w = _weight_array(weight)
        w = w.astype(jnp.result_type(w.dtype, jnp.float32))
        return jax.tree.map(
            lambda a: jnp.tensordot(w.astype(float_dtype(a.dtype)), a.astype(float_dtype(a.dtype)), axes=1), x
        )

    def min(self, x: PyTree) -> PyTree:
        """The element-wise minimum over the clients, leaf by leaf."""
        return jax.tree.map(lambda a: jnp.min(a, axis=0), x)

    def max(self, x: PyTree) -> PyTree:
        """The element-wise maximum over the clients, leaf by leaf."""
        return jax.tree.map(lambda a: jnp.max(a, axis=0), x)

    def aggregate(
        self,
        x: PyTree,
        zero: PyTree,
        accumulate: Callable[[PyTree, PyTree], PyTree],
        merge: Callable[[PyTree, PyTree], PyTree],
        num_clients: int,
    ) -> PyTree:
        """`fc.aggregate`'s final accumulator: every client accumulated into `zero`, the partials merged.

        The default accumulates the clients in parallel (`map`) and merges the
        partials in a balanced tree (`merge_stacked`).
        """
        partials = self.materialize(self.map(lambda v: accumulate(zero, v), [x], [0], num_clients))
        return merge_stacked(partials, merge)

    def materialize(self, x: PyTree) -> PyTree:
        """The per-client values as stacked arrays (`[num_clients, ...]` per leaf); identity by default."""
        return x

    def place_clients(self, x: PyTree) -> PyTree:
        """Lays out a stacked per-client pytree for this strategy (identity by default)."""
        return x

    def place_arguments(self, args: tuple[Any, ...]) -> tuple[Any, ...]:
        """A jitted computation's arguments, laid out before the call (identity by default).

        A strategy that spans devices gives every argument an explicit layout
        here, so that the compiled program never picks one the next round
        cannot take (issue 12).
        """
        return args

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

    def map(self, fn, args, in_axes, num_clients):
        return jax.vmap(fn, in_axes=tuple(in_axes), axis_name=CLIENTS_AXIS)(*args)

    def map_client_data(self, fn, args, in_axes, data_position, num_clients):
        return map_in_groups(self.map, fn, args, in_axes, data_position, num_clients)


class LoopStrategy(ExecutionStrategy):
    """The reference: a Python loop over clients, run eagerly (no `jit` around the round).

    Simple and debuggable; other strategies are tested against it. The
    per-client function is compiled once per `map` and reused for every
    client (`jit_clients=True`, the default); `jit_clients=False` runs it
    op by op, so breakpoints and prints inside it see every client.
    `fc.aggregate` folds the clients in order with `accumulate` alone.
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

    def sum(self, x, *, as_float=False):
        def loop_sum(a):
            if as_float:
                a = a.astype(float_dtype(a.dtype))
            total = a[0]
            for i in range(1, a.shape[0]):
                total = total + a[i]
            return total

        return jax.tree.map(loop_sum, x)

    def weighted_sum(self, x, weight):
        w = _weight_array(weight)
        w = w.astype(jnp.result_type(w.dtype, jnp.float32))

        def loop_weighted_sum(a):
            a = a.astype(float_dtype(a.dtype))
            wa = w.astype(a.dtype)
            total = wa[0] * a[0]
            for i in range(1, a.shape[0]):
                total = total + wa[i] * a[i]
            return total

        return jax.tree.map(loop_weighted_sum, x)

    def aggregate(self, x, zero, accumulate, merge, num_clients):
        acc = zero
        for i in range(num_clients):
            acc = accumulate(acc, jax.tree.map(lambda a, i=i: a[i], x))
        return acc


_STRATEGIES: dict[str, type[ExecutionStrategy]] = {}


def register_strategy(cls: type[ExecutionStrategy]) -> type[ExecutionStrategy]:
    """Makes a strategy class available by its `name` to `fc.execution(name, ...)`; returns the class.

    Use it as a class decorator (see `ExecutionStrategy` for a whole example):

    ```python
    >>> import fedcore as fc, jax
    >>> @fc.register_strategy
    ... class Vmap2(fc.VmapStrategy):
    ...     name = "vmap2"
    >>> with fc.execution("vmap2") as s:
    ...     print(type(s).__name__)
    Vmap2
    ```
    """
    if not (isinstance(cls, type) and issubclass(cls, ExecutionStrategy)):
        raise TypeError(f"register_strategy expects an ExecutionStrategy subclass, got {cls!r}.")
    if not isinstance(getattr(cls, "name", None), str):
        raise TypeError(f"register_strategy: {cls.__name__} needs a class attribute `name` (a string).")
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
