"""One process of a 2-process (multi-host) sharded round on localhost, run by test_sharded.py.

Usage: `python tests/core/multihost_worker.py PROCESS_ID PORT`. Each process
has 2 CPU devices and 4 of the 8 clients; the processes meet at the
coordinator `127.0.0.1:PORT` (`jax.distributed.initialize`) and reduce over
clients with gloo CPU collectives. Prints the round's result as JSON.
"""

import json
import os
import sys

if __name__ == "__main__":  # (imported by the tests for its definitions: leave their devices alone)
    os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
import fedcore as fc  # noqa: E402

NUM_PROCESSES, CLIENTS_PER_PROCESS, DIM = 2, 4, 3


def client_update(model, data):
    loss, grad = jax.value_and_grad(lambda w: jnp.mean((data["x"] @ w - data["y"]) ** 2))(model)
    return {"delta": -0.1 * grad, "weight": data["n"], "metrics": {"loss": loss, "clients": jnp.int32(1)}}


@fc.computation
def fed_round(model, data):
    out = fc.map(client_update, fc.broadcast(model), data)
    return fc.mean(out["delta"], out["weight"]), fc.sum(out["metrics"])


def all_clients():
    """Every client's data (the same on every process: each keeps its own rows)."""
    rng = np.random.default_rng(0)
    n = NUM_PROCESSES * CLIENTS_PER_PROCESS
    return {
        "x": rng.normal(size=(n, 5, DIM)).astype(np.float32),
        "y": rng.normal(size=(n, 5)).astype(np.float32),
        "n": rng.integers(1, 10, size=n).astype(np.float32),
    }


def initial_model():
    return np.linspace(-1.0, 1.0, DIM).astype(np.float32)


def main():
    process_id, port = int(sys.argv[1]), int(sys.argv[2])
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{port}", num_processes=NUM_PROCESSES, process_id=process_id
    )
    strategy = fc.ShardedStrategy()  # every device of every process, one "clients" axis
    mine = slice(process_id * CLIENTS_PER_PROCESS, (process_id + 1) * CLIENTS_PER_PROCESS)
    local = jax.tree.map(lambda a: a[mine], all_clients())
    data = fc.clients_value(strategy.place_local_clients(local))
    model = fc.server_value(strategy.place_replicated(initial_model()))
    with fc.execution(strategy):
        mean_delta, metrics = fed_round(model, data)
    print(
        json.dumps(
            {
                "process_id": process_id,
                "process_count": jax.process_count(),
                "device_count": jax.device_count(),
                "num_clients": data.num_clients,
                "mean_delta": np.asarray(mean_delta.value).tolist(),
                "metrics": {k: np.asarray(v).tolist() for k, v in metrics.value.items()},
            }
        ),
        flush=True,
    )
    jax.distributed.shutdown()


if __name__ == "__main__":
    main()
