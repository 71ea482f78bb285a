"""Law checks: assertions that a federated algorithm obeys the laws of the core.

Each `check_*` function runs an algorithm on given inputs and raises
`AssertionError`, naming the law and the leaf that broke it, when a law fails.
Combine them with the strategies in `fedcore.testing.strategies`:

```python
>>> import fedcore as fc, jax.numpy as jnp
>>> from fedcore.testing import laws
>>> x = fc.clients_value(jnp.arange(6.0).reshape(3, 2))
>>> _ = laws.check_permutation_invariance(fc.mean, x)
```

Float tolerances. Summing `n` float32 numbers in two different orders (a
permutation of the clients, a loop versus a vectorised reduction) gives
results that differ by at most `2 * (n - 1) * eps * sum_i |x_i|` (the
worst-case rounding error of a sum is `(n - 1) * eps * sum_i |x_i|`), with
`eps = 2**-23` for float32: a relative ~1e-7 per operation. With `atol=None`,
the checks use `summation_atol` of the inputs and outputs, which bounds that
for algorithms whose outputs are (weighted) sums or means of their inputs;
pass `atol` for anything else (products, squares, several rounds).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PyTree

from ..core import (
    SERVER,
    ClientPopulation,
    ExecutionStrategy,
    FederatedValue,
    broadcast,
    clients_value,
    execution,
    is_placed,
    server_value,
    type_of,
)

__all__ = [
    "assert_federated_close",
    "summation_atol",
    "permute_clients",
    "check_permutation_invariance",
    "check_mean_of_broadcast",
    "check_weight_scale_invariance",
    "check_strategies_agree",
    "check_group_size_invariance",
]


def _leaves(tree: Any) -> list[Any]:
    values = jax.tree.map(lambda v: v.value if is_placed(v) else v, tree, is_leaf=is_placed)
    return jax.tree.leaves(values)


def _num_clients(tree: Any) -> int:
    counts = [v.num_clients or 1 for v in jax.tree.leaves(tree, is_leaf=is_placed) if is_placed(v) and v.per_client]
    return max(counts, default=1)


# XLA on CPU flushes subnormal results to zero: a product of two tiny normal
# numbers may lose up to the smallest normal float32 per client.
_TINY = float(np.finfo(np.float32).tiny)


def _scale_and_eps(tree: Any) -> tuple[float, float]:
    """Largest magnitude a sum over clients can involve, and the largest epsilon, over inexact leaves."""
    scale, eps = 0.0, 0.0
    parts = jax.tree.leaves(tree, is_leaf=is_placed)
    for part in parts:
        per_client = is_placed(part) and part.per_client
        for leaf in _leaves(part):
            arr = np.asarray(leaf)
            if not (np.issubdtype(arr.dtype, np.inexact) or arr.dtype == jnp.bfloat16):
                continue
            eps = max(eps, float(jnp.finfo(arr.dtype).eps))
            if arr.size:
                magnitude = np.abs(arr.astype(np.float64))
                # Per-client leaves: the sum of |x_i| over clients, element-wise, bounds
                # every partial sum an order of summation can produce.
                scale = max(scale, float(np.max(magnitude.sum(axis=0) if per_client else magnitude)))
    return scale, eps or float(np.finfo(np.float32).eps)


def summation_atol(*trees: Any, num_clients: int | None = None) -> float:
    """An absolute tolerance for results that differ only in the order of a sum over clients.

    `2 * n * eps * scale`, where `n` is `num_clients` (default: the largest
    number of clients of a per-client value in `trees`), `eps` the largest
    machine epsilon of the inexact leaves, and `scale` the largest of `|x|`
    over unplaced and all-equal leaves and of `sum_i |x_i|` over the clients
    of per-client leaves. Summing `n` terms in any order has a rounding error
    of at most `(n - 1) * eps * sum_i |x_i|`, so two orders -- and a mean,
    which divides by the count or the total weight -- stay within this bound.
    `n` times the smallest normal float32 is added for subnormal results that
    XLA flushes to zero.

    ```python
    >>> import fedcore as fc, jax.numpy as jnp
    >>> from fedcore.testing import laws
    >>> laws.summation_atol(fc.clients_value(jnp.full(4, 10.0)))  # 2 * 4 * 2**-23 * 40 + 4 * tiny
    3.814697265625e-05
    ```
    """
    n = _num_clients(trees) if num_clients is None else num_clients
    scale, eps = _scale_and_eps(trees)
    return 2.0 * n * eps * scale + n * _TINY


def assert_federated_close(
    actual: Any,
    expected: Any,
    *,
    rtol: float = 1e-6,
    atol: float = 0.0,
    law: str = "values",
) -> None:
    """Asserts two (placed or unplaced) pytrees have the same type and close leaves.

    Placed values must have equal federated types (placement, all-equal bit,
    shapes and dtypes); leaves must satisfy `|a - e| <= atol + rtol * |e|`.
    The message starts with `law` and names the first leaf that differs.

    ```python
    >>> import fedcore as fc, jax.numpy as jnp
    >>> from fedcore.testing import laws
    >>> laws.assert_federated_close(fc.server_value(jnp.ones(2)), fc.server_value(jnp.ones(2)))
    ```
    """
    type_a, type_e = type_of(actual), type_of(expected)
    structure_a = jax.tree.structure(actual, is_leaf=is_placed)
    structure_e = jax.tree.structure(expected, is_leaf=is_placed)
    if structure_a != structure_e or type_a != type_e:
        raise AssertionError(f"{law}: the types differ: got {_fmt_type(type_a)}, expected {_fmt_type(type_e)}.")
    paths = jax.tree_util.tree_flatten_with_path(
        jax.tree.map(lambda v: v.value if is_placed(v) else v, actual, is_leaf=is_placed)
    )[0]
    for (path, a), e in zip(paths, _leaves(expected), strict=True):
        a, e = np.asarray(a), np.asarray(e)
        leaf = jax.tree_util.keystr(path) or "<root>"
        if a.shape != e.shape:
            raise AssertionError(f"{law}: leaf {leaf} has shape {a.shape}, expected {e.shape}.")
        a64, e64 = a.astype(np.float64), e.astype(np.float64)
        ok = np.isclose(a64, e64, rtol=rtol, atol=atol, equal_nan=True)
        if not np.all(ok):
            where = tuple(int(i) for i in np.argwhere(~ok)[0])
            diff = float(np.max(np.abs(a64 - e64)[~ok]))
            raise AssertionError(
                f"{law}: leaf {leaf} differs at index {where}: "
                f"got {a[where].item()!r}, expected {e[where].item()!r} (max |difference| {diff:.3g}; "
                f"allowed atol={atol:.3g} + rtol={rtol:.3g} * |expected|)."
            )


def _fmt_type(t: Any) -> str:
    from ..core._types import format_structure

    if isinstance(t, (list, tuple, dict)) or not hasattr(t, "placement"):
        try:
            return format_structure(t)
        except Exception:  # noqa: BLE001 - a message must never fail
            return str(t)
    return str(t)


def permute_clients(x: FederatedValue, permutation: Sequence[int]) -> FederatedValue:
    """Reorders the clients of a `{T}@CLIENTS` value: client `i` of the result is client `permutation[i]`.

    ```python
    >>> import fedcore as fc, jax.numpy as jnp
    >>> from fedcore.testing import laws
    >>> laws.permute_clients(fc.clients_value(jnp.array([1.0, 2.0, 3.0])), [2, 0, 1]).value
    Array([3., 1., 2.], dtype=float32)
    ```
    """
    if not (is_placed(x) and x.per_client):
        raise TypeError(f"permute_clients expects a per-client value {{T}}@CLIENTS, got {_fmt_type(type_of(x))}.")
    perm = np.asarray(permutation)
    if sorted(perm.tolist()) != list(range(x.num_clients)):
        raise ValueError(
            f"permute_clients: {list(perm)} is not a permutation of the {x.num_clients} clients 0..{x.num_clients - 1}."
        )
    return clients_value(jax.tree.map(lambda a: a[perm], x.value))


def _default_permutations(n: int) -> list[list[int]]:
    perms = [list(range(n))[::-1]]
    if n > 2:
        perms.append([*range(1, n), 0])  # rotate by one
    return perms


def check_permutation_invariance(
    fn: Callable[..., Any],
    client_value: FederatedValue,
    weights: FederatedValue | None = None,
    *,
    permutations: Sequence[Sequence[int]] | None = None,
    rtol: float = 1e-6,
    atol: float | None = None,
) -> Any:
    """Checks that `fn` does not depend on the order of the clients.

    Calls `fn(client_value)` (or `fn(client_value, weights)`, values and
    weights permuted together) for the identity and each permutation. A
    result that is not per-client must not change; a per-client result must
    be permuted the same way (equivariance). `permutations` defaults to
    reversing the clients and rotating them by one. Returns the unpermuted
    result.

    ```python
    >>> import fedcore as fc, jax.numpy as jnp
    >>> from fedcore.testing import laws
    >>> x = fc.clients_value(jnp.array([1.0, 2.0, 4.0]))
    >>> w = fc.clients_value(jnp.array([1.0, 1.0, 2.0]))
    >>> float(laws.check_permutation_invariance(fc.mean, x, w))
    2.75
    ```
    """
    args = (client_value,) if weights is None else (client_value, weights)
    for i, a in enumerate(args):
        if not (is_placed(a) and a.per_client):
            name = "client_value" if i == 0 else "weights"
            raise TypeError(f"check_permutation_invariance: {name} must be {{T}}@CLIENTS, got {_fmt_type(type_of(a))}.")
    n = client_value.num_clients
    if weights is not None and weights.num_clients != n:
        raise ValueError(
            f"check_permutation_invariance: client_value has {n} clients but weights has {weights.num_clients}."
        )
    reference = fn(*args)
    tolerance = summation_atol(args, reference, num_clients=n) if atol is None else atol
    for perm in _default_permutations(n) if permutations is None else permutations:
        permuted = fn(*(permute_clients(a, perm) for a in args))
        expected = reference
        if is_placed(reference) and reference.per_client:
            expected = permute_clients(reference, perm)
        assert_federated_close(
            permuted,
            expected,
            rtol=rtol,
            atol=tolerance,
            law=f"permutation invariance of {_name(fn)} under client order {list(perm)}",
        )
    return reference


def _broadcast_to_clients(x: FederatedValue, n: int) -> FederatedValue:
    return clients_value(jax.tree.map(lambda a: jnp.broadcast_to(a, (n, *jnp.shape(a))), x.value))


def check_mean_of_broadcast(
    aggregator: Callable[..., Any],
    x: FederatedValue | PyTree,
    num_clients: int,
    weights: FederatedValue | None = None,
    *,
    all_equal: bool = False,
    rtol: float = 1e-6,
    atol: float | None = None,
) -> Any:
    """Checks that aggregating a value every client holds gives back that value.

    The law `mean(broadcast(x)) == x`, for any mean-like `aggregator`
    (`{T}@CLIENTS [, {f32}@CLIENTS] -> T@SERVER`): `x` (a `T@SERVER` value or
    an unplaced pytree) is copied to `num_clients` clients as a per-client
    value, aggregated (with `weights`, if given) and compared with `x`. With
    `all_equal=True`, `aggregator(fc.broadcast(x))` (an all-equal `T@CLIENTS`
    argument) must give `x` as well. Returns the aggregate.

    ```python
    >>> import fedcore as fc, jax.numpy as jnp
    >>> from fedcore.testing import laws
    >>> _ = laws.check_mean_of_broadcast(fc.mean, fc.server_value(jnp.ones(3)), num_clients=4)
    ```
    """
    if not is_placed(x):
        x = server_value(x)
    if x.placement is not SERVER:
        raise TypeError(f"check_mean_of_broadcast: x must be T@SERVER (or unplaced), got {x.type}.")
    if num_clients < 1:
        raise ValueError(f"check_mean_of_broadcast: num_clients must be at least 1, got {num_clients}.")
    copies = _broadcast_to_clients(x, num_clients)
    extra = () if weights is None else (weights,)
    result = aggregator(copies, *extra)
    tolerance = summation_atol(x, weights, num_clients=num_clients) if atol is None else atol
    assert_federated_close(
        result, x, rtol=rtol, atol=tolerance, law=f"{_name(aggregator)} of {num_clients} copies of x equals x"
    )
    if all_equal:
        assert_federated_close(
            aggregator(broadcast(x), *extra),
            x,
            rtol=rtol,
            atol=tolerance,
            law=f"{_name(aggregator)}(broadcast(x)) equals x",
        )
    return result


def check_weight_scale_invariance(
    aggregator: Callable[[FederatedValue, FederatedValue], Any],
    client_value: FederatedValue,
    weights: FederatedValue,
    *,
    scales: Sequence[float] = (0.5, 4.0),
    rtol: float = 1e-6,
    atol: float | None = None,
) -> Any:
    """Checks that multiplying every weight by the same positive number does not change a weighted mean.

    Powers of two (the default) scale float weights exactly, so only the
    rounding of the final division may differ. Returns the unscaled result.

    ```python
    >>> import fedcore as fc, jax.numpy as jnp
    >>> from fedcore.testing import laws
    >>> x = fc.clients_value(jnp.array([1.0, 3.0]))
    >>> float(laws.check_weight_scale_invariance(fc.mean, x, fc.clients_value(jnp.array([3.0, 1.0]))))
    1.5
    ```
    """
    if not (is_placed(weights) and weights.per_client):
        raise TypeError(
            f"check_weight_scale_invariance: weights must be {{f32}}@CLIENTS, got {_fmt_type(type_of(weights))}."
        )
    reference = aggregator(client_value, weights)
    tolerance = summation_atol(client_value, weights, reference) if atol is None else atol
    for scale in scales:
        if not scale > 0:
            raise ValueError(f"check_weight_scale_invariance: scales must be positive, got {scale}.")
        scaled = clients_value(jax.tree.map(lambda w, s=scale: w * s, weights.value))
        assert_federated_close(
            aggregator(client_value, scaled),
            reference,
            rtol=rtol,
            atol=tolerance,
            law=f"{_name(aggregator)} unchanged when every weight is scaled by {scale}",
        )
    return reference


def check_strategies_agree(
    comp: Callable[..., Any],
    *args: Any,
    strategies: Sequence[str | ExecutionStrategy] = ("loop", "vmap"),
    rtol: float = 1e-5,
    atol: float | None = None,
) -> Any:
    """Runs `comp(*args)` under each execution strategy and checks the results agree.

    The first strategy is the reference (the loop strategy by default, the
    simple per-client Python loop). Types must match exactly and leaves within
    tolerance (default: `summation_atol` of the arguments and the reference
    result). Returns the reference result.

    Args:
        comp: the computation (or any function of placed values) to run.
        *args: its arguments.
        strategies: strategy names (`"loop"`, `"vmap"`, `"chunked"`, `"sharded"`, or a
            registered one, each with its defaults) or strategy instances, which
            carry options: `fc.ChunkedStrategy(chunk_size=3)` checks chunks of 3
            clients (a chunk size that does not divide the cohort is the case
            worth testing).
        rtol: relative tolerance per leaf.
        atol: absolute tolerance per leaf; default `summation_atol(args, reference)`.

    Returns:
        The reference strategy's result.

    ```python
    >>> import fedcore as fc, jax.numpy as jnp
    >>> from fedcore.testing import laws
    >>> @fc.computation
    ... def average(x):
    ...     return fc.mean(fc.map(jnp.square, x))
    >>> float(laws.check_strategies_agree(average, fc.clients_value(jnp.arange(4.0))))
    3.5
    >>> float(laws.check_strategies_agree(
    ...     average, fc.clients_value(jnp.arange(5.0)), strategies=("loop", "vmap", fc.ChunkedStrategy(chunk_size=2))))
    6.0
    ```
    """
    if not strategies:
        raise ValueError("check_strategies_agree needs at least one strategy.")
    results = []
    for strategy in strategies:
        with execution(strategy) as active:
            results.append((active, comp(*args)))
    (reference_strategy, reference), *others = results
    tolerance = summation_atol(args, reference) if atol is None else atol
    for strategy, result in others:
        assert_federated_close(
            result,
            reference,
            rtol=rtol,
            atol=tolerance,
            law=f"{_name(comp)} under strategy {strategy.name!r} vs {reference_strategy.name!r}",
        )
    return reference


def check_group_size_invariance(
    comp: Callable[..., Any],
    population: ClientPopulation,
    ids: Sequence[int] | np.ndarray,
    *args: Any,
    group_sizes: Sequence[int] = (2, 3),
    rtol: float = 1e-5,
    atol: float | None = None,
) -> Any:
    """Runs `comp(population.select(ids, group_size=g), *args)` for several group sizes and checks the results agree.

    Under the `vmap` strategy a map over a cohort runs its clients in groups
    of similar step counts, sorted by step count, each group with one step
    bound (its largest client's step count). A client function must not see
    any of that: one that, say, counts `client.step_bound` steps instead of
    its own passes with one client per group and fails here. The reference
    is one client per group (no sorting, each client's own bound). Returns
    the reference result.

    ```python
    >>> import fedcore as fc, numpy as np
    >>> from fedcore.core._batches import ClientBatches, ClientPopulation, num_real_steps
    >>> from fedcore.testing import laws
    >>> mask = np.arange(4)[None, :, None] < np.array([[[1]], [[4]], [[2]]])
    >>> population = ClientPopulation.from_batches(ClientBatches.from_materialized({"x": np.ones((3, 4, 1)), "mask": mask}))
    >>> total_steps = fc.computation(lambda c: fc.sum(fc.map(lambda b: num_real_steps(b.mask), c)))
    >>> int(laws.check_group_size_invariance(total_steps, population, [2, 0, 1]))
    7
    ```
    """
    ids = np.asarray(ids)
    sizes = [g for g in group_sizes if g != 1]
    if not sizes:
        raise ValueError("check_group_size_invariance needs a group size other than 1 to compare with.")
    with execution("vmap"):
        reference = comp(population.select(ids, group_size=1), *args)
        results = [(g, comp(population.select(ids, group_size=g), *args)) for g in sizes]
    tolerance = summation_atol(args, reference, num_clients=len(ids)) if atol is None else atol
    for g, result in results:
        assert_federated_close(
            result,
            reference,
            rtol=rtol,
            atol=tolerance,
            law=f"{_name(comp)} with clients in groups of {g} vs one client per group",
        )
    return reference


def _name(fn: Any) -> str:
    return getattr(fn, "__name__", None) or type(fn).__name__
