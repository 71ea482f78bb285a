"""Sharded execution: equal to vmap on one device here, on 8 simulated devices and across 2 processes.

JAX fixes its devices when it starts, so the multi-device checks run in
subprocesses (`sharded_worker.py`, `multihost_worker.py`) with their own
`XLA_FLAGS`; this process keeps its single device.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.sharding import AxisType

import fedcore as fc

from . import multihost_worker, sharded_worker

HERE = os.path.dirname(os.path.abspath(__file__))


def _worker_env():
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # each worker sets its own device count
    return env


def _last_json_line(stdout: str):
    return json.loads(stdout.strip().splitlines()[-1])


def assert_trees_close(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-5, atol=1e-6)


# -- in this process (one device) ---------------------------------------------------


@settings(max_examples=10)
@given(num_clients=st.integers(1, 9), seed=st.integers(0, 2**16))
def test_sharded_on_one_device_equals_vmap(num_clients, seed):
    got = sharded_worker.run_round(fc.ShardedStrategy(), num_clients, seed)
    want = sharded_worker.run_round("vmap", num_clients, seed)
    assert_trees_close(got, want)


def test_by_name_with_a_mesh_and_default_mesh():
    mesh = jax.make_mesh((jax.device_count(),), ("clients",))  # explicit axes: made automatic
    with fc.execution("sharded", mesh=mesh) as strategy:
        assert strategy.axis == ("clients",)
        assert all(t == AxisType.Auto for t in strategy.mesh.axis_types)
    default = fc.ShardedStrategy()
    assert default.num_shards == jax.device_count()
    assert default == fc.ShardedStrategy() and hash(default) == hash(fc.ShardedStrategy())


def test_place_clients_and_place_local_clients_keep_the_values():
    strategy = fc.ShardedStrategy()
    x = {"a": jnp.arange(6.0).reshape(3, 2)}
    placed = strategy.place_clients(x)
    assert placed["a"].sharding.is_equivalent_to(strategy.clients_sharding, 2)
    np.testing.assert_array_equal(placed["a"], x["a"])
    local = strategy.place_local_clients(x)  # one process: its clients are all the clients
    np.testing.assert_array_equal(local["a"], x["a"])
    np.testing.assert_array_equal(strategy.place_replicated(np.ones(3)), np.ones(3))


def test_mesh_must_be_a_mesh():
    with pytest.raises(TypeError, match="expects a jax.sharding.Mesh"):
        fc.ShardedStrategy(mesh=jax.devices())


def test_axis_must_be_an_axis_of_the_mesh():
    mesh = jax.make_mesh((jax.device_count(),), ("clients",))
    with pytest.raises(ValueError, match=r"axis 'batch' is not an axis of the mesh; its axes are \('clients',\)"):
        fc.ShardedStrategy(mesh, axis="batch")


# -- 8 simulated devices, in a subprocess --------------------------------------------


@pytest.fixture(scope="module")
def eight_devices():
    done = subprocess.run(
        [sys.executable, os.path.join(HERE, "sharded_worker.py")],
        capture_output=True, text=True, timeout=180, env=_worker_env(),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return _last_json_line(done.stdout)


def test_sharded_equals_vmap_on_eight_devices_for_any_client_count(eight_devices):
    assert eight_devices["device_count"] == 8
    assert eight_devices["mismatched_client_counts"] == []


@pytest.mark.parametrize("num_clients", [16, 13])
def test_each_device_runs_its_clients_and_reductions_are_all_reduces(eight_devices, num_clients):
    assert eight_devices[f"local_clients_{num_clients}"]  # ceil(n / 8) clients per device
    assert eight_devices[f"all_reduce_{num_clients}"]


def test_eager_intrinsics_on_eight_devices(eight_devices):
    assert eight_devices["eager_means"] == {"16": 15.0, "13": 12.0}


def test_two_dimensional_mesh_and_placed_data(eight_devices):
    assert eight_devices["mesh_2d_equal"]
    assert eight_devices["placed_sharding"] == "P('clients',)"
    assert eight_devices["placed_equal"]


def test_state_carried_over_rounds_on_eight_devices_for_an_uneven_cohort(eight_devices):
    assert eight_devices["carried_state_equal"] == {"10": True, "16": True}


# -- two processes (multi-host) on localhost ------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_reduce_over_all_clients_with_gloo():
    port = _free_port()
    script = os.path.join(HERE, "multihost_worker.py")
    procs = [
        subprocess.Popen(
            [sys.executable, script, str(i), str(port)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_worker_env(),
        )
        for i in range(multihost_worker.NUM_PROCESSES)
    ]
    outputs = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=120)
            assert p.returncode == 0, stderr[-3000:]
            outputs.append(_last_json_line(stdout))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    mean_delta, metrics = multihost_worker.fed_round(
        fc.server_value(multihost_worker.initial_model()), fc.clients_value(multihost_worker.all_clients())
    )
    for i, out in enumerate(outputs):
        assert (out["process_id"], out["process_count"], out["device_count"]) == (i, 2, 4)
        assert out["num_clients"] == 8
        np.testing.assert_allclose(out["mean_delta"], np.asarray(mean_delta.value), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out["metrics"]["loss"], float(metrics.value["loss"]), rtol=1e-5)
        assert out["metrics"]["clients"] == 8
