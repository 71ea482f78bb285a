"""Chunked execution: clients run a chunk at a time; reductions keep running sums.

Under `fc.execution("chunked", chunk_size=c)`, `fc.map` does not run at once. It
returns a `{U}@CLIENTS` value whose member is a `DeferredMap`: the function and
its arguments, plus the result's shapes (from `jax.eval_shape`), so `x.type`,
`x.num_clients` and selections (`out["delta"]`) work without running anything.

`fc.mean`, `fc.sum`, `fc.min`, `fc.max` of a deferred map (or of a selection
of one) compile to ONE `lax.scan` over the chunks. Step `i` slices clients
`[i*c, i*c + c)` out of the per-client arguments with `lax.dynamic_slice` (no
copy of the data), runs the vmapped function on them and adds the chunk's
results into running sums, minima, maxima and weighted sums. (A map over
client data comes with an order, its clients sorted by step count; chunk `i`
then gathers clients `order[i*c : i*c + c]`, so a chunk holds clients of
similar sizes; see `fedcore.core._grouping`.) Peak memory
grows with `c`, not with the number of clients. The scan computes these for
every leaf of the map's output (and weighted sums by every per-client scalar
of the output, the candidate weights); the reductions are cached while the
computation is traced, so

```python
out = fc.map(client_update, fc.broadcast(model), data)
fc.mean(out["delta"], out["weight"]), fc.sum(out["metrics"])
```

runs the clients once; jax drops the sums nobody reads before XLA compiles.
When the number of clients is not a multiple of `c`, the last chunk is
shifted back to end at the last client and the clients it shares with the
chunk before are masked out of every sum (so no padded client is ever run).

`fc.aggregate` of a deferred map runs its own scan (accumulate each chunk's
clients, merge the chunk into the running accumulator). Mapping over a
deferred map fuses the two functions (`fc.map(g, out["delta"])` stays
deferred). Anything else that needs the per-client values (`fc.collect`,
`fc.zip`, reading `.value` with `jax.tree` functions, returning it from a
computation) materialises the map, still running the clients chunk by chunk
(so the client function's own temporaries stay bounded), and reductions of an
already materialised map reuse it instead of running the clients again.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, PyTree

from ._execution import ExecutionStrategy, float_dtype, merge_stacked, register_strategy
from ._grouping import map_by_steps
from ._placements import CLIENTS_AXIS

__all__ = ["ChunkedStrategy", "DeferredMap", "materialize"]

#: How many per-client scalars of a map's output become candidate weights.
_MAX_CANDIDATE_WEIGHTS = 16


def _trace_state() -> Any:
    """An object equal only within the current JAX trace (cached tracers are valid there)."""
    try:
        from jax._src import core

        return core.get_opaque_trace_state()
    except Exception:  # noqa: BLE001 - an internal API: without it, never reuse a cache
        return object()


def _weight_key(weight: int | Array | None) -> Any:
    """How reductions name a weight: `("leaf", index in the map's output)`, `("array", id)`, or None."""
    if weight is None:
        return None
    return ("leaf", weight) if isinstance(weight, int) else ("array", id(weight))


def _select(tree: PyTree, path: tuple[Any, ...]) -> PyTree:
    return functools.reduce(operator.getitem, path, tree)


def _extreme(dtype: Any, largest: bool) -> Array:
    """The identity of `max` (`largest=False`) or `min` (`largest=True`) for `dtype`."""
    if dtype == jnp.bool_:
        return jnp.array(largest)
    if jnp.issubdtype(dtype, jnp.inexact):
        return jnp.array(jnp.inf if largest else -jnp.inf, dtype)
    info = jnp.iinfo(dtype)
    return jnp.array(info.max if largest else info.min, dtype)


def materialize(tree: PyTree) -> PyTree:
    """`tree` with every `DeferredMap` in it replaced by the per-client values it stands for.

    ```python
    >>> import fedcore as fc, jax.numpy as jnp
    >>> from fedcore.core._chunked import materialize
    >>> with fc.execution("chunked", chunk_size=2):
    ...     out = fc.map(lambda a: {"y": 2 * a}, fc.clients_value(jnp.arange(3.0)))
    ...     print(materialize(out.value))
    {'y': Array([0., 2., 4.], dtype=float32)}
    ```
    """
    return jax.tree.map(lambda a: a, tree)


class _ClientMap:
    """One deferred `fc.map`: the function, its arguments, its output's shapes and caches."""

    def __init__(
        self,
        fn: Callable[..., PyTree],
        args: Sequence[PyTree],
        in_axes: Sequence[int | None],
        num_clients: int,
        chunk_size: int,
        order: Array | None = None,
    ):
        self.fn = fn
        self.args = tuple(args)
        #: Optional permutation of the clients: chunk `i` runs clients `order[i*c : i*c + c]`
        #: (e.g. sorted by step count, so a chunk's clients run about as long as each other).
        self.order = order
        self.in_axes = tuple(in_axes)
        self.num_clients = num_clients
        self.chunk_size = min(chunk_size, num_clients)
        self.num_chunks = -(-num_clients // self.chunk_size)
        #: The stacked output's shapes, `[num_clients, ...]` per leaf.
        self.shapes = jax.eval_shape(jax.vmap(fn, in_axes=self.in_axes, axis_name=CLIENTS_AXIS), *self.args)
        leaves, self.treedef = jax.tree.flatten(self.shapes)
        self.leaf_shapes = leaves
        #: The output's structure with each leaf replaced by its index among the leaves.
        self.leaf_index = jax.tree.unflatten(self.treedef, list(range(len(leaves))))
        self._cache: list[tuple[Any, Any, Any]] = []  # (trace state, key, value)

    # -- caches valid within one trace -------------------------------------------------

    def _cached(self, accept: Callable[[Any], bool]) -> Any:
        state = _trace_state()
        for cache_state, key, value in self._cache:
            if cache_state == state and accept(key):
                return value
        return None

    def _store(self, key: Any, value: Any) -> Any:
        self._cache.append((_trace_state(), key, value))
        return value

    # -- running the clients -----------------------------------------------------------

    def _take(self, a: Array, start: Array, size: int) -> Array:
        """The `size` clients of chunk slot `start` of a `[num_clients, ...]` array (a slice, or a gather by `order`)."""
        if self.order is None:
            return lax.dynamic_slice_in_dim(a, start, size, axis=0)
        return a[lax.dynamic_slice_in_dim(self.order, start, size)]

    def _put(self, buffer: Array, values: Array, start: Array) -> Array:
        """Writes a chunk's `values` back at its clients' places of `buffer`."""
        if self.order is None:
            return lax.dynamic_update_slice_in_dim(buffer, values, start, axis=0)
        return buffer.at[lax.dynamic_slice_in_dim(self.order, start, values.shape[0])].set(values)

    def _chunk_runner(self) -> Callable[[Array], tuple[list[Array], Array, Array]]:
        """`run(i) -> (output leaves of chunk i, its first client, fresh mask)`.

        The last chunk is shifted back to end at the last client; `fresh` is
        False for the clients an earlier chunk already covered.
        """
        c, n = self.chunk_size, self.num_clients
        materialized = self._cached(lambda key: key == ("materialized",))

        def run(i: Array) -> tuple[list[Array], Array, Array]:
            start = jnp.minimum(i * c, n - c)
            fresh = start + jnp.arange(c) >= i * c
            if materialized is not None:  # the clients already ran: read their outputs
                return [self._take(a, start, c) for a in materialized], start, fresh
            args = [
                jax.tree.map(lambda a: self._take(a, start, c), arg) if axis == 0 else arg
                for arg, axis in zip(self.args, self.in_axes)
            ]
            out = jax.vmap(self.fn, in_axes=self.in_axes, axis_name=CLIENTS_AXIS)(*args)
            return jax.tree.leaves(out), start, fresh

        return run

    def materialized_leaves(self) -> list[Array]:
        """Every client's output leaves, stacked (the clients run chunk by chunk)."""
        cached = self._cached(lambda key: key == ("materialized",))
        if cached is not None:
            return cached
        if self.num_chunks == 1:
            leaves = jax.tree.leaves(jax.vmap(self.fn, in_axes=self.in_axes, axis_name=CLIENTS_AXIS)(*self.args))
        else:
            run = self._chunk_runner()

            def write_chunk(buffers, i):
                outs, start, _ = run(i)
                # The shifted last chunk rewrites its overlap with identical values.
                return [self._put(b, o, start) for b, o in zip(buffers, outs)], None

            zeros = [jnp.zeros(s.shape, s.dtype) for s in self.leaf_shapes]
            leaves, _ = lax.scan(write_chunk, zeros, jnp.arange(self.num_chunks))
        return self._store(("materialized",), leaves)

    def reductions(self, weight: int | Array | None = None) -> dict[str, Any]:
        """Per leaf: sums, float sums, minima, maxima and weighted sums over the clients (one scan).

        `weight` is the index of a per-client scalar leaf of the output, a
        `[num_clients]` array, or None. The scan also weighs by every
        per-client scalar leaf (up to 16), so a later weighted mean by one of
        them reuses it. Results are cached while the same trace lasts.
        """
        key = _weight_key(weight)
        found = self._cached(lambda k: k[0] == "reductions" and (key is None or key in k[1]))
        if found is not None:
            return found
        n, c = self.num_clients, self.chunk_size
        scalars = [j for j, s in enumerate(self.leaf_shapes) if s.shape == (n,)][:_MAX_CANDIDATE_WEIGHTS]
        weight_keys = list(dict.fromkeys([*(("leaf", j) for j in scalars), *([] if key is None else [key])]))

        def chunk_reductions(leaves: list[Array], weights: dict[Any, Array], fresh: Array) -> dict[str, Any]:
            def fresh_only(a: Array) -> Array:
                mask = fresh.reshape((-1,) + (1,) * (a.ndim - 1))
                return jnp.where(mask, a, jnp.zeros_like(a))

            weights = {k: fresh_only(w.astype(jnp.result_type(w.dtype, jnp.float32))) for k, w in weights.items()}
            as_float = [fresh_only(a.astype(float_dtype(a.dtype))) for a in leaves]
            return {
                "sum": [jnp.sum(fresh_only(a), axis=0) for a in leaves],
                "float_sum": [jnp.sum(a, axis=0) for a in as_float],
                # Clients in two chunks are duplicates: they change no minimum or maximum.
                "min": [jnp.min(a, axis=0) for a in leaves],
                "max": [jnp.max(a, axis=0) for a in leaves],
                "weighted": {
                    k: [jnp.tensordot(w.astype(a.dtype), a, axes=1) for a in as_float] for k, w in weights.items()
                },
                "total_weight": {k: jnp.sum(w) for k, w in weights.items()},
            }

        run = self._chunk_runner()

        def chunk_weights(leaves: list[Array], start: Array) -> dict[Any, Array]:
            return {
                k: leaves[k[1]] if k[0] == "leaf" else self._take(weight, start, c)
                for k in weight_keys
            }

        chunk_shapes = [jax.ShapeDtypeStruct((c, *s.shape[1:]), s.dtype) for s in self.leaf_shapes]
        weight_shapes = {
            k: chunk_shapes[k[1]] if k[0] == "leaf" else jax.ShapeDtypeStruct((c,), weight.dtype)
            for k in weight_keys
        }
        shapes = jax.eval_shape(chunk_reductions, chunk_shapes, weight_shapes, jax.ShapeDtypeStruct((c,), bool))
        init = {kind: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), part) for kind, part in shapes.items()}
        init["min"] = [jnp.full(s.shape, _extreme(s.dtype, largest=True)) for s in shapes["min"]]
        init["max"] = [jnp.full(s.shape, _extreme(s.dtype, largest=False)) for s in shapes["max"]]

        def add_chunk(acc: dict[str, Any], i: Array) -> tuple[dict[str, Any], None]:
            leaves, start, fresh = run(i)
            part = chunk_reductions(leaves, chunk_weights(leaves, start), fresh)
            new = {kind: jax.tree.map(jnp.add, acc[kind], part[kind]) for kind in acc if kind not in ("min", "max")}
            new["min"] = [jnp.minimum(a, b) for a, b in zip(acc["min"], part["min"])]
            new["max"] = [jnp.maximum(a, b) for a, b in zip(acc["max"], part["max"])]
            return new, None

        result, _ = lax.scan(add_chunk, init, jnp.arange(self.num_chunks))
        result["weight_array"] = weight  # keeps an external weight alive while its id is a cache key
        return self._store(("reductions", frozenset(weight_keys)), result)

    def aggregate(
        self,
        path: tuple[Any, ...],
        zero: PyTree,
        accumulate: Callable[[PyTree, PyTree], PyTree],
        merge: Callable[[PyTree, PyTree], PyTree],
    ) -> PyTree:
        """`fc.aggregate`'s accumulator over the selection `path`: chunk partials merged into a running one."""
        run = self._chunk_runner()

        def add_chunk(acc: PyTree, i: Array) -> tuple[PyTree, None]:
            leaves, _, fresh = run(i)
            values = _select(jax.tree.unflatten(self.treedef, leaves), path)

            def client_partial(v: PyTree, is_fresh: Array) -> PyTree:
                partial = accumulate(zero, v)
                # A client already counted contributes `zero`, the identity of `merge`.
                return jax.tree.map(lambda p, z: jnp.where(is_fresh, p, z.astype(p.dtype)), partial, zero)

            partials = jax.vmap(client_partial)(values, fresh)
            merged = merge(acc, merge_stacked(partials, merge))
            return jax.tree.map(lambda m, a: m.astype(a.dtype), merged, acc), None

        acc, _ = lax.scan(add_chunk, zero, jnp.arange(self.num_chunks))
        return acc



class DeferredMap:
    """The member of a `{U}@CLIENTS` value made by `fc.map` under chunked execution.

    It stands for the stacked per-client results without computing them:
    `fc.mean`/`fc.sum`/`fc.min`/`fc.max`/`fc.aggregate` reduce it chunk by
    chunk, indexing (`out["delta"]`) selects lazily, and `fc.map` over it fuses
    the functions. As a pytree it *is* the stacked results: `jax.tree`
    functions (and `materialize`) see the computed per-client values.

    ```python
    >>> import fedcore as fc, jax.numpy as jnp
    >>> with fc.execution("chunked", chunk_size=2):
    ...     out = fc.map(lambda a: {"y": a, "w": a + 1}, fc.clients_value(jnp.arange(5.0)))
    ...     print(out["y"].type, round(float(fc.mean(out["y"], out["w"])), 4))
    {f32}@CLIENTS 2.6667
    ```
    """

    def __init__(self, client_map: _ClientMap, path: tuple[Any, ...] = ()):
        self.client_map = client_map
        self.path = path

    @property
    def __fedcore_shapes__(self) -> PyTree:
        """The stacked results' shapes (`jax.ShapeDtypeStruct`s): read by `FederatedValue.type`."""
        return _select(self.client_map.shapes, self.path)

    @property
    def num_clients(self) -> int:
        return self.client_map.num_clients

    def __getitem__(self, key: Any) -> Any:
        selected = self.__fedcore_shapes__
        if isinstance(selected, jax.ShapeDtypeStruct):  # indexing an array: same as on the computed values
            return self.materialize()[key]
        selected[key]  # raises the container's own error for a missing key
        return DeferredMap(self.client_map, (*self.path, key))

    def materialize(self) -> PyTree:
        """The stacked per-client results (the clients run chunk by chunk)."""
        leaves = self.client_map.materialized_leaves()
        return _select(jax.tree.unflatten(self.client_map.treedef, leaves), self.path)

    def _leaf_indices(self) -> PyTree:
        return _select(self.client_map.leaf_index, self.path)

    def _reduced(self, kind: str, weight: int | Array | None = None) -> PyTree:
        result = self.client_map.reductions(weight)[kind]
        if kind in ("weighted", "total_weight"):
            result = result[_weight_key(weight)]
        if kind == "total_weight":
            return result
        return jax.tree.map(lambda j: result[j], self._leaf_indices())

    def sum(self) -> PyTree:
        """`fc.sum`: the sum over clients, leaf by leaf (`jnp.sum`'s dtype)."""
        return self._reduced("sum")

    def min(self) -> PyTree:
        """`fc.min`: the element-wise minimum over clients."""
        return self._reduced("min")

    def max(self) -> PyTree:
        """`fc.max`: the element-wise maximum over clients."""
        return self._reduced("max")

    def float_sum(self) -> PyTree:
        """The sum over clients in float (`fc.mean` without weights)."""
        return self._reduced("float_sum")

    def weighted_sum(self, weight: PyTree) -> PyTree:
        """`sum_i weight[i] * x[i]` in float; `weight` is a selection of this same map or a `[num_clients]` array."""
        if isinstance(weight, DeferredMap) and weight.client_map is self.client_map:
            key: int | Array = jax.tree.leaves(weight._leaf_indices())[0]
        else:
            key = jax.tree.leaves(weight)[0]  # computes another deferred map's weights, if need be
        return self._reduced("weighted", key)

    def aggregate(
        self, zero: PyTree, accumulate: Callable[[PyTree, PyTree], PyTree], merge: Callable[[PyTree, PyTree], PyTree]
    ) -> PyTree:
        """`fc.aggregate`'s final accumulator (before `report`)."""
        return self.client_map.aggregate(self.path, zero, accumulate, merge)

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.materialize(), dtype=dtype)

    def __repr__(self) -> str:
        from ._types import TensorType, format_structure

        member = jax.tree.map(lambda s: TensorType(s.shape[1:], np.dtype(s.dtype)), self.__fedcore_shapes__)
        return (
            f"DeferredMap({format_structure(member)} x {self.num_clients} clients, "
            f"chunk_size={self.client_map.chunk_size})"
        )


def _flatten_deferred(d: DeferredMap) -> tuple[list[Array], Any]:
    return jax.tree.flatten(d.materialize())


def _unflatten_deferred(treedef: Any, leaves: Sequence[Any]) -> PyTree:
    return jax.tree.unflatten(treedef, leaves)


# As a pytree, a deferred map is its computed results (unflattening gives a plain pytree).
jax.tree_util.register_pytree_node(DeferredMap, _flatten_deferred, _unflatten_deferred)


def _fuse(
    fn: Callable[..., PyTree], args: Sequence[PyTree], in_axes: Sequence[int | None]
) -> tuple[Callable[..., PyTree], list[PyTree], list[int | None]]:
    """Inlines deferred arguments: `map(g, map(f, x)[k])` becomes `map(lambda x: g(f(x)[k]), x)`.

    Each deferred map's function runs once per client even if several of
    `fn`'s arguments select from it. Deferred maps nested inside other
    arguments are materialised.
    """
    flat_args: list[PyTree] = []
    flat_axes: list[int | None] = []
    maps: dict[int, tuple[_ClientMap, slice]] = {}
    readers: list[tuple[str, Any, tuple[Any, ...]]] = []
    for arg, axis in zip(args, in_axes):
        if isinstance(arg, DeferredMap):
            inner = arg.client_map
            if id(inner) not in maps:
                first = len(flat_args)
                flat_args.extend(inner.args)
                flat_axes.extend(inner.in_axes)
                maps[id(inner)] = (inner, slice(first, len(flat_args)))
            readers.append(("map", id(inner), arg.path))
        else:
            readers.append(("arg", len(flat_args), ()))
            flat_args.append(materialize(arg))
            flat_axes.append(axis)
    if not maps:
        return fn, flat_args, flat_axes

    def fused(*flat: PyTree) -> PyTree:
        results = {key: inner.fn(*flat[where]) for key, (inner, where) in maps.items()}
        values = [flat[ref] if kind == "arg" else _select(results[ref], path) for kind, ref, path in readers]
        return fn(*values)

    return fused, flat_args, flat_axes


class ChunkedStrategy(ExecutionStrategy):
    """Runs `fc.map` `chunk_size` clients at a time, so memory is bounded by the chunk.

    A `map` whose results feed reductions compiles to one `lax.scan` over
    chunks with running sums (see `fedcore.core._chunked`); results equal the
    `vmap` strategy's up to float rounding (sums are added chunk by chunk).

    ```python
    >>> import fedcore as fc, jax.numpy as jnp
    >>> @fc.computation
    ... def mean_square(x):
    ...     return fc.mean(fc.map(lambda a: a * a, x))
    >>> with fc.execution("chunked", chunk_size=2):
    ...     print(float(mean_square(fc.clients_value(jnp.arange(5.0)))))
    6.0
    ```
    """

    name = "chunked"

    def __init__(self, chunk_size: int | None = None):
        if chunk_size is None:
            raise TypeError('chunked execution needs a chunk size: fc.execution("chunked", chunk_size=...).')
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
            raise ValueError(f"chunked execution: chunk_size must be a positive integer, got {chunk_size!r}.")
        self.chunk_size = int(chunk_size)

    def map(self, fn, args, in_axes, num_clients):
        return self._map_in_order(fn, args, in_axes, num_clients, None)

    def _map_in_order(self, fn, args, in_axes, num_clients, order):
        inherited = [a.client_map.order for a in args if isinstance(a, DeferredMap) and a.client_map.order is not None]
        fn, args, in_axes = _fuse(fn, args, in_axes)
        order = order if order is not None else (inherited[0] if inherited else None)
        return DeferredMap(_ClientMap(fn, args, in_axes, num_clients, self.chunk_size, order))

    def map_client_data(self, fn, args, in_axes, data_position, num_clients):
        # Chunks of clients of similar step counts; a chunk's clients share its largest step count.
        return map_by_steps(self._map_in_order, fn, args, in_axes, data_position, num_clients, shared_bound=True)

    def _deferred(self, x: PyTree) -> DeferredMap:
        """`x` as a deferred map (stacked arrays become a map of the identity, reduced chunk by chunk)."""
        if isinstance(x, DeferredMap):
            return x
        n = int(jax.tree.leaves(x)[0].shape[0])
        return self.map(lambda v: v, [x], [0], n)

    def sum(self, x, *, as_float=False):
        d = self._deferred(x)
        return d.float_sum() if as_float else d.sum()

    def weighted_sum(self, x, weight):
        return self._deferred(x).weighted_sum(weight)

    def min(self, x):
        return self._deferred(x).min()

    def max(self, x):
        return self._deferred(x).max()

    def aggregate(self, x, zero, accumulate, merge, num_clients):
        return self._deferred(x).aggregate(zero, accumulate, merge)

    def materialize(self, x):
        return materialize(x)


register_strategy(ChunkedStrategy)
