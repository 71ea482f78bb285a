"""Federated SGD (McMahan et al. 2017): one gradient per client, averaged at the server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import optax
from jaxtyping import Array

import fedcore.core as fc

from .._client_work import local_gradient
from ..models import Model
from ._checks import check_build_args
from ._process import (
    ClientWeighting,
    LearningProcess,
    ServerState,
    check_finite,
    check_policy,
    raise_if_non_finite,
    train_metrics,
)

__all__ = ["build_fed_sgd"]


def build_fed_sgd(
    model: Model,
    server_optimizer: optax.GradientTransformation = optax.sgd(0.1),
    client_weighting: ClientWeighting | Callable[[Any], Array] = ClientWeighting.NUM_EXAMPLES,
    *,
    non_finite: str = "raise",
) -> LearningProcess:
    """FedSGD: each client computes the gradient of its mean loss over all its batches at the
    global model; the server applies `server_optimizer` to the weighted mean gradient.

    With example weighting this is exactly full-batch gradient descent on the
    union of the round's client data.

    ```python
    >>> import optax
    >>> from fedcore.learning import models, build_fed_sgd
    >>> process = build_fed_sgd(models.linear(), optax.sgd(0.1))
    ```
    """
    check_build_args(model, server_optimizer=server_optimizer)
    check_policy(non_finite)

    @fc.computation
    def initialize():
        params = model.initial_params
        return fc.server_value(ServerState(params, server_optimizer.init(params), jnp.int32(0)))

    def client_gradient(params, client):
        grad, states, n = local_gradient(model, params, client)
        if client_weighting is ClientWeighting.NUM_EXAMPLES:
            weight = n
        elif client_weighting is ClientWeighting.UNIFORM:
            weight = jnp.float32(1.0)
        else:
            weight = jnp.asarray(client_weighting(n), jnp.float32)
        grad, weight, bad = check_finite(non_finite, grad, weight)
        return {"grad": grad, "weight": weight, "metrics": states, "non_finite": bad}

    def server_update(state, grad, bad):
        updates, opt_state = server_optimizer.update(grad, state.opt_state, state.params)
        new = ServerState(optax.apply_updates(state.params, updates), opt_state, state.round_num + 1, state.extra)
        return raise_if_non_finite(non_finite, new, bad)

    @fc.computation
    def next(state, client_data):  # noqa: A001
        params = fc.apply(lambda s: s.params, state)
        out = fc.map(client_gradient, fc.broadcast(params), client_data)
        bad = fc.sum(out["non_finite"])
        new_state = fc.apply(server_update, state, fc.mean(out["grad"], out["weight"]), bad)
        metrics = fc.apply(
            lambda m, b: train_metrics(model, m, {"num_non_finite_updates": b}), fc.sum(out["metrics"]), bad
        )
        return new_state, metrics

    return LearningProcess(initialize, next, model)
