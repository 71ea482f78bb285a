"""A CNN on federated EMNIST (digits, by writer), or on MNIST-5k when EMNIST is not at hand.

EMNIST comes from TFF's `fed_emnist_digitsonly.tar.bz2` (3,383 writers): pass
the directory holding `fed_emnist_digitsonly_{train,test}.h5` (or the
archive) with `--emnist-path`. Without it, the example trains on the offline
MNIST-5k population, so it always runs. The model is the small CNN of the
benchmarks (two 3x3 convolutions, max-pooling, two dense layers); training is
FedAvg with the library's loop, progress bar and checkpoints.

    python examples/emnist_cnn.py --emnist-path ~/data/emnist --rounds 50
    python examples/emnist_cnn.py --rounds 5          # MNIST-5k
"""

from __future__ import annotations

import argparse
from typing import Any

import jax
import optax

from fedcore.data import ClientData, UniformSampler, batch_clients, sample_clients
from fedcore.data.datasets import emnist, mnist5k
from fedcore.learning import ProgressBar, build_fed_eval, build_weighted_fed_avg, models, train


def load_clients(emnist_path: str | None) -> tuple[str, ClientData, ClientData]:
    """`(name, train, test)`: EMNIST digits (MNIST polarity, flat 784 pixels) from local files, else MNIST-5k."""
    if emnist_path:
        train_data, test_data = emnist.load_data(only_digits=True, path=emnist_path, invert=True, flatten=True)
        return "EMNIST", train_data, test_data
    train_data, test_data = mnist5k.load_data(num_clients=50, seed=0)
    return "MNIST-5k", train_data, test_data


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emnist-path", default=None, help="directory with the EMNIST HDF5 files or archive")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--clients-per-round", type=int, default=10)
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--client-lr", type=float, default=0.05)
    parser.add_argument("--eval-clients", type=int, default=100, help="test clients to evaluate on at the end (0: none)")
    parser.add_argument("--checkpoint-dir", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    name, train_data, test_data = load_clients(args.emnist_path)
    print(f"{name}: {len(train_data)} training clients")
    sampler = UniformSampler(train_data.client_ids, k=args.clients_per_round, seed=args.seed)

    def round_data(r: int):
        clients = [train_data.dataset(c) for c in sampler.sample(r)]
        return batch_clients(clients, args.batch_size, args.local_epochs, shuffle=True,
                             key=jax.random.fold_in(sampler.key(r), 1))

    model = models.cnn(num_classes=10, key=jax.random.key(args.seed))
    process = build_weighted_fed_avg(model, optax.sgd(args.client_lr), optax.sgd(1.0))

    eval_fn = None
    if args.eval_clients > 0:
        evaluator = build_fed_eval(model)
        eval_ids = list(test_data.client_ids)
        if args.eval_clients < len(eval_ids):
            eval_ids = sample_clients(eval_ids, args.eval_clients, jax.random.key(args.seed + 1))
        test_batches = batch_clients([test_data.dataset(c) for c in eval_ids], batch_size=64)

        def eval_fn(state):
            weights = process.get_model_weights(state)
            return evaluator.next(evaluator.set_model_weights(evaluator.initialize(), weights), test_batches)[1]

    result = train(process, round_data, args.rounds, eval_fn=eval_fn, callbacks=[ProgressBar()],
                   checkpoint_dir=args.checkpoint_dir, checkpoint_every=10)
    print(f"final train loss {result.final_train['loss']:.4f}")
    if result.final_eval is not None:
        print(f"accuracy on {args.eval_clients} held-out clients' test data: {result.final_eval['accuracy']:.4f}")
    return {"dataset": name, "result": result}


if __name__ == "__main__":
    main()
