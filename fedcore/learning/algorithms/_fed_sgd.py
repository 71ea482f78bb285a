"""Federated SGD (McMahan et al. 2017): one gradient per client, averaged at the server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import optax
from jaxtyping import Array

import fedcore.core as fc
from fedcore import aggregators as fa

from .._client_work import LocalResult, local_gradient
from ..models import Model
from ._checks import check_build_args
from ._process import (
    ClientWeighting,
    LearningProcess,
    aggregate_updates,
    aggregator_weights,
    apply_server_gradient,
    check_finite,
    check_policy,
    client_weight,
    initial_server_state,
    raise_if_non_finite,
    round_metrics,
)

__all__ = ["build_fed_sgd"]


def build_fed_sgd(
    model: Model,
    server_optimizer: optax.GradientTransformation = optax.sgd(0.1),
    client_weighting: ClientWeighting | Callable[[Any], Array] = ClientWeighting.NUM_EXAMPLES,
    *,
    model_aggregator: fa.Aggregator | None = None,
    model_aggregator_key: Array | None = None,
    non_finite: str = "raise",
) -> LearningProcess:
    """FedSGD: each client computes the gradient of its mean loss over all its batches at the
    global model; the server applies `server_optimizer` to the weighted mean gradient.

    With example weighting this is exactly full-batch gradient descent on the
    union of the round's client data. `client_weighting`, `model_aggregator`
    (here combining gradients), `model_aggregator_key` and `non_finite` as in
    `build_weighted_fed_avg`; a `client_weighting` function receives the
    client's `LocalResult` (its `params` are the global model's).

    ```python
    >>> import optax
    >>> from fedcore.learning import models, build_fed_sgd
    >>> process = build_fed_sgd(models.linear(), optax.sgd(0.1))
    ```
    """
    aggregator = fa.mean() if model_aggregator is None else model_aggregator
    check_build_args(model, aggregator, server_optimizer=server_optimizer)
    check_policy(non_finite)

    @fc.computation
    def initialize():
        return initial_server_state(model, server_optimizer, aggregator, model_aggregator_key)

    def client_gradient(params, client):
        grad, states, n = local_gradient(model, params, client)
        steps = jnp.sum(jnp.any(client.mask, axis=-1)).astype(jnp.int32)
        weight = client_weight(client_weighting, LocalResult(params, states, n, steps))
        grad, weight, bad = check_finite(non_finite, grad, weight)
        return {"grad": grad, "weight": weight, "metrics": states, "non_finite": bad}

    def server_update(state, grad, aggregator_state, bad):
        new = apply_server_gradient(server_optimizer, state, grad, aggregator_state)
        return raise_if_non_finite(non_finite, new, bad)

    @fc.computation
    def next(state, client_data):  # noqa: A001
        params = fc.apply(lambda s: s.params, state)
        out = fc.map(client_gradient, fc.broadcast(params), client_data)
        weights = aggregator_weights(client_weighting, non_finite, out["weight"], out["non_finite"])
        aggregated = aggregate_updates(aggregator, state, out["grad"], weights)
        bad = fc.sum(out["non_finite"])
        new_state = fc.apply(server_update, state, aggregated.result, aggregated.state, bad)
        return new_state, round_metrics(model, out["metrics"], bad, aggregated.measurements)

    return LearningProcess(initialize, next, model)
