"""Execution strategies: loop == vmap for every intrinsic, strategy selection, per-strategy programs.

Float tolerances: `fct.check_strategies_agree` defaults to `summation_atol` of
the inputs and the result, 2 * n * EPS * sum_i |x_i| with EPS = 2**-23: the loop
strategy adds clients one by one, vmap reduces them with XLA's (tree-shaped)
reduction, so float32 sums differ in rounding order -- relative ~1e-7 per op
-- and never by more than that bound. Element-wise work (map) agrees to
rtol=1e-5.

Shapes are drawn from a few fixed members and client counts: each new
(member, count) pair compiles every jitted computation once more.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fedcore as fc
from fedcore import testing as fct

F32, I32 = np.dtype("float32"), np.dtype("int32")
MEMBERS = st.sampled_from(
    [
        fc.TensorType((), F32),
        {"w": fc.TensorType((2, 3), F32), "b": fc.TensorType((3,), F32)},
        (fc.TensorType((3,), F32), fc.TensorType((), I32)),
    ]
)
COUNTS = st.sampled_from([1, 3, 64])
DATA = fct.weighted_client_values(num_clients=COUNTS, member=MEMBERS)


@fc.computation
def _map(x, s):
    return fc.map(lambda xi, si: jax.tree.map(lambda a: jnp.tanh(a) * si + 1, xi), x, fc.broadcast(s))


@fc.computation
def _means(x, w):
    return fc.mean(x), fc.mean(x, w)


@fc.computation
def _sum_min_max(x):
    return fc.sum(x), fc.min(x), fc.max(x)


def _acc(acc, v):
    return jax.tree.map(lambda t, a: {"sum": t["sum"] + a, "max": jnp.maximum(t["max"], a), "n": t["n"] + 1}, acc, v,
                        is_leaf=lambda t: isinstance(t, dict) and "sum" in t)


def _merge(a, b):
    return jax.tree.map(lambda s, t: {"sum": s["sum"] + t["sum"], "max": jnp.maximum(s["max"], t["max"]), "n": s["n"] + t["n"]},
                        a, b, is_leaf=lambda t: isinstance(t, dict) and "sum" in t)


@fc.computation
def _aggregate(x):
    zero = jax.tree.map(lambda a: {"sum": jnp.zeros(a.shape[1:], a.dtype), "max": jnp.full(a.shape[1:], -1e9, a.dtype),
                                   "n": jnp.int32(0)}, x.value)
    return fc.aggregate(x, zero, _acc, _merge, lambda acc: acc)


@given(DATA, st.floats(-2.0, 2.0, width=32))
def test_loop_and_vmap_agree_on_map(xw, s):
    x, _ = xw
    r = fct.check_strategies_agree(_map, x, fc.server_value(jnp.float32(s)))
    assert r.per_client and r.num_clients == x.num_clients


@given(DATA)
def test_loop_and_vmap_agree_on_mean_sum_min_max(xw):
    x, w = xw
    fct.check_strategies_agree(_means, x, w)
    fct.check_strategies_agree(_sum_min_max, x)


@given(DATA)
def test_loop_and_vmap_agree_on_aggregate(xw):
    x, _ = xw
    r = fct.check_strategies_agree(_aggregate, x)
    is_stats = lambda d: isinstance(d, dict) and "n" in d  # noqa: E731
    counts = {int(t) for t in jax.tree.leaves(jax.tree.map(lambda d: d["n"], r.value, is_leaf=is_stats))}
    assert counts == {x.num_clients}


def test_eager_intrinsics_agree_too():
    x = fc.clients_value({"a": jnp.linspace(-1.0, 1.0, 10).reshape(5, 2)})
    w = fc.clients_value(jnp.arange(1.0, 6.0))
    fct.check_strategies_agree(fc.mean, x, w)
    fct.check_strategies_agree(fc.sum, x)


# --- strategy selection ----------------------------------------------------------------


def test_default_strategy_is_vmap_and_blocks_nest():
    assert isinstance(fc.current_strategy(), fc.VmapStrategy)
    with fc.execution("loop") as outer:
        assert fc.current_strategy() is outer and isinstance(outer, fc.LoopStrategy)
        with fc.execution(fc.VmapStrategy()) as inner:
            assert fc.current_strategy() is inner
        assert fc.current_strategy() is outer
    assert isinstance(fc.current_strategy(), fc.VmapStrategy)


def test_strategy_block_is_restored_after_an_error():
    with pytest.raises(RuntimeError), fc.execution("loop"):
        raise RuntimeError
    assert isinstance(fc.current_strategy(), fc.VmapStrategy)


def test_unknown_strategies_and_misplaced_options_are_errors():
    with pytest.raises(ValueError, match=r"Unknown execution strategy 'nope'; known: \[.*'loop'.*'vmap'.*\]"):
        with fc.execution("nope"):
            pass
    with pytest.raises(TypeError, match="Options go with a strategy name, not with a strategy instance"):
        with fc.execution(fc.LoopStrategy(), chunk_size=2):
            pass


def test_strategies_compare_by_type_and_options():
    assert fc.VmapStrategy() == fc.VmapStrategy() and hash(fc.VmapStrategy()) == hash(fc.VmapStrategy())
    assert fc.VmapStrategy() != fc.LoopStrategy()
    assert repr(fc.LoopStrategy()) == "LoopStrategy(jit_clients=True)"
    assert fc.LoopStrategy.jit is False and fc.VmapStrategy.jit is True


@fc.register_strategy
class _LaxMapStrategy(fc.ExecutionStrategy):
    """A user-defined strategy: clients one after another inside one XLA loop (`jax.lax.map`)."""

    name = "test-lax-map"

    def map(self, fn, args, in_axes, num_clients):
        per_client = [a for a, axis in zip(args, in_axes) if axis == 0]

        def one(client_args):
            it = iter(client_args)
            return fn(*(next(it) if axis == 0 else a for a, axis in zip(args, in_axes)))

        return jax.lax.map(one, per_client)


def test_a_registered_strategy_runs_by_name_and_agrees():
    x = fc.clients_value({"w": jnp.arange(12.0).reshape(4, 3)})
    r = fct.check_strategies_agree(_map, x, fc.server_value(jnp.float32(0.5)), strategies=("loop", "vmap", "test-lax-map"))
    assert r.type == x.type
    with fc.execution("test-lax-map") as s:
        assert isinstance(s, _LaxMapStrategy)


# --- one program per strategy -----------------------------------------------------------


def test_a_program_compiled_under_vmap_is_not_reused_under_loop(count_compiles):
    traced = []

    @fc.computation
    def total(x):
        traced.append(isinstance(jax.tree.leaves(x.value)[0], jax.core.Tracer))
        return fc.sum(fc.map(lambda a: a * 2, x))

    x = fc.clients_value(jnp.array([1.0, 2.0, 3.0]))
    assert float(total(x)) == 12.0 and traced == [True]  # traced under jit
    with count_compiles() as c:
        assert float(total(x)) == 12.0
    assert traced == [True] and c.count == 0  # same strategy, same shapes: the cached program
    with fc.execution("loop"):
        assert float(total(x)) == 12.0  # runs eagerly: the function sees concrete arrays
        assert float(total(x)) == 12.0
    assert traced == [True, False, False]
    with count_compiles() as c:
        assert float(total(x)) == 12.0  # back under vmap: its program was kept
    assert traced == [True, False, False] and c.count == 0
    assert list(total._compiled) == [fc.VmapStrategy()]


def test_loop_with_and_without_per_client_jit_agree():
    import jax.numpy as jnp

    import fedcore as fc

    x = fc.clients_value(jnp.arange(12.0).reshape(4, 3))
    seen = []

    def f(a):
        seen.append(type(a).__name__)  # runs at trace time (jit) or per client (eager)
        return jnp.sin(a) * 2.0

    with fc.execution("loop"):
        jitted = fc.map(f, x).value
    n_traced = len(seen)
    with fc.execution("loop", jit_clients=False):
        eager = fc.map(f, x).value
    assert n_traced == 1  # compiled once, reused for all 4 clients
    assert len(seen) - n_traced == 4  # eager: the Python body runs once per client
    # Same XLA ops on the same inputs; jit may fuse sin*2 differently: a few ulps.
    assert jnp.allclose(jitted, eager, rtol=1e-6, atol=0)
