"""fedcore.testing.laws: each law holds for the core's intrinsics and FAILS on a broken algorithm."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fedcore as fc
from fedcore import testing as fct

SMALL_COUNTS = st.sampled_from([1, 2, 5, 64])  # few leading-axis sizes: few recompiles


# --- The laws hold for the core ------------------------------------------------------


@given(fct.weighted_client_values(num_clients=SMALL_COUNTS))
def test_mean_is_permutation_invariant(xw):
    x, w = xw
    with fc.execution("loop"):  # eager: hypothesis shapes would each recompile a jitted program
        fct.check_permutation_invariance(fc.mean, x)
        fct.check_permutation_invariance(fc.mean, x, w)
        fct.check_permutation_invariance(fc.sum, x)


@given(fct.client_values(num_clients=st.integers(1, 64), max_leaves=1), st.data())
def test_random_permutations_and_map_equivariance(x, data):
    perm = data.draw(st.permutations(range(x.num_clients)))
    with fc.execution("loop"):
        # A per-client result must be permuted like the input (equivariance).
        fct.check_permutation_invariance(lambda v: fc.map(lambda a: 2 * a + 1, v), x, permutations=[perm])


@given(fct.server_values(), SMALL_COUNTS, st.data())
def test_mean_of_broadcast_holds_for_mean(x, n, data):
    w = data.draw(fct.weights(n))
    with fc.execution("loop"):
        fct.check_mean_of_broadcast(fc.mean, x, n, all_equal=True)
        fct.check_mean_of_broadcast(fc.mean, x, n, w, all_equal=True)


@given(fct.weighted_client_values(num_clients=SMALL_COUNTS))
def test_weighted_mean_is_weight_scale_invariant(xw):
    x, w = xw
    with fc.execution("loop"):
        fct.check_weight_scale_invariance(fc.mean, x, w)


@fc.computation
def _weighted_square_mean(x, w):
    return fc.mean(fc.map(lambda a: a * a, x), w)


def test_strategies_agree_on_a_computation():
    x = fc.clients_value(jnp.linspace(-3.0, 3.0, 12).reshape(6, 2))
    w = fc.clients_value(jnp.arange(1.0, 7.0))
    r = fct.check_strategies_agree(_weighted_square_mean, x, w)
    expected = np.average(np.asarray(x.value) ** 2, axis=0, weights=np.asarray(w.value))
    np.testing.assert_allclose(np.asarray(r.value), expected, rtol=1e-6)


def test_returned_results_are_the_reference():
    x = fc.clients_value(jnp.array([1.0, 2.0, 4.0]))
    assert float(fct.check_permutation_invariance(fc.mean, x)) == pytest.approx(7 / 3)
    assert float(fct.check_mean_of_broadcast(fc.mean, {"a": jnp.float32(3)}, 4).value["a"]) == 3.0


# --- ... and each law FAILS on a deliberately broken algorithm ----------------------


def _first_client_counts_double(x):
    n = x.num_clients
    w = fc.clients_value(jnp.ones(n).at[0].set(2.0))
    return fc.mean(x, w)


def test_permutation_law_catches_an_order_dependent_aggregator():
    x = fc.clients_value(jnp.array([1.0, 2.0, 3.0, 4.0]))
    with pytest.raises(AssertionError, match=r"permutation invariance of _first_client_counts_double .*order \[3, 2, 1, 0\]"):
        fct.check_permutation_invariance(_first_client_counts_double, x)


def test_permutation_law_catches_a_non_equivariant_per_client_result():
    def client_index_plus_value(x):
        return fc.map(lambda a, i: a + i, x, fc.clients_value(jnp.arange(x.num_clients, dtype=jnp.float32)))

    x = fc.clients_value(jnp.zeros(3))
    with pytest.raises(AssertionError, match="permutation invariance"):
        fct.check_permutation_invariance(client_index_plus_value, x)


def test_mean_of_broadcast_law_catches_sum_and_an_off_by_one_mean():
    def mean_off_by_one(x):
        n = x.num_clients
        return fc.apply(lambda s: jax.tree.map(lambda a: a / (n + 1), s), fc.sum(x))

    x = fc.server_value({"w": jnp.array([1.0, -2.0])})
    with pytest.raises(AssertionError, match=r"sum of 3 copies of x equals x: leaf \['w'\] differs"):
        fct.check_mean_of_broadcast(fc.sum, x, 3)
    with pytest.raises(AssertionError, match="mean_off_by_one"):
        fct.check_mean_of_broadcast(mean_off_by_one, x, 3)


def test_mean_of_broadcast_law_checks_the_all_equal_form_when_asked():
    def ignores_all_equal(x):
        return fc.mean(x) if x.per_client else fc.server_value(jnp.zeros_like(x.value))

    x = fc.server_value(jnp.ones(2))
    fct.check_mean_of_broadcast(ignores_all_equal, x, 2)  # per-client form is fine
    with pytest.raises(AssertionError, match=r"ignores_all_equal\(broadcast\(x\)\) equals x"):
        fct.check_mean_of_broadcast(ignores_all_equal, x, 2, all_equal=True)


def test_weight_scale_law_catches_an_unnormalised_weighted_sum():
    def weighted_sum_over_n(x, w):
        return fc.apply(lambda s: s / x.num_clients, fc.sum(fc.map(jnp.multiply, x, w)))

    x = fc.clients_value(jnp.array([1.0, 3.0]))
    w = fc.clients_value(jnp.array([1.0, 1.0]))
    with pytest.raises(AssertionError, match="scaled by 0.5"):
        fct.check_weight_scale_invariance(weighted_sum_over_n, x, w)


class _DropsLastClient(fc.VmapStrategy):
    """A broken strategy: its sum forgets the last client."""

    name = "drops-last-client"

    def sum(self, x):
        return fc.VmapStrategy.sum(self, {"_": x})["_"] - _last(x)


def _last(x):
    return jax.tree.map(lambda a: a[-1], x)


@fc.computation
def _total(x):
    return fc.sum(x)


def test_strategies_law_catches_a_broken_strategy():
    x = fc.clients_value(jnp.array([1.0, 2.0, 3.0]))
    with pytest.raises(AssertionError, match="_total under strategy 'drops-last-client' vs 'loop'"):
        fct.check_strategies_agree(_total, x, strategies=("loop", _DropsLastClient()))


def test_strategies_law_takes_a_chunk_size_as_a_strategy_instance():
    seen = []

    @fc.computation
    def total_of_squares(x):
        seen.append(fc.current_strategy())
        return fc.sum(fc.map(jnp.square, x))

    x = fc.clients_value(jnp.arange(5.0))
    r = fct.check_strategies_agree(total_of_squares, x, strategies=("loop", "vmap", fc.ChunkedStrategy(chunk_size=2)))
    assert float(r.value) == 30.0
    assert [s.name for s in seen] == ["loop", "vmap", "chunked"] and seen[-1].chunk_size == 2


def test_strategies_law_catches_a_type_change():
    @fc.computation
    def type_depends_on_strategy(x):
        s = fc.sum(x)
        return s if fc.current_strategy().jit else fc.apply(lambda a: a[None], s)

    with pytest.raises(AssertionError, match=r"the types differ: got f32@SERVER, expected f32\[1\]@SERVER"):
        fct.check_strategies_agree(type_depends_on_strategy, fc.clients_value(jnp.ones(2)))


# --- Helpers and bad input ----------------------------------------------------------


def test_assert_federated_close_names_types_and_leaves():
    a = fc.server_value({"w": jnp.array([1.0, 2.0])})
    with pytest.raises(AssertionError, match=r"the types differ: got <w=f32\[2\]>@SERVER, expected \{<w=f32\[2\]>\}@CLIENTS"):
        fct.assert_federated_close(a, fc.clients_value({"w": jnp.ones((3, 2))}))
    with pytest.raises(AssertionError, match=r"my law: leaf \['w'\] differs at index \(1,\): got 2.0, expected 2.5"):
        fct.assert_federated_close(a, fc.server_value({"w": jnp.array([1.0, 2.5])}), law="my law")
    fct.assert_federated_close(a, fc.server_value({"w": jnp.array([1.0, 2.5])}), atol=0.5)


def test_summation_atol_scales_with_clients_and_magnitude():
    eps = float(np.finfo(np.float32).eps)
    x = fc.clients_value(jnp.array([[-8.0, 1.0]] * 5))
    # Per-client leaves: the largest sum of |x_i| over clients (5 * 8).
    assert fct.summation_atol(x) == pytest.approx(2 * 5 * eps * 40)
    assert fct.summation_atol(x, num_clients=64) == pytest.approx(2 * 64 * eps * 40)
    # Unplaced and server leaves count with their own magnitude.
    assert fct.summation_atol(x, fc.server_value(jnp.float32(-100))) == pytest.approx(2 * 5 * eps * 100)
    assert fct.summation_atol(jnp.ones(3), num_clients=2) == pytest.approx(2 * 2 * eps * 1)
    # Integers sum exactly: only the allowance for flushed subnormals remains.
    assert fct.summation_atol(fc.clients_value(jnp.array([3, 4]))) == 2 * float(np.finfo(np.float32).tiny)


def test_permute_clients_and_bad_input():
    x = fc.clients_value({"a": jnp.arange(3.0), "b": jnp.arange(6).reshape(3, 2)})
    p = fct.permute_clients(x, [1, 2, 0])
    np.testing.assert_array_equal(p.value["b"], [[2, 3], [4, 5], [0, 1]])
    with pytest.raises(ValueError, match=r"not a permutation of the 3 clients"):
        fct.permute_clients(x, [0, 0, 1])
    with pytest.raises(TypeError, match=r"expects a per-client value \{T\}@CLIENTS, got f32@SERVER"):
        fct.permute_clients(fc.server_value(1.0), [0])
    with pytest.raises(TypeError, match=r"client_value must be \{T\}@CLIENTS, got f32\[3\]@CLIENTS"):
        fct.check_permutation_invariance(fc.mean, fc.broadcast(fc.server_value(jnp.ones(3))))
    with pytest.raises(ValueError, match="client_value has 3 clients but weights has 2"):
        fct.check_permutation_invariance(fc.mean, x, fc.clients_value(jnp.ones(2)))
    with pytest.raises(TypeError, match=r"x must be T@SERVER \(or unplaced\), got \{f32\}@CLIENTS"):
        fct.check_mean_of_broadcast(fc.mean, fc.clients_value(jnp.ones(2)), 2)
    with pytest.raises(ValueError, match="num_clients must be at least 1"):
        fct.check_mean_of_broadcast(fc.mean, jnp.ones(2), 0)
    with pytest.raises(ValueError, match="scales must be positive"):
        fct.check_weight_scale_invariance(fc.mean, x["a"], fc.clients_value(jnp.ones(3)), scales=(0.0,))
    with pytest.raises(ValueError, match="at least one strategy"):
        fct.check_strategies_agree(_total, x, strategies=())


# --- Group-size invariance of maps over client data ----------------------------------

from fedcore.core._batches import ClientBatches, ClientPopulation, num_real_steps  # noqa: E402

_STEPS = [1, 4, 2, 3, 4]
_POPULATION = ClientPopulation.from_batches(
    ClientBatches.from_materialized(
        {
            "x": np.arange(5 * 4 * 2, dtype=np.float32).reshape(5, 4, 2),
            "mask": np.arange(4)[None, :, None] < np.array(_STEPS)[:, None, None].repeat(2, axis=2),
        }
    )
)


@fc.computation
def _mean_of_real_examples(cohort):
    def client_mean(c):
        x = c.data["x"][c.index]
        return jnp.sum(jnp.where(c.mask, x, 0.0)) / jnp.sum(c.mask)

    return fc.mean(fc.map(client_mean, cohort))


@fc.computation
def _steps_from_the_bound(cohort):  # broken: the bound is the group's, not the client's
    return fc.sum(fc.map(lambda c: c.step_bound, cohort))


def test_group_size_law_holds_for_a_client_reading_its_own_batches():
    ids = [4, 0, 2, 1, 3]
    r = fct.check_group_size_invariance(_mean_of_real_examples, _POPULATION, ids, group_sizes=(2, 3, 5))
    x = np.asarray(_POPULATION.data["x"]).reshape(5, 4, 2)
    expected = np.mean([x[i, : _STEPS[i]].mean() for i in ids])
    np.testing.assert_allclose(float(r), expected, rtol=1e-6)


def test_group_size_law_catches_a_client_that_reads_the_groups_step_bound():
    with pytest.raises(AssertionError, match=r"_steps_from_the_bound with clients in groups of 2 vs one client per group"):
        fct.check_group_size_invariance(_steps_from_the_bound, _POPULATION, [0, 1, 2, 3, 4])


def test_group_size_law_needs_a_group_size_to_compare():
    with pytest.raises(ValueError, match="needs a group size other than 1"):
        fct.check_group_size_invariance(_mean_of_real_examples, _POPULATION, [0, 1], group_sizes=(1,))
