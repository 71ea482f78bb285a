"""Gaussian noise on the sum of clipped values, and DP-FedAvg's mean (McMahan et al. 2018)."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from .. import core as fc
from ._base import Aggregator, AggregatorOutput, Stage, chain, merge_measurements
from ._clipping import clip
from ._random import initial_key, split_round_key
from ._reducers import sum as sum_reducer

__all__ = ["gaussian_noise", "dp_mean"]


def _positive(op: str, name: str, x: Any) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) or x <= 0:
        raise ValueError(f"fa.{op}: {name} must be a finite number > 0, got {x!r}.")
    return float(x)


def _add_noise(tree: Any, key: jax.Array, stddev: float) -> Any:
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(key, len(leaves))
    noisy = [a + stddev * jax.random.normal(k, a.shape, a.dtype) for a, k in zip(leaves, keys)]
    return jax.tree.unflatten(treedef, noisy)


def gaussian_noise(noise_multiplier: float, expected_clients: float, *, clip_norm: float) -> Stage:
    """`T@SERVER -> T@SERVER` after an inner sum: adds `N(0, (noise_multiplier * clip_norm)^2)` per coordinate,
    then divides by `expected_clients` (DP-FedAvg's fixed denominator).

    The inner aggregator must sum values whose norms are bounded by
    `clip_norm` (put `fa.clip(clip_norm)` inside, as `fa.dp_mean` does): the
    noise's scale is the sum's sensitivity. The noise is drawn from the
    state's key, fresh every round and deterministic from `init`'s key.
    Measurement: `noise_stddev` (of the sum's noise).

    Args:
        noise_multiplier: `z`, the noise's standard deviation over the clipping norm (> 0).
        expected_clients: the expected number of clients per round (> 0), the mean's denominator.
        clip_norm: the clipping norm `C` of the values summed.

    ```python
    >>> import fedcore as fc, jax.numpy as jnp
    >>> from fedcore import aggregators as fa
    >>> agg = fa.chain(fa.gaussian_noise(1.0, 2, clip_norm=0.5), fa.clip(0.5), fa.sum())
    >>> out = agg.next(agg.init(jnp.zeros(3)), fc.clients_value(jnp.ones((2, 3))))
    >>> out.result.type, float(out.measurements["noise_stddev"])
    (f32[3]@SERVER, 0.5)
    ```
    """
    z = _positive("gaussian_noise", "noise_multiplier", noise_multiplier)
    m = _positive("gaussian_noise", "expected_clients", expected_clients)
    c = _positive("gaussian_noise", "clip_norm", clip_norm)
    stddev = z * c

    def wrap(inner: Aggregator) -> Aggregator:
        def init(template: Any, key: Any = None) -> fc.FederatedValue:
            own, inner_key = jax.random.split(initial_key(key))
            return fc.apply(lambda s: {"key": own, "inner": s}, inner.init(template, inner_key))

        def next_(state, values, weights=None):
            out = inner.next(fc.apply(lambda s: s["inner"], state), values, weights)

            def noisy_mean(s, total):
                this_round, carried = split_round_key(s["key"])
                return carried, jax.tree.map(lambda a: a / m, _add_noise(total, this_round, stddev))

            both = fc.apply(noisy_mean, state, out.result)
            new_state = fc.apply(lambda b, inner_state: {"key": b[0], "inner": inner_state}, both, out.state)
            own = fc.server_value({"noise_stddev": jnp.float32(stddev)})
            return AggregatorOutput(new_state, fc.apply(lambda b: b[1], both), merge_measurements(out.measurements, own))

        return Aggregator(init, next_)

    return Stage(wrap=wrap, name="gaussian_noise")


def dp_mean(noise_multiplier: float, clip_norm: float, expected_clients: float, adaptive: bool = False) -> Aggregator:
    """`{T}@CLIENTS -> T@SERVER`: DP-FedAvg's mean: clip to `clip_norm`, sum, add `N(0, (z C)^2)`, divide by `expected_clients`.

    TFF's `DifferentiallyPrivateFactory.gaussian_fixed` composition. Unweighted,
    as the guarantee requires: build the algorithm unweighted
    (`build_unweighted_fed_avg`), a weighted one is refused. Account for the
    privacy spent with `fa.privacy.epsilon`. Measurements: `clipped_count`,
    `clipping_norm`, `noise_stddev`.

    Args:
        noise_multiplier: `z` (> 0).
        clip_norm: `C`, the clipping norm (> 0).
        expected_clients: the expected number of clients per round.
        adaptive: adaptive clipping (Andrew et al. 2021) is not built yet; `True` is refused.

    ```python
    >>> import fedcore as fc, jax.numpy as jnp
    >>> from fedcore import aggregators as fa
    >>> agg = fa.dp_mean(noise_multiplier=0.5, clip_norm=1.0, expected_clients=3)
    >>> out = agg.next(agg.init(jnp.zeros(4)), fc.clients_value(jnp.ones((3, 4))))
    >>> sorted(out.measurements.value)
    ['clipped_count', 'clipping_norm', 'noise_stddev']
    ```
    """
    if adaptive:
        raise NotImplementedError("fa.dp_mean(adaptive=True): adaptive clipping is not built yet; use a fixed clip_norm.")
    return chain(gaussian_noise(noise_multiplier, expected_clients, clip_norm=clip_norm), clip(clip_norm), sum_reducer())
