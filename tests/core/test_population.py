"""`ClientPopulation`, `Cohort` and `num_real_steps`: every client's batches over one shared store.

Laws: a population made from `ClientBatches` (a reshape, no copy) gives every
client exactly the batches the `ClientBatches` materialize; a client's real
step count is one past its last non-empty batch. Bad selections raise
naming the problem.
"""

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fedcore as fc
from fedcore.core._batches import num_real_steps

C, S, B, F = 3, 4, 2, 5  # fixed shapes: one compile serves every example


@st.composite
def materialized_batches(draw):
    x = draw(hnp.arrays(np.float32, (C, S, B, F), elements=st.floats(-4, 4, width=32)))
    y = draw(hnp.arrays(np.int32, (C, S, B), elements=st.integers(0, 9)))
    mask = draw(hnp.arrays(np.bool_, (C, S, B)))
    return {"x": x, "y": y, "mask": mask}


@given(materialized_batches())
def test_a_population_gives_every_client_its_batches(m):
    batches = fc.ClientBatches.from_materialized(m)
    population = fc.ClientPopulation.from_batches(batches)
    assert population.num_clients == C and population.data["x"].shape == (C * S * B, F)
    expected = batches.materialize()
    for i in range(C):
        client = population.client(i)
        for k in ("x", "y"):
            gathered = np.asarray(client.data[k])[np.asarray(client.index)]
            np.testing.assert_array_equal(gathered, expected[k][i])
        np.testing.assert_array_equal(client.mask, m["mask"][i])


@given(hnp.arrays(np.bool_, (S, B)))
def test_real_steps_end_at_the_last_nonempty_batch(mask):
    nonempty = np.flatnonzero(mask.any(axis=1))
    expected = int(nonempty[-1]) + 1 if nonempty.size else 0
    assert int(num_real_steps(jnp.asarray(mask))) == expected


def test_real_steps_under_vmap():
    masks = jnp.array([[[False], [False]], [[True], [False]], [[False], [True]]])
    np.testing.assert_array_equal(jax.vmap(num_real_steps)(masks), [0, 1, 2])


def _population():
    ones = np.ones((C, S, B), bool)
    return fc.ClientPopulation.from_batches(fc.ClientBatches.from_materialized({"x": np.zeros((C, S, B, F)), "mask": ones}))


def test_select_makes_a_cohort_of_int32_ids():
    cohort = _population().select([2, 0], group_size=2)
    assert isinstance(cohort, fc.Cohort) and cohort.ids.dtype == jnp.int32 and cohort.group_size == 2
    np.testing.assert_array_equal(cohort.ids, [2, 0])
    traced = jax.jit(lambda p, i: p.select(i).ids)(_population(), jnp.array([1]))  # no host checks on tracers
    np.testing.assert_array_equal(traced, [1])


@pytest.mark.parametrize(
    "ids, kwargs, message",
    [
        ([0, 3], {}, r"client ids must lie in \[0, 3\), got 0..3"),
        ([-1], {}, r"client ids must lie in \[0, 3\), got -1..-1"),
        ([], {}, "non-empty 1-D array of client ids"),
        ([[0, 1]], {}, r"non-empty 1-D array of client ids, got shape \(1, 2\)"),
        ([0.0, 1.0], {}, "non-empty 1-D array of client ids.*float"),
        ([0], {"group_size": 0}, "group_size must be a positive int or None, got 0"),
        ([0], {"group_size": 2.0}, "group_size must be a positive int or None, got 2.0"),
    ],
)
def test_bad_selections_raise(ids, kwargs, message):
    with pytest.raises(ValueError, match=message):
        _population().select(ids, **kwargs)
