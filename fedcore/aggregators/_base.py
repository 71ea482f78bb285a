"""The aggregator protocol: `init`/`next` pairs written in the federated core, and their composition."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax

from ..core import FederatedValue

__all__ = ["Aggregator", "AggregatorOutput", "Stage", "chain"]


class AggregatorOutput(NamedTuple):
    """What one round of an aggregator returns.

    - `state`: the aggregator's new state, `S@SERVER`.
    - `result`: the aggregate, `T@SERVER`.
    - `measurements`: a flat dict of scalars, `<name=...>@SERVER` (TFF's
      measurement names where TFF has one: `clipped_count`, `clipping_norm`, ...).
    """

    state: FederatedValue
    result: FederatedValue
    measurements: FederatedValue


class Aggregator(NamedTuple):
    """`({T}@CLIENTS, {f32}@CLIENTS) -> T@SERVER`, with a state: an optax-style pair of pure functions.

    - `init(template, key=None) -> S@SERVER`: `template` is an unplaced pytree
      shaped like one client's value (arrays or `jax.ShapeDtypeStruct`s);
      `key` a `jax.random` key for aggregators that draw randomness.
    - `next(state, values, weights=None) -> AggregatorOutput`: `values` is
      `{T}@CLIENTS`, `weights` `{f32}@CLIENTS` or `None` (uniform). Written
      with the core's intrinsics, so it runs inside a `@fc.computation`
      under every execution strategy that can express it.
    """

    init: Callable[..., FederatedValue]
    next: Callable[..., AggregatorOutput]


class Stage(NamedTuple):
    """A part of an aggregator that wraps an inner one (TFF's nested factories).

    `wrap(inner) -> Aggregator`: the wrapped aggregator transforms the
    clients' values (client side), calls `inner.next`, and may post-process
    the inner result (server side). Stages compose with `chain`.
    """

    wrap: Callable[[Aggregator], Aggregator]
    name: str = "stage"


def chain(*parts: Stage | Aggregator) -> Aggregator:
    """`chain(a, b, r) = a(b(r))`: stages `a`, `b` around the reducer `r` (TFF's nesting).

    Client-side parts run in the order given, server-side parts in reverse.
    The last part must be an `Aggregator` (a reducer, e.g. `fa.mean()`);
    every other part a `Stage`. A reducer alone is already an aggregator.

    ```python
    >>> from fedcore import aggregators as fa
    >>> fa.chain()
    Traceback (most recent call last):
    ...
    TypeError: chain needs at least a reducer, e.g. fa.chain(fa.mean()).
    ```
    """
    if not parts:
        raise TypeError("chain needs at least a reducer, e.g. fa.chain(fa.mean()).")
    *stages, reducer = parts
    if not isinstance(reducer, Aggregator):
        raise TypeError(
            f"chain: the last part must be an Aggregator (a reducer such as fa.mean()), got {reducer!r}."
        )
    for i, s in enumerate(stages):
        if not isinstance(s, Stage):
            what = "an Aggregator (only the last part may be a reducer)" if isinstance(s, Aggregator) else repr(s)
            raise TypeError(f"chain: part {i} must be a Stage such as fa.clip(1.0), got {what}.")
    agg = reducer
    for s in reversed(stages):
        agg = s.wrap(agg)
    return agg


def template_of(tree: Any) -> Any:
    """The unplaced shapes of one client's value: arrays or ShapeDtypeStructs, as `jax.ShapeDtypeStruct`s."""
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree)
