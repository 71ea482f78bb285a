"""The examples run, with few rounds, and do what their docstrings say."""

from __future__ import annotations

import importlib.util
import math
import re
import sys
from pathlib import Path

import jax
import numpy as np
import optax
import pytest

import fedcore as fc
from fedcore.learning import build_weighted_fed_avg, models

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"fedcore_example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses (equinox modules) look their module up here
    spec.loader.exec_module(module)
    return module


def test_every_example_is_documented_at_its_top():
    files = sorted(EXAMPLES.glob("*.py"))
    assert {p.stem for p in files} >= {"quickstart", "tff_tutorial", "custom_algorithm", "emnist_cnn", "grad_through_rounds"}
    for p in files:
        text = p.read_text()
        assert text.startswith('"""'), p.name
        docstring = text.split('"""')[1]
        assert f"python examples/{p.name}" in docstring, f"{p.name} does not say how to run it"
        assert 'if __name__ == "__main__":' in text


def test_quickstart_learns():
    result, accuracy = _load("quickstart").main(["--rounds", "1"])
    [record] = result.records
    assert record.train["loss"] < math.log(10)  # below the zero model's loss
    assert accuracy > 0.6  # held-out digits after one round (chance: 0.1)


def test_tff_tutorial_prints_five_falling_losses(capsys):
    losses = _load("tff_tutorial").main([])
    out = capsys.readouterr().out
    printed = [float(x) for x in re.findall(r"^round +\d+, loss=([\d.]+)", out, re.MULTILINE)]
    assert len(losses) == 5 and printed == pytest.approx(losses, abs=1e-4)  # initialize, then next five times
    assert all(b < a for a, b in zip(losses, losses[1:]))
    assert "ServerState<params.weight=f32[10,784]" in out


def test_custom_algorithm_without_momentum_is_fed_avg():
    example = _load("custom_algorithm")
    model = models.linear(6, 3)
    rng = np.random.default_rng(0)
    data = {
        "x": rng.normal(size=(3, 2, 4, 6)).astype(np.float32),
        "y": rng.integers(0, 3, size=(3, 2, 4)).astype(np.int32),
        "mask": rng.random((3, 2, 4)) < 0.8,
    }
    custom = example.build_fed_avg_momentum(model, optax.sgd(0.1), server_lr=1.0, beta=0.0)
    builtin = build_weighted_fed_avg(model, optax.sgd(0.1), optax.sgd(1.0))
    batches = fc.clients_value(fc.ClientBatches.from_materialized(data))
    s1, s2 = custom.initialize(), builtin.initialize()
    for _ in range(2):
        s1, m1 = custom.next(s1, batches)
        s2, m2 = builtin.next(s2, batches)
        assert float(m1["train"]["loss"]) == pytest.approx(float(m2["train"]["loss"]), rel=1e-6)
    for a, b in zip(jax.tree.leaves(s1.value["params"]), jax.tree.leaves(s2.value.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_custom_algorithm_trains_in_the_library_loop():
    # every client in every round: the same data, so the loss must fall round after round
    result = _load("custom_algorithm").main(["--rounds", "3", "--clients-per-round", "50"])
    losses = [r.train["loss"] for r in result.records]
    assert len(losses) == 3 and losses[0] > losses[1] > losses[2]


def test_gradient_through_rounds_matches_finite_differences():
    out = _load("grad_through_rounds").main(["--rounds", "2", "--clients", "2", "--steps", "1"])
    assert math.isfinite(out["grad"]) and abs(out["grad"]) > 1e-3
    assert out["grad"] == pytest.approx(out["finite_difference"], rel=2e-2)
    (lr0, loss0), (lr1, loss1) = out["history"]
    assert lr1 > lr0 if out["grad"] < 0 else lr1 < lr0  # the step goes downhill
    assert loss1 < loss0


def test_emnist_cnn_falls_back_to_mnist5k():
    name, train, test = _load("emnist_cnn").load_clients(None)
    assert name == "MNIST-5k" and len(train) == 50 and train.element_spec["x"].shape == (784,)


@pytest.mark.slow  # compiles the CNN
def test_emnist_cnn_trains_on_emnist_files(tmp_path):
    import h5py

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        with h5py.File(tmp_path / f"fed_emnist_digitsonly_{split}.h5", "w") as f:
            g = f.create_group("examples")
            for w in ("f0000_14", "f0001_41"):
                grp = g.create_group(w)
                n = 12
                grp.create_dataset("pixels", data=rng.random((n, 28, 28), dtype=np.float32))
                grp.create_dataset("label", data=rng.integers(0, 10, n).astype(np.int32))
    out = _load("emnist_cnn").main(["--emnist-path", str(tmp_path), "--rounds", "1", "--clients-per-round", "2",
                                   "--eval-clients", "0", "--checkpoint-dir", str(tmp_path / "ck")])
    assert out["dataset"] == "EMNIST"
    [record] = out["result"].records
    assert record.train["num_examples"] == 24 and math.isfinite(record.train["loss"])
    assert record.eval is None
    assert (tmp_path / "ck" / "ckpt-000001.eqx").exists()
