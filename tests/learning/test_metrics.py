"""Metrics are running sums: they merge by addition, so reports are never a mean of means."""

from __future__ import annotations

import dataclasses

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedcore.learning import build_fed_eval, build_weighted_fed_avg, metrics

from ._helpers import (
    CLASSES,
    MODEL,
    as_params,
    client_datasets,
    fixed_batches,
    linear_params,
    np_correct,
    np_losses,
    to_numpy,
)

BATCH, MAX_EXAMPLES = 4, 8
EVAL = build_fed_eval(MODEL)
FEDAVG = build_weighted_fed_avg(MODEL, optax.sgd(0.1))
DEFAULTS = (metrics.mean_loss(), metrics.accuracy(), metrics.num_examples(), metrics.num_batches())

SLOTS = 8


@st.composite
def batch_outputs(draw):
    """A batch of SLOTS slots: logits, labels, per-example losses, and a 0/1 mask (padding)."""
    floats = st.floats(-3, 3, width=32, allow_subnormal=False)
    logits = draw(hnp.arrays(np.float32, (SLOTS, CLASSES), elements=floats))
    labels = draw(hnp.arrays(np.int32, (SLOTS,), elements=st.integers(0, CLASSES - 1)))
    losses = draw(hnp.arrays(np.float32, (SLOTS,), elements=st.floats(0, 5, width=32, allow_subnormal=False)))
    mask = draw(hnp.arrays(np.bool_, (SLOTS,)))
    return logits, labels, losses, mask


def _out(logits, labels, losses, mask):
    as_mask = jnp.asarray(mask, jnp.float32)
    return metrics.BatchOutput(jnp.asarray(logits), jnp.asarray(labels), as_mask, jnp.asarray(losses))


@given(batch_outputs(), hnp.arrays(np.bool_, (SLOTS,)))
def test_splitting_a_batch_and_merging_the_states_changes_nothing(batch, part):
    logits, labels, losses, mask = batch
    whole = metrics.update_all(DEFAULTS, metrics.init_all(DEFAULTS), _out(*batch))
    first = metrics.update_all(DEFAULTS, metrics.init_all(DEFAULTS), _out(logits, labels, losses, mask & part))
    second = metrics.update_all(DEFAULTS, metrics.init_all(DEFAULTS), _out(logits, labels, losses, mask & ~part))
    merged = {m.name: m.merge(first[m.name], second[m.name]) for m in DEFAULTS}
    whole_report = metrics.report_all(DEFAULTS, whole)
    merged_report = metrics.report_all(DEFAULTS, merged)
    for name in ("loss", "accuracy", "num_examples"):
        np.testing.assert_allclose(merged_report[name], whole_report[name], rtol=1e-6, atol=1e-6, err_msg=name)
    # The reports are plain ratios of the real (unmasked) examples.
    real = mask.astype(bool)
    assert int(whole_report["num_examples"]) == real.sum()
    assert int(whole_report["num_batches"]) == int(real.any())
    if real.any():
        np.testing.assert_allclose(whole_report["loss"], losses[real].astype(np.float64).mean(), rtol=1e-5)
        np.testing.assert_allclose(whole_report["accuracy"], (logits.argmax(1) == labels)[real].mean(), rtol=1e-6)
    else:
        assert float(whole_report["loss"]) == 0.0 and float(whole_report["accuracy"]) == 0.0


@given(client_datasets(2, max_examples=MAX_EXAMPLES), linear_params())
def test_fed_eval_equals_a_hand_computation_over_every_example(clients, params):
    state = EVAL.set_model_weights(EVAL.initialize(), params)
    new_state, out = EVAL.next(state, fixed_batches(clients, BATCH, 1, MAX_EXAMPLES))
    w = to_numpy(params)
    x = np.concatenate([c["x"] for c in clients])
    y = np.concatenate([c["y"] for c in clients])
    report = out["eval"]
    assert float(report["loss"]) == pytest.approx(np_losses(w, x, y).mean(), rel=1e-5)
    assert float(report["accuracy"]) == pytest.approx(np_correct(w, x, y).mean(), rel=1e-6)
    assert int(report["num_examples"]) == len(y)
    assert int(report["num_batches"]) == sum(-(-len(c["y"]) // BATCH) for c in clients)
    assert float(out["client_work"]["eval"]["loss"]) == float(report["loss"])
    for before, after in zip(jax.tree.leaves(state), jax.tree.leaves(new_state)):  # evaluation changes no state
        np.testing.assert_array_equal(after, before)


@given(client_datasets(2, max_examples=BATCH), linear_params())
def test_fed_avg_reports_metrics_at_the_global_model_before_each_step(clients, params):
    # With one batch per client, FedAvg's train metrics see only the global model: they are
    # exactly the evaluation metrics of that model.
    data = fixed_batches(clients, BATCH, 1, MAX_EXAMPLES)
    _, train = FEDAVG.next(FEDAVG.set_model_weights(FEDAVG.initialize(), params), data)
    _, evaluation = EVAL.next(EVAL.set_model_weights(EVAL.initialize(), params), data)
    for name in ("loss", "accuracy", "num_examples", "num_batches"):
        assert float(train["train"][name]) == pytest.approx(float(evaluation["eval"][name]), rel=1e-6), name


def test_metrics_are_sums_over_examples_not_means_of_client_means():
    # The model always predicts class 0. Client A: 1 example, label 0 (right); client B: 7
    # examples, label 1 (wrong). Accuracy is 1/8, not the mean of client accuracies (1 + 0)/2.
    params = as_params(np.zeros((CLASSES, 4), np.float32), np.array([1.0, 0.0, 0.0], np.float32))
    a = {"x": np.zeros((1, 4), np.float32), "y": np.array([0], np.int32)}
    b = {"x": np.zeros((7, 4), np.float32), "y": np.ones(7, np.int32)}
    _, out = EVAL.next(EVAL.set_model_weights(EVAL.initialize(), params), fixed_batches([a, b], BATCH, 1, MAX_EXAMPLES))
    assert float(out["eval"]["accuracy"]) == pytest.approx(1 / 8)
    log_z = np.log(np.e + 2)
    right, wrong = log_z - 1.0, log_z
    assert float(out["eval"]["loss"]) == pytest.approx((right + 7 * wrong) / 8, rel=1e-6)
    assert float(out["eval"]["loss"]) != pytest.approx((right + wrong) / 2, rel=1e-3)


def test_a_custom_metric_is_reported_by_name():
    # Metric states must be sums: here, the sum of squared logits and the example count.
    def update(state, out):
        squares = jnp.sum(out.predictions**2, -1) * out.mask
        return {"total": state["total"] + jnp.sum(squares), "count": state["count"] + jnp.sum(out.mask)}

    zeros = lambda: {"total": jnp.float32(0), "count": jnp.float32(0)}  # noqa: E731
    mean_sq = metrics.Metric("mean_squared_logit", zeros, update, lambda s: s["total"] / s["count"])
    model = dataclasses.replace(MODEL, metrics=(mean_sq, metrics.num_examples()))
    params = as_params(np.ones((CLASSES, 4), np.float32), np.zeros(CLASSES, np.float32))
    client = {"x": np.ones((3, 4), np.float32), "y": np.zeros(3, np.int32)}
    evaluator = build_fed_eval(model)
    state = evaluator.set_model_weights(evaluator.initialize(), params)
    _, out = evaluator.next(state, fixed_batches([client], BATCH, 1, BATCH))
    assert set(out["eval"].value) == {"mean_squared_logit", "num_examples"}
    assert float(out["eval"]["mean_squared_logit"]) == pytest.approx(CLASSES * 16.0)  # each logit is 4
