"""Federated Averaging (McMahan et al. 2017) and FedProx (Li et al. 2020), written in the federated core."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array

import fedcore.core as fc

from .._client_work import local_training
from ..models import Model
from ._checks import check_build_args
from ._process import (
    ClientWeighting,
    LearningProcess,
    ServerState,
    check_finite,
    check_policy,
    client_weight,
    raise_if_non_finite,
    server_step,
    train_metrics,
)

__all__ = ["build_weighted_fed_avg", "build_unweighted_fed_avg", "build_fed_prox"]


def build_weighted_fed_avg(
    model: Model,
    client_optimizer: optax.GradientTransformation,
    server_optimizer: optax.GradientTransformation = optax.sgd(1.0),
    client_weighting: ClientWeighting | Callable[[Any], Array] = ClientWeighting.NUM_EXAMPLES,
    *,
    proximal_mu: float = 0.0,
    non_finite: str = "raise",
) -> LearningProcess:
    """Federated Averaging: clients train locally, the server averages their model deltas.

    Each round: broadcast the global model; every client runs
    `client_optimizer` over its batches (fresh optimizer state each round);
    the server takes the weighted mean of client deltas (`client model -
    global model`) and applies `server_optimizer` to its negation.
    Adaptive server optimizers (`optax.adam`, `optax.yogi`, `optax.adagrad`)
    give FedAdam, FedYogi and FedAdagrad (Reddi et al. 2021).

    `non_finite="raise"` stops with an error when a client's update is NaN or
    Inf; `"drop"` gives such updates weight 0, as TFF does.

    ```python
    >>> import fedcore as fc, optax
    >>> from fedcore.learning import models, build_weighted_fed_avg
    >>> process = build_weighted_fed_avg(models.linear(), optax.sgd(0.1))
    >>> state = process.initialize()
    >>> # state, metrics = process.next(state, fedcore.data.batch_clients(clients, 20, epochs=10))
    ```
    """
    check_build_args(model, client_optimizer=client_optimizer, server_optimizer=server_optimizer)
    check_policy(non_finite)
    if proximal_mu < 0:
        raise ValueError(f"proximal_mu must be >= 0, got {proximal_mu}.")

    @fc.computation
    def initialize():
        params = model.initial_params
        return fc.server_value(ServerState(params, server_optimizer.init(params), jnp.int32(0)))

    def client_update(global_params, client):
        extra_loss = None
        if proximal_mu > 0:
            extra_loss = lambda p: 0.5 * proximal_mu * optax.tree.norm(optax.tree.sub(p, global_params), squared=True)  # noqa: E731
        result = local_training(model, client_optimizer, global_params, client, extra_loss=extra_loss)
        delta = jax.tree.map(jnp.subtract, result.params, global_params)
        delta, weight, bad = check_finite(non_finite, delta, client_weight(client_weighting, result))
        return {"delta": delta, "weight": weight, "metrics": result.metric_states, "non_finite": bad}

    @fc.computation
    def next(state, client_data):  # noqa: A001
        global_params = fc.apply(lambda s: s.params, state)
        out = fc.map(client_update, fc.broadcast(global_params), client_data)
        mean_delta = fc.mean(out["delta"], out["weight"])
        num_non_finite = fc.sum(out["non_finite"])
        new_state = fc.apply(
            lambda s, d, bad: raise_if_non_finite(non_finite, server_step(server_optimizer, s, d), bad),
            state,
            mean_delta,
            num_non_finite,
        )
        metrics = fc.apply(
            lambda m, bad: train_metrics(model, m, {"num_non_finite_updates": bad}),
            fc.sum(out["metrics"]),
            num_non_finite,
        )
        return new_state, metrics

    return LearningProcess(initialize, next, model)


def build_unweighted_fed_avg(
    model: Model,
    client_optimizer: optax.GradientTransformation,
    server_optimizer: optax.GradientTransformation = optax.sgd(1.0),
    **kwargs: Any,
) -> LearningProcess:
    """FedAvg with every client's delta weighted equally.

    ```python
    >>> from fedcore.learning import models, build_unweighted_fed_avg
    >>> process = build_unweighted_fed_avg(models.linear(), optax.sgd(0.1))
    ```
    """
    return build_weighted_fed_avg(model, client_optimizer, server_optimizer, ClientWeighting.UNIFORM, **kwargs)


def build_fed_prox(
    model: Model,
    client_optimizer: optax.GradientTransformation,
    server_optimizer: optax.GradientTransformation = optax.sgd(1.0),
    client_weighting: ClientWeighting | Callable[[Any], Array] = ClientWeighting.NUM_EXAMPLES,
    *,
    mu: float,
    **kwargs: Any,
) -> LearningProcess:
    """FedProx: FedAvg whose clients minimise `loss + mu/2 ||w - w_global||^2`.

    Reported train losses are the model's loss, without the proximal term.

    ```python
    >>> from fedcore.learning import models, build_fed_prox
    >>> process = build_fed_prox(models.linear(), optax.sgd(0.1), mu=0.01)
    ```
    """
    return build_weighted_fed_avg(
        model, client_optimizer, server_optimizer, client_weighting, proximal_mu=mu, **kwargs
    )
