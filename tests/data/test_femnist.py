"""LEAF JSON (FEMNIST) loading, on files the tests write, and clear errors for malformed ones."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedcore.data.datasets import femnist
from fedcore.data.datasets.femnist import LeafFormatError


def _user(rng, n, d=784):
    return {"x": rng.random((n, d)).round(3).tolist(), "y": rng.integers(0, 62, n).tolist()}


def _write(path, users, **overrides):
    blob = {
        "users": list(users),
        "num_samples": [len(u["y"]) for u in users.values()],
        "user_data": users,
    }
    blob.update(overrides)
    path.write_text(json.dumps(blob))
    return path


def test_load_one_file(tmp_path):
    rng = np.random.default_rng(0)
    users = {"f0001_41": _user(rng, 3), "f0000_14": _user(rng, 2)}
    cd = femnist.load_leaf(_write(tmp_path / "all.json", users))
    assert cd.client_ids == ("f0000_14", "f0001_41")
    d = cd.dataset("f0001_41")
    assert d["x"].dtype == np.float32 and d["x"].shape == (3, 784)
    assert d["y"].dtype == np.int32
    np.testing.assert_allclose(d["x"], np.array(users["f0001_41"]["x"], np.float32))
    np.testing.assert_array_equal(d["y"], users["f0001_41"]["y"])


def test_load_a_directory_of_files_merges_users(tmp_path):
    rng = np.random.default_rng(1)
    _write(tmp_path / "part_0.json", {"a": _user(rng, 2, 4), "b": _user(rng, 1, 4)})
    _write(tmp_path / "part_1.json", {"c": _user(rng, 4, 4)})
    (tmp_path / "README.txt").write_text("not data")
    cd = femnist.load_leaf(tmp_path, x_dtype=np.float64)
    assert cd.client_ids == ("a", "b", "c")
    assert cd.client_sizes() == {"a": 2, "b": 1, "c": 4}
    assert cd.element_spec["x"].dtype == np.float64


def test_num_samples_is_optional(tmp_path):
    rng = np.random.default_rng(2)
    path = tmp_path / "f.json"
    path.write_text(json.dumps({"users": ["u"], "user_data": {"u": _user(rng, 2, 3)}}))
    assert femnist.load_leaf(path).client_sizes() == {"u": 2}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"users": [', "not valid JSON"),
        ("[1, 2]", "top level is a list"),
        ('{"users": []}', "missing key 'user_data'"),
        ('{"users": {}, "user_data": {}}', "'users' must be a list"),
        ('{"users": ["a", "a"], "user_data": {"a": {"x": [[1]], "y": [0]}}}', "lists a user twice"),
        ('{"users": ["a"], "user_data": {"b": {"x": [[1]], "y": [0]}}}', r"disagree \(only in users: \['a'\]"),
        ('{"users": ["a"], "user_data": {"a": {"x": [[1]]}}}', "user 'a' needs 'x' and 'y'"),
        ('{"users": ["a"], "user_data": {"a": {"x": [[1], [2]], "y": [0]}}}', "user 'a' has 2 x but 1 y"),
        ('{"users": ["a"], "user_data": {"a": {"x": [[1, 2], [3]], "y": [0, 1]}}}', "not rectangular"),
        ('{"users": ["a"], "user_data": {"a": {"x": [[1]], "y": [0.5]}}}', "integer labels"),
        ('{"users": ["a"], "user_data": {"a": {"x": [], "y": []}}}', "user 'a' has no examples"),
        ('{"users": ["a"], "user_data": {"a": {"x": [[1], [2]], "y": [0, -3]}}}', r"user 'a' has the label -3 \(example 1\).*\[0, 62\)"),
        ('{"users": ["a"], "user_data": {"a": {"x": [[1]], "y": [99]}}}', r"label 99 .*\[0, 62\).*num_classes="),
        (
            '{"users": ["a"], "num_samples": [5], "user_data": {"a": {"x": [[1]], "y": [0]}}}',
            "num_samples says 5 but it has 1",
        ),
        ('{"users": ["a"], "num_samples": 1, "user_data": {"a": {"x": [[1]], "y": [0]}}}', "one count per user"),
    ],
)
def test_malformed_files_are_named_with_the_problem(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(LeafFormatError, match=message) as e:
        femnist.load_leaf(path)
    assert "bad.json" in str(e.value)


def test_cross_file_errors(tmp_path):
    rng = np.random.default_rng(3)
    _write(tmp_path / "a.json", {"u": _user(rng, 1, 4)})
    _write(tmp_path / "b.json", {"u": _user(rng, 1, 4)})
    with pytest.raises(LeafFormatError, match="User 'u' appears in both .*a.json and .*b.json"):
        femnist.load_leaf(tmp_path)
    other = tmp_path / "shapes"
    other.mkdir()
    _write(other / "a.json", {"u": _user(rng, 1, 4), "v": _user(rng, 1, 5)})
    with pytest.raises(LeafFormatError, match=r"inconsistent.*key 'x': examples are float32\[5\]"):
        femnist.load_leaf(other)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="No .json files"):
        femnist.load_leaf(empty)
    with pytest.raises(FileNotFoundError, match="No LEAF data at"):
        femnist.load_leaf(tmp_path / "missing")
    _write(empty / "none.json", {})
    with pytest.raises(LeafFormatError, match="No users"):
        femnist.load_leaf(empty)


def test_num_classes_bounds_the_labels(tmp_path):
    path = tmp_path / "f.json"
    path.write_text(json.dumps({"users": ["u"], "user_data": {"u": {"x": [[1.0], [2.0]], "y": [0, 99]}}}))
    assert femnist.load_leaf(path, num_classes=None).dataset("u")["y"].tolist() == [0, 99]
    assert femnist.load_leaf(path, num_classes=100).client_sizes() == {"u": 2}
    with pytest.raises(LeafFormatError, match=r"label 99 .*\[0, 10\)"):
        femnist.load_leaf(path, num_classes=10)
    path.write_text(json.dumps({"users": ["u"], "user_data": {"u": {"x": [[1.0]], "y": [-1]}}}))
    with pytest.raises(LeafFormatError, match="label -1 .*>= 0"):
        femnist.load_leaf(path, num_classes=None)
    for bad in (0, -5, 2.5, True):
        with pytest.raises(ValueError, match="num_classes must be a positive int or None"):
            femnist.load_leaf(path, num_classes=bad)
