"""Federated intrinsics: the primitive operations on placed values.

Each intrinsic checks the placement of its arguments when it is called (at
trace time inside a computation, so before anything compiles) and raises
`PlacementError` naming the expected and the actual federated type.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PyTree

from ._batches import ClientBatches, Cohort
from ._execution import LoopStrategy, current_strategy, merge_stacked
from ._grouping import cohort_values, is_client_data, place_cohort
from ._placements import CLIENTS, SERVER, Placement
from ._types import PlacementError, TensorType, same_type
from ._values import FederatedValue, is_placed, type_of

__all__ = [
    "broadcast",
    "map",
    "mean",
    "sum",
    "min",
    "max",
    "zip",
    "value",
    "apply",
    "aggregate",
    "secure_sum",
    "collect",
    "concat",
]


def _describe(x: Any) -> str:
    if is_placed(x):
        return str(x.type)
    try:
        from ._types import format_structure

        return f"{format_structure(type_of(x))} (unplaced)"
    except Exception:  # noqa: BLE001
        return f"{type(x).__name__} (unplaced)"


def _expect(op: str, x: Any, expected: str, ok: bool) -> None:
    if not ok:
        raise PlacementError(f"{op} expects {expected}, got {_describe(x)}.{_placing_hint(x, expected)}")


def _placing_hint(x: Any, expected: str) -> str:
    """The fix for an unplaced value where a placed one belongs (TFF places arguments implicitly; fedcore does not)."""
    if is_placed(x):
        return ""
    if "CLIENTS" in expected:
        if isinstance(x, ClientBatches):
            return " Place the client batches first: fc.clients_value(batches)."
        return " Place it first: fc.clients_value(x) (its leading axis indexes the clients)."
    if "SERVER" in expected:
        return " Place it first: fc.server_value(x)."
    return ""


def _expect_server(op: str, x: Any, what: str = "T@SERVER") -> FederatedValue:
    _expect(op, x, what, is_placed(x) and x.placement is SERVER)
    return x


def _expect_per_client(op: str, x: Any, what: str = "{T}@CLIENTS") -> FederatedValue:
    _expect(op, x, what, is_placed(x) and x.placement is CLIENTS)
    if not x.per_client:
        raise PlacementError(
            f"{op} expects {what} (one value per client), got the all-equal {x.type}; "
            "it has no client axis to reduce."
        )
    _check_has_clients(op, x)
    return x


def _check_has_clients(op: str, x: FederatedValue) -> None:
    n = x.num_clients
    if n == 0:
        raise ValueError(f"{op}: the CLIENTS value {x.type} has zero clients.")


def _common_num_clients(op: str, values: list[FederatedValue]) -> int | None:
    counts = {v.num_clients for v in values if v.per_client and v.num_clients is not None}
    if len(counts) > 1:
        detail = ", ".join(f"{v.type} with {v.num_clients} clients" for v in values if v.per_client)
        raise ValueError(f"{op}: per-client arguments disagree on the number of clients: {detail}.")
    if counts == {0}:
        raise ValueError(f"{op}: per-client arguments have zero clients.")
    return counts.pop() if counts else None


def broadcast(x: FederatedValue) -> FederatedValue:
    """`T@SERVER -> T@CLIENTS`: sends a server value to every client.

    Nothing is copied per client: the result is all-equal, and a later
    `fc.map` hands it to every client unbatched (`vmap` with `in_axes=None`).

    ```python
    >>> import fedcore as fc, jax.numpy as jnp
    >>> fc.broadcast(fc.server_value(jnp.ones(3))).type
    f32[3]@CLIENTS
    ```
    """
    _expect_server("broadcast", x)
    return FederatedValue(x.value, CLIENTS, True)


def map(fn: Callable[..., PyTree], *args: FederatedValue | Cohort) -> FederatedValue:  # noqa: A001
    """`(T -> U, {T}@CLIENTS) -> {U}@CLIENTS`: applies `fn` on every client.

    Arguments may be per-client or all-equal CLIENTS values; per-client ones
    must agree on the number of clients. If every argument is all-equal, `fn`
    runs once and the result is all-equal (`U@CLIENTS`). How the per-client
    work runs is set by `fc.execution`.

    One argument may be client data: per-client `ClientBatches`
    (`{ClientBatches}@CLIENTS`) or a `Cohort` (`population.select(ids)`).
    `fn` then sees one client's `ClientBatches`, and the default strategy
    runs the clients in groups of similar step counts
    (`fedcore.core._grouping`); results come back in the clients' order.

    ```python
    >>> import fedcore as fc, jax.numpy as jnp
    >>> x = fc.clients_value(jnp.arange(3.0))
    >>> fc.map(lambda a: 2 * a, x).value
    Array([0., 2., 4.], dtype=float32)
    ```
    """
    if not callable(fn):
        raise TypeError(f"map expects a function first, got {type(fn).__name__}.")
    if not args:
        raise TypeError("map needs at least one CLIENTS-placed argument.")
    args = tuple(place_cohort(a) if isinstance(a, Cohort) else a for a in args)
    data_positions = [i for i, a in enumerate(args) if is_client_data(a)]
    if len(data_positions) > 1:
        raise TypeError(
            "map takes at most one client-data argument ({ClientBatches}@CLIENTS or a Cohort), "
            f"got {len(data_positions)} (arguments {data_positions})."
        )
    placed = [a.ids if isinstance(a, Cohort) else a for a in args]
    for i, a in enumerate(placed):
        _expect(f"map (argument {i})", a, "a CLIENTS value ({T}@CLIENTS or T@CLIENTS)",
                is_placed(a) and a.placement is CLIENTS)
    n = _common_num_clients("map", placed)
    if not builtins.any(a.per_client for a in placed):
        return FederatedValue(fn(*(a.value for a in args)), CLIENTS, True)
    if n is None:
        raise ValueError("map: the per-client arguments hold no arrays, so the number of clients is unknown.")
    in_axes = [0 if a.per_client else None for a in placed]
    values = [cohort_values(a) if isinstance(a, Cohort) else a.value for a in args]
    if data_positions:
        out = current_strategy().map_client_data(fn, values, in_axes, data_positions[0], n)
    else:
        out = current_strategy().map(fn, values, in_axes, n)
    return FederatedValue(out, CLIENTS, False)


_ZERO_WEIGHT = "mean: the total client weight is zero (or negative, or NaN); a weighted mean is undefined."


_INF_WEIGHT = "mean: the total client weight is infinite; a weighted mean is undefined (rescale the weights)."
_NEGATIVE_WEIGHT = (
    "mean: a client weight is negative; weights must be >= 0 (a negative weight extrapolates instead of averaging)."
)


def _positive_total(total: jax.Array) -> jax.Array:
    total = eqx.error_if(total, jnp.isposinf(total), _INF_WEIGHT)
    return eqx.error_if(total, jnp.logical_not(total > 0), _ZERO_WEIGHT)


def _non_negative(w: jax.Array) -> jax.Array:
    return eqx.error_if(w, jnp.any(w < 0), _NEGATIVE_WEIGHT)


def _total_weight(strategy: Any, w: PyTree) -> jax.Array:
    """The clients' total weight in float, refused when any weight is negative or the total is not positive.

    Both come from the strategy's reductions (`sum`, `min`), so a chunked
    strategy computes them in its one scan without materialising the weights.
    """
    total = jax.tree.leaves(strategy.sum(w, as_float=True))[0]
    total = _positive_total(total.astype(jnp.result_type(total.dtype, jnp.float32)))
    return eqx.error_if(total, jax.tree.leaves(strategy.min(w))[0] < 0, _NEGATIVE_WEIGHT)


def mean(x: FederatedValue, weight: FederatedValue | None = None) -> FederatedValue:
    """`({T}@CLIENTS, {f32}@CLIENTS) -> T@SERVER`: the (weighted) mean over clients.

    `sum_i w_i x_i / sum_i w_i`, leaf by leaf; without `weight`, the plain
    mean. A zero, NaN or infinite total weight, or any negative weight,
    raises an error at run time instead of returning NaN or extrapolating. Integer members are averaged in float32.

    ```python
    >>> import fedcore as fc, jax.numpy as jnp
    >>> x = fc.clients_value(jnp.array([1.0, 3.0]))
    >>> w = fc.clients_value(jnp.array([3.0, 1.0]))
    >>> float(fc.mean(x, w))
    1.5
    ```
    """
    _expect("mean", x, "{T}@CLIENTS", is_placed(x) and x.placement is CLIENTS)
    if weight is not None:
        _expect("mean (weight)", weight, "{f32}@CLIENTS", is_placed(weight) and weight.placement is CLIENTS)
        weight_member = jax.tree.leaves(weight.type.member, is_leaf=lambda t: isinstance(t, TensorType))
        shape_ok = len(weight_member) == 1 and weight_member[0].shape == ()
        if not shape_ok:
            raise PlacementError(f"mean (weight) expects one scalar per client ({{f32}}@CLIENTS), got {weight.type}.")
        _common_num_clients("mean", [x, weight])
    strategy = current_strategy()
    if not x.per_client:
        # Every client holds the same value: the mean is that value, whatever the weights.
        if weight is not None:
            if weight.per_client:
                total = _total_weight(strategy, weight.value)
            else:
                total = _positive_total(_non_negative(jax.tree.leaves(weight.value)[0]))
            member = eqx.error_if(x.value, jnp.logical_not(total > 0), _ZERO_WEIGHT)
            return FederatedValue(member, SERVER, True)
        return FederatedValue(x.value, SERVER, True)
    _check_has_clients("mean", x)
    n = x.num_clients
    if weight is None:
        total = strategy.sum(x.value, as_float=True)
        return FederatedValue(jax.tree.map(lambda a: a / n, total), SERVER, True)
    w = weight.value
    if not weight.per_client:
        w = jnp.broadcast_to(jax.tree.leaves(w)[0], (n,))
    total_w = _total_weight(strategy, w)
    weighted = strategy.weighted_sum(x.value, w)
    return FederatedValue(jax.tree.map(lambda a: a / total_w.astype(a.dtype), weighted), SERVER, True)


def sum(x: FederatedValue) -> FederatedValue:  # noqa: A001
    """`{T}@CLIENTS -> T@SERVER`: the sum over clients.

    The sum keeps the members' dtype, as TFF's does (int32 sums are int32).
    An integer sum that would wrap around raises an error at run time instead
    (detected by summing in float32 alongside, so a sum within about 1e-7 of
    the dtype's limit may be refused too).

    ```python
    >>> import fedcore as fc, jax.numpy as jnp
    >>> float(fc.sum(fc.clients_value(jnp.array([1.0, 2.0, 3.0]))))
    6.0
    ```
    """
    _expect_per_client("sum", x)
    strategy = current_strategy()
    total = strategy.sum(x.value)
    member = jax.tree.leaves(x.type.member, is_leaf=lambda t: isinstance(t, TensorType))
    narrow = [jnp.issubdtype(t.dtype, jnp.integer) and jnp.iinfo(t.dtype).bits <= 32 for t in member]
    if builtins.any(narrow):
        # The same sum in float32 (exact in magnitude to 1e-7) tells whether the integer one wrapped.
        approx = strategy.sum(x.value, as_float=True)
        wrapped = [
            # max + 1 and min are powers of two, exact in float32.
            jnp.any((f >= float(jnp.iinfo(t.dtype).max) + 1) | (f < float(jnp.iinfo(t.dtype).min)))
            for t, f, is_narrow in builtins.zip(jax.tree.leaves(total), jax.tree.leaves(approx), narrow)
            if is_narrow
        ]
        total = eqx.error_if(
            total, jnp.any(jnp.stack(wrapped)),
            "sum: an integer sum overflowed its dtype (int32 sums stay int32, as in TFF, and would wrap); "
            "cast the members to float32 (or a wider type) before summing.",
        )
    return FederatedValue(total, SERVER, True)


def _reduce(op: str, x: FederatedValue) -> FederatedValue:
    if is_placed(x) and x.placement is CLIENTS and x.all_equal:
        return FederatedValue(x.value, SERVER, True)
    _expect_per_client(op, x)
    strategy = current_strategy()
    reduced = strategy.min(x.value) if op == "min" else strategy.max(x.value)
    return FederatedValue(reduced, SERVER, True)


def min(x: FederatedValue) -> FederatedValue:  # noqa: A001
    """`{T}@CLIENTS -> T@SERVER`: the element-wise minimum over clients.

    ```python
    >>> import fedcore as fc, jax.numpy as jnp
    >>> float(fc.min(fc.clients_value(jnp.array([2.0, -1.0]))))
    -1.0
    ```
    """
    return _reduce("min", x)


def max(x: FederatedValue) -> FederatedValue:  # noqa: A001
    """`{T}@CLIENTS -> T@SERVER`: the element-wise maximum over clients.

    ```python
    >>> import fedcore as fc, jax.numpy as jnp
    >>> float(fc.max(fc.clients_value(jnp.array([2.0, -1.0]))))
    2.0
    ```
    """
    return _reduce("max", x)


def zip(*values: FederatedValue, **named: FederatedValue) -> FederatedValue:  # noqa: A001
    """`<{A}@P, {B}@P> -> {<A,B>}@P`: one placed value holding a structure.

    Positional values zip into a tuple, keyword values into a dict. All must
    share a placement; at CLIENTS, all-equal members are broadcast along the
    clients axis when any member is per-client.

    ```python
    >>> import fedcore as fc, jax.numpy as jnp
    >>> fc.zip(a=fc.server_value(jnp.ones(2)), b=fc.server_value(jnp.int32(0))).type
    <a=f32[2],b=i32>@SERVER
    ```
    """
    if values and named:
        raise TypeError("zip takes either positional or keyword values, not both.")
    items = list(values) if values else list(named.values())
    if not items:
        raise TypeError("zip needs at least one placed value.")
    for i, v in enumerate(items):
        _expect(f"zip (member {i})", v, "a placed value", is_placed(v))
    placements = {v.placement for v in items}
    if len(placements) != 1:
        raise PlacementError(
            "zip expects members with one placement, got " + ", ".join(str(v.type) for v in items) + "."
        )
    placement: Placement = placements.pop()
    n = _common_num_clients("zip", items)
    per_client = builtins.any(v.per_client for v in items)

    def member(v: FederatedValue) -> PyTree:
        if per_client and not v.per_client:
            return jax.tree.map(lambda a: jnp.broadcast_to(a, (n, *jnp.shape(a))), v.value)
        return v.value

    if values:
        structure: PyTree = tuple(member(v) for v in items)
    else:
        structure = {k: member(v) for k, v in named.items()}
    return FederatedValue(structure, placement, not per_client)


def value(x: PyTree, placement: Placement) -> FederatedValue:
    """`T -> T@P`: places a constant (all-equal at CLIENTS).

    ```python
    >>> import fedcore as fc
    >>> fc.value(1.0, fc.CLIENTS).type
    f32@CLIENTS
    ```
    """
    if is_placed(x):
        raise PlacementError(f"value expects an unplaced constant, got {x.type}.")
    if not isinstance(placement, Placement):
        raise TypeError(f"value expects fc.SERVER or fc.CLIENTS as placement, got {placement!r}.")
    return FederatedValue(jax.tree.map(jnp.asarray, x), placement, True)


def apply(fn: Callable[..., PyTree], *args: FederatedValue) -> FederatedValue:
    """`(T -> U, T@SERVER) -> U@SERVER`: runs a function at the server.

    ```python
    >>> import fedcore as fc, jax.numpy as jnp
    >>> float(fc.apply(lambda a: a + 1, fc.server_value(jnp.float32(1))))
    2.0
    ```
    """
    if not args:
        raise TypeError("apply needs at least one SERVER-placed argument.")
    for i, a in enumerate(args):
        _expect_server(f"apply (argument {i})", a)
    return FederatedValue(fn(*(a.value for a in args)), SERVER, True)


def aggregate(
    x: FederatedValue,
    zero: PyTree,
    accumulate: Callable[[PyTree, PyTree], PyTree],
    merge: Callable[[PyTree, PyTree], PyTree],
    report: Callable[[PyTree], PyTree],
    *,
    check_laws: bool = False,
) -> FederatedValue:
    """`({T}@CLIENTS, A, (A,T)->A, (A,A)->A, A->R) -> R@SERVER`: TFF's general aggregation.

    Every client's value is folded into a copy of `zero` with `accumulate`;
    partial accumulators are combined with `merge` (which must be associative,
    with `zero` as identity); `report` turns the final accumulator into the
    result. `zero` may be unplaced or SERVER-placed. The loop strategy folds
    clients in order with `accumulate` alone; vectorised strategies accumulate
    every client in parallel and merge the partials in a balanced tree, so
    both orders must agree (as they do for sums, counts, min/max ...).

    A `merge` that is not associative, or a `zero` that is not its identity,
    gives different answers under different strategies. `check_laws=True`
    computes both orders on these values (and `merge(zero, a) == a`) and
    raises at run time where they differ (twice the work: for tests and
    debugging); `fedcore.testing.check_strategies_agree` catches the same
    mistake by running a whole computation under every strategy.

    ```python
    >>> import fedcore as fc, jax.numpy as jnp
    >>> x = fc.clients_value(jnp.array([1.0, 2.0, 3.0]))
    >>> r = fc.aggregate(x, (0.0, 0), lambda a, v: (a[0] + v, a[1] + 1),
    ...                  lambda a, b: (a[0] + b[0], a[1] + b[1]), lambda a: a[0] / a[1], check_laws=True)
    >>> float(r)
    2.0
    ```
    """
    _expect_per_client("aggregate", x)
    if is_placed(zero):
        _expect_server("aggregate (zero)", zero, "an unplaced or SERVER-placed zero")
        zero = zero.value
    zero = jax.tree.map(jnp.asarray, zero)
    strategy = current_strategy()
    if check_laws:
        values = strategy.materialize(x.value)
        n = x.num_clients
        folded = LoopStrategy().aggregate(values, zero, accumulate, merge, n)
        merged = merge_stacked(jax.vmap(lambda v: accumulate(zero, v))(values), merge)
        agree = _all_close(folded, merged) & _all_close(merge(zero, folded), folded)
        folded = eqx.error_if(
            folded, jnp.logical_not(agree),
            "aggregate: folding the clients in order and merging partial accumulators in a tree give "
            "different results, so the answer depends on the execution strategy; `merge` must be associative "
            "and `zero` its identity (merge(zero, a) == a).",
        )
        return FederatedValue(report(folded), SERVER, True)
    acc = strategy.aggregate(x.value, zero, accumulate, merge, x.num_clients)
    return FederatedValue(report(acc), SERVER, True)


def _all_close(a: PyTree, b: PyTree) -> jax.Array:
    pairs = builtins.zip(jax.tree.leaves(a), jax.tree.leaves(b))
    return jnp.all(jnp.stack([jnp.allclose(u, v, rtol=1e-5, atol=1e-6, equal_nan=True) for u, v in pairs]))


def secure_sum(x: FederatedValue, bitwidth: int) -> FederatedValue:
    """`({int}@CLIENTS, b) -> int@SERVER`: the sum over clients modulo `2**bitwidth` (simulated).

    Models TFF's `federated_secure_sum_bitwidth`: each client's integers are
    taken modulo `2**bitwidth` and the server learns only the sum modulo
    `2**bitwidth`, element-wise, returned as a value in `[0, 2**bitwidth)`.
    No cryptography is run: this simulates the result, not the protocol.
    `bitwidth` is 1..32; the result has the input dtype if that holds
    `[0, 2**bitwidth)` (e.g. int32 up to 31 bits), else uint32.

    ```python
    >>> import fedcore as fc, jax.numpy as jnp
    >>> int(fc.secure_sum(fc.clients_value(jnp.array([7, 6], jnp.int32)), bitwidth=3))
    5
    ```
    """
    _expect_per_client("secure_sum", x, "{int}@CLIENTS")
    if not isinstance(bitwidth, (int, np.integer)) or not 1 <= bitwidth <= 32:
        raise ValueError(f"secure_sum: bitwidth must be an integer in 1..32, got {bitwidth!r}.")
    members = jax.tree.leaves(x.type.member, is_leaf=lambda t: isinstance(t, TensorType))
    if not builtins.all(jnp.issubdtype(t.dtype, jnp.integer) for t in members):
        raise TypeError(f"secure_sum expects integer members, got {x.type}.")
    mask = np.uint32((1 << bitwidth) - 1) if bitwidth < 32 else np.uint32(0xFFFFFFFF)
    strategy = current_strategy()
    # uint32 addition wraps modulo 2**32, a multiple of 2**bitwidth: the masked
    # wrapped sum is the exact sum modulo 2**bitwidth. The masking is a map, so
    # the strategy fuses it with the clients' work (chunked: chunk by chunk).
    masked = strategy.map(
        lambda v: jax.tree.map(lambda a: a.astype(jnp.uint32) & mask, v), [x.value], [0], x.num_clients
    )
    totals = strategy.sum(masked)

    def as_result(total: jax.Array, t: TensorType) -> jax.Array:
        total = total.astype(jnp.uint32) & mask
        # Keep the input dtype only if it holds every result in [0, 2**bitwidth).
        fits = int(jnp.iinfo(t.dtype).max) >= (1 << bitwidth) - 1
        return total.astype(t.dtype) if fits else total

    result = jax.tree.map(as_result, totals, x.type.member, is_leaf=lambda t: isinstance(t, TensorType))
    return FederatedValue(result, SERVER, True)


def collect(x: FederatedValue) -> FederatedValue:
    """`{T}@CLIENTS -> T[n]@SERVER`: every client's value, stacked at the server (TFF's `federated_collect`).

    Use it where the server must see individual client results, e.g. to
    store per-client state indexed by client id (SCAFFOLD's control variates).

    ```python
    >>> import fedcore as fc, jax.numpy as jnp
    >>> fc.collect(fc.clients_value(jnp.ones((3, 2)))).type
    f32[3,2]@SERVER
    ```
    """
    _expect_per_client("collect", x)
    return FederatedValue(current_strategy().materialize(x.value), SERVER, True)


def concat(*values: FederatedValue) -> FederatedValue:
    """`({T}@CLIENTS, {T}@CLIENTS, ...) -> {T}@CLIENTS`: the clients of several values, one after another.

    The values must share a member type; the result has their clients in
    order (e.g. the results of several `fc.map`s over groups of clients).

    ```python
    >>> import fedcore as fc, jax.numpy as jnp
    >>> x = fc.concat(fc.clients_value(jnp.zeros((2, 3))), fc.clients_value(jnp.ones((1, 3))))
    >>> x.type, x.num_clients
    ({f32[3]}@CLIENTS, 3)
    ```
    """
    if not values:
        raise TypeError("concat needs at least one {T}@CLIENTS value.")
    for i, v in enumerate(values):
        _expect_per_client(f"concat (argument {i})", v)
    first = values[0].type.member
    for i, v in enumerate(values[1:], start=1):
        if not same_type(v.type.member, first):
            raise PlacementError(
                f"concat expects values of one member type; argument 0 is {values[0].type}, "
                f"argument {i} is {values[i].type}."
            )
    if len(values) == 1:
        return values[0]
    strategy = current_strategy()
    leaves = [strategy.materialize(v.value) for v in values]
    return FederatedValue(jax.tree.map(lambda *a: jnp.concatenate(a, axis=0), *leaves), CLIENTS, False)
