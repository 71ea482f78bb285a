"""ClientData: in-memory and HDF5 populations, lazy subset/preprocess views, and their errors."""

from __future__ import annotations

import pickle
import time

import hypothesis.extra.numpy as hnp
import jax
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedcore.data import ClientData, HDF5ClientData, InMemoryClientData, UnknownClientError, from_clients_dict

from .conftest import write_tff_h5


def _population():
    return from_clients_dict(
        {
            "bob": {"x": np.arange(6, dtype=np.float32).reshape(3, 2), "y": np.array([0, 1, 1], np.int32)},
            "alice": {"x": np.ones((1, 2), np.float32), "y": np.array([2], np.int32)},
            "carol": {"x": np.zeros((2, 2), np.float32), "y": np.array([1, 1], np.int32)},
        }
    )


# ---------------------------------------------------------------------------- in-memory basics
def test_ids_are_sorted_and_population_behaves_like_a_collection():
    cd = _population()
    assert cd.client_ids == ("alice", "bob", "carol")
    assert len(cd) == 3 and list(cd) == ["alice", "bob", "carol"]
    assert "bob" in cd and "dave" not in cd
    assert isinstance(cd, ClientData) and isinstance(cd, InMemoryClientData)
    assert ClientData.from_clients_dict({"a": {"x": np.zeros(1)}}).client_ids == ("a",)


def test_dataset_returns_the_clients_arrays_and_element_spec_describes_one_example():
    cd = _population()
    d = cd.dataset("bob")
    assert sorted(d) == ["x", "y"]
    np.testing.assert_array_equal(d["x"], np.arange(6, dtype=np.float32).reshape(3, 2))
    np.testing.assert_array_equal(d["y"], [0, 1, 1])
    assert cd.element_spec == {
        "x": jax.ShapeDtypeStruct((2,), np.float32),
        "y": jax.ShapeDtypeStruct((), np.int32),
    }
    assert cd.client_sizes() == {"alice": 1, "bob": 3, "carol": 2}
    assert cd.num_examples("bob") == 3
    assert "num_clients=3" in repr(cd) and "float32[2]" in repr(cd)


def test_dataset_mutation_does_not_change_the_population():
    cd = _population()
    d = cd.dataset("bob")
    d["z"] = d.pop("x")
    assert sorted(cd.dataset("bob")) == ["x", "y"]


def test_datasets_and_centralized():
    cd = _population()
    sizes = [len(d["y"]) for d in cd.datasets()]
    assert sizes == [1, 3, 2]
    assert [len(d["y"]) for d in cd.datasets(["carol", "alice"])] == [2, 1]
    pooled = cd.centralized()
    assert pooled["x"].shape == (6, 2) and pooled["y"].tolist() == [2, 0, 1, 1, 1, 1]
    assert cd.centralized(["carol"])["y"].tolist() == [1, 1]


# ---------------------------------------------------------------------------- errors
def test_unknown_client_id_is_a_key_error_naming_the_id():
    cd = _population()
    with pytest.raises(UnknownClientError, match=r"Unknown client id 'dave'.*'alice'") as e:
        cd.dataset("dave")
    assert isinstance(e.value, KeyError)
    with pytest.raises(UnknownClientError, match="'dave'"):
        list(cd.datasets(["alice", "dave"]))
    with pytest.raises(UnknownClientError):
        cd.num_examples("dave")


def test_non_string_ids_are_rejected():
    with pytest.raises(TypeError, match=r"Client ids are strings; got 0 \(int\)"):
        from_clients_dict({0: {"x": np.zeros(2)}})
    with pytest.raises(TypeError, match="Client ids are strings"):
        _population().dataset(1)


def test_empty_client_is_rejected():
    with pytest.raises(ValueError, match=r"Client 'b' is empty \(0 examples\)"):
        from_clients_dict({"a": {"x": np.zeros((2, 1))}, "b": {"x": np.zeros((0, 1))}})
    with pytest.raises(ValueError, match="Client 'a' has no arrays"):
        from_clients_dict({"a": {}})
    with pytest.raises(ValueError, match="at least one client"):
        from_clients_dict({})


def test_inconsistent_keys_dtypes_shapes_and_lengths_are_rejected():
    a = {"x": np.zeros((2, 3), np.float32), "y": np.zeros(2, np.int32)}
    with pytest.raises(ValueError, match=r"Client 'b' has keys \['x'\] but client 'a' has keys \['x', 'y'\]"):
        from_clients_dict({"a": a, "b": {"x": np.zeros((2, 3), np.float32)}})
    with pytest.raises(ValueError, match=r"Client 'b', key 'x': examples are float64\[3\] but client 'a' has float32\[3\]"):
        from_clients_dict({"a": a, "b": {"x": np.zeros((2, 3)), "y": np.zeros(2, np.int32)}})
    with pytest.raises(ValueError, match=r"key 'x': examples are float32\[4\]"):
        from_clients_dict({"a": a, "b": {"x": np.zeros((2, 4), np.float32), "y": np.zeros(2, np.int32)}})
    with pytest.raises(ValueError, match="disagree on the number of examples"):
        from_clients_dict({"a": {"x": np.zeros((2, 3)), "y": np.zeros(3)}})
    with pytest.raises(ValueError, match="a scalar"):
        from_clients_dict({"a": {"x": np.float32(1.0)}})
    with pytest.raises(TypeError, match="expected a dict of arrays"):
        from_clients_dict({"a": [np.zeros(2)]})
    with pytest.raises(TypeError, match="Expected a dict"):
        InMemoryClientData([("a", {"x": np.zeros(2)})])


# ---------------------------------------------------------------------------- views
def test_subset_is_an_ordered_view_with_checked_ids():
    cd = _population()
    sub = cd.subset(["carol", "alice"])
    assert sub.client_ids == ("carol", "alice") and len(sub) == 2
    np.testing.assert_array_equal(sub.dataset("carol")["y"], cd.dataset("carol")["y"])
    assert sub.element_spec == cd.element_spec
    assert sub.client_sizes() == {"carol": 2, "alice": 1}
    with pytest.raises(UnknownClientError, match="'bob'"):
        sub.dataset("bob")
    with pytest.raises(UnknownClientError, match="'zed'"):
        cd.subset(["zed"])
    with pytest.raises(ValueError, match=r"duplicate client ids: \['alice'\]"):
        cd.subset(["alice", "alice"])
    with pytest.raises(ValueError, match="at least one client id"):
        cd.subset([])
    with pytest.raises(TypeError, match="single string"):
        cd.subset("alice")


def test_preprocess_is_lazy_and_per_client_by_default():
    cd = _population()
    calls = []

    def scale(d):
        calls.append(len(d["y"]))
        return {"x": d["x"] * 2, "y": d["y"], "w": np.ones(len(d["y"]), np.float32)}

    view = cd.preprocess(scale)
    assert calls == []  # nothing read yet
    out = view.dataset("bob")
    np.testing.assert_array_equal(out["x"], cd.dataset("bob")["x"] * 2)
    assert sorted(out) == ["w", "x", "y"]
    assert sorted(view.element_spec) == ["w", "x", "y"]
    assert view.client_ids == cd.client_ids


def test_preprocess_per_example_stacks_transformed_examples():
    cd = _population()
    view = cd.preprocess(lambda ex: {"x": ex["x"].sum(), "y": ex["y"]}, per_example=True)
    d = view.dataset("bob")
    np.testing.assert_allclose(d["x"], [1.0, 5.0, 9.0])
    assert view.element_spec["x"].shape == ()


def test_preprocess_errors():
    cd = _population()
    with pytest.raises(TypeError, match="expects a callable"):
        cd.preprocess(3)
    with pytest.raises(TypeError, match="must return a dict of arrays"):
        cd.preprocess(lambda d: d["x"]).dataset("bob")
    with pytest.raises(ValueError, match="Client 'alice' is empty"):
        cd.preprocess(lambda d: {k: v[d["y"] != 2] for k, v in d.items()}).dataset("alice")
    bad = cd.preprocess(lambda ex: {"x": ex["x"]} if ex["y"] == 0 else {"y": ex["y"]}, per_example=True)
    with pytest.raises(ValueError, match="different keys for examples of client 'bob'"):
        bad.dataset("bob")
    with pytest.raises(TypeError, match="per-example arrays"):
        cd.preprocess(lambda ex: 1, per_example=True).dataset("bob")
    # A transform that changes dtype for one client only: caught against the element_spec.
    flaky = cd.preprocess(lambda d: {"x": d["x"].astype(np.float64) if len(d["y"]) == 3 else d["x"], "y": d["y"]})
    with pytest.raises(ValueError, match=r"Client 'bob', key 'x': examples are float64\[2\]"):
        flaky.dataset("bob")


_arrays = hnp.arrays(np.float32, st.tuples(st.integers(1, 4), st.just(3)), elements=st.floats(-5, 5, width=32))
_populations = st.dictionaries(
    st.text("abcdefgh", min_size=1, max_size=4), _arrays, min_size=1, max_size=5
).map(lambda d: {k: {"x": v, "y": np.arange(len(v), dtype=np.int32)} for k, v in d.items()})


@given(_populations)
def test_from_clients_dict_round_trips(clients):
    cd = from_clients_dict(clients)
    assert cd.client_ids == tuple(sorted(clients))
    for cid, d in clients.items():
        out = cd.dataset(cid)
        for k in d:
            np.testing.assert_array_equal(out[k], d[k])


@given(_populations, st.data())
def test_views_compose(clients, data):
    """subset(a).subset(b) == subset(b); preprocess(f).preprocess(g) == preprocess(g . f)."""
    cd = from_clients_dict(clients)
    a = data.draw(st.lists(st.sampled_from(cd.client_ids), min_size=1, unique=True))
    b = data.draw(st.lists(st.sampled_from(a), min_size=1, unique=True))
    assert cd.subset(a).subset(b).client_ids == cd.subset(b).client_ids == tuple(b)

    def f(d):
        return {"x": d["x"] + 1, "y": d["y"]}

    def g(d):
        return {"x": d["x"] * 3, "y": d["y"] * 2}

    lhs, rhs = cd.preprocess(f).preprocess(g), cd.preprocess(lambda d: g(f(d)))
    for cid in b:
        for k in ("x", "y"):
            np.testing.assert_array_equal(lhs.dataset(cid)[k], rhs.dataset(cid)[k])


# ---------------------------------------------------------------------------- HDF5
def _h5(tmp_path, clients=None):
    rng = np.random.default_rng(0)
    clients = clients or {
        "w2": (rng.random((3, 28, 28), dtype=np.float32), np.array([1, 2, 3], np.int32)),
        "w1": (rng.random((2, 28, 28), dtype=np.float32), np.array([4, 5], np.int32)),
    }
    return write_tff_h5(tmp_path / "d.h5", clients), clients


def test_hdf5_client_data_reads_groups_on_demand(tmp_path):
    path, clients = _h5(tmp_path)
    with HDF5ClientData(path, keys={"x": "pixels", "y": "label"}) as cd:
        assert cd.client_ids == ("w1", "w2")
        assert cd.element_spec == {
            "x": jax.ShapeDtypeStruct((28, 28), np.float32),
            "y": jax.ShapeDtypeStruct((), np.int32),
        }
        d = cd.dataset("w2")
        np.testing.assert_array_equal(d["x"], clients["w2"][0])
        np.testing.assert_array_equal(d["y"], clients["w2"][1])
        assert cd.client_sizes() == {"w1": 2, "w2": 3}
        assert cd.describe().label_counts.sum() == 5
        assert cd.path == str(path)
    raw = HDF5ClientData(path)  # no key mapping: the datasets' own names
    assert sorted(raw.dataset("w1")) == ["label", "pixels"]
    clone = pickle.loads(pickle.dumps(raw))
    np.testing.assert_array_equal(clone.dataset("w1")["label"], [4, 5])


def test_hdf5_errors(tmp_path):
    path, _ = _h5(tmp_path)
    with pytest.raises(ValueError, match=r"has no group 'clients' \(top level: \['examples'\]\)"):
        HDF5ClientData(path, group="clients")
    with pytest.raises(ValueError, match=r"lacks dataset\(s\) \['image'\]"):
        HDF5ClientData(path, keys={"x": "image"})
    with pytest.raises(FileNotFoundError, match="No HDF5 file"):
        HDF5ClientData(tmp_path / "nope.h5")
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(OSError, match="truncated or corrupt.*Delete it"):
        HDF5ClientData(truncated)
    with HDF5ClientData(path) as cd:
        with pytest.raises(UnknownClientError, match="'w3'"):
            cd.dataset("w3")


def test_hdf5_inconsistent_client_is_caught_when_read(tmp_path):
    clients = {
        "a": (np.zeros((2, 28, 28), np.float32), np.zeros(2, np.int32)),
        "b": (np.zeros((2, 28, 28), np.float64), np.zeros(2, np.int32)),
    }
    path = write_tff_h5(tmp_path / "bad.h5", clients)
    cd = HDF5ClientData(path, keys={"x": "pixels", "y": "label"})
    cd.dataset("a")
    with pytest.raises(ValueError, match=r"Client 'b', key 'x': examples are float64\[28, 28\]"):
        cd.dataset("b")


def test_hdf5_population_of_3400_writers_opens_fast(tmp_path):
    import h5py

    path = tmp_path / "big.h5"
    with h5py.File(path, "w") as f:
        g = f.create_group("examples")
        for i in range(3400):
            w = g.create_group(f"f{i:04d}_00")
            w.create_dataset("pixels", data=np.full((2, 28, 28), i, np.float32))
            w.create_dataset("label", data=np.array([i % 10, 1], np.int32))
    start = time.perf_counter()
    cd = HDF5ClientData(path, keys={"x": "pixels", "y": "label"})
    opened = time.perf_counter() - start
    assert len(cd) == 3400 and opened < 2.0
    assert float(cd.dataset("f1234_00")["x"][0, 0, 0]) == 1234.0
