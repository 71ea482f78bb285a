"""Differentiable federated computation: `jax.grad` through several FedAvg rounds w.r.t. the client learning rate.

A federated round written in the core is an ordinary JAX function of its
inputs, so gradients flow through broadcast, the clients' local SGD steps and
the server's weighted mean. Here the rounds are composed from core intrinsics
and `fedcore.learning.local_training`, with the client optimizer
`optax.inject_hyperparams(optax.sgd)(learning_rate=lr)` whose `lr` is a
traced value entering the round as a server-placed input. The objective is
the held-out loss after `R` rounds; its derivative d loss / d lr is checked
against central finite differences, then used for a few steps of gradient
descent on the learning rate itself.

    python examples/grad_through_rounds.py --rounds 3 --steps 5
"""

from __future__ import annotations

import argparse
from typing import Any

import jax
import jax.numpy as jnp
import optax

import fedcore as fc
from fedcore.data import batch_clients
from fedcore.data.datasets import mnist5k
from fedcore.learning import local_training, models

MODEL = models.linear(784, 10)


def client_update(params: Any, lr: jax.Array, client: Any) -> dict[str, Any]:
    """One client: SGD with a traced learning rate over its batches; returns its delta and weight."""
    optimizer = optax.inject_hyperparams(optax.sgd)(learning_rate=lr)
    result = local_training(MODEL, optimizer, params, client)
    return {"delta": jax.tree.map(jnp.subtract, result.params, params), "weight": result.num_examples}


@fc.computation
def fedavg_round(params, lr, client_data):
    """`(params@SERVER, lr@SERVER, {ClientBatches}@CLIENTS) -> params@SERVER`: one FedAvg round (server SGD 1.0)."""
    out = fc.map(client_update, fc.broadcast(params), fc.broadcast(lr), client_data)
    return fc.apply(lambda p, d: jax.tree.map(jnp.add, p, d), params, fc.mean(out["delta"], out["weight"]))


def held_out_loss(params: Any, test: dict[str, jax.Array]) -> jax.Array:
    loss, _ = MODEL.batch_outputs(params, test, jnp.ones(test["y"].shape[0], bool))
    return loss


def loss_after_rounds(lr: jax.Array, rounds_data: list[fc.FederatedValue], test: dict[str, jax.Array]) -> jax.Array:
    """The held-out loss of the model after one FedAvg round per entry of `rounds_data`, from zero weights."""
    params = fc.server_value(MODEL.initial_params)
    lr = fc.server_value(lr)
    for data in rounds_data:
        params = fedavg_round(params, lr, data)
    return held_out_loss(params.value, test)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=5)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--steps", type=int, default=5, help="gradient steps on log(lr)")
    args = parser.parse_args(argv)

    train, test = mnist5k.load_data(num_clients=50, seed=0)
    ids = train.client_ids
    rounds_data = [  # a fixed cohort per round (round r uses clients r*k ... r*k+k-1)
        fc.clients_value(batch_clients([train.dataset(c) for c in ids[r * args.clients: (r + 1) * args.clients]],
                                       batch_size=20, epochs=1))
        for r in range(args.rounds)
    ]
    centralized = test.centralized()
    test_data = {"x": jnp.asarray(centralized["x"]), "y": jnp.asarray(centralized["y"])}

    value_and_grad = jax.jit(jax.value_and_grad(loss_after_rounds))
    lr = jnp.float32(args.lr)
    loss, grad = value_and_grad(lr, rounds_data, test_data)
    h = 1e-3 * args.lr  # central differences of the same compiled function
    finite_difference = (
        value_and_grad(lr + h, rounds_data, test_data)[0] - value_and_grad(lr - h, rounds_data, test_data)[0]
    ) / (2 * h)
    print(f"held-out loss after {args.rounds} rounds at lr={args.lr}: {float(loss):.5f}")
    print(f"d loss / d lr: jax.grad {float(grad):.5f}, finite differences {float(finite_difference):.5f}")

    # gradient descent on log(lr) (d loss / d log(lr) = lr * d loss / d lr), steps of at most 0.5
    history = [(float(lr), float(loss))]
    log_lr, step_grad = jnp.log(lr), grad
    for step in range(args.steps):
        slope = jnp.exp(log_lr) * step_grad
        log_lr = log_lr - 0.5 * slope / jnp.maximum(jnp.abs(slope), 1.0)
        step_loss, step_grad = value_and_grad(jnp.exp(log_lr), rounds_data, test_data)
        history.append((float(jnp.exp(log_lr)), float(step_loss)))
        print(f"step {step + 1}: lr={history[-1][0]:.4f}  held-out loss={history[-1][1]:.5f}")
    return {"grad": float(grad), "finite_difference": float(finite_difference), "history": history}


if __name__ == "__main__":
    main()
