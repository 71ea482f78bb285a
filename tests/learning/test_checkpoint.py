"""Checkpoints: exact round trips, atomic writes, pruning, and clear refusals of wrong or broken files."""

from __future__ import annotations

import json
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fedcore as fc
from fedcore.learning import (
    CheckpointError,
    CheckpointManager,
    CorruptCheckpointError,
    IncompatibleCheckpointError,
    build_scaffold,
    build_weighted_fed_avg,
    load_checkpoint,
    models,
    read_checkpoint_header,
    save_checkpoint,
    state_fingerprint,
)
from fedcore.learning import _checkpoint as ckpt_module
from fedcore.testing import strategies as fst


def _leaves_equal(a, b) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(
        np.asarray(x).dtype == np.asarray(y).dtype and np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb)
    )


@settings(max_examples=15)
@given(
    state=fst.server_values(dtypes=(np.float32, np.int32)),
    round_num=st.integers(0, 10**6),
    tag=st.dictionaries(st.sampled_from(["algorithm", "seed", "model"]), st.one_of(st.integers(-5, 5), st.text(max_size=5)), max_size=3),
)
def test_round_trip_is_exact(tmp_path_factory, state, round_num, tag):
    path = tmp_path_factory.mktemp("ck") / "ckpt-000001.eqx"
    save_checkpoint(path, state, round_num, tag=tag)
    template = jax.tree.map(jnp.zeros_like, state)
    loaded = load_checkpoint(path, template, tag=tag)
    assert loaded.round_num == round_num
    assert loaded.tag == tag
    assert fc.same_type(fc.type_of(loaded.state), fc.type_of(state))
    assert _leaves_equal(loaded.state, state)


def test_real_process_state_round_trips_bitwise(tmp_path):
    process = build_weighted_fed_avg(models.linear(6, 3), optax.sgd(0.1), optax.adam(0.01))
    rng = np.random.default_rng(0)
    batches = {
        "x": rng.normal(size=(2, 2, 4, 6)).astype(np.float32),
        "y": rng.integers(0, 3, size=(2, 2, 4)).astype(np.int32),
        "mask": np.ones((2, 2, 4), bool),
    }
    state, _ = process.next(process.initialize(), batches)
    path = save_checkpoint(tmp_path / "ckpt-000001.eqx", state, 1, tag={"algorithm": "fedadam"})
    loaded = load_checkpoint(path, process.initialize(), tag={"algorithm": "fedadam"})
    assert _leaves_equal(loaded.state, state)
    # the restored state keeps training exactly like the original
    s1, m1 = process.next(state, batches)
    s2, m2 = process.next(loaded.state, batches)
    assert _leaves_equal(s1, s2) and float(m1["train"]["loss"]) == float(m2["train"]["loss"])


def test_header_records_round_fingerprint_and_tag(tmp_path):
    state = fc.server_value({"w": jnp.ones((2, 3))})
    path = save_checkpoint(tmp_path / "c.eqx", state, 7, tag={"algorithm": "fedavg"})
    header = read_checkpoint_header(path)
    assert header["round"] == 7
    assert header["fingerprint"] == state_fingerprint(state) == "<w=f32[2,3]>@SERVER"
    assert header["tag"] == {"algorithm": "fedavg"}
    assert path.read_bytes().startswith(b"FEDCORE-CHECKPOINT 1\n")


def test_another_structure_is_refused_naming_both(tmp_path):
    fedavg = build_weighted_fed_avg(models.linear(6, 3), optax.sgd(0.1))
    scaffold = build_scaffold(models.linear(6, 3), 0.1, num_clients=4)
    path = save_checkpoint(tmp_path / "c.eqx", scaffold.initialize(), 3, tag={"algorithm": "scaffold"})
    with pytest.raises(IncompatibleCheckpointError) as e:
        load_checkpoint(path, fedavg.initialize(), tag={"algorithm": "fedavg"})
    msg = str(e.value)
    assert state_fingerprint(scaffold.initialize()) in msg and state_fingerprint(fedavg.initialize()) in msg
    assert "algorithm='scaffold'" in msg and "algorithm='fedavg'" in msg


def test_another_model_shape_is_refused(tmp_path):
    small = build_weighted_fed_avg(models.linear(6, 3), optax.sgd(0.1)).initialize()
    big = build_weighted_fed_avg(models.linear(6, 4), optax.sgd(0.1)).initialize()
    path = save_checkpoint(tmp_path / "c.eqx", small, 1)
    with pytest.raises(IncompatibleCheckpointError, match=r"f32\[3,6\].*f32\[4,6\]"):
        load_checkpoint(path, big)


def test_same_structure_other_tag_is_refused(tmp_path):
    state = fc.server_value(jnp.zeros(3))
    path = save_checkpoint(tmp_path / "c.eqx", state, 1, tag={"algorithm": "fedavg", "seed": 0})
    with pytest.raises(IncompatibleCheckpointError, match="seed=1"):
        load_checkpoint(path, state, tag={"algorithm": "fedavg", "seed": 1})
    # without an expected tag, any tag is accepted
    assert load_checkpoint(path, state).tag == {"algorithm": "fedavg", "seed": 0}


@pytest.fixture
def saved(tmp_path):
    state = fc.server_value({"w": jnp.arange(100.0)})
    return save_checkpoint(tmp_path / "ckpt-000001.eqx", state, 1), state


@pytest.mark.parametrize(
    "damage, match",
    [
        (lambda b: b[: len(b) - 10], "truncated"),
        (lambda b: b[:-200] + bytes([b[-200] ^ 0xFF]) + b[-199:], "SHA-256"),
        (lambda b: b[:10], "not a fedcore checkpoint|truncated"),
        (lambda b: b"", "not a fedcore checkpoint"),
        (lambda b: b"PK\x03\x04" + b[4:], "not a fedcore checkpoint"),
        (lambda b: b.replace(b'"round"', b'"rou{d"', 1).replace(b"{", b"[", 1), "header"),
    ],
    ids=["truncated", "flipped-byte", "header-cut", "empty", "other-file", "bad-header"],
)
def test_damaged_files_raise_corrupt(saved, damage, match):
    path, state = saved
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CorruptCheckpointError, match=match):
        load_checkpoint(path, state)


def test_missing_file_and_other_format_are_clear(tmp_path, saved):
    path, state = saved
    with pytest.raises(CheckpointError, match="No checkpoint file"):
        load_checkpoint(tmp_path / "nope.eqx", state)
    raw = path.read_bytes()
    magic, header, payload = raw.split(b"\n", 2)
    h = json.loads(header)
    h["format"] = 99
    path.write_bytes(magic + b"\n" + json.dumps(h).encode() + b"\n" + payload)
    with pytest.raises(CheckpointError, match="format 99"):
        load_checkpoint(path, state)


def test_bad_arguments_are_refused(tmp_path):
    state = fc.server_value(jnp.zeros(2))
    with pytest.raises(ValueError, match="round_num"):
        save_checkpoint(tmp_path / "c.eqx", state, -1)
    with pytest.raises(TypeError, match="JSON"):
        save_checkpoint(tmp_path / "c.eqx", state, 1, tag={"f": object()})
    with pytest.raises(ValueError, match="keep"):
        CheckpointManager(tmp_path, keep=0)


def test_failed_write_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "ckpt-000001.eqx", fc.server_value(jnp.zeros(3)), 1)
    before = path.read_bytes()

    def crash(tmp):
        assert tmp.exists() and tmp.name.startswith(".")
        raise OSError("disk gone")

    monkeypatch.setattr(ckpt_module, "_before_rename", crash)
    with pytest.raises(OSError, match="disk gone"):
        save_checkpoint(path, fc.server_value(jnp.ones(3)), 2)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_manager_keeps_the_newest_and_cleans_stale_temps(tmp_path):
    manager = CheckpointManager(tmp_path, keep=2)
    stale = [tmp_path / ".ckpt-000009.eqx.tmp.12345", tmp_path / ".ckpt-000009.eqx.0123456789abcdef.part"]
    # not a checkpoint's temp: someone else's files in the directory stay
    foreign = [tmp_path / ".ckpt-notes.tmp.txt", tmp_path / ".other.eqx.0123456789abcdef.part", tmp_path / "ckpt.tmp.1"]
    for p in stale + foreign:
        p.write_bytes(b"half a file")
    assert manager.checkpoints() == [] and manager.latest_round() is None
    for r in (1, 2, 3, 4):
        manager.save(fc.server_value(jnp.float32(r)), r)
    assert [r for r, _ in manager.checkpoints()] == [3, 4]
    assert manager.latest_round() == 4
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in foreign)
    restored = manager.restore(fc.server_value(jnp.float32(0)))
    assert restored.round_num == 4 and float(restored.state) == 4.0


def test_manager_falls_back_past_a_corrupt_newest(tmp_path):
    manager = CheckpointManager(tmp_path, keep=3)
    for r in (1, 2):
        manager.save(fc.server_value(jnp.float32(r)), r)
    newest = manager.path_for(2)
    newest.write_bytes(newest.read_bytes()[:-3])
    with pytest.warns(UserWarning, match="corrupt checkpoint"):
        restored = manager.restore(fc.server_value(jnp.float32(0)))
    assert restored.round_num == 1 and float(restored.state) == 1.0


def test_manager_says_what_to_do_when_all_are_corrupt(tmp_path):
    manager = CheckpointManager(tmp_path)
    manager.save(fc.server_value(jnp.float32(1)), 1)
    manager.path_for(1).write_bytes(b"garbage")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(CorruptCheckpointError, match="No loadable checkpoint.*Delete"):
            manager.restore(fc.server_value(jnp.float32(0)))


def test_manager_does_not_fall_back_past_an_incompatible_checkpoint(tmp_path):
    manager = CheckpointManager(tmp_path)
    manager.save(fc.server_value(jnp.zeros(2)), 1)
    manager.save(fc.server_value(jnp.zeros(3)), 2)
    with pytest.raises(IncompatibleCheckpointError):
        manager.restore(fc.server_value(jnp.zeros(2)))
    assert manager.restore(fc.server_value(jnp.zeros(3))).round_num == 2
