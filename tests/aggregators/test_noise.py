"""`fa.gaussian_noise` and `fa.dp_mean`: the noise's scale, fresh and reproducible draws, DP-FedAvg in an algorithm."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fedcore as fc
from fedcore import aggregators as fa
from fedcore import learning

DIM = 4000  # coordinates: enough draws per round for tight statistics


def _round(agg, state, x):
    @fc.computation
    def step(s, v):
        out = agg.next(s, v)
        return out.state, out.result, out.measurements

    return step(state, x)


def test_dp_mean_is_the_clipped_sum_over_expected_clients_plus_noise_of_scale_zc_over_m():
    z, c, m = 0.7, 1.0, 4
    agg = fa.dp_mean(z, c, m)
    x = np.zeros((3, DIM), np.float32)
    x[0, 0], x[1, 1], x[2, 2] = 5.0, 0.5, -3.0  # clipped to 1.0, kept 0.5, clipped to -1.0
    state, result, measurements = _round(agg, agg.init(jnp.zeros(DIM), jax.random.PRNGKey(3)), fc.clients_value(x))
    noise = np.asarray(result.value, np.float64) * m - np.array([1.0, 0.5, -1.0] + [0.0] * (DIM - 3))
    # The noise's sample std within 5 standard errors of z*c; its mean within 5 standard errors of 0.
    assert abs(noise.std() - z * c) < 5 * z * c / np.sqrt(2 * DIM)
    assert abs(noise.mean()) < 5 * z * c / np.sqrt(DIM)
    assert {k: float(v) for k, v in measurements.value.items()} == pytest.approx(
        {"clipped_count": 2.0, "clipping_norm": 1.0, "noise_stddev": z * c}
    )


def test_noise_is_fresh_every_round_and_reproducible_from_the_key():
    agg = fa.dp_mean(1.0, 1.0, 2)
    x = fc.clients_value(jnp.zeros((2, 16)))
    s1, r1, _ = _round(agg, agg.init(jnp.zeros(16), jax.random.PRNGKey(0)), x)
    _, r2, _ = _round(agg, s1, x)
    _, again, _ = _round(agg, agg.init(jnp.zeros(16), jax.random.PRNGKey(0)), x)
    _, other, _ = _round(agg, agg.init(jnp.zeros(16), jax.random.PRNGKey(1)), x)
    np.testing.assert_array_equal(np.asarray(r1.value), np.asarray(again.value))
    assert not np.allclose(np.asarray(r1.value), np.asarray(r2.value))
    assert not np.allclose(np.asarray(r1.value), np.asarray(other.value))


def test_vmap_and_loop_draw_the_same_noise():
    agg = fa.dp_mean(1.0, 1.0, 3)
    x = fc.clients_value(jnp.arange(12.0).reshape(3, 4))
    got = {}
    for strategy in (fc.VmapStrategy(), fc.LoopStrategy()):
        with fc.execution(strategy):
            got[strategy.name] = np.asarray(_round(agg, agg.init(jnp.zeros(4)), x)[1].value)
    np.testing.assert_allclose(got["vmap"], got["loop"], rtol=1e-6, atol=1e-6)


def test_dp_fed_avg_runs_unweighted_and_reports_its_measurements_and_weighted_is_refused():
    clients = [{"x": np.random.default_rng(i).normal(size=(6, 784)).astype(np.float32), "y": np.arange(6, dtype=np.int32) % 10} for i in range(3)]
    data = fc.data.batch_clients(clients, 3)
    agg = fa.dp_mean(noise_multiplier=0.1, clip_norm=0.5, expected_clients=3)
    process = learning.build_unweighted_fed_avg(learning.models.linear(), optax.sgd(0.1), model_aggregator=agg)
    state = process.initialize()
    key0 = np.asarray(state.value.aggregator["key"])
    state, metrics = process.next(state, data)
    assert sorted(metrics.value["aggregator"]) == ["clipped_count", "clipping_norm", "noise_stddev"]
    assert float(metrics["aggregator"]["noise_stddev"]) == pytest.approx(0.05)
    assert not np.array_equal(np.asarray(state.value.aggregator["key"]), key0)
    weighted = learning.build_weighted_fed_avg(learning.models.linear(), optax.sgd(0.1), model_aggregator=agg)
    with pytest.raises(TypeError, match="takes no weights"):
        weighted.next(weighted.initialize(), data)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: fa.dp_mean(0.0, 1.0, 10), "noise_multiplier must be a finite number > 0"),
        (lambda: fa.dp_mean(1.0, -1.0, 10), "clip_norm must be a finite number > 0"),
        (lambda: fa.dp_mean(1.0, 1.0, 0), "expected_clients must be a finite number > 0"),
        (lambda: fa.gaussian_noise(1.0, 10, clip_norm=float("inf")), "clip_norm must be a finite number > 0"),
    ],
)
def test_bad_arguments_are_named(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_adaptive_is_refused_until_it_exists():
    with pytest.raises(NotImplementedError, match="adaptive clipping is not built yet"):
        fa.dp_mean(1.0, 1.0, 10, adaptive=True)
