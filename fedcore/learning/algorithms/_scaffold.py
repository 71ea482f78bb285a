"""SCAFFOLD (Karimireddy et al. 2020): FedAvg with control variates against client drift."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array

import fedcore.core as fc
from fedcore import aggregators as fa

from .._client_work import local_training
from ..models import Model
from ...core._processes import signed
from ._checks import check_build_args
from ._process import (
    ClientWeighting,
    LearningProcess,
    ServerState,
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

__all__ = ["build_scaffold"]


def build_scaffold(
    model: Model,
    client_learning_rate: float,
    num_clients: int,
    server_optimizer: optax.GradientTransformation = optax.sgd(1.0),
    client_weighting: ClientWeighting | Callable[[Any], Array] = ClientWeighting.UNIFORM,
    *,
    model_aggregator: fa.Aggregator | None = None,
    model_aggregator_key: Array | None = None,
    non_finite: str = "raise",
) -> LearningProcess:
    """SCAFFOLD with option-II control variates.

    The server state keeps the global control `c` and one control `c_i` per
    client of the whole population (`num_clients` rows, indexed by client id;
    `state.value.extra["client_controls"]`). Clients run SGD on
    `grad + c - c_i`; after `K` local steps a client's new control is
    `c_i - c + (x - y_i) / (K * lr)`. The server moves the model by the mean
    delta and `c` by `sum(c_i+ - c_i) / num_clients`.

    `process.next(state, batches, client_ids)` takes the ids (ints in
    `[0, num_clients)`) of the round's clients, in the order of `batches`.

    `model_aggregator` combines the model deltas (as in `build_weighted_fed_avg`);
    the control deltas are always summed exactly (`fc.sum`): they are the
    algorithm's own state, not an update to privatise or compress.

    ```python
    >>> from fedcore.learning import models, build_scaffold
    >>> process = build_scaffold(models.linear(), client_learning_rate=0.1, num_clients=100)
    ```
    """
    aggregator = fa.mean() if model_aggregator is None else model_aggregator
    check_build_args(model, aggregator, server_optimizer=server_optimizer)
    check_policy(non_finite)
    if client_learning_rate <= 0:
        raise ValueError(f"client_learning_rate must be > 0, got {client_learning_rate}.")
    if num_clients < 1:
        raise ValueError(f"num_clients (the population size) must be >= 1, got {num_clients}.")
    client_optimizer = optax.sgd(client_learning_rate)

    def controls(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        table = jax.tree.map(lambda p: jnp.zeros((num_clients, *p.shape), p.dtype), params)
        return {"control": zeros, "client_controls": table}

    @fc.computation
    def initialize():
        return initial_server_state(model, server_optimizer, aggregator, model_aggregator_key, controls)

    def client_update(global_params, control, table, client, client_id):
        own = jax.tree.map(lambda t: t[client_id], table)
        correction = jax.tree.map(jnp.subtract, control, own)
        result = local_training(model, client_optimizer, global_params, client, grad_correction=correction)
        delta = jax.tree.map(jnp.subtract, result.params, global_params)
        steps = result.num_steps.astype(jnp.float32)
        scale = jnp.where(steps > 0, 1.0 / (jnp.maximum(steps, 1.0) * client_learning_rate), 0.0)
        new_own = jax.tree.map(
            lambda ci, c, d: jnp.where(steps > 0, ci - c - d * scale, ci), own, control, delta
        )
        delta, weight, bad = check_finite(non_finite, delta, client_weight(client_weighting, result))
        return {
            "delta": delta,
            "weight": weight,
            "control_delta": jax.tree.map(jnp.subtract, new_own, own),
            "new_control": new_own,
            "metrics": result.metric_states,
            "non_finite": bad,
        }

    def server_update(state, mean_delta, aggregator_state, control_delta_sum, ids, new_controls, bad):
        new = server_step(server_optimizer, state, mean_delta, aggregator_state)
        control = jax.tree.map(lambda c, d: c + d / num_clients, state.extra["control"], control_delta_sum)
        table = jax.tree.map(lambda t, n: t.at[ids].set(n), state.extra["client_controls"], new_controls)
        extra = {"control": control, "client_controls": table}
        new = ServerState(new.params, new.opt_state, new.round_num, extra, new.aggregator)
        return raise_if_non_finite(non_finite, new, bad)

    def _ids_bad(ids):
        # Negative ids would wrap around and repeated ids would race in the table update.
        ordered = jnp.sort(ids)
        return (ordered[0] < 0) | (ordered[-1] >= num_clients) | jnp.any(ordered[1:] == ordered[:-1])

    @fc.computation
    def next(state, client_data, client_ids):  # noqa: A001
        if not fc.is_placed(client_ids):
            client_ids = fc.clients_value(jnp.asarray(client_ids, jnp.int32))
        ids_bad = fc.apply(_ids_bad, fc.collect(client_ids))
        params = fc.apply(lambda s: s.params, state)
        control = fc.apply(lambda s: s.extra["control"], state)
        table = fc.apply(
            lambda s, bad: jax.tree.map(
                lambda t: eqx.error_if(
                    t, bad, f"SCAFFOLD: client ids must be distinct and in [0, num_clients) = [0, {num_clients})."
                ),
                s.extra["client_controls"],
            ),
            state,
            ids_bad,
        )
        out = fc.map(client_update, fc.broadcast(params), fc.broadcast(control), fc.broadcast(table), client_data, client_ids)
        bad = fc.sum(out["non_finite"])
        weights = aggregator_weights(client_weighting, non_finite, out["weight"], out["non_finite"])
        aggregated = aggregate_updates(aggregator, state, out["delta"], weights)
        new_state = fc.apply(
            server_update,
            state,
            aggregated.result,
            aggregated.state,
            fc.sum(out["control_delta"]),
            fc.collect(client_ids),
            fc.collect(out["new_control"]),
            bad,
        )
        return new_state, round_metrics(model, out["metrics"], bad, aggregated.measurements)

    return _ScaffoldProcess(initialize, next, model, num_clients)


class _ScaffoldProcess(LearningProcess):
    """Places `client_ids` as an int32 array, so that every round reuses one compiled program
    (a Python list would be static under `jit` and recompile for each new list), and checks
    concrete ids at once."""

    def __init__(self, initialize: Any, next: Any, model: Model, num_clients: int):  # noqa: A002
        super().__init__(initialize, next, model)
        self.num_clients = num_clients

    @signed("next_fn")
    def next(self, state: Any, data: Any, client_ids: Any) -> tuple[Any, Any]:  # type: ignore[override]
        if not fc.is_placed(client_ids):
            if not isinstance(client_ids, jax.core.Tracer):
                ids = np.asarray(client_ids)
                if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
                    raise TypeError(
                        f"SCAFFOLD: client_ids must be a 1-D sequence of ints, got {ids.dtype} {ids.shape}."
                    )
                if ids.size and (ids.min() < 0 or ids.max() >= self.num_clients or np.unique(ids).size != ids.size):
                    raise ValueError(
                        "SCAFFOLD: client ids must be distinct and in [0, num_clients) = "
                        f"[0, {self.num_clients}), got {ids.tolist()}."
                    )
            client_ids = fc.clients_value(jnp.asarray(client_ids, jnp.int32))
        return super().next(state, data, client_ids)
