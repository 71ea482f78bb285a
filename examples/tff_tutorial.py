"""The TensorFlow Federated image-classification tutorial, step by step in fedcore.

TFF's "Federated Learning for Image Classification" builds a Keras model,
wraps it with `tff.learning.models.from_keras_model`, builds
`tff.learning.algorithms.build_weighted_fed_avg`, and calls `initialize()`
once and `next()` once per round. The same steps here:

1. load federated data (the offline MNIST-5k population; EMNIST works the same);
2. preprocess each client's data as `ds.repeat(10).batch(20)` (`batch_clients`);
3. wrap an equinox module with `from_equinox` (as `from_keras_model` wraps Keras);
4. `build_weighted_fed_avg` with client SGD 0.1 and server SGD 1.0;
5. `state = process.initialize()`, then `state, metrics = process.next(state, data)`.

    python examples/tff_tutorial.py             # five rounds, as in the tutorial
    python examples/tff_tutorial.py --rounds 10
"""

from __future__ import annotations

import argparse

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float

import fedcore.learning as fl
from fedcore.data import batch_clients
from fedcore.data.datasets import mnist5k

NUM_CLIENTS = 10
NUM_EPOCHS = 10
BATCH_SIZE = 20


class Dense(eqx.Module):
    """Keras' `Dense(10, kernel_initializer="zeros")` on flattened 28x28 images (logits out)."""

    weight: Float[Array, "10 784"]
    bias: Float[Array, "10"]

    def __init__(self, key: jax.Array):
        del key  # zero initialisation, as in the tutorial
        self.weight = jnp.zeros((10, 784))
        self.bias = jnp.zeros(10)

    def __call__(self, x: Float[Array, "784"]) -> Float[Array, "10"]:
        return self.weight @ x + self.bias


def main(argv: list[str] | None = None) -> list[float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)

    # 1-2. Federated data: the first NUM_CLIENTS clients, each preprocessed like ds.repeat(10).batch(20).
    emnist_like_train, _ = mnist5k.load_data(num_clients=50, seed=0)
    sample_clients = emnist_like_train.client_ids[:NUM_CLIENTS]
    federated_train_data = batch_clients(
        [emnist_like_train.dataset(cid) for cid in sample_clients], batch_size=BATCH_SIZE, epochs=NUM_EPOCHS
    )

    # 3. The model: an equinox module, its loss (softmax cross-entropy on logits) and metrics.
    model = fl.from_equinox(Dense, loss=fl.losses.sparse_softmax_cross_entropy)

    # 4. The algorithm.
    training_process = fl.build_weighted_fed_avg(
        model, client_optimizer=optax.sgd(learning_rate=0.1), server_optimizer=optax.sgd(learning_rate=1.0)
    )
    print(training_process.state_type)

    # 5. initialize, then one next() per round.
    state = training_process.initialize()
    losses = []
    for round_num in range(1, args.rounds + 1):
        state, metrics = training_process.next(state, federated_train_data)
        train = metrics["client_work"]["train"]
        losses.append(float(train["loss"]))
        print(f"round {round_num:2d}, loss={float(train['loss']):.4f}, accuracy={float(train['accuracy']):.4f}")
    return losses


if __name__ == "__main__":
    main()
