"""Metrics as (init, update, merge, report) sets of pure functions.

A metric's state is a pytree of running sums (totals and counts), so it
aggregates exactly across batches and clients: states are merged by summing,
and `report` divides only at the end (never a mean of means).

```python
>>> import jax.numpy as jnp
>>> m = accuracy()
>>> s = m.update(m.init(), BatchOutput(jnp.eye(2), jnp.array([0, 0]), jnp.ones(2), jnp.zeros(2)))
>>> float(m.report(s))
0.5
```
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PyTree

__all__ = [
    "BatchOutput",
    "Metric",
    "example_mean",
    "accuracy",
    "mean_loss",
    "num_examples",
    "num_batches",
    "init_all",
    "update_all",
    "report_all",
    "merge_sums",
]


class BatchOutput(NamedTuple):
    """What a metric sees of one batch: predictions, labels, example mask (1.0 = real) and per-example losses."""

    predictions: Array
    labels: Array
    mask: Float[Array, " batch"]
    losses: Float[Array, " batch"]


def merge_sums(a: PyTree, b: PyTree) -> PyTree:
    """Merges two metric states by summing them leaf by leaf."""
    return jax.tree.map(jnp.add, a, b)


class Metric(NamedTuple):
    """A metric: `init() -> state`, `update(state, BatchOutput) -> state`,
    `merge(state, state) -> state` (summing, by default), `report(state) -> value`.

    States must be sums, so that summing client states (`fc.sum`) merges them.
    """

    name: str
    init: Callable[[], PyTree]
    update: Callable[[PyTree, BatchOutput], PyTree]
    report: Callable[[PyTree], Array]
    merge: Callable[[PyTree, PyTree], PyTree] = merge_sums


def check_metric(m: Any) -> None:
    """Refuses anything but a `Metric`, naming the usual mistake (a metric factory not called, a string)."""
    if isinstance(m, Metric):
        return
    if callable(m) and not inspect.isclass(m):
        name = getattr(m, "__qualname__", None) or getattr(m, "__name__", None) or type(m).__name__
        raise TypeError(f"metrics must be Metric values, got the function {name!r}; call it: {name}().")
    if isinstance(m, str):
        raise TypeError(
            f"metrics must be Metric values, got the string {m!r}; use fedcore.learning.metrics "
            f"(e.g. metrics.accuracy(), metrics.mean_loss())."
        )
    raise TypeError(f"metrics must be Metric values (fedcore.learning.metrics), got {type(m).__name__}.")


def _ratio(total: Array, count: Array) -> Array:
    return jnp.where(count > 0, total / jnp.maximum(count, 1e-30), 0.0)


def example_mean(name: str, per_example: Callable[[BatchOutput], Array], total_key: str = "total") -> Metric:
    """A metric that is the mean over real examples of `per_example(batch_output)`.

    Its state is `{total_key: sum of values, "count": sum of the mask}`.

    ```python
    >>> m = example_mean("mean_label", lambda out: out.labels.astype(jnp.float32))
    ```
    """

    def update(state, out: BatchOutput):
        return {
            total_key: state[total_key] + jnp.sum(per_example(out) * out.mask),
            "count": state["count"] + jnp.sum(out.mask),
        }

    return Metric(
        name,
        lambda: {total_key: jnp.float32(0), "count": jnp.float32(0)},
        update,
        lambda s: _ratio(s[total_key], s["count"]),
    )


def accuracy(name: str = "accuracy") -> Metric:
    """Fraction of real examples whose argmax prediction equals the integer label."""
    return example_mean(
        name, lambda out: (jnp.argmax(out.predictions, axis=-1) == out.labels).astype(jnp.float32), "correct"
    )


def mean_loss(name: str = "loss") -> Metric:
    """Example-weighted mean of the per-example loss (Keras' `Mean` with sample weight = batch size)."""
    return example_mean(name, lambda out: out.losses, "total")


def num_examples(name: str = "num_examples") -> Metric:
    """Number of real example visits (each example counts once per epoch)."""
    return Metric(
        name,
        lambda: jnp.int32(0),
        lambda s, out: s + jnp.sum(out.mask > 0).astype(jnp.int32),
        lambda s: s,
    )


def num_batches(name: str = "num_batches") -> Metric:
    """Number of non-empty batches."""
    return Metric(
        name,
        lambda: jnp.int32(0),
        lambda s, out: s + jnp.any(out.mask > 0).astype(jnp.int32),
        lambda s: s,
    )


def init_all(metrics: Sequence[Metric]) -> dict[str, Any]:
    """Initial states of several metrics, by name."""
    return {m.name: m.init() for m in metrics}


def update_all(metrics: Sequence[Metric], states: dict[str, Any], out: BatchOutput) -> dict[str, Any]:
    """Updates several metrics' states with one batch."""
    return {m.name: m.update(states[m.name], out) for m in metrics}


def report_all(metrics: Sequence[Metric], states: dict[str, Any]) -> dict[str, Array]:
    """Reports several metrics from their (merged) states."""
    return {m.name: m.report(states[m.name]) for m in metrics}
