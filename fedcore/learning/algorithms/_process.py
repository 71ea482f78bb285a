"""What every learning algorithm shares: server state, the learning process, client weighting."""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Int, PyTree

import fedcore.core as fc
from fedcore import aggregators as fa

from ...core._batches import ClientBatches
from ...core._grouping import place_cohort
from ...core._processes import signed
from .. import metrics as _metrics
from . import _checks
from ..models import Model

__all__ = [
    "ServerState",
    "LearningProcess",
    "ClientWeighting",
    "place_client_data",
    "client_weight",
    "train_metrics",
    "initial_server_state",
    "aggregate_updates",
    "round_metrics",
]


class ServerState(eqx.Module):
    """The server's state: global model parameters, server optimizer state, round number, algorithm
    extras (SCAFFOLD's controls) and the model aggregator's state (`()` for `fa.mean()`)."""

    params: PyTree
    opt_state: PyTree
    round_num: Int[Array, ""]
    extra: PyTree = ()
    aggregator: PyTree = ()


class ClientWeighting(enum.Enum):
    """How client updates are weighted in the server's mean."""

    NUM_EXAMPLES = "num_examples"
    UNIFORM = "uniform"


def client_weight(weighting: ClientWeighting | Callable[[Any], Array], result: Any) -> Array:
    """A client's weight from its `LocalResult` (`num_examples`, 1, or a user function of the result).

    Every algorithm hands a callable `client_weighting` the same thing: the
    client's `LocalResult` (`params`, `metric_states`, `num_examples`,
    `num_steps`), e.g. `lambda r: r.num_steps`.
    """
    if weighting is ClientWeighting.NUM_EXAMPLES:
        return result.num_examples.astype(jnp.float32)
    if weighting is ClientWeighting.UNIFORM:
        return jnp.float32(1.0)
    if callable(weighting):
        return jnp.asarray(weighting(result), jnp.float32)
    raise ValueError(f"client_weighting must be a ClientWeighting or a callable, got {weighting!r}.")


def place_client_data(data: Any) -> fc.FederatedValue | fc.Cohort:
    """Accepts `ClientBatches`, their materialized dict, or a placed value; returns `{ClientBatches}@CLIENTS`.

    A `Cohort` (`population.select(ids)`) is returned with its population
    placed all-equal at CLIENTS and its ids as `{i32}@CLIENTS`.
    """
    if isinstance(data, fc.Cohort):
        return place_cohort(data)
    if fc.is_placed(data):
        if not data.per_client:
            raise fc.PlacementError(f"Client data must be per-client ({{ClientBatches}}@CLIENTS), got {data.type}.")
        if not isinstance(data.value, ClientBatches):
            return fc.clients_value(ClientBatches.from_materialized(data.value))
        return data
    if isinstance(data, dict):
        data = ClientBatches.from_materialized(data)
    if not isinstance(data, ClientBatches):
        raise TypeError(
            "Client data must be fedcore.data.batch_clients(...) output (ClientBatches), a dict "
            f"{{'x': [C,S,B,...], 'y': ..., 'mask': [C,S,B]}}, or a CLIENTS-placed value; got {type(data).__name__}."
        )
    return fc.clients_value(data)


def train_metrics(model: Model, summed_states: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """TFF's metrics layout: `{"client_work": {"train": ...}, "train": ...}` (the short alias)."""
    train = _metrics.report_all(model.metrics, summed_states)
    out: dict[str, Any] = {"client_work": {"train": train}, "train": train}
    if extra:
        out.update(extra)
    return out


def server_step(
    optimizer: optax.GradientTransformation, state: ServerState, delta: PyTree, aggregator_state: PyTree = None
) -> ServerState:
    """Applies the server optimizer to the negated mean delta (a pseudo-gradient), as TFF does."""
    pseudo_grad = jax.tree.map(jnp.negative, delta)
    return apply_server_gradient(optimizer, state, pseudo_grad, aggregator_state)


def apply_server_gradient(
    optimizer: optax.GradientTransformation, state: ServerState, grad: PyTree, aggregator_state: PyTree = None
) -> ServerState:
    """One step of the server optimizer on `grad`; the round number advances, the aggregator state is replaced."""
    updates, opt_state = optimizer.update(grad, state.opt_state, state.params)
    agg = state.aggregator if aggregator_state is None else aggregator_state
    return ServerState(optax.apply_updates(state.params, updates), opt_state, state.round_num + 1, state.extra, agg)


def initial_server_state(
    model: Model,
    server_optimizer: optax.GradientTransformation,
    aggregator: fa.Aggregator,
    key: Any = None,
    extra: Callable[[PyTree], PyTree] | None = None,
) -> fc.FederatedValue:
    """`ServerState@SERVER`: the model's initial parameters, a fresh server optimizer, round 0, the
    aggregator's initial state (`aggregator.init(params, key)`) and `extra(params)` (or `()`).

    Call it inside the algorithm's `initialize` computation.
    """
    params = model.initial_params
    extras = () if extra is None else extra(params)
    return fc.apply(
        lambda a: ServerState(params, server_optimizer.init(params), jnp.int32(0), extras, a),
        aggregator.init(params, key),
    )


def aggregate_updates(
    aggregator: fa.Aggregator,
    state: fc.FederatedValue,
    updates: fc.FederatedValue,
    weights: fc.FederatedValue | None,
) -> fa.AggregatorOutput:
    """`(ServerState@SERVER, {T}@CLIENTS, {f32}@CLIENTS) -> AggregatorOutput`: one round of the model
    aggregator over the clients' updates, from the aggregator state kept in the server state."""
    return aggregator.next(fc.apply(lambda s: s.aggregator, state), updates, weights)


def round_metrics(
    model: Model,
    metric_states: fc.FederatedValue,
    num_non_finite: fc.FederatedValue,
    aggregator_measurements: fc.FederatedValue,
) -> fc.FederatedValue:
    """`<...>@SERVER`: TFF's metrics layout, the count of non-finite client updates, and the
    aggregator's measurements under `"aggregator"` (TFF's `aggregator` key)."""
    return fc.apply(
        lambda m, bad, agg: train_metrics(model, m, {"num_non_finite_updates": bad, "aggregator": agg}),
        fc.sum(metric_states),
        num_non_finite,
        aggregator_measurements,
    )


def aggregator_weights(
    weighting: ClientWeighting | Callable[[Any], Array],
    policy: str,
    weights: fc.FederatedValue,
    non_finite: fc.FederatedValue | None = None,
) -> fc.FederatedValue | None:
    """The weights handed to the model aggregator: `None` (an unweighted aggregate, as DP-FedAvg
    needs) when every client counts equally, else the per-client weights (which, under
    `non_finite="drop"`, are 0 for a dropped client).

    With `non_finite` (`{i32}@CLIENTS`, 1 for a client whose update was not
    finite) under `"drop"`, a round whose every client was dropped stops with
    an error saying so (there is nothing to average).
    """
    if weighting is ClientWeighting.UNIFORM and policy == "raise":
        return None
    if policy == "drop" and non_finite is not None:
        n = weights.num_clients
        message = (
            f"Every client's update this round was NaN or Inf, so all {n} were dropped (non_finite='drop') "
            "and there is nothing to average. Check the clients' inputs for NaN/Inf, or lower the client "
            "learning rate."
        )
        dropped = fc.sum(non_finite)
        return fc.map(lambda w, d: eqx.error_if(w, d >= n, message), weights, fc.broadcast(dropped))
    return weights


def check_finite(policy: str, delta: PyTree, weight: Array) -> tuple[PyTree, Array, Array]:
    """Per client: returns `(delta, weight, non_finite)`; with `policy="drop"`, a non-finite delta gets weight 0."""
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(delta)]))
    if policy == "drop":
        delta = jax.tree.map(lambda x: jnp.where(finite, x, 0), delta)
        weight = jnp.where(finite, weight, 0.0)
    return delta, weight, jnp.logical_not(finite).astype(jnp.int32)


NON_FINITE_UPDATE = "A client's model update is not finite (NaN or Inf)"


def raise_if_non_finite(policy: str, params: PyTree, num_non_finite: Array) -> PyTree:
    """With `policy="raise"`, a run-time error if any client's update was NaN or Inf.

    `LearningProcess.next` then reads the clients' inputs on the host (only
    once the round has failed) and names a client whose inputs are NaN/Inf.
    """
    if policy != "raise":
        return params
    return eqx.error_if(
        params,
        num_non_finite > 0,
        f"{NON_FINITE_UPDATE}: the client learning rate may be too high. Lower it, or build the algorithm "
        "with non_finite='drop' to give such updates weight 0 (TFF's behaviour).",
    )


NON_FINITE_POLICIES = ("raise", "drop")


def check_policy(non_finite: str) -> None:
    if non_finite not in NON_FINITE_POLICIES:
        raise ValueError(f"non_finite must be one of {NON_FINITE_POLICIES}, got {non_finite!r}.")


class LearningProcess(fc.IterativeProcess):
    """An `fc.IterativeProcess` for learning: `next` also accepts unplaced client batches.

    ```python
    >>> # state = process.initialize(); state, metrics = process.next(state, batches)
    ```
    """

    def __init__(self, initialize: Callable[[], Any], next: Callable[..., Any], model: Model):  # noqa: A002
        super().__init__(initialize, next)
        self.model = model

    @signed("next_fn")
    def next(self, state: Any, data: Any, *args: Any) -> tuple[Any, Any]:  # noqa: A003
        """One round on the clients' data: `(state, metrics)`; `.type_signature` in TFF notation after it."""
        _checks.check_state(self, state), _checks.check_client_data(self.model, data)
        try:
            return super().next(state, place_client_data(data), *args)
        except eqx.EquinoxRuntimeError as e:
            explained = _checks.explain_non_finite(self.model, data, e)
            if explained is None:
                raise
            raise explained from None

    def get_model_weights(self, state: fc.FederatedValue) -> PyTree:
        """The global model's trainable parameters (unplaced)."""
        return state.value.params

    def set_model_weights(self, state: fc.FederatedValue, params: PyTree) -> fc.FederatedValue:
        """A state with the global model's parameters replaced (same structure required)."""
        old = state.value.params
        if not fc.same_type(fc.type_of(old), fc.type_of(params)):
            raise TypeError(f"New weights {fc.type_of(params)} do not match the model's {fc.type_of(old)}.")
        return fc.server_value(eqx.tree_at(lambda s: s.params, state.value, params))
