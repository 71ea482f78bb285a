"""The plain reducers: weighted mean (the default everywhere) and sum."""

from __future__ import annotations

from typing import Any

from .. import core as fc
from ._base import Aggregator, AggregatorOutput, no_measurements

__all__ = ["mean", "sum"]


def _no_state(template: Any, key: Any = None) -> fc.FederatedValue:
    del template, key
    return fc.server_value(())


def mean() -> Aggregator:
    """`({T}@CLIENTS, {f32}@CLIENTS) -> T@SERVER`: the weighted mean, `sum_i w_i x_i / sum_i w_i`.

    Without weights, the plain mean. Stateless; no measurements. The default
    `model_aggregator` of every learning algorithm.

    ```python
    >>> import fedcore as fc, jax.numpy as jnp
    >>> from fedcore import aggregators as fa
    >>> agg = fa.mean()
    >>> state = agg.init(jnp.zeros(2))
    >>> out = agg.next(state, fc.clients_value(jnp.array([[1.0, 2.0], [3.0, 6.0]])),
    ...                fc.clients_value(jnp.array([3.0, 1.0])))
    >>> out.result.value.tolist()
    [1.5, 3.0]
    ```
    """

    def next_(state, values, weights=None):
        return AggregatorOutput(state, fc.mean(values, weights), no_measurements())

    return Aggregator(init=_no_state, next=next_)


def sum() -> Aggregator:  # noqa: A001
    """`{T}@CLIENTS -> T@SERVER`: the sum over clients; weights, if given, are refused.

    ```python
    >>> import fedcore as fc, jax.numpy as jnp
    >>> from fedcore import aggregators as fa
    >>> agg = fa.sum()
    >>> float(agg.next(agg.init(jnp.zeros(())), fc.clients_value(jnp.array([1.0, 2.0]))).result)
    3.0
    ```
    """

    def next_(state, values, weights=None):
        if weights is not None:
            raise TypeError("fa.sum() takes no weights (a weighted sum is not a sum); use fa.mean() or drop the weights.")
        return AggregatorOutput(state, fc.sum(values), no_measurements())

    return Aggregator(init=_no_state, next=next_)
