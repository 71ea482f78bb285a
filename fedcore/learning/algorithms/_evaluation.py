"""Federated evaluation: the model's metrics summed over every client's batches."""

from __future__ import annotations

from typing import Any

import fedcore.core as fc

from .. import metrics as _metrics
from .._client_work import local_evaluation
from ..models import Model
from ._checks import check_build_args
from ._process import LearningProcess, ServerState

__all__ = ["build_fed_eval"]


def build_fed_eval(model: Model) -> LearningProcess:
    """A process whose state holds model weights and whose `next` evaluates them on client data.

    Metrics come as `metrics["client_work"]["eval"]` (alias `metrics["eval"]`),
    with the same names as training metrics. Set the weights to evaluate with
    `process.set_model_weights(state, params)`.

    ```python
    >>> from fedcore.learning import models, build_fed_eval
    >>> evaluator = build_fed_eval(models.linear())
    >>> state = evaluator.initialize()
    >>> # _, metrics = evaluator.next(state, batches); metrics["eval"]["accuracy"]
    ```
    """
    check_build_args(model)
    import jax.numpy as jnp

    @fc.computation
    def initialize():
        return fc.server_value(ServerState(model.initial_params, (), jnp.int32(0)))

    def report(states: dict[str, Any]) -> dict[str, Any]:
        evaluated = _metrics.report_all(model.metrics, states)
        return {"client_work": {"eval": evaluated}, "eval": evaluated}

    @fc.computation
    def next(state, client_data):  # noqa: A001
        params = fc.apply(lambda s: s.params, state)
        states = fc.map(lambda p, c: local_evaluation(model, p, c), fc.broadcast(params), client_data)
        return state, fc.apply(report, fc.sum(states))

    return LearningProcess(initialize, next, model)
