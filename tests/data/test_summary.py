"""describe(): per-client sizes and label histograms; the printable table; the label-skew plot."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedcore.data import DataSummary, from_clients_dict


def _cd():
    return from_clients_dict(
        {
            "a": {"x": np.zeros((4, 1)), "y": np.array([0, 0, 2, 2])},
            "b": {"x": np.zeros((1, 1)), "y": np.array([1])},
        }
    )


def test_describe_counts_labels_per_client():
    s = _cd().describe()
    assert isinstance(s, DataSummary)
    assert s.client_ids == ("a", "b")
    assert s.num_examples.tolist() == [4, 1]
    assert s.label_counts.tolist() == [[2, 0, 2], [0, 1, 0]]
    assert (s.num_clients, s.num_classes, s.total_examples) == (2, 3, 5)
    assert s.classes_per_client.tolist() == [2, 1]
    stats = s.stats()
    assert stats["size_min"] == 1 and stats["size_max"] == 4 and stats["size_mean"] == 2.5
    assert _cd().describe(num_classes=5).label_counts.shape == (2, 5)


def test_table_lists_clients_and_totals():
    text = str(_cd().describe())
    lines = text.splitlines()
    assert lines[0].startswith("2 clients, 5 examples, 3 classes")
    assert lines[1].split() == ["client", "examples", "classes", "y=0", "y=1", "y=2"]
    assert lines[3].split() == ["a", "4", "2", "2", "0", "2"]
    assert lines[-1].split() == ["total", "5", "3", "2", "1", "2"]
    many = from_clients_dict({f"{i:02d}": {"y": np.array([i % 3])} for i in range(30)}).describe()
    short = many.table(max_rows=5)
    assert "..." in short and "04" in short and "05 " not in short


@given(st.lists(st.lists(st.integers(0, 6), min_size=1, max_size=8), min_size=1, max_size=6))
def test_histograms_sum_to_sizes(labels):
    cd = from_clients_dict({f"c{i}": {"y": np.array(y)} for i, y in enumerate(labels)})
    s = cd.describe()
    assert s.label_counts.sum(axis=1).tolist() == s.num_examples.tolist() == [len(y) for y in labels]
    assert s.num_classes == max(max(y) for y in labels) + 1


def test_describe_errors():
    with pytest.raises(ValueError, match=r"integer labels of shape \(n,\) under 'x'"):
        _cd().describe(label_key="x")
    with pytest.raises(KeyError, match="No key 'label'"):
        _cd().describe(label_key="label")
    with pytest.raises(ValueError, match="non-negative labels"):
        from_clients_dict({"a": {"y": np.array([-1, 0])}}).describe()
    with pytest.raises(ValueError, match="num_classes=2 but a client has label 2"):
        _cd().describe(num_classes=2)


def test_plot_label_skew_writes_a_png(tmp_path):
    out = _cd().plot_label_skew(tmp_path / "skew.png", title="t")
    data = (tmp_path / "skew.png").read_bytes()
    assert out == str(tmp_path / "skew.png") and data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
    with pytest.raises(ValueError, match="max_clients must be at least 1"):
        _cd().plot_label_skew(tmp_path / "x.png", max_clients=0)
