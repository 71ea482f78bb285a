"""Chunked execution: equal to vmap, memory bounded by the chunk, clients run once."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fedcore as fc
from fedcore.core._chunked import materialize

DIM = 3


def client_update(model, x):
    """FedAvg-shaped client output: a delta pytree, a weight, metric sums of several dtypes."""
    h = jnp.tanh(x @ model["w"])
    return {
        "delta": {"w": jnp.outer(x, h), "b": h},
        "weight": jnp.sum(x * x) + 0.5,
        "metrics": {"loss": jnp.sum(h * h), "count": jnp.int32(1), "positive": jnp.sum(h > 0), "any": jnp.any(h > 0)},
    }


@fc.computation
def fed_round(model, data):
    out = fc.map(client_update, fc.broadcast(model), data)
    return {
        "weighted_mean": fc.mean(out["delta"], out["weight"]),
        "sum": fc.sum(out["metrics"]),
        "mean": fc.mean(out["delta"]),
        "by_count": fc.mean(out["delta"], out["metrics"]["count"]),
        "metric_means": fc.mean(out["metrics"]),
        "min": fc.min(out["metrics"]),
        "max": fc.max(out["delta"]),
    }


@fc.computation
def sum_then_weighted_mean(model, data):
    """FedSGD's order: a sum first, the weighted mean after; still one pass over the clients."""
    out = fc.map(client_update, fc.broadcast(model), data)
    total = fc.sum(out["metrics"])
    return fc.mean(out["delta"], out["weight"]), total


@fc.computation
def per_client_results(model, data):
    return fc.map(client_update, fc.broadcast(model), data)


def model_and_data(num_clients: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    model = fc.server_value({"w": jnp.asarray(rng.normal(size=(DIM, 2)), jnp.float32)})
    data = fc.clients_value(jnp.asarray(rng.normal(size=(num_clients, DIM)), jnp.float32))
    return model, data


def assert_trees_close(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert np.asarray(x).dtype == np.asarray(y).dtype
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-5, atol=1e-6)


def chunked(chunk_size):
    return fc.execution("chunked", chunk_size=chunk_size)


@settings(max_examples=10)
@given(num_clients=st.integers(1, 9), chunk_size=st.integers(1, 12), seed=st.integers(0, 2**16))
def test_chunked_equals_vmap_for_any_chunk_size(num_clients, chunk_size, seed):
    model, data = model_and_data(num_clients, seed)
    want = fed_round(model, data)
    with chunked(chunk_size):
        got = fed_round(model, data)
    assert_trees_close(got, want)


@settings(max_examples=10)
@given(num_clients=st.integers(1, 7), chunk_size=st.integers(1, 8), seed=st.integers(0, 2**16))
def test_chunked_per_client_results_equal_vmap(num_clients, chunk_size, seed):
    model, data = model_and_data(num_clients, seed)
    want = per_client_results(model, data)
    with chunked(chunk_size):
        got = per_client_results(model, data)
    assert got.type == want.type
    assert_trees_close(got.value, want.value)


@fc.computation
def weighted_by_other_values(data, weights, shared_weight):
    out = fc.map(lambda x: {"y": 2.0 * x, "z": x * x}, data)
    return fc.mean(out["y"], weights), fc.mean(out["z"], shared_weight), fc.sum(out)


@settings(max_examples=10)
@given(num_clients=st.integers(1, 8), chunk_size=st.integers(1, 9), seed=st.integers(0, 2**16))
def test_weights_from_outside_the_map(num_clients, chunk_size, seed):
    rng = np.random.default_rng(seed)
    data = fc.clients_value(jnp.asarray(rng.normal(size=(num_clients, 2)), jnp.float32))
    weights = fc.clients_value(jnp.asarray(rng.uniform(0.1, 2.0, size=num_clients), jnp.float32))
    shared = fc.clients_value(jnp.float32(3.0), all_equal=True)
    want = weighted_by_other_values(data, weights, shared)
    with chunked(chunk_size):
        got = weighted_by_other_values(data, weights, shared)
    assert_trees_close(got, want)


def _accumulate(acc, v):
    return {"total": acc["total"] + v["x"], "count": acc["count"] + v["n"], "max": jnp.maximum(acc["max"], v["x"])}


def _merge(a, b):
    return {"total": a["total"] + b["total"], "count": a["count"] + b["count"], "max": jnp.maximum(a["max"], b["max"])}


def _report(acc):
    return {"mean": acc["total"] / acc["count"], "count": acc["count"], "max": acc["max"]}


@fc.computation
def count_and_max(data):
    out = fc.map(lambda x: {"x": x, "n": jnp.int32(1)}, data)
    zero = {"total": jnp.float32(0), "count": jnp.int32(0), "max": jnp.float32(-jnp.inf)}
    return fc.aggregate(out, zero, _accumulate, _merge, _report)


@settings(max_examples=10)
@given(num_clients=st.integers(1, 9), chunk_size=st.integers(1, 10), seed=st.integers(0, 2**16))
def test_aggregate_equals_vmap(num_clients, chunk_size, seed):
    data = fc.clients_value(jnp.asarray(np.random.default_rng(seed).normal(size=num_clients), jnp.float32))
    want = count_and_max(data)
    with chunked(chunk_size):
        got = count_and_max(data)
    assert_trees_close(got, want)
    assert int(got.value["count"]) == num_clients  # the shifted last chunk counts no client twice


@fc.computation
def clipped_mean(model, data):
    out = fc.map(client_update, fc.broadcast(model), data)
    clipped = fc.map(lambda d, w: jax.tree.map(lambda a: jnp.clip(a, -0.1, 0.1) * w, d), out["delta"], out["weight"])
    return fc.mean(clipped), fc.sum(out["metrics"])


def test_map_over_a_deferred_map_fuses():
    model, data = model_and_data(7)
    want = clipped_mean(model, data)
    with chunked(3):
        got = clipped_mean(model, data)
        lowered = jax.jit(lambda m, d: clipped_mean.fn(m, d)).lower(model, data).as_text()
    assert_trees_close(got, want)
    # Two passes over the clients (one per distinct map), none materialising them.
    assert lowered.count("stablehlo.while") == 2


@pytest.mark.parametrize("computation", [fed_round, sum_then_weighted_mean])
def test_clients_run_once_for_all_reductions_of_a_map(computation):
    model, data = model_and_data(10)
    with chunked(4):
        lowered = jax.jit(lambda m, d: computation.fn(m, d)).lower(model, data).as_text()
    assert lowered.count("stablehlo.while") == 1


def test_a_computation_traces_again_for_chunked_execution():
    seen = []

    @fc.computation
    def record_member_type(data):
        out = fc.map(lambda a: a + 1.0, data)
        seen.append(type(out.value).__name__)
        return fc.sum(out)

    data = fc.clients_value(jnp.arange(4.0))
    assert float(record_member_type(data)) == 10.0
    with chunked(3):
        assert float(record_member_type(data)) == 10.0
    assert len(seen) == 2 and seen[0] != "DeferredMap" and seen[1] == "DeferredMap"


def test_types_are_known_without_running_the_clients():
    traces = []

    def counted(model, x):
        traces.append(1)
        return client_update(model, x)

    model, data = model_and_data(5)
    want = fc.map(client_update, fc.broadcast(model), data).value["weight"]
    with chunked(2):
        out = fc.map(counted, fc.broadcast(model), data)
        assert isinstance(out.value, fc.DeferredMap)
        assert str(out["delta"].type) == "{<b=f32[2],w=f32[3,2]>}@CLIENTS"
        assert out.num_clients == 5 and out["weight"].num_clients == 5
        assert len(traces) == 1  # jax.eval_shape only
        np.testing.assert_allclose(np.asarray(out["weight"]), want, rtol=1e-6)  # computed on demand


def test_temp_memory_does_not_grow_with_the_number_of_clients():
    def temp_bytes(strategy, num_clients):
        model = fc.server_value({"w": jax.ShapeDtypeStruct((64, 64), jnp.float32)})
        data = fc.clients_value(jax.ShapeDtypeStruct((num_clients, 64), jnp.float32))
        with fc.execution(strategy):  # a fresh function per strategy: jax caches traces per function
            compiled = jax.jit(lambda m, d: sum_then_weighted_mean.fn(m, d)).lower(model, data).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    vmap_small, vmap_large = temp_bytes("vmap", 16), temp_bytes("vmap", 128)
    chunked_small, chunked_large = temp_bytes(fc.ChunkedStrategy(8), 16), temp_bytes(fc.ChunkedStrategy(8), 128)
    assert vmap_large > 4 * vmap_small  # vmap holds every client's [64, 64] delta
    assert chunked_large <= 1.05 * chunked_small  # chunked holds 8 clients' at a time
    assert chunked_large < vmap_large / 4


def test_collect_zip_and_lazy_selection_materialise_correct_values():
    model, data = model_and_data(5)
    want = fc.map(client_update, fc.broadcast(model), data)

    @fc.computation
    def uses(model, data):
        out = fc.map(client_update, fc.broadcast(model), data)
        zipped = fc.zip(w=out["weight"], x=data)
        return fc.collect(out["metrics"]), fc.sum(zipped), fc.mean(out["weight"])

    with chunked(2):
        collected, zipped_sum, mean_weight = uses(model, data)
    assert_trees_close(collected.value, want.value["metrics"])
    assert_trees_close(zipped_sum.value, {"w": jnp.sum(want.value["weight"]), "x": jnp.sum(data.value, axis=0)})
    np.testing.assert_allclose(float(mean_weight), float(jnp.mean(want.value["weight"])), rtol=1e-6)


def test_eager_use_and_materialize():
    data = fc.clients_value(jnp.arange(5.0))
    with chunked(2):
        out = fc.map(lambda a: {"y": a * a}, data)
        assert float(fc.sum(out["y"])) == 30.0
        np.testing.assert_array_equal(materialize(out.value)["y"], np.arange(5.0) ** 2)
        assert repr(out.value) == "DeferredMap(<y=f32> x 5 clients, chunk_size=2)"


def test_reductions_in_a_nested_trace_do_not_leak_into_the_outer_one():
    data = fc.clients_value(jnp.arange(6.0))

    @fc.computation
    def nested(data):
        out = fc.map(lambda a: a * 2.0, data)
        inner = jax.jit(lambda: fc.sum(out).value)()  # cached for the inner trace only
        return fc.apply(lambda a, b: a + b, fc.sum(out), fc.server_value(inner))

    with chunked(4):
        assert float(nested(data)) == 60.0


def test_zero_total_weight_raises_as_in_vmap():
    @fc.computation
    def zero_weighted(data):
        out = fc.map(lambda a: {"x": a, "w": 0.0 * a}, data)
        return fc.mean(out["x"], out["w"])

    data = fc.clients_value(jnp.arange(3.0))
    with chunked(2), pytest.raises(Exception, match="total client weight is zero"):
        jax.block_until_ready(zero_weighted(data))


def test_weight_of_the_wrong_shape_is_a_placement_error():
    data = fc.clients_value(jnp.ones((4, 2)))
    with chunked(2):
        out = fc.map(lambda a: {"x": a, "w": a}, data)
        with pytest.raises(fc.PlacementError, match="one scalar per client"):
            fc.mean(out["x"], out["w"])


def test_indexing_a_missing_key_raises_the_usual_error():
    with chunked(2):
        out = fc.map(lambda a: {"x": a}, fc.clients_value(jnp.ones(3)))
        with pytest.raises(KeyError, match="nope"):
            out["nope"]


@pytest.mark.parametrize("bad", [0, -3, 1.5, True, "4"])
def test_bad_chunk_size_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        fc.ChunkedStrategy(bad)


def test_missing_chunk_size_is_a_clear_error():
    with pytest.raises(TypeError, match="needs a chunk size"):
        with fc.execution("chunked"):
            pass


def test_strategies_with_equal_chunk_sizes_share_a_program():
    assert fc.ChunkedStrategy(4) == fc.ChunkedStrategy(4)
    assert hash(fc.ChunkedStrategy(4)) == hash(fc.ChunkedStrategy(4))
    assert fc.ChunkedStrategy(4) != fc.ChunkedStrategy(5)
