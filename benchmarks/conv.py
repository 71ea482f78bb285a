"""The CNN's convolution implementations side by side: ms per local SGD step inside a `lax.scan`.

    python benchmarks/conv.py                          # im2col, nhwc_vjp at batch 20 and 32
    python benchmarks/conv.py --convs im2col,native --batches 20 --repeats 5

Each implementation trains `models.cnn(conv=...)` for 10 SGD steps in one
jitted `lax.scan` (the setting of local training), on the same random batch
data; the implementations are timed interleaved, `--repeats` times, and the
medians (wall and this process's CPU time) are printed with the ratio to the
first implementation. The machine is shared: compare rows of one run only.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fedcore.learning import models

STEPS = 10


def scan_of_steps(conv: str, batch: int):
    """`(jitted run(params, xs, ys), initial params)` for 10 SGD steps of `cnn(conv=conv)`."""
    model, optimizer = models.cnn(conv=conv), optax.sgd(0.01)
    mask = jnp.ones(batch, bool)

    def step(params, xy):
        x, y = xy
        grads = jax.grad(lambda p: model.batch_outputs(p, {"x": x, "y": y}, mask)[0])(params)
        updates, _ = optimizer.update(grads, optimizer.init(params), params)
        return optax.apply_updates(params, updates), None

    return jax.jit(lambda p, xs, ys: jax.lax.scan(step, p, (xs, ys))[0]), model.initial_params


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--convs", default="im2col,nhwc_vjp", help="comma list of im2col, nhwc_vjp, native")
    parser.add_argument("--batches", default="20,32", help="comma list of batch sizes")
    parser.add_argument("--repeats", type=int, default=11)
    args = parser.parse_args(argv)
    convs, batches = args.convs.split(","), [int(b) for b in args.batches.split(",")]
    rng = np.random.default_rng(0)
    runs = {}
    for batch in batches:
        xs = jnp.asarray(rng.random((STEPS, batch, 784), np.float32))
        ys = jnp.asarray(rng.integers(0, 10, (STEPS, batch)), jnp.int32)
        for conv in convs:
            run, params = scan_of_steps(conv, batch)
            jax.block_until_ready(run(params, xs, ys))  # compile
            runs[(conv, batch)] = (run, params, xs, ys)
    wall = {k: [] for k in runs}
    cpu = {k: [] for k in runs}
    for _ in range(args.repeats):
        for key, (run, params, xs, ys) in runs.items():
            t, c = time.perf_counter(), time.process_time()
            jax.block_until_ready(run(params, xs, ys))
            wall[key].append((time.perf_counter() - t) / STEPS * 1e3)
            cpu[key].append((time.process_time() - c) / STEPS * 1e3)
    print(f"# jax {jax.__version__} on {jax.default_backend()}; ms per SGD step, medians of {args.repeats}")
    print("| conv | batch | wall ms/step | CPU ms/step | wall vs first |\n|---|---|---|---|---|")
    for batch in batches:
        first = statistics.median(wall[(convs[0], batch)])
        for conv in convs:
            w, c = statistics.median(wall[(conv, batch)]), statistics.median(cpu[(conv, batch)])
            print(f"| {conv} | {batch} | {w:.2f} | {c:.2f} | {w / first:.2f}x |")


if __name__ == "__main__":
    main()
