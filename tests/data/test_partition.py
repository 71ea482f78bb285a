"""Partitioners: every example lands in exactly one client, deterministically from the seed."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from fedcore.data import partition


def _tagged(labels):
    """x = the example's index, so a partition can be checked for losses and duplicates."""
    y = np.asarray(labels, dtype=np.int32)
    x = np.arange(len(y), dtype=np.int64)[:, None]
    return x, y


def _assert_exact_partition(cd, x, y):
    pooled = cd.centralized()
    order = np.argsort(pooled["x"][:, 0])
    np.testing.assert_array_equal(pooled["x"][order], x)  # each index exactly once
    np.testing.assert_array_equal(pooled["y"][order], y)  # with its own label
    assert all(n >= 1 for n in cd.client_sizes().values())


def _same(a, b):
    return a.client_ids == b.client_ids and all(
        np.array_equal(a.dataset(c)["x"], b.dataset(c)["x"]) for c in a.client_ids
    )


_labels = st.lists(st.integers(0, 4), min_size=8, max_size=80)


@given(_labels, st.integers(1, 8), st.integers(0, 2**32 - 1))
def test_iid_is_an_exact_balanced_partition(labels, num_clients, seed):
    x, y = _tagged(labels)
    cd = partition.iid(x, y, num_clients, seed)
    _assert_exact_partition(cd, x, y)
    sizes = list(cd.client_sizes().values())
    assert len(sizes) == num_clients and max(sizes) - min(sizes) <= 1
    assert _same(cd, partition.iid(x, y, num_clients, seed))


@given(_labels, st.integers(1, 4), st.sampled_from([0.1, 0.5, 5.0]), st.integers(0, 2**32 - 1))
def test_dirichlet_is_an_exact_partition(labels, num_clients, alpha, seed):
    x, y = _tagged(labels)
    try:
        cd = partition.dirichlet(x, y, num_clients, alpha, seed)
    except ValueError as e:  # very skewed draws on tiny data can fail to fill every client: a clear error
        assert "could not give every client" in str(e)
        assume(False)
    _assert_exact_partition(cd, x, y)
    assert len(cd) == num_clients
    assert _same(cd, partition.dirichlet(x, y, num_clients, alpha, seed))


@given(_labels, st.integers(1, 4), st.integers(1, 2), st.integers(0, 2**32 - 1))
def test_pathological_is_an_exact_partition(labels, num_clients, shards, seed):
    x, y = _tagged(labels)
    cd = partition.pathological(x, y, num_clients, shards, seed)
    _assert_exact_partition(cd, x, y)
    assert _same(cd, partition.pathological(x, y, num_clients, shards, seed))


@given(st.lists(st.sampled_from(["w1", "w2", "w3"]), min_size=1, max_size=40))
def test_by_key_groups_examples_by_key_in_input_order(keys):
    x, y = _tagged(np.arange(len(keys)) % 3)
    cd = partition.by_key(x, y, np.array(keys))
    _assert_exact_partition(cd, x, y)
    assert cd.client_ids == tuple(sorted(set(keys)))
    for cid in cd.client_ids:
        expected = [i for i, k in enumerate(keys) if k == cid]
        assert cd.dataset(cid)["x"][:, 0].tolist() == expected


def test_seeds_change_the_partition():
    x, y = _tagged(np.arange(200) % 10)
    assert not _same(partition.iid(x, y, 5, 0), partition.iid(x, y, 5, 1))
    assert not _same(partition.dirichlet(x, y, 5, 0.5, 0), partition.dirichlet(x, y, 5, 0.5, 1))
    assert not _same(partition.pathological(x, y, 5, 2, 0), partition.pathological(x, y, 5, 2, 1))


def test_dirichlet_alpha_controls_label_skew_and_min_size_holds():
    x, y = _tagged(np.arange(5000) % 10)
    skewed = partition.dirichlet(x, y, 20, 0.1, seed=0, min_size=5).describe()
    flat = partition.dirichlet(x, y, 20, 100.0, seed=0).describe()
    assert skewed.num_examples.min() >= 5
    assert skewed.classes_per_client.mean() < 6 < flat.classes_per_client.mean()
    # Large alpha: every client's label distribution is close to uniform.
    props = flat.label_counts / flat.num_examples[:, None]
    assert np.abs(props - 0.1).max() < 0.06


def test_pathological_gives_each_client_at_most_shards_per_client_labels():
    # 10 classes x 60 examples, 30 clients x 2 shards of 10: shards never straddle classes.
    x, y = _tagged(np.repeat(np.arange(10), 60))
    s = partition.pathological(x, y, 30, 2, seed=0).describe()
    assert s.classes_per_client.max() <= 2 and s.num_examples.tolist() == [20] * 30


def test_client_ids_are_zero_padded():
    x, y = _tagged(np.arange(30) % 3)
    assert partition.iid(x, y, 12).client_ids[:3] == ("00", "01", "02")
    assert partition.iid(x, y, 3).client_ids == ("0", "1", "2")


@dataclasses.dataclass(frozen=True, order=True)
class _SameStr:
    v: int

    def __str__(self):
        return "k"


def test_partition_errors():
    x, y = _tagged(np.arange(20) % 4)
    with pytest.raises(ValueError, match="disagree on the number of examples: 20 vs 19"):
        partition.iid(x, y[:-1], 2)
    with pytest.raises(ValueError, match="empty data set"):
        partition.iid(x[:0], y[:0], 1)
    with pytest.raises(ValueError, match="Cannot give 21 clients at least one example each from 20"):
        partition.iid(x, y, 21)
    with pytest.raises(ValueError, match="num_clients must be at least 1"):
        partition.iid(x, y, 0)
    with pytest.raises(TypeError, match="num_clients must be an int"):
        partition.iid(x, y, 2.5)
    with pytest.raises(ValueError, match="alpha must be a positive number"):
        partition.dirichlet(x, y, 2, 0.0)
    with pytest.raises(ValueError, match=r"integer class labels y of shape \(n,\)"):
        partition.dirichlet(x, y.astype(np.float32), 2, 1.0)
    with pytest.raises(ValueError, match="min_size=15 for 2 clients needs 30 examples"):
        partition.dirichlet(x, y, 2, 1.0, min_size=15)
    with pytest.raises(ValueError, match="min_size must be at least 1"):
        partition.dirichlet(x, y, 2, 1.0, min_size=0)
    with pytest.raises(ValueError, match="could not give every client at least min_size=4.*Lower min_size"):
        partition.dirichlet(x, y, 5, 0.001, min_size=4, max_tries=3)
    with pytest.raises(ValueError, match="21 shards, more than the 20 examples"):
        partition.pathological(x, y, 7, 3)
    with pytest.raises(ValueError, match="shards_per_client must be a positive int"):
        partition.pathological(x, y, 2, 0)
    with pytest.raises(ValueError, match=r"keys must have shape \(20,\)"):
        partition.by_key(x, y, np.zeros(3))
    with pytest.raises(TypeError, match="keys of one sortable type"):
        partition.by_key(x, y, np.array([1, "1"] * 10, dtype=object))
    with pytest.raises(ValueError, match="same client id string"):
        partition.by_key(x, y, np.array([_SameStr(i % 2) for i in range(20)], dtype=object))
    with pytest.raises(ValueError, match="2 client ids for 3 index arrays"):
        partition.from_indices(x, y, [[0], [1], [2]], client_ids=["a", "b"])
