"""`fa.clip` and `fa.zeroing`: their guarantees, their measurements, and that they run jitted under every strategy."""

from __future__ import annotations

import hypothesis.extra.numpy as hnp
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fedcore as fc
from fedcore import aggregators as fa

values = hnp.arrays(np.float32, (4, 3), elements=st.floats(-100.0, 100.0, width=32))
norms = st.floats(0.01, 50.0)


def _collect_clipped(max_norm, x):
    """The clipped per-client values, read through a sum reducer over one client at a time."""
    agg = fa.chain(fa.clip(max_norm), fa.sum())
    return np.stack([np.asarray(agg.next(agg.init(jnp.zeros(3)), fc.clients_value(x[i : i + 1])).result.value) for i in range(len(x))])


@settings(max_examples=20, deadline=None)
@given(values, norms)
def test_clip_bounds_every_norm_and_keeps_small_values_and_directions(x, c):
    clipped = _collect_clipped(c, x)
    n = np.linalg.norm(x.astype(np.float64), axis=1)
    assert np.all(np.linalg.norm(clipped, axis=1) <= c * (1 + 1e-5))
    small = n <= c
    np.testing.assert_array_equal(clipped[small], x[small])
    scale = np.minimum(1.0, c / np.maximum(n, 1e-30))
    np.testing.assert_allclose(clipped, x * scale[:, None], rtol=1e-5, atol=1e-6)


@settings(max_examples=20, deadline=None)
@given(values, norms)
def test_zeroing_keeps_or_zeroes_whole_clients_and_counts_them(x, c):
    agg = fa.chain(fa.zeroing(c), fa.sum())
    out = agg.next(agg.init(jnp.zeros(3)), fc.clients_value(x))
    n = np.linalg.norm(x.astype(np.float64), axis=1)
    keep = np.asarray([np.linalg.norm(r) <= c for r in x.astype(np.float32)])
    np.testing.assert_allclose(np.asarray(out.result.value), x[keep].sum(axis=0), rtol=1e-5, atol=1e-4)
    assert int(out.measurements["zeroed_count"]) == int((~keep).sum())
    assert float(out.measurements["zeroing_norm"]) == pytest.approx(c)
    del n


def test_clip_then_mean_measures_and_weights_pass_through():
    agg = fa.chain(fa.clip(1.0), fa.mean())
    x = fc.clients_value(jnp.array([[3.0, 4.0], [0.0, 0.5]]))
    out = agg.next(agg.init(jnp.zeros(2)), x, fc.clients_value(jnp.array([1.0, 3.0])))
    np.testing.assert_allclose(np.asarray(out.result.value), [0.15, 0.2 + 0.375], rtol=1e-6)
    assert out.measurements.value == {"clipped_count": 1, "clipping_norm": 1.0}


def test_both_stages_measure_side_by_side_and_run_jitted_under_vmap_and_loop():
    agg = fa.chain(fa.zeroing(100.0), fa.clip(1.0), fa.mean())

    @fc.computation
    def round_(state, x):
        out = agg.next(state, x)
        return out.result, out.measurements

    x = fc.clients_value(jnp.array([[300.0, 400.0], [3.0, 4.0], [0.3, 0.4]]))
    results = {}
    for strategy in (fc.VmapStrategy(), fc.LoopStrategy()):
        with fc.execution(strategy):
            result, m = round_(agg.init(jnp.zeros(2)), x)
        results[strategy.name] = np.asarray(result.value)
        assert {k: float(v) for k, v in m.value.items()} == {
            "zeroed_count": 1.0, "zeroing_norm": 100.0, "clipped_count": 1.0, "clipping_norm": 1.0
        }
    np.testing.assert_allclose(results["vmap"], [(0.6 + 0.3) / 3, (0.8 + 0.4) / 3], rtol=1e-6)
    np.testing.assert_array_equal(results["vmap"], results["loop"])


@pytest.mark.parametrize("stage", [fa.clip, fa.zeroing])
@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan"), "1", True])
def test_bad_norms_are_refused(stage, bad):
    with pytest.raises(ValueError, match="max_norm must be a finite number > 0"):
        stage(bad)
