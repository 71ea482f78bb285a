"""Laws and errors of the federated intrinsics.

Float tolerances. float32 has machine epsilon EPS = 2**-23 (~1.2e-7): each
operation rounds with relative error <= EPS/2, and a sum of n terms computed
in any order is within (n - 1) * EPS * sum|x_i| of the exact sum. So two
results that differ only in the order in which clients are summed (a
permutation, a loop versus a vectorised reduction) differ by at most
2 * n * EPS * sum|x_i| -- `fct.summation_atol` (for n = 64 clients with
|x| <= 100: ~0.1 on a sum of size ~6400, ~0.1 on a mean too, as the scale is
taken before dividing). A law that must hold exactly up to a couple of final
roundings (e.g. sum == n * mean with the same summation) gets rtol = 4 * EPS.
Those bounds stay well below the size of a real bug: losing or double-counting
a client moves a mean by ~|x_j - mean| / n, ~1 for these values.

Properties call the intrinsics eagerly under the default (vmap) strategy:
each new shape compiles a few tiny XLA programs, which is still cheaper than
the loop strategy's per-client Python loop over 64 clients. The loop strategy
is exercised here on small client counts, and compared with the jitted
strategies in test_execution.py.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fedcore as fc
from fedcore import testing as fct

EPS = float(np.finfo(np.float32).eps)
COUNTS = fct.client_counts(1, 64)
FEW_COUNTS = st.sampled_from([1, 2, 3, 7, 64])  # bounded leading-axis sizes: fewer compiles
SMALL_COUNTS = st.sampled_from([1, 3, 8])  # for the (slow, eager, per-client) loop strategy


def _close(actual, expected, *, rtol=4 * EPS, atol=0.0, law="values"):
    fct.assert_federated_close(actual, expected, rtol=rtol, atol=atol, law=law)


def _copies(x, n):
    """The per-client value where each of n clients holds the member of x."""
    return fc.clients_value(jax.tree.map(lambda a: jnp.broadcast_to(a, (n, *a.shape)), x.value))


# --- mean and sum ----------------------------------------------------------------------


@given(fct.weighted_client_values(num_clients=COUNTS, dtypes=(np.float32, np.int32), max_leaves=2), st.data())
def test_mean_and_sum_are_invariant_under_any_permutation_of_clients(xw, data):
    x, w = xw
    perm = data.draw(st.permutations(range(x.num_clients)))
    # Values and weights are permuted together; tolerance: summation order (see top).
    fct.check_permutation_invariance(fc.mean, x, w, permutations=[perm])
    fct.check_permutation_invariance(fc.mean, x, permutations=[perm])
    fct.check_permutation_invariance(fc.sum, x, permutations=[perm])


@settings(max_examples=10)  # eager per-client loop: slow per example
@given(fct.weighted_client_values(num_clients=SMALL_COUNTS), st.data())
def test_permutation_invariance_under_the_loop_strategy(xw, data):
    x, w = xw
    perm = data.draw(st.permutations(range(x.num_clients)))
    with fc.execution("loop"):
        fct.check_permutation_invariance(fc.mean, x, w, permutations=[perm])
        fct.check_permutation_invariance(fc.sum, x, permutations=[perm])


@given(fct.server_values(dtypes=(np.float32, np.int32)), FEW_COUNTS, st.data())
def test_mean_of_broadcast_is_the_value(x, n, data):
    # All-equal: no arithmetic at all, so exactly x.
    _close(fc.mean(fc.broadcast(x)), x, rtol=0.0, law="mean(broadcast(x)) == x")
    w = data.draw(fct.weights(n))
    _close(fc.mean(fc.broadcast(x), w), x, rtol=0.0, law="weighted mean(broadcast(x)) == x")
    # Materialised copies on n clients: n equal terms, rounding as in a sum (see top).
    # (Integer members average to float32, so only float members come back unchanged.)
    if all(jnp.issubdtype(a.dtype, jnp.floating) for a in jax.tree.leaves(x.value)):
        fct.check_mean_of_broadcast(fc.mean, x, n)
        fct.check_mean_of_broadcast(fc.mean, x, n, w)


@given(fct.client_values(num_clients=FEW_COUNTS), st.floats(0.25, 8.0, width=32))
def test_weighted_mean_with_equal_weights_is_the_unweighted_mean(x, c):
    n = x.num_clients
    unweighted = fc.mean(x)
    # sum(c*x)/(n*c) vs sum(x)/n: the summations may differ in order (a dot product
    # vs a reduction), plus one rounding per product c*x_i (<= n * EPS * max|x| in
    # all) -- twice the summation bound covers both.
    atol = 2 * fct.summation_atol(x)
    per_client_weights = fc.clients_value(jnp.full(n, c, jnp.float32))
    _close(fc.mean(x, per_client_weights), unweighted, rtol=4 * EPS, atol=atol, law="equal weights")
    _close(fc.mean(x, fc.value(jnp.float32(c), fc.CLIENTS)), unweighted, rtol=4 * EPS, atol=atol, law="all-equal weight")


@given(fct.client_values(num_clients=FEW_COUNTS, dtypes=(np.float32, np.int32)))
def test_sum_is_n_times_mean(x):
    n = x.num_clients
    total, mean = fc.sum(x), fc.mean(x)
    # Same summation (jnp.sum over clients) for both; n * (S / n) differs from S by two roundings.
    scaled = fc.apply(lambda m: jax.tree.map(lambda a: a * n, m), mean)
    as_float = fc.apply(lambda s: jax.tree.map(lambda a: a.astype(jnp.float32), s), total)
    _close(scaled, as_float, rtol=4 * EPS, atol=4 * EPS, law="sum == n * mean")
    assert jax.tree.map(lambda a: a.dtype, total.value) == jax.tree.map(lambda a: a.dtype, x.value)


def test_mean_of_integers_is_float():
    m = fc.mean(fc.clients_value(jnp.array([1, 2], jnp.int32)))
    assert m.value.dtype == jnp.float32 and float(m) == 1.5


def test_weighted_mean_matches_numpy():
    x = fc.clients_value({"a": jnp.array([[1.0, 2.0], [3.0, 5.0], [-1.0, 0.0]])})
    w = fc.clients_value(jnp.array([1.0, 2.0, 0.5]))
    expected = np.average(np.asarray(x.value["a"]), axis=0, weights=np.asarray(w.value))
    np.testing.assert_allclose(np.asarray(fc.mean(x, w).value["a"]), expected, rtol=4 * EPS)


# --- map -------------------------------------------------------------------------------


def _f(tree):
    return jax.tree.map(lambda a: jnp.sin(a) * 2 + 1, tree)


@given(fct.server_values(), FEW_COUNTS, st.data())
def test_map_of_broadcast_is_f_on_every_client(x, n, data):
    fx = _f(x.value)
    everywhere = fc.map(_f, fc.broadcast(x))
    # Only all-equal arguments: f runs once and the result stays all-equal (by design).
    assert everywhere.all_equal and everywhere.placement is fc.CLIENTS
    _close(everywhere, fc.clients_value(fx, all_equal=True), rtol=0.0, law="map(f, broadcast(x))")
    # Mixed with a per-client argument: a per-client result, f(x) on every client.
    c = data.draw(fct.client_values(num_clients=n, member=fc.TensorType((), np.dtype("float32"))))
    for strategy in ("loop", "vmap"):
        with fc.execution(strategy):
            mixed = fc.map(lambda a, ci: (_f(a), ci), fc.broadcast(x), c)
        assert mixed.per_client and mixed.num_clients == n
        # Same elementwise ops on the same inputs; vmap may fuse differently: 4 EPS.
        _close(mixed, fc.clients_value((jax.tree.map(lambda a: jnp.broadcast_to(a, (n, *a.shape)), fx), c.value)),
               law=f"map(f, broadcast(x), c) under {strategy}")


def test_map_passes_each_client_its_own_value():
    x = fc.clients_value(jnp.array([1.0, 2.0, 3.0]))
    y = fc.clients_value(jnp.array([10.0, 20.0, 30.0]))
    np.testing.assert_array_equal(fc.map(jnp.add, x, y).value, [11.0, 22.0, 33.0])
    with fc.execution("loop"):
        np.testing.assert_array_equal(fc.map(jnp.add, x, y).value, [11.0, 22.0, 33.0])


# --- min, max, zip, value, apply ---------------------------------------------------------


@given(fct.client_values(num_clients=FEW_COUNTS, dtypes=(np.float32, np.int32)))
def test_min_and_max_are_elementwise_over_clients(x):
    lo, hi = fc.min(x), fc.max(x)
    assert lo.placement is hi.placement is fc.SERVER
    _close(lo, fc.server_value(jax.tree.map(lambda a: np.min(np.asarray(a), axis=0), x.value)), rtol=0.0, law="min")
    _close(hi, fc.server_value(jax.tree.map(lambda a: np.max(np.asarray(a), axis=0), x.value)), rtol=0.0, law="max")


def test_min_and_max_of_an_all_equal_value_is_that_value():
    x = fc.broadcast(fc.server_value(jnp.array([1.0, -2.0])))
    np.testing.assert_array_equal(fc.min(x).value, [1.0, -2.0])
    np.testing.assert_array_equal(fc.max(x).value, [1.0, -2.0])


@given(fct.client_values(num_clients=FEW_COUNTS), fct.server_values())
def test_zip_builds_one_placed_structure(x, s):
    n = x.num_clients
    z = fc.zip(a=x, b=fc.broadcast(s))
    assert z.per_client and z.num_clients == n
    assert z.type == fc.FederatedType({"a": x.type.member, "b": s.type.member}, fc.CLIENTS, False)
    expected_b = jax.tree.map(lambda a: np.broadcast_to(a, (n, *a.shape)), s.value)
    _close(z, fc.clients_value({"a": x.value, "b": expected_b}), rtol=0.0, law="zip")
    pair = fc.zip(s, s)
    assert pair.placement is fc.SERVER and pair.type.member == (s.type.member, s.type.member)
    both_equal = fc.zip(fc.broadcast(s), fc.value(1, fc.CLIENTS))
    assert both_equal.all_equal and str(both_equal.type).endswith("@CLIENTS")


def test_value_places_a_constant():
    assert str(fc.value({"lr": 0.1}, fc.SERVER).type) == "<lr=f32>@SERVER"
    v = fc.value(jnp.ones(2), fc.CLIENTS)
    assert v.all_equal and str(v.type) == "f32[2]@CLIENTS"


def test_apply_runs_a_function_at_the_server():
    a, b = fc.server_value(jnp.float32(2)), fc.server_value({"w": jnp.ones(2)})
    r = fc.apply(lambda k, t: {"w": t["w"] * k}, a, b)
    assert str(r.type) == "<w=f32[2]>@SERVER"
    np.testing.assert_array_equal(r.value["w"], [2.0, 2.0])


@given(fct.client_values(num_clients=FEW_COUNTS))
def test_collect_stacks_every_client_at_the_server(x):
    c = fc.collect(x)
    assert c.placement is fc.SERVER
    _close(c, fc.server_value(x.value), rtol=0.0, law="collect")


@given(fct.client_values(num_clients=FEW_COUNTS), st.data())
def test_concat_puts_the_clients_of_several_values_one_after_another(x, data):
    y = data.draw(fct.client_values(num_clients=FEW_COUNTS, member=x.type.member))
    z = fc.concat(x, y)
    assert z.num_clients == x.num_clients + y.num_clients and z.type.member == x.type.member
    _close(z, fc.clients_value(jax.tree.map(lambda a, b: np.concatenate([a, b]), x.value, y.value)), rtol=0.0, law="concat")
    # sum over the concatenation == sum of the sums, up to summation order (see top).
    both = fc.apply(lambda a, b: jax.tree.map(jnp.add, a, b), fc.sum(x), fc.sum(y))
    _close(fc.sum(z), both, atol=fct.summation_atol(z), law="sum(concat(x, y))")


def test_concat_needs_a_value():
    with pytest.raises(TypeError, match=r"concat needs at least one \{T\}@CLIENTS value"):
        fc.concat()


# --- aggregate ---------------------------------------------------------------------------


def _stats_zero():
    return {"sum": jnp.float32(0), "count": jnp.int32(0), "max": jnp.float32(-jnp.inf)}


def _accumulate(acc, v):
    return {"sum": acc["sum"] + v, "count": acc["count"] + 1, "max": jnp.maximum(acc["max"], v)}


def _merge(a, b):
    return {"sum": a["sum"] + b["sum"], "count": a["count"] + b["count"], "max": jnp.maximum(a["max"], b["max"])}


def _report(acc):
    return {"mean": acc["sum"] / acc["count"], "count": acc["count"], "max": acc["max"]}


@settings(max_examples=10)  # each example runs both strategies, eagerly
@given(fct.client_values(num_clients=FEW_COUNTS, member=fc.TensorType((), np.dtype("float32"))))
def test_aggregate_folds_every_client_once(x):
    # FEW_COUNTS has odd counts (3, 7), so the vectorised tree merge carries a tail.
    values = np.asarray(x.value, np.float64)
    for strategy in ("loop", "vmap"):
        with fc.execution(strategy):
            r = fc.aggregate(x, _stats_zero(), _accumulate, _merge, _report)
        assert r.placement is fc.SERVER
        assert int(r.value["count"]) == x.num_clients
        assert float(r.value["max"]) == values.max()
        # Against the float64 mean: one float32 summation (see top).
        np.testing.assert_allclose(float(r.value["mean"]), values.mean(), rtol=4 * EPS, atol=fct.summation_atol(x))


def test_aggregate_accepts_a_server_placed_zero():
    x = fc.clients_value(jnp.array([1.0, 2.0]))
    # `zero` must be an identity of `merge` (vectorised strategies start every
    # client's partial from it), so the result does not depend on the strategy.
    for strategy in ("loop", "vmap"):
        with fc.execution(strategy):
            r = fc.aggregate(x, fc.server_value(jnp.float32(0)), jnp.add, jnp.add, lambda a: a * 10)
        assert float(r) == 30.0 and r.type == fc.type_of(fc.server_value(jnp.float32(0)))


# --- secure_sum -----------------------------------------------------------------------------

INT32 = st.integers(-(2**31), 2**31 - 1)


@given(
    st.lists(st.lists(INT32, min_size=2, max_size=2), min_size=1, max_size=64),
    st.integers(1, 32) | st.sampled_from([31, 32]),
)
def test_secure_sum_is_the_sum_modulo_two_to_the_bitwidth(rows, bitwidth):
    x = fc.clients_value(jnp.asarray(np.array(rows, np.int32)))
    r = fc.secure_sum(x, bitwidth)
    expected = [sum(col) % 2**bitwidth for col in zip(*rows)]  # exact Python integers
    assert [int(v) for v in np.asarray(r.value)] == expected
    assert r.value.dtype == (jnp.uint32 if bitwidth == 32 else jnp.int32)


def test_secure_sum_of_negative_and_narrow_integers():
    x = fc.clients_value(jnp.array([-1, -2, 5], jnp.int32))
    assert int(fc.secure_sum(x, 32)) == (2 % 2**32) and int(fc.secure_sum(x, 3)) == 2
    assert int(fc.secure_sum(fc.clients_value(jnp.array([-1], jnp.int32)), 32)) == 2**32 - 1
    # 200 does not fit int8: the result widens to uint32 instead of wrapping to -56.
    r = fc.secure_sum(fc.clients_value(jnp.array([100, 100], jnp.int8)), 8)
    assert int(r) == 200 and r.value.dtype == jnp.uint32
    r = fc.secure_sum(fc.clients_value({"a": jnp.array([100, 100], jnp.int8)}), 7)
    assert int(r.value["a"]) == 200 % 128 and r.value["a"].dtype == jnp.int8


def test_secure_sum_rejects_bad_bitwidths_and_floats():
    x = fc.clients_value(jnp.array([1, 2], jnp.int32))
    for bad in (0, 33, 2.0, "8"):
        with pytest.raises(ValueError, match=r"bitwidth must be an integer in 1..32, got"):
            fc.secure_sum(x, bad)
    with pytest.raises(TypeError, match=r"secure_sum expects integer members, got \{f32\}@CLIENTS"):
        fc.secure_sum(fc.clients_value(jnp.ones(2)), 8)


# --- errors ---------------------------------------------------------------------------------

_X = fc.clients_value(jnp.ones((4, 3)))
_XI = fc.clients_value(jnp.ones(4, jnp.int32))
_S = fc.server_value(jnp.ones(3))
_SI = fc.server_value(jnp.int32(1))
_EQ = fc.broadcast(_S)
_EQI = fc.value(jnp.int32(1), fc.CLIENTS)
_U = jnp.ones(3)
_ID = lambda *a: a[0]  # noqa: E731
_AGG = (jnp.float32(0), jnp.add, jnp.add, _ID)

# (intrinsic call, the expected type named in the message, the actual type named in the message)
WRONG_PLACEMENTS = {
    "broadcast-clients": (lambda: fc.broadcast(_X), "T@SERVER", "{f32[3]}@CLIENTS"),
    "broadcast-all-equal": (lambda: fc.broadcast(_EQ), "T@SERVER", "f32[3]@CLIENTS"),
    "broadcast-unplaced": (lambda: fc.broadcast(_U), "T@SERVER", "f32[3] (unplaced)"),
    "map-server": (lambda: fc.map(_ID, _S), "{T}@CLIENTS or T@CLIENTS", "f32[3]@SERVER"),
    "map-unplaced-second": (lambda: fc.map(jnp.add, _X, _U), "map (argument 1) expects", "f32[3] (unplaced)"),
    "mean-server": (lambda: fc.mean(_S), "{T}@CLIENTS", "f32[3]@SERVER"),
    "mean-unplaced": (lambda: fc.mean(_U), "{T}@CLIENTS", "f32[3] (unplaced)"),
    "mean-server-weight": (lambda: fc.mean(_X, fc.server_value(1.0)), "{f32}@CLIENTS", "f32@SERVER"),
    "mean-vector-weight": (lambda: fc.mean(_X, _X), "one scalar per client ({f32}@CLIENTS)", "{f32[3]}@CLIENTS"),
    "sum-server": (lambda: fc.sum(_S), "{T}@CLIENTS", "f32[3]@SERVER"),
    "sum-all-equal": (lambda: fc.sum(_EQ), "{T}@CLIENTS (one value per client)", "all-equal f32[3]@CLIENTS"),
    "sum-unplaced": (lambda: fc.sum(_U), "{T}@CLIENTS", "f32[3] (unplaced)"),
    "min-server": (lambda: fc.min(_S), "{T}@CLIENTS", "f32[3]@SERVER"),
    "max-unplaced": (lambda: fc.max(_U), "{T}@CLIENTS", "f32[3] (unplaced)"),
    "zip-mixed": (lambda: fc.zip(_S, _X), "one placement", "f32[3]@SERVER, {f32[3]}@CLIENTS"),
    "zip-unplaced": (lambda: fc.zip(a=_S, b=_U), "a placed value", "f32[3] (unplaced)"),
    "value-placed": (lambda: fc.value(_S, fc.CLIENTS), "an unplaced constant", "f32[3]@SERVER"),
    "apply-clients": (lambda: fc.apply(_ID, _X), "T@SERVER", "{f32[3]}@CLIENTS"),
    "apply-all-equal": (lambda: fc.apply(_ID, _EQ), "T@SERVER", "f32[3]@CLIENTS"),
    "apply-unplaced-second": (lambda: fc.apply(jnp.add, _S, _U), "apply (argument 1) expects T@SERVER", "f32[3] (unplaced)"),
    "aggregate-server": (lambda: fc.aggregate(_S, *_AGG), "{T}@CLIENTS", "f32[3]@SERVER"),
    "aggregate-all-equal": (lambda: fc.aggregate(_EQ, *_AGG), "{T}@CLIENTS (one value per client)", "f32[3]@CLIENTS"),
    "aggregate-clients-zero": (
        lambda: fc.aggregate(_X, fc.value(jnp.float32(0), fc.CLIENTS), jnp.add, jnp.add, _ID),
        "an unplaced or SERVER-placed zero",
        "f32@CLIENTS",
    ),
    "collect-server": (lambda: fc.collect(_S), "{T}@CLIENTS", "f32[3]@SERVER"),
    "collect-all-equal": (lambda: fc.collect(_EQ), "{T}@CLIENTS (one value per client)", "f32[3]@CLIENTS"),
    "collect-unplaced": (lambda: fc.collect(_U), "{T}@CLIENTS", "f32[3] (unplaced)"),
    "concat-server": (lambda: fc.concat(_X, _S), "concat (argument 1) expects {T}@CLIENTS", "f32[3]@SERVER"),
    "concat-all-equal": (lambda: fc.concat(_EQ), "{T}@CLIENTS (one value per client)", "f32[3]@CLIENTS"),
    "concat-unplaced": (lambda: fc.concat(_U), "{T}@CLIENTS", "f32[3] (unplaced)"),
    "concat-member-type": (
        lambda: fc.concat(_X, _XI),
        "one member type; argument 0 is {f32[3]}@CLIENTS",
        "argument 1 is {i32}@CLIENTS",
    ),
    "secure_sum-server": (lambda: fc.secure_sum(_SI, 8), "{int}@CLIENTS", "i32@SERVER"),
    "secure_sum-all-equal": (lambda: fc.secure_sum(_EQI, 8), "{int}@CLIENTS", "i32@CLIENTS"),
    "secure_sum-unplaced": (lambda: fc.secure_sum(jnp.ones(3, jnp.int32), 8), "{int}@CLIENTS", "i32[3] (unplaced)"),
}


@pytest.mark.parametrize("case", sorted(WRONG_PLACEMENTS))
def test_every_intrinsic_rejects_a_wrongly_placed_argument(case):
    call, expected, actual = WRONG_PLACEMENTS[case]
    with pytest.raises(fc.PlacementError) as info:
        call()
    message = str(info.value)
    assert isinstance(info.value, TypeError)
    assert expected in message and actual in message, message
    assert case.split("-")[0] in message  # names the intrinsic


def test_every_intrinsic_has_a_placement_error_case():
    tested = {case.split("-")[0] for case in WRONG_PLACEMENTS}
    # A new intrinsic must come with its wrong-placement cases above.
    assert tested == set(fc.core._intrinsics.__all__)


def test_mismatched_client_counts_are_a_value_error():
    three, four = fc.clients_value(jnp.ones(3)), fc.clients_value(jnp.ones(4))
    counts = r"disagree on the number of clients: \{f32\}@CLIENTS with 3 clients, \{f32\}@CLIENTS with 4 clients"
    with pytest.raises(ValueError, match="map: per-client arguments " + counts):
        fc.map(jnp.add, three, four)
    with pytest.raises(ValueError, match="mean: per-client arguments " + counts):
        fc.mean(three, four)
    with pytest.raises(ValueError, match="zip: per-client arguments " + counts):
        fc.zip(three, four)


_ZERO_WEIGHT = "total client weight is zero"


@fc.computation
def _weighted_mean(x, w):
    return fc.mean(x, w)


@pytest.mark.parametrize(
    "weights",
    [jnp.zeros(3), jnp.array([1.0, jnp.nan, 1.0])],
    ids=["zero", "nan"],
)
def test_zero_total_weight_raises_at_run_time(weights):
    x, w = fc.clients_value(jnp.ones((3, 2))), fc.clients_value(weights)
    with pytest.raises(eqx.EquinoxRuntimeError, match=_ZERO_WEIGHT):
        fc.mean(x, w)
    with pytest.raises(eqx.EquinoxRuntimeError, match=_ZERO_WEIGHT):
        _weighted_mean(x, w)  # jitted: raised when the program runs
    with fc.execution("loop"), pytest.raises(eqx.EquinoxRuntimeError, match=_ZERO_WEIGHT):
        fc.mean(x, w)


def test_zero_weight_on_an_all_equal_value_raises_too():
    with pytest.raises(eqx.EquinoxRuntimeError, match=_ZERO_WEIGHT):
        fc.mean(fc.broadcast(fc.server_value(jnp.ones(2))), fc.value(jnp.float32(0), fc.CLIENTS))


def test_empty_clients_are_rejected():
    with pytest.raises(ValueError, match="empty list: a CLIENTS value needs at least one client"):
        fc.clients_value([])
    empty = fc.FederatedValue(jnp.zeros((0, 2)), fc.CLIENTS, False)  # built around clients_value's check
    with pytest.raises(ValueError, match="zero clients"):
        fc.sum(empty)
    with pytest.raises(ValueError, match="zero clients"):
        fc.mean(empty)
    with pytest.raises(ValueError, match="zero clients"):
        fc.map(jnp.sin, empty)


def test_other_bad_calls_are_type_errors():
    with pytest.raises(TypeError, match="map expects a function first, got FederatedValue"):
        fc.map(_X, _X)
    with pytest.raises(TypeError, match="map needs at least one CLIENTS-placed argument"):
        fc.map(jnp.sin)
    with pytest.raises(TypeError, match="apply needs at least one SERVER-placed argument"):
        fc.apply(jnp.sin)
    with pytest.raises(TypeError, match="either positional or keyword values, not both"):
        fc.zip(_S, b=_S)
    with pytest.raises(TypeError, match="zip needs at least one placed value"):
        fc.zip()
    with pytest.raises(TypeError, match="expects fc.SERVER or fc.CLIENTS as placement, got 'SERVER'"):
        fc.value(1.0, "SERVER")
