"""Client sampling: sample_clients and the checkpointable samplers."""

from __future__ import annotations

import json

import jax
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedcore.data import (
    ClientSampler,
    FixedCohortSampler,
    RoundRobinSampler,
    UniformSampler,
    sample_clients,
    sampler_from_dict,
)

IDS = [f"c{i:02d}" for i in range(20)]


@given(st.integers(1, 20), st.integers(0, 2**31 - 1))
def test_sample_clients_draws_k_distinct_members_reproducibly(k, seed):
    key = jax.random.key(seed)
    got = sample_clients(IDS, k, key)
    assert len(got) == k == len(set(got)) and set(got) <= set(IDS)
    assert sample_clients(IDS, k, key) == got
    assert sample_clients(tuple(IDS), k, key) == got  # any sequence


def test_sample_clients_accepts_raw_uint32_keys_and_is_close_to_uniform():
    assert len(sample_clients(IDS, 3, jax.random.PRNGKey(0))) == 3
    counts = dict.fromkeys(IDS, 0)
    trials = 400
    for key in jax.random.split(jax.random.key(1), trials):
        for c in sample_clients(IDS, 5, key):
            counts[c] += 1
    expected = trials * 5 / len(IDS)  # 100 per client
    chi2 = sum((v - expected) ** 2 / expected for v in counts.values())
    assert chi2 < 45  # 19 d.o.f.: p < 0.001 above ~43.8 (loose, deterministic keys)
    assert sample_clients(IDS, 20, jax.random.key(3)) != IDS or sample_clients(IDS, 20, jax.random.key(4)) != IDS


def test_sample_clients_errors():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="Cannot sample k=21 distinct clients from a population of 20"):
        sample_clients(IDS, 21, key)
    with pytest.raises(ValueError, match="at least 1"):
        sample_clients(IDS, 0, key)
    with pytest.raises(TypeError, match="must be an int"):
        sample_clients(IDS, 2.0, key)
    with pytest.raises(ValueError, match="duplicate client ids"):
        sample_clients(["a", "a"], 1, key)


@given(st.integers(1, 20), st.integers(0, 1000), st.integers(0, 10_000))
def test_uniform_sampler_is_a_pure_function_of_seed_and_round(k, seed, round_num):
    s = UniformSampler(IDS, k, seed)
    got = s.sample(round_num)
    assert len(set(got)) == k
    assert got == sample_clients(IDS, k, jax.random.fold_in(jax.random.key(seed), round_num))
    restored = sampler_from_dict(json.loads(json.dumps(s.to_dict())))
    assert restored == s and restored.sample(round_num) == got


def test_resuming_from_a_checkpoint_reproduces_the_schedule():
    s = UniformSampler(IDS, 4, seed=7)
    full = [s.sample(r) for r in range(10)]
    checkpoint = json.dumps({"sampler": s.to_dict(), "round": 6})
    state = json.loads(checkpoint)
    resumed = sampler_from_dict(state["sampler"])
    assert [resumed.sample(r) for r in range(state["round"], 10)] == full[6:]
    assert len({tuple(c) for c in full}) > 1  # rounds differ


@given(st.integers(1, 20), st.integers(0, 50))
def test_round_robin_visits_every_client_equally(k, start):
    s = RoundRobinSampler(IDS, k)
    n = len(IDS)
    rounds = n  # n rounds of k visits = k full passes
    visits = [c for r in range(start, start + rounds) for c in s.sample(r)]
    assert all(visits.count(c) == k for c in IDS)
    assert all(len(set(s.sample(r))) == k for r in range(start, start + 3))


def test_round_robin_order_and_shuffle():
    s = RoundRobinSampler(["a", "b", "c", "d", "e"], k=2)
    assert [s.sample(r) for r in range(3)] == [["a", "b"], ["c", "d"], ["e", "a"]]
    shuffled = RoundRobinSampler(IDS, 5, seed=3)
    assert sorted(shuffled.order) == IDS and list(shuffled.order) != IDS
    assert sum((shuffled.sample(r) for r in range(4)), []) == list(shuffled.order)
    assert sampler_from_dict(shuffled.to_dict()).sample(2) == shuffled.sample(2)


def test_fixed_cohort_sampler():
    s = FixedCohortSampler(["x", "y"])
    assert s.sample(0) == s.sample(99) == ["x", "y"]
    assert sampler_from_dict(s.to_dict()) == s
    assert s.to_dict() == {"kind": "fixed", "client_ids": ["x", "y"]}
    assert isinstance(s, ClientSampler)


def test_sampler_errors():
    with pytest.raises(ValueError, match="Cannot sample k=30"):
        UniformSampler(IDS, 30)
    with pytest.raises(ValueError, match="Cannot sample k=30"):
        RoundRobinSampler(IDS, 30)
    with pytest.raises(ValueError, match="round_num must be non-negative"):
        UniformSampler(IDS, 2).sample(-1)
    with pytest.raises(TypeError, match="round_num must be an int"):
        RoundRobinSampler(IDS, 2).sample(1.5)
    with pytest.raises(TypeError, match="seed must be an int"):
        UniformSampler(IDS, 2, seed="0")
    with pytest.raises(ValueError, match="duplicates"):
        FixedCohortSampler(["a", "a"])
    with pytest.raises(ValueError, match="at least one client"):
        FixedCohortSampler([])
    with pytest.raises(TypeError, match="not a single string"):
        UniformSampler("abc", 1)
    with pytest.raises(TypeError, match="Client ids are strings"):
        UniformSampler([1, 2], 1)
    with pytest.raises(ValueError, match="Unknown sampler kind 'random'"):
        sampler_from_dict({"kind": "random"})
    with pytest.raises(ValueError, match=r"Unexpected keys for a 'uniform' sampler: \['extra'\]"):
        sampler_from_dict({**UniformSampler(IDS, 2).to_dict(), "extra": 1})
    with pytest.raises(ValueError, match="with a 'kind' key"):
        sampler_from_dict({"k": 2})
