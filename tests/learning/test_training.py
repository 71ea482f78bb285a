"""The training loop: it runs exactly the process's rounds, on schedule, and resumes bit for bit."""

from __future__ import annotations

import io
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

import fedcore as fc
from fedcore.learning import (
    Callback,
    CheckpointManager,
    JsonlLogger,
    ProgressBar,
    RoundRecord,
    TrainResult,
    build_weighted_fed_avg,
    models,
    plot_curves,
    read_metrics,
    scalar_metrics,
    train,
)


def _counting_process() -> fc.IterativeProcess:
    """State: a running total of every client value seen; metrics: this round's total."""

    @fc.computation
    def initialize():
        return fc.server_value(jnp.float32(0))

    @fc.computation
    def next(state, x, scale):  # noqa: A001
        total = fc.apply(lambda t, s: t * s, fc.sum(x), scale)
        return fc.apply(jnp.add, state, total), {"train": {"total": total}}

    return fc.IterativeProcess(initialize, next)


COUNTING = _counting_process()  # shared: compiled once for the whole module


def _counting_data(r: int):
    return fc.clients_value(jnp.full(3, r + 1.0)), fc.server_value(jnp.float32(1.0))


class Recorder(Callback):
    def __init__(self):
        self.events = []

    def on_train_begin(self, start_round, rounds):
        self.events.append(("begin", start_round, rounds))

    def on_round_end(self, record):
        self.events.append(("round", record.round))

    def on_train_end(self, result):
        self.events.append(("end", len(result.records)))


def test_runs_each_round_once_in_order_with_tuple_arguments():
    seen = []

    def data(r):
        seen.append(r)
        return _counting_data(r)

    rec = Recorder()
    result = train(COUNTING, data, 4, callbacks=[rec])
    assert seen == [0, 1, 2, 3]
    assert [r.round for r in result.records] == [1, 2, 3, 4]
    assert [r.train["total"] for r in result.records] == [3.0, 6.0, 9.0, 12.0]
    assert float(result.state) == 30.0
    assert rec.events == [("begin", 0, 4), *[("round", i) for i in range(1, 5)], ("end", 4)]
    assert result.start_round == 0 and result.rounds == 4
    assert result.first_round_seconds == result.records[0].seconds
    assert all(r.seconds >= 0 for r in result.records)


def test_single_argument_round_data_is_passed_as_is():
    process = fc.IterativeProcess(
        initialize=lambda: fc.server_value(jnp.float32(0)),
        next=lambda s, x: (fc.apply(jnp.add, s, fc.sum(x)), fc.sum(x)),
    )
    result = train(process, lambda r: fc.clients_value(jnp.ones(2)), 2)
    assert float(result.state) == 4.0
    assert result.records[0].train == {"value": 2.0}


@settings(max_examples=10)
@given(rounds=st.integers(1, 9), every=st.integers(0, 4))
def test_evaluation_runs_on_schedule_and_after_the_last_round(rounds, every):
    evaluated_at = []

    def eval_fn(state):
        evaluated_at.append(float(state))
        return {"eval": {"total": state}}

    result = train(COUNTING, _counting_data, rounds, eval_fn=eval_fn, eval_every=every)
    expected = sorted({r for r in range(1, rounds + 1) if (every and r % every == 0) or r == rounds})
    assert [r.round for r in result.records if r.eval is not None] == expected
    assert [r.eval["total"] for r in result.records if r.eval is not None] == [3.0 * n * (n + 1) / 2 for n in expected]
    assert result.final_eval == result.records[-1].eval


@settings(max_examples=10)
@given(rounds=st.integers(1, 8), every=st.integers(0, 3), keep=st.integers(1, 4))
def test_checkpoints_on_schedule_keeping_the_newest(tmp_path_factory, rounds, every, keep):
    d = tmp_path_factory.mktemp("ck")
    train(COUNTING, _counting_data, rounds, checkpoint_dir=d, checkpoint_every=every, keep=keep)
    schedule = sorted({r for r in range(1, rounds + 1) if (every and r % every == 0) or r == rounds})
    assert [r for r, _ in CheckpointManager(d).checkpoints()] == schedule[-keep:]


def _fedavg_setup():
    process = build_weighted_fed_avg(models.linear(5, 3), optax.sgd(0.1))

    def round_data(r: int):
        rng = np.random.default_rng([7, r])  # a pure function of (seed, round)
        return {
            "x": rng.normal(size=(3, 2, 4, 5)).astype(np.float32),
            "y": rng.integers(0, 3, size=(3, 2, 4)).astype(np.int32),
            "mask": rng.random((3, 2, 4)) < 0.8,
        }

    def eval_fn(state):
        return {"eval": {"norm": jnp.sum(process.get_model_weights(state).weight ** 2)}}

    return process, round_data, eval_fn


FEDAVG = _fedavg_setup()


def _json(records):
    return [{k: v for k, v in r.to_json().items() if k != "seconds"} for r in records]


def test_resumed_run_equals_an_uninterrupted_one_bitwise(tmp_path):
    process, data, eval_fn = FEDAVG
    full = train(process, data, 6, eval_fn=eval_fn, eval_every=2)

    d = tmp_path / "ck"
    log = tmp_path / "metrics.jsonl"

    def crashing(r):
        if r == 5:
            raise RuntimeError("machine lost")
        return data(r)

    with pytest.raises(RuntimeError, match="machine lost"):  # after round 5 was logged; last checkpoint: 4
        train(process, crashing, 6, eval_fn=eval_fn, eval_every=2, checkpoint_dir=d, checkpoint_every=2,
              callbacks=[JsonlLogger(log)])
    assert [r["round"] for r in read_metrics(log)] == [1, 2, 3, 4, 5]
    second = train(
        process, data, 6, eval_fn=eval_fn, eval_every=2, checkpoint_dir=d, checkpoint_every=2, resume=True,
        callbacks=[JsonlLogger(log)],
    )
    assert second.start_round == 4 and [r.round for r in second.records] == [5, 6]
    assert _json(second.records) == _json(full.records[4:])
    for a, b in zip(jax.tree.leaves(second.state), jax.tree.leaves(full.state)):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    logged = [{k: v for k, v in r.items() if k != "seconds"} for r in read_metrics(log)]
    assert logged == _json(full.records)


@settings(max_examples=10)
@given(rounds=st.integers(2, 9), every=st.integers(0, 3), data=st.data())
def test_crash_anywhere_then_resume_equals_uninterrupted(tmp_path_factory, rounds, every, data):
    """Law: wherever a run dies, resuming it gives the uninterrupted run's state and remaining records."""
    crash_at = data.draw(st.integers(0, rounds - 1), label="crash before round index")
    d = tmp_path_factory.mktemp("ck")
    full = train(COUNTING, _counting_data, rounds)

    def crashing(r):
        if r == crash_at:
            raise RuntimeError("crash")
        return _counting_data(r)

    with pytest.raises(RuntimeError):
        train(COUNTING, crashing, rounds, checkpoint_dir=d, checkpoint_every=every)
    resumed = train(COUNTING, _counting_data, rounds, checkpoint_dir=d, checkpoint_every=every, resume=True)
    saved = (crash_at // every) * every if every else 0  # the last checkpoint before the crash
    assert resumed.start_round == saved
    assert float(resumed.state) == float(full.state)
    assert _json(resumed.records) == _json(full.records[saved:])


def test_resume_without_checkpoints_starts_from_zero(tmp_path):
    result = train(COUNTING, _counting_data, 2, checkpoint_dir=tmp_path, resume=True)
    assert result.start_round == 0 and float(result.state) == 9.0


def test_resume_of_a_finished_run_does_nothing(tmp_path):
    train(COUNTING, _counting_data, 2, checkpoint_dir=tmp_path)
    again = train(COUNTING, _counting_data, 2, checkpoint_dir=tmp_path, resume=True)
    assert again.records == [] and again.start_round == 2 and float(again.state) == 9.0
    assert again.rounds_per_second is None and again.final_train is None


def test_ctrl_c_checkpoints_the_last_reported_round(tmp_path):
    def data(r):
        if r == 3:
            raise KeyboardInterrupt
        return _counting_data(r)

    with pytest.raises(KeyboardInterrupt):
        train(COUNTING, data, 10, checkpoint_dir=tmp_path, checkpoint_every=5)
    restored = CheckpointManager(tmp_path).restore(COUNTING.initialize())
    assert restored.round_num == 3 and float(restored.state) == 18.0


def test_a_donating_run_equals_a_plain_one_and_keeps_the_callers_state():
    process, data, eval_fn = FEDAVG
    start = process.initialize()
    plain = train(process, data, 3, eval_fn=eval_fn, state=start)
    donated = train(process, data, 3, eval_fn=eval_fn, state=start, donate_state=True)
    assert _json(donated.records) == _json(plain.records)
    for a, b in zip(jax.tree.leaves(donated.state), jax.tree.leaves(plain.state)):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not any(a.is_deleted() for a in jax.tree.leaves(start)), "the caller's state must survive"


def test_a_donating_run_interrupted_inside_a_round_does_not_checkpoint_a_consumed_state(tmp_path):
    class InterruptedInRound3(fc.IterativeProcess):
        def next(self, state, *args):
            out = super().next(state, *args)  # the round ran: with donation, `state` is consumed
            if float(out[0]) == 18.0:
                raise KeyboardInterrupt
            return out

    process = InterruptedInRound3(COUNTING.initialize_fn, COUNTING.next_fn)
    with pytest.raises(KeyboardInterrupt):
        train(process, _counting_data, 10, checkpoint_dir=tmp_path, checkpoint_every=5, donate_state=True)
    assert CheckpointManager(tmp_path).restore(COUNTING.initialize()) is None


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="rounds"):
        train(COUNTING, _counting_data, -1)
    with pytest.raises(ValueError, match="eval_every"):
        train(COUNTING, _counting_data, 1, eval_every=1.5)
    with pytest.raises(TypeError, match="round_data"):
        train(COUNTING, [1, 2], 1)
    with pytest.raises(ValueError, match="checkpoint_dir"):
        train(COUNTING, _counting_data, 1, resume=True)
    train(COUNTING, _counting_data, 3, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="round 3, past rounds=2"):
        train(COUNTING, _counting_data, 2, checkpoint_dir=tmp_path, resume=True)


def test_scalar_metrics_unwraps_and_flattens():
    m = {
        "client_work": {"train": {"loss": fc.server_value(jnp.float32(0.5))}},
        "train": {"loss": fc.server_value(jnp.float32(0.5)), "num_examples": fc.server_value(jnp.int32(7))},
        "num_non_finite_updates": fc.server_value(jnp.int32(0)),
    }
    assert scalar_metrics(m) == {"loss": 0.5, "num_examples": 7, "num_non_finite_updates": 0}
    assert scalar_metrics({"a": {"b": jnp.arange(2)}, "c": 1.5}, "train") == {"a/b": [0, 1], "c": 1.5}


def test_result_speed_excludes_the_first_round():
    recs = [RoundRecord(i, {}, None, s) for i, s in ((1, 2.0), (2, 0.5), (3, 0.5))]
    result = TrainResult(None, recs, 0, 3, 3.0, 2.0)
    assert result.rounds_per_second == pytest.approx(2.0)
    assert TrainResult(None, recs[:1], 0, 1, 2.0, 2.0).rounds_per_second == pytest.approx(0.5)


def test_plain_progress_prints_a_few_lines_without_a_terminal():
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=200)
    train(COUNTING, _counting_data, 50, callbacks=[ProgressBar(console, lines=5)])
    lines = out.getvalue().splitlines()
    assert 5 <= len(lines) <= 7
    assert lines[0].startswith("round 1/50") and lines[-1].startswith("round 50/50")
    assert "rounds/s" in lines[-1] and "ETA 0:00:00" in lines[-1]
    assert "\x1b" not in out.getvalue()  # no terminal control codes


def test_plain_progress_says_it_resumes(tmp_path):
    train(COUNTING, _counting_data, 2, checkpoint_dir=tmp_path)
    out = io.StringIO()
    train(COUNTING, _counting_data, 3, checkpoint_dir=tmp_path, resume=True,
          callbacks=[ProgressBar(Console(file=out, force_terminal=False), lines=5)])
    assert out.getvalue().splitlines()[0] == "resuming at round 2/3"


def test_live_progress_bar_on_a_terminal_shows_round_metrics_and_speed():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=150)
    process, data, _ = FEDAVG
    train(process, data, 3, callbacks=[ProgressBar(console)])
    text = out.getvalue()
    assert "round 3/3" in text and "loss" in text and "accuracy" in text and "rounds/s" in text


def test_read_metrics_ignores_a_torn_last_line(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text('{"round": 1, "train": {}}\n{"round": 2, "tr')
    assert read_metrics(p) == [{"round": 1, "train": {}}]
    assert read_metrics(tmp_path / "missing.jsonl") == []


def test_jsonl_logger_fsyncs_each_line_and_resumes_by_an_atomic_rewrite(tmp_path, monkeypatch):
    import os

    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    p = tmp_path / "m.jsonl"
    log = JsonlLogger(p)
    log.on_train_begin(0, 3)
    for r in (1, 2, 3):
        n = len(synced)
        log.on_round_end(RoundRecord(r, {"loss": 1.0 / r}, None, 0.5))
        assert len(synced) == n + 1  # each appended line is on disk before train saves the round's checkpoint
    with p.open("a") as f:
        f.write('{"round": 4, "tr')  # torn by a crash
    JsonlLogger(p).on_train_begin(2, 3)  # resume after round 2: rounds 3 and the torn line go
    assert [r["round"] for r in read_metrics(p)] == [1, 2]
    assert p.read_text().endswith("}\n")
    assert sorted(q.name for q in tmp_path.iterdir()) == ["m.jsonl"]  # no temp file left


def test_plot_curves_writes_a_png(tmp_path):
    recs = [RoundRecord(i, {"loss": 1.0 / i, "accuracy": 0.1 * i}, {"loss": 1.0, "accuracy": 0.5} if i % 2 == 0 else None, 0.1) for i in range(1, 5)]
    p = plot_curves(recs, tmp_path / "a" / "curves.png")
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    log = tmp_path / "m.jsonl"
    log.write_text("".join(json.dumps(r.to_json()) + "\n" for r in recs))
    assert plot_curves(log, tmp_path / "b.png").stat().st_size > 1000
