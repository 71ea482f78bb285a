"""Synthetic(alpha, beta) of FedProx / LEAF: the generative process, determinism, iid variant."""

from __future__ import annotations

import numpy as np
import pytest

from fedcore.data.datasets import synthetic


def test_shapes_sizes_and_determinism():
    cd = synthetic.load_data(1.0, 1.0, num_clients=8, seed=0)
    assert len(cd) == 8 and cd.client_ids[0] == "0"
    assert cd.element_spec["x"].shape == (60,) and str(cd.element_spec["x"].dtype) == "float32"
    assert str(cd.element_spec["y"].dtype) == "int32"
    # Sizes are the first draw of the seeded generator: floor(lognormal(4, 2)) + 50.
    expected = np.random.default_rng(0).lognormal(4.0, 2.0, 8).astype(np.int64) + 50
    assert list(cd.client_sizes().values()) == expected.tolist()
    again = synthetic.load_data(1.0, 1.0, num_clients=8, seed=0)
    assert all(np.array_equal(cd.dataset(c)["x"], again.dataset(c)["x"]) for c in cd.client_ids)
    other = synthetic.load_data(1.0, 1.0, num_clients=8, seed=1)
    assert not np.array_equal(cd.dataset("0")["x"][:5], other.dataset("0")["x"][:5])
    for d in cd.datasets():
        assert d["y"].min() >= 0 and d["y"].max() < 10


def test_input_covariance_is_diagonal_with_j_to_the_minus_1_2():
    cd = synthetic.load_data(0.0, 0.0, num_clients=1, min_examples=20_000, max_examples=20_000, seed=0)
    x = cd.dataset("0")["x"].astype(np.float64)
    var = x.var(axis=0)
    np.testing.assert_allclose(var, np.arange(1, 61) ** -1.2, rtol=0.05)
    cov = np.cov(x.T)
    assert np.abs(cov - np.diag(np.diag(cov))).max() < 0.02


def test_labels_are_a_softmax_argmax_of_a_linear_model():
    """Within a client, y = argmax(W x + b): a linear classifier fits the labels exactly (up to ties)."""
    cd = synthetic.load_data(0.5, 0.5, num_clients=1, min_examples=3000, max_examples=3000, seed=2)
    d = cd.dataset("0")
    x1 = np.hstack([d["x"].astype(np.float64), np.ones((len(d["x"]), 1))])
    onehot = np.eye(10)[d["y"]]
    coef, *_ = np.linalg.lstsq(x1, onehot, rcond=None)  # least squares on one-hot: a linear probe
    acc = (np.argmax(x1 @ coef, axis=1) == d["y"]).mean()
    assert acc > 0.8  # far above chance (0.1): labels are a linear function of x


def test_beta_moves_client_input_means_and_iid_does_not():
    hetero = synthetic.load_data(0.0, 5.0, num_clients=10, max_examples=400, seed=0)
    means = np.array([d["x"].mean() for d in hetero.datasets()])
    assert means.std() > 1.0
    iid = synthetic.load_data(0.0, 5.0, num_clients=10, iid=True, max_examples=400, seed=0)
    iid_means = np.array([d["x"].mean() for d in iid.datasets()])
    assert np.abs(iid_means).max() < 0.2
    # iid: all clients share one model, so their label distributions agree; alpha moves them apart.
    iid_hist = iid.describe(num_classes=10)
    props = iid_hist.label_counts / iid_hist.num_examples[:, None]
    assert np.abs(props - props.mean(axis=0)).max() < 0.25


def test_errors():
    with pytest.raises(ValueError, match="alpha must be a non-negative number"):
        synthetic.load_data(-1.0, 0.0)
    with pytest.raises(ValueError, match="beta must be a non-negative number"):
        synthetic.load_data(0.0, float("nan"))
    with pytest.raises(ValueError, match="Need num_clients >= 1"):
        synthetic.load_data(num_clients=0)
    with pytest.raises(ValueError, match="min_examples must be at least 1"):
        synthetic.load_data(min_examples=0)
    with pytest.raises(ValueError, match="max_examples=10 is below min_examples=50"):
        synthetic.load_data(max_examples=10)
