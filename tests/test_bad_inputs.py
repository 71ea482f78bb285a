"""The catalogue of bad inputs (issue 13): each gives a clear error naming the problem and, where one exists, the fix.

Nothing here may pass silently or fail inside JAX with an internal message.
Cases are grouped as in the issue: silent wrong results, internal errors,
the CLI.
"""

from __future__ import annotations

import re

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fedcore as fc
from fedcore import cli
from fedcore.data import batch_clients
from fedcore.learning import losses, metrics, models
from fedcore.learning import build_fed_eval, build_fed_sgd, build_scaffold, build_weighted_fed_avg


def _clients(num=2, n=6, features=4, labels=None, x_key="x", y_key="y"):
    rng = np.random.default_rng(0)
    out = []
    for c in range(num):
        y = np.arange(n) % 3 if labels is None else labels[c]
        out.append({x_key: rng.normal(size=(n, features)).astype(np.float32), y_key: np.asarray(y)})
    return out


LINEAR = models.linear(in_features=4, num_classes=3)
FEDAVG = build_weighted_fed_avg(LINEAR, optax.sgd(0.1))


def _next(process, clients, batch=3):
    return process.next(process.initialize(), batch_clients(clients, batch, epochs=1))


# --- silent wrong results --------------------------------------------------------------------


@pytest.mark.parametrize("bad", [12, -1])
def test_label_outside_the_classes_names_client_and_label(bad):
    labels = [np.array([0, 1, 2, 0, 1, 2]), np.array([0, 1, bad, 0, 1, 2])]
    with pytest.raises(ValueError, match=rf"Client 1 has the label {bad} .*outside \[0, 3\)"):
        _next(FEDAVG, _clients(labels=labels))


@pytest.mark.parametrize("bad", [12, -1])
def test_out_of_range_label_makes_the_loss_and_its_gradient_nan(bad):
    import jax

    logits = jnp.zeros((2, 10))
    labels = jnp.array([1, bad])
    assert np.isnan(np.asarray(losses.sparse_softmax_cross_entropy(logits, labels))[1])
    grad = jax.grad(lambda z: losses.sparse_softmax_cross_entropy(z, labels).sum())(logits)
    assert np.isnan(np.asarray(grad)).any()  # so the update is non-finite and non_finite="raise" stops
    assert np.isnan(np.asarray(losses.sparse_cross_entropy_on_probs(jnp.full((2, 10), 0.1), labels))[1])


def test_mean_squared_error_needs_equal_shapes():
    with pytest.raises(ValueError, match=r"one shape.*\(4, 1\).*\(4,\).*reshape"):
        losses.mean_squared_error(jnp.zeros((4, 1)), jnp.zeros(4))


@pytest.mark.parametrize(
    "weights, match",
    [([np.inf, 1.0, 1.0], "total client weight is infinite"), ([1.0, -1.0, 3.0], "client weight is negative")],
)
def test_mean_refuses_infinite_total_and_negative_weights(weights, match):
    x, w = fc.clients_value(jnp.ones(3)), fc.clients_value(jnp.array(weights))
    with pytest.raises(eqx.EquinoxRuntimeError, match=match):
        fc.mean(x, w)
    with pytest.raises(eqx.EquinoxRuntimeError, match=match):
        fc.computation(fc.mean)(x, w)  # jitted: raised when the program runs


def _bad_merge(x):
    return fc.aggregate(x, 0.0, lambda a, v: a + v, lambda a, b: a - b, lambda a: a, check_laws=True)


def _bad_zero(x):
    return fc.aggregate(x, 10.0, lambda a, v: a + v, lambda a, b: a + b, lambda a: a, check_laws=True)


@pytest.mark.parametrize("agg", [_bad_merge, _bad_zero], ids=["non-associative", "zero-not-identity"])
@pytest.mark.parametrize("strategy", ["loop", "vmap"])
def test_aggregate_law_check_catches_strategy_dependent_merges(agg, strategy):
    x = fc.clients_value(jnp.array([1.0, 2.0, 3.0, 4.0]))
    with fc.execution(strategy), pytest.raises(eqx.EquinoxRuntimeError, match=r"merge. must be associative"):
        agg(x)
    assert "check_strategies_agree" in fc.aggregate.__doc__


def test_aggregate_law_check_passes_lawful_merges():
    x = fc.clients_value(jnp.array([1.0, 2.0, 3.0]))
    r = fc.aggregate(x, 0.0, lambda a, v: a + v, lambda a, b: a + b, lambda a: a, check_laws=True)
    assert float(r) == 6.0


def test_int32_sum_overflow_is_an_error_not_a_wrap():
    x = fc.clients_value(jnp.array([2**31 - 1, 1], jnp.int32))
    with pytest.raises(eqx.EquinoxRuntimeError, match=r"integer sum overflowed.*cast the members to float32"):
        fc.sum(x)
    assert int(fc.sum(fc.clients_value(jnp.array([2**30, 5], jnp.int32)))) == 2**30 + 5  # int32 stays int32


def test_clients_value_of_nones_is_refused():
    with pytest.raises(ValueError, match=r"holds no arrays.*give every client an array"):
        fc.clients_value([None, None])


# --- internal errors that must name the problem -------------------------------------------------

BUILDERS = [
    lambda m, o: build_weighted_fed_avg(m, o),
    lambda m, o: build_fed_sgd(m, o),
    lambda m, o: build_scaffold(m, 0.1, 3, o),
]


@pytest.mark.parametrize("build", BUILDERS)
def test_model_factory_instead_of_model_says_call_it(build):
    def make_model():
        return LINEAR

    with pytest.raises(TypeError, match=r"must be a fedcore.learning.Model.*call it: .*make_model\(\)"):
        build(make_model, optax.sgd(0.1))


def test_model_factory_in_fed_eval():
    with pytest.raises(TypeError, match="call it"):
        build_fed_eval(lambda: LINEAR)


@pytest.mark.parametrize(
    "opt, match",
    [(optax.sgd, r"got the function .*sgd.*call it with a learning rate, e\.g\. .*sgd\(0\.1\)"),
     (0.1, r"got the number 0\.1.*optax\.sgd\(0\.1\)"),
     ("sgd", r"optax.GradientTransformation .*got str")],
)
def test_optimizer_must_be_a_gradient_transformation(opt, match):
    with pytest.raises(TypeError, match=match):
        build_weighted_fed_avg(LINEAR, opt)
    with pytest.raises(TypeError, match=match):
        build_weighted_fed_avg(LINEAR, optax.sgd(0.1), opt)


@pytest.mark.parametrize("metric, match", [(metrics.accuracy, r"call it: accuracy\(\)"), ("accuracy", r"the string 'accuracy'")])
def test_metric_function_or_string_instead_of_metric(metric, match):
    model = models.linear(in_features=4, num_classes=3)
    model = type(model)(model.initial_params, model.static, model.loss, (metric,))
    with pytest.raises(TypeError, match=match):
        build_weighted_fed_avg(model, optax.sgd(0.1))


def test_callbacks_without_callback_methods():
    from fedcore.learning import ProgressBar, train
    from fedcore.learning.algorithms._checks import check_callbacks

    with pytest.raises(TypeError, match=r"callbacks must have the methods"):
        train(FEDAVG, lambda r: batch_clients(_clients(), 3, epochs=1), 1, callbacks=[print])

    with pytest.raises(TypeError, match=r"on_round_end.*subclass fedcore.learning.Callback"):
        check_callbacks([print])
    with pytest.raises(TypeError, match=r"call it: ProgressBar\(\)"):
        check_callbacks([ProgressBar])


def test_missing_input_or_label_key_names_the_keys():
    with pytest.raises(KeyError, match=r"keys \['pixels', 'y'\].*reads \['x'\].*input_key"):
        _next(FEDAVG, _clients(x_key="pixels"))


def test_feature_size_mismatch_names_the_shapes():
    with pytest.raises(ValueError, match=r"shape \(60,\) per example, which the model does not accept"):
        _next(FEDAVG, _clients(features=60))


@pytest.mark.parametrize(
    "labels, error, match",
    [
        (lambda y: y[:, None], ValueError, r"shape \(1,\) per example; flatten them: labels.reshape\(-1\)"),
        (lambda y: np.eye(3, dtype=np.int32)[y], ValueError, r"shape \(3,\) per example; they look one-hot: pass labels.argmax\(-1\)"),
        (lambda y: y.astype(np.float32), TypeError, r"integer class labels, but the labels 'y' are float32; cast them"),
    ],
    ids=["(N,1)", "one-hot", "float"],
)
def test_labels_that_do_not_fit_the_loss(labels, error, match):
    clients = _clients()
    for c in clients:
        c["y"] = labels(c["y"])
    with pytest.raises(error, match=match):
        _next(FEDAVG, clients)


def test_state_from_another_process_names_both_types():
    mlp_process = build_weighted_fed_avg(models.mlp(in_features=4, hidden=(5,), num_classes=3), optax.sgd(0.1))
    fedadam = build_weighted_fed_avg(LINEAR, optax.sgd(0.1), optax.adam(0.01))
    batches = batch_clients(_clients(), 3, epochs=1)
    for other in (mlp_process, fedadam):
        with pytest.raises(TypeError, match=r"state of type .*but this process's state is .*another process"):
            FEDAVG.next(other.initialize(), batches)


# --- the CLI ------------------------------------------------------------------------------------


def test_cli_resume_with_overwrite(tmp_path, capsys):
    assert cli.main(["train", "--resume", "--overwrite", "--out", str(tmp_path / "r")]) == 2
    assert "pass only one of them" in capsys.readouterr().err


def test_cli_out_pointing_at_a_file(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("")
    assert cli.main(["train", "--out", str(f)]) == 2
    err = capsys.readouterr().err
    assert "is a file; --out must be a directory" in err and err.count("\n") == 1


def test_cli_describe_data_negative_max_rows(capsys):
    assert cli.main(["describe-data", "--max-rows", "-1"]) == 2
    assert "--max-rows must be >= 0" in capsys.readouterr().err


def test_cli_eval_clients_above_the_test_clients(tmp_path, capsys):
    code = cli.main(["train", "--num-clients", "3", "--clients-per-round", "3", "--eval-clients", "1000",
                     "--out", str(tmp_path / "o")])
    assert code == 2
    assert re.search(r"--eval-clients 1000 exceeds the \d+ test clients; pass at most", capsys.readouterr().err)


def test_cli_one_line_errors_and_debug(tmp_path, capsys, monkeypatch):
    def boom(*a, **k):
        raise OSError("disk full\nsecond line")

    monkeypatch.setattr(cli, "run_training", boom)
    assert cli.main(["train", "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err == "fedcore train: error: disk full (run with --debug for the traceback)\n"
    with pytest.raises(OSError, match="disk full"):
        cli.main(["train", "--debug", "--out", str(tmp_path / "o")])


def test_cli_non_finite_flag_is_a_config_field():
    assert cli.resolve_config({"non_finite": "drop"}).non_finite == "drop"
    with pytest.raises(cli.ConfigError, match="non_finite must be one of raise, drop"):
        cli.resolve_config({"non_finite": "ignore"})


# --- TFF habits ---------------------------------------------------------------------------------


def test_import_fedcore_exposes_submodules_lazily():
    import subprocess
    import sys

    code = ("import sys, fedcore\nassert 'fedcore.learning' not in sys.modules\n"
            "fedcore.learning.models.linear(); fedcore.data.batch_clients; fedcore.testing.check_strategies_agree\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_from_equinox_with_metrics_still_reports_loss_and_counts():
    import jax

    model = models.from_equinox(lambda k: eqx.nn.Linear(4, 3, key=k), metrics=[metrics.accuracy()])
    assert [m.name for m in model.metrics] == ["loss", "accuracy", "num_examples", "num_batches"]
    with pytest.raises(TypeError, match=r"call it: accuracy\(\)"):
        models.from_equinox(lambda k: eqx.nn.Linear(4, 3, key=jax.random.key(0)), metrics=[metrics.accuracy])


def test_metrics_print_numbers_read_as_mappings_and_format():
    _, m = _next(FEDAVG, _clients())
    text = repr(m)
    assert re.search(r"'loss': \d", text) and "num_examples': 12" in text
    assert "train" in m and "client_work" in list(m.keys()) and set(dict(m.items())) == set(m)
    assert re.fullmatch(r"\d\.\d{4}", format(m["train"]["loss"], ".4f"))
    with pytest.raises(TypeError, match="member is a dict"):
        fc.server_value(jnp.zeros(2)).keys()


def test_unplaced_client_batches_in_a_users_computation_names_the_fix():
    batches = batch_clients(_clients(), 3, epochs=1)

    @fc.computation
    def total(data):
        return fc.sum(fc.map(lambda c: jnp.sum(c.data["x"]), data))

    with pytest.raises(fc.PlacementError, match=r"ClientBatches.*\(unplaced\).*fc\.clients_value\(batches\)"):
        total(batches)
    assert np.isfinite(float(total(fc.clients_value(batches))))
    with pytest.raises(fc.PlacementError, match=r"unplaced\).*fc\.server_value\(x\)"):
        fc.broadcast(jnp.ones(2))


def test_process_type_signatures_in_tff_notation():
    # TFF: process.initialize.type_signature before any call; process.next.type_signature after a round.
    process = build_weighted_fed_avg(LINEAR, optax.sgd(0.1))
    assert str(process.initialize.type_signature) == f"( -> {process.state_type})"
    with pytest.raises(ValueError, match="known after the first call"):
        process.next.type_signature
    state, _ = process.next(process.initialize(), batch_clients(_clients(), 3, epochs=1))
    signature = str(process.next.type_signature)
    assert signature.startswith(f"(<{process.state_type},{{ClientBatches<data['x']=f32[")
    assert signature.endswith("num_non_finite_updates=i32,train=<accuracy=f32,loss=f32,num_batches=i32,num_examples=i32>>@SERVER>)")
    assert f" -> <{fc.type_of(state)}," in signature


@pytest.mark.parametrize("build", [lambda: FEDAVG, lambda: build_fed_sgd(LINEAR, optax.sgd(0.1))])
def test_non_finite_inputs_are_named_as_inputs_for_batches_and_cohorts(build):
    from fedcore.core import ClientPopulation

    process = build()
    clients = _clients(num=3)
    clients[2]["x"][4, 1] = np.inf
    batches = batch_clients(clients, 3, epochs=1)
    message = r"Client 2 \(position 2 in this round's client data\) has NaN or Inf in its inputs 'x'.*not the cause"
    with pytest.raises(RuntimeError, match=message):
        process.next(process.initialize(), batches)
    cohort = ClientPopulation.from_batches(batches).select(np.array([0, 2]))  # client 2 is position 1 here
    with pytest.raises(RuntimeError, match=message.replace("2", "1")):
        process.next(process.initialize(), cohort)
