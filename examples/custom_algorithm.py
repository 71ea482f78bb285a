"""A new federated algorithm from the public core: FedAvg with server momentum (FedAvgM).

Hsu et al. (2019) keep a velocity at the server: `v <- beta * v + mean_delta`,
`w <- w + server_lr * v`. Nothing here is specific to fedcore's built-in
algorithms; it uses only the core (`fc.computation`, `fc.broadcast`,
`fc.map`, `fc.mean`, `fc.apply`, `fc.IterativeProcess`) and one client-side
helper, `fedcore.learning.local_training`. The process then runs in the
library's training loop like any built-in one. With `beta = 0` it is exactly
FedAvg with a server SGD of rate `server_lr` (checked by the tests).

    python examples/custom_algorithm.py --rounds 30 --beta 0.9
"""

from __future__ import annotations

import argparse
from typing import Any

import jax
import jax.numpy as jnp
import optax

import fedcore as fc
from fedcore.data import UniformSampler, batch_clients
from fedcore.data.datasets import mnist5k
from fedcore.learning import Model, local_training, models, train


def build_fed_avg_momentum(
    model: Model, client_optimizer: optax.GradientTransformation, server_lr: float = 1.0, beta: float = 0.9
) -> fc.IterativeProcess:
    """FedAvgM: the state is `{"params", "velocity"}@SERVER`; clients are weighted by their example counts."""

    @fc.computation
    def initialize():
        params = model.initial_params
        return fc.server_value({"params": params, "velocity": jax.tree.map(jnp.zeros_like, params)})

    def client_update(params: Any, client: Any) -> dict[str, Any]:
        result = local_training(model, client_optimizer, params, client)
        return {
            "delta": jax.tree.map(jnp.subtract, result.params, params),
            "weight": result.num_examples,
            "loss": result.metric_states["loss"],  # running (total, count) sums: they add across clients
        }

    def server_update(state: dict[str, Any], delta: Any) -> dict[str, Any]:
        velocity = jax.tree.map(lambda v, d: beta * v + d, state["velocity"], delta)
        params = jax.tree.map(lambda p, v: p + server_lr * v, state["params"], velocity)
        return {"params": params, "velocity": velocity}

    @fc.computation
    def next(state, client_data):  # noqa: A001
        params = fc.apply(lambda s: s["params"], state)
        out = fc.map(client_update, fc.broadcast(params), client_data)
        new_state = fc.apply(server_update, state, fc.mean(out["delta"], out["weight"]))
        loss = fc.apply(lambda s: s["total"] / s["count"], fc.sum(out["loss"]))
        return new_state, {"train": {"loss": loss}}

    return fc.IterativeProcess(initialize, next)


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--beta", type=float, default=0.9)
    parser.add_argument("--server-lr", type=float, default=1.0)
    parser.add_argument("--clients-per-round", type=int, default=10)
    args = parser.parse_args(argv)

    train_data, _ = mnist5k.load_data(num_clients=50, seed=0)
    sampler = UniformSampler(train_data.client_ids, k=args.clients_per_round, seed=0)

    def round_data(r: int):
        batches = batch_clients([train_data.dataset(c) for c in sampler.sample(r)], batch_size=20, epochs=2)
        return fc.clients_value(batches)  # a plain IterativeProcess takes placed client data

    process = build_fed_avg_momentum(models.linear(), optax.sgd(0.1), server_lr=args.server_lr, beta=args.beta)
    result = train(process, round_data, rounds=args.rounds)
    for record in result.records[:: max(1, args.rounds // 10)]:
        print(f"round {record.round:3d}  train loss {record.train['loss']:.4f}")
    return result


if __name__ == "__main__":
    main()
