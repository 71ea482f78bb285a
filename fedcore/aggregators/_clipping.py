"""Norm-bounding stages: clipping (`fa.clip`) and zeroing (`fa.zeroing`), as TFF's factories."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from .. import core as fc
from ._base import Aggregator, AggregatorOutput, Stage, merge_measurements

__all__ = ["clip", "zeroing"]


def _positive_norm(op: str, max_norm: Any) -> float:
    if isinstance(max_norm, bool) or not isinstance(max_norm, (int, float)) or not math.isfinite(max_norm) or max_norm <= 0:
        raise ValueError(f"fa.{op}: max_norm must be a finite number > 0, got {max_norm!r}.")
    return float(max_norm)


def _norm_stage(
    name: str, max_norm: float, bound: Callable[[Any, jax.Array, float], Any], counted: str, norm_name: str
) -> Stage:
    """A stage that bounds every client's global l2 norm: `bound(value, norm, max_norm) -> (value, affected)`."""

    def wrap(inner: Aggregator) -> Aggregator:
        def init(template: Any, key: Any = None) -> fc.FederatedValue:
            return inner.init(template, key)

        def next_(state, values, weights=None):
            def one_client(v):
                new, affected = bound(v, optax.tree.norm(v), max_norm)
                return new, affected.astype(jnp.int32)

            bounded = fc.map(one_client, values)
            out = inner.next(state, bounded[0], weights)
            own = fc.apply(
                lambda n: {counted: n, norm_name: jnp.float32(max_norm)}, fc.sum(bounded[1])
            )
            return AggregatorOutput(out.state, out.result, merge_measurements(out.measurements, own))

        return Aggregator(init, next_)

    return Stage(wrap=wrap, name=name)


def clip(max_norm: float) -> Stage:
    """`{T}@CLIENTS -> {T}@CLIENTS` before the inner aggregator: each client's value scaled to global l2 norm <= `max_norm`.

    A value whose norm (over the whole pytree) is at most `max_norm` is left
    unchanged; a larger one is scaled by `max_norm / norm`, keeping its
    direction (TFF's `clipping_factory`). Measurements: `clipped_count` (clients
    scaled this round) and `clipping_norm`.

    Args:
        max_norm: the clipping norm `C`, a finite number > 0.

    ```python
    >>> import fedcore as fc, jax.numpy as jnp
    >>> from fedcore import aggregators as fa
    >>> agg = fa.chain(fa.clip(1.0), fa.sum())
    >>> out = agg.next(agg.init(jnp.zeros(2)), fc.clients_value(jnp.array([[3.0, 4.0], [0.3, 0.4]])))
    >>> [round(v, 5) for v in out.result.value.tolist()], int(out.measurements["clipped_count"])
    ([0.9, 1.2], 1)
    ```
    """
    c = _positive_norm("clip", max_norm)

    def bound(v, norm, limit):
        scale = jnp.minimum(1.0, limit / jnp.maximum(norm, jnp.finfo(jnp.float32).tiny))
        return jax.tree.map(lambda a: (a * scale).astype(a.dtype), v), norm > limit

    return _norm_stage("clip", c, bound, "clipped_count", "clipping_norm")


def zeroing(max_norm: float) -> Stage:
    """`{T}@CLIENTS -> {T}@CLIENTS` before the inner aggregator: a client value of global l2 norm > `max_norm` becomes zeros.

    TFF's `zeroing_factory`: a guard against a few huge (or NaN/Inf) updates;
    the client's weight is kept. A non-finite value counts as too large and is
    zeroed too. Measurements: `zeroed_count` and `zeroing_norm`.

    Args:
        max_norm: the zeroing norm, a finite number > 0.

    ```python
    >>> import fedcore as fc, jax.numpy as jnp
    >>> from fedcore import aggregators as fa
    >>> agg = fa.chain(fa.zeroing(10.0), fa.sum())
    >>> out = agg.next(agg.init(jnp.zeros(2)), fc.clients_value(jnp.array([[30.0, 40.0], [3.0, 4.0], [jnp.nan, 0.0]])))
    >>> out.result.value.tolist(), int(out.measurements["zeroed_count"])
    ([3.0, 4.0], 2)
    ```
    """
    c = _positive_norm("zeroing", max_norm)

    def bound(v, norm, limit):
        keep = norm <= limit  # False for NaN norms
        return jax.tree.map(lambda a: jnp.where(keep, a, jnp.zeros_like(a)), v), ~keep

    return _norm_stage("zeroing", c, bound, "zeroed_count", "zeroing_norm")
