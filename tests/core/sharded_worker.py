"""Sharded execution on 8 simulated CPU devices, run in a subprocess by test_sharded.py.

JAX reads `XLA_FLAGS` when it starts, so the device count is set here, before
importing jax; the pytest process keeps its single device. Prints one JSON
report on the last line of stdout.

Usage: `python tests/core/sharded_worker.py` (sets 8 devices itself).
"""

import json
import os
import sys

if __name__ == "__main__":  # (imported by the tests for its definitions: leave their devices alone)
    os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
import fedcore as fc  # noqa: E402

DIM = 3


def client_update(model, data):
    """A small FedAvg-like client: a few SGD steps scanned over the client's examples by index."""

    def step(w, i):
        x, y = data["x"][i], data["y"][i]
        grad = jax.grad(lambda v: (x @ v - y) ** 2)(w)
        return w - 0.1 * grad, (x @ w - y) ** 2

    w, losses = jax.lax.scan(step, model, jnp.arange(data["x"].shape[0]))
    return {"delta": w - model, "weight": data["n"], "metrics": {"loss": jnp.sum(losses), "count": jnp.int32(1)}}


@fc.computation
def fed_round(model, data):
    out = fc.map(client_update, fc.broadcast(model), data)
    return {
        "mean": fc.mean(out["delta"], out["weight"]),
        "plain_mean": fc.mean(out["delta"]),
        "sum": fc.sum(out["metrics"]),
        "max": fc.max(out["weight"]),
    }


def make_data(num_clients, seed):
    rng = np.random.default_rng(seed)
    return {
        "x": rng.normal(size=(num_clients, 4, DIM)).astype(np.float32),
        "y": rng.normal(size=(num_clients, 4)).astype(np.float32),
        "n": rng.integers(1, 10, size=num_clients).astype(np.float32),
    }


def leaves_close(a, b):
    return all(np.allclose(x, y, rtol=1e-5, atol=1e-6) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def run_round(strategy, num_clients, seed):
    model = fc.server_value(jnp.linspace(-1.0, 1.0, DIM))
    data = fc.clients_value(make_data(num_clients, seed))
    with fc.execution(strategy):
        return fed_round(model, data)


def main():
    report = {"device_count": jax.device_count()}
    mesh = jax.make_mesh((8,), ("clients",))
    sharded = fc.ShardedStrategy(mesh)

    # Property: sharded equals vmap for any number of clients (divisible by 8 or not).
    mismatches = []

    @settings(max_examples=8, deadline=None, derandomize=True)
    @given(num_clients=st.integers(1, 20), seed=st.integers(0, 2**16))
    def equals_vmap(num_clients, seed):
        got = run_round(sharded, num_clients, seed)
        want = run_round("vmap", num_clients, seed)
        if not leaves_close(got, want):
            mismatches.append(num_clients)

    equals_vmap()
    report["mismatched_client_counts"] = mismatches

    # What the program compiles to: per-device client slices and a cross-device all-reduce.
    model = fc.server_value(jnp.zeros(DIM))
    for n in (16, 13):
        data = fc.clients_value(make_data(n, 0))
        with fc.execution(sharded):
            hlo = jax.jit(fed_round.fn).lower(model, data).compile().as_text()
        report[f"all_reduce_{n}"] = "all-reduce" in hlo
        report[f"local_clients_{n}"] = f"f32[{-(-n // 8)},4,{DIM}]" in hlo

    # A 2-D mesh, clients split over both axes.
    mesh2 = jax.make_mesh((2, 4), ("hosts", "devices"))
    got = run_round(fc.ShardedStrategy(mesh2), 11, 1)
    report["mesh_2d_equal"] = leaves_close(got, run_round("vmap", 11, 1))

    # Data placed on the mesh once, then used every round.
    placed = sharded.place_clients(make_data(16, 2))
    report["placed_sharding"] = str(placed["x"].sharding.spec)
    with fc.execution(sharded):
        got = fed_round(fc.server_value(jnp.zeros(DIM)), fc.clients_value(placed))
    report["placed_equal"] = leaves_close(got, run_round("vmap", 16, 2)) or leaves_close(
        got, fed_round(fc.server_value(jnp.zeros(DIM)), fc.clients_value(make_data(16, 2)))
    )

    # Intrinsics called eagerly (outside a computation), client counts even and uneven.
    eager = {}
    for n in (16, 13):
        with fc.execution(sharded):
            eager[n] = float(fc.mean(fc.map(lambda a: 2.0 * a, fc.clients_value(jnp.arange(float(n))))))
    report["eager_means"] = eager
    # State carried on the mesh: round 2 takes round 1's mean (issue 12: K=10 on 8 devices).
    carried = {}
    for n in (10, 16):
        data = fc.clients_value(make_data(n, 3))
        try:
            with fc.execution(sharded):
                model = fc.server_value(jnp.zeros(DIM))
                for _ in range(3):
                    model = fc.server_value(fed_round(model, data)["mean"].value)
            want = fc.server_value(jnp.zeros(DIM))
            for _ in range(3):
                want = fc.server_value(fed_round(want, data)["mean"].value)
            carried[n] = bool(leaves_close(model.value, want.value))
        except Exception as e:  # noqa: BLE001 (the report names the failure)
            carried[n] = f"{type(e).__name__}: {str(e)[:200]}"
    report["carried_state_equal"] = carried
    print(json.dumps(report))


if __name__ == "__main__":
    main()
