"""Federated Averaging (McMahan et al. 2017) and FedProx (Li et al. 2020), written in the federated core."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array

import fedcore.core as fc
from fedcore import aggregators as fa

from .._client_work import local_training
from ..models import Model
from ._checks import check_build_args
from ._process import (
    ClientWeighting,
    LearningProcess,
    aggregate_updates,
    aggregator_weights,
    check_finite,
    check_policy,
    client_weight,
    initial_server_state,
    raise_if_non_finite,
    round_metrics,
    server_step,
)

__all__ = ["build_weighted_fed_avg", "build_unweighted_fed_avg", "build_fed_prox"]


def build_weighted_fed_avg(
    model: Model,
    client_optimizer: optax.GradientTransformation,
    server_optimizer: optax.GradientTransformation = optax.sgd(1.0),
    client_weighting: ClientWeighting | Callable[[Any], Array] = ClientWeighting.NUM_EXAMPLES,
    *,
    model_aggregator: fa.Aggregator | None = None,
    model_aggregator_key: Array | None = None,
    proximal_strength: float = 0.0,
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

    Args:
        model: the `Model` to train (e.g. `models.linear()`).
        client_optimizer: the clients' optax optimizer (state fresh every round).
        server_optimizer: applied to the negated aggregate delta; `optax.sgd(1.0)`
            makes the new model the old one plus the aggregate delta.
        client_weighting: `ClientWeighting.NUM_EXAMPLES` (default), `UNIFORM`, or a
            function of the client's `LocalResult` returning its weight.
        model_aggregator: how the server combines the client deltas, an
            `fa.Aggregator` (default `fa.mean()`: the weighted mean), e.g.
            `fa.dp_mean(...)` or `fa.robust_mean()`. Its state lives in
            `state.value.aggregator`; its measurements are reported under
            `metrics["aggregator"]`. Under `UNIFORM` weighting (and
            `non_finite="raise"`) it receives no weights.
        model_aggregator_key: the `jax.random.PRNGKey` the aggregator's
            randomness starts from (noise, stochastic rounding); default `PRNGKey(0)`.
        proximal_strength: FedProx's `mu` (0 = FedAvg); see `build_fed_prox`.
        non_finite: `"raise"` or `"drop"`.

    ```python
    >>> import fedcore as fc, optax
    >>> from fedcore.learning import models, build_weighted_fed_avg
    >>> process = build_weighted_fed_avg(models.linear(), optax.sgd(0.1))
    >>> state = process.initialize()
    >>> # state, metrics = process.next(state, fedcore.data.batch_clients(clients, 20, epochs=10))
    ```
    """
    aggregator = fa.mean() if model_aggregator is None else model_aggregator
    check_build_args(model, aggregator, client_optimizer=client_optimizer, server_optimizer=server_optimizer)
    check_policy(non_finite)
    if proximal_strength < 0:
        raise ValueError(f"proximal_strength must be >= 0, got {proximal_strength}.")

    @fc.computation
    def initialize():
        return initial_server_state(model, server_optimizer, aggregator, model_aggregator_key)

    def client_update(global_params, client):
        extra_loss = None
        if proximal_strength > 0:
            extra_loss = lambda p: 0.5 * proximal_strength * optax.tree.norm(optax.tree.sub(p, global_params), squared=True)  # noqa: E731
        result = local_training(model, client_optimizer, global_params, client, extra_loss=extra_loss)
        delta = jax.tree.map(jnp.subtract, result.params, global_params)
        delta, weight, bad = check_finite(non_finite, delta, client_weight(client_weighting, result))
        return {"delta": delta, "weight": weight, "metrics": result.metric_states, "non_finite": bad}

    @fc.computation
    def next(state, client_data):  # noqa: A001
        global_params = fc.apply(lambda s: s.params, state)
        out = fc.map(client_update, fc.broadcast(global_params), client_data)
        weights = aggregator_weights(client_weighting, non_finite, out["weight"], out["non_finite"])
        aggregated = aggregate_updates(aggregator, state, out["delta"], weights)
        num_non_finite = fc.sum(out["non_finite"])
        new_state = fc.apply(
            lambda s, d, a, bad: raise_if_non_finite(non_finite, server_step(server_optimizer, s, d, a), bad),
            state,
            aggregated.result,
            aggregated.state,
            num_non_finite,
        )
        return new_state, round_metrics(model, out["metrics"], num_non_finite, aggregated.measurements)

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
    proximal_strength: float,
    **kwargs: Any,
) -> LearningProcess:
    """FedProx: FedAvg whose clients minimise `loss + mu/2 ||w - w_global||^2`, `mu = proximal_strength`.

    TFF's name for `mu` (`build_weighted_fed_prox(..., proximal_strength)`), used by
    every fedcore builder. Reported train losses are the model's loss, without the
    proximal term. Other keywords (`model_aggregator`, `non_finite`, ...) as in
    `build_weighted_fed_avg`.

    ```python
    >>> from fedcore.learning import models, build_fed_prox
    >>> process = build_fed_prox(models.linear(), optax.sgd(0.1), proximal_strength=0.01)
    ```
    """
    return build_weighted_fed_avg(
        model, client_optimizer, server_optimizer, client_weighting, proximal_strength=proximal_strength, **kwargs
    )
