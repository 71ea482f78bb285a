"""`fedcore train` / `describe-data`: config resolution, outputs, exact repeats and resumes, crash safety."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest

from fedcore import cli
from fedcore.cli import ConfigError, TrainConfig, main, resolve_config
from fedcore.learning import read_checkpoint_header, read_metrics

ROOT = Path(__file__).resolve().parents[1]
# Every round uses all 3 clients: one compiled program per run, a few seconds per run.
SMALL = ["--num-clients", "3", "--clients-per-round", "3", "--local-epochs", "1", "--eval-every", "2",
         "--checkpoint-every", "2"]


def _no_seconds(records):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 6-round run, and what it printed."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("ref") / "run"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["train", *SMALL, "--rounds", "6", "--out", str(out)])
    assert code == 0
    return out, buf.getvalue()


def test_run_writes_every_output(reference):
    out, printed = reference
    records = read_metrics(out / "metrics.jsonl")
    assert [r["round"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert [r["round"] for r in records if "eval" in r] == [2, 4, 6]
    assert all({"loss", "accuracy", "num_examples", "num_batches"} <= set(r["train"]) for r in records)
    assert all(r["seconds"] > 0 for r in records)
    assert records[-1]["train"]["loss"] < records[0]["train"]["loss"]
    config = tomllib.loads((out / "config.toml").read_text())
    assert config == dataclasses.asdict(resolve_config({"num_clients": 3, "clients_per_round": 3, "local_epochs": 1,
                                                        "eval_every": 2, "checkpoint_every": 2, "rounds": 6}))
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "ckpt-000002.eqx", "ckpt-000004.eqx", "ckpt-000006.eqx"
    ]
    header = read_checkpoint_header(out / "checkpoints" / "ckpt-000006.eqx")
    assert header["round"] == 6 and header["tag"]["algorithm"] == "fedavg"
    for needle in ("round 6/6", "compile time (first round)", "rounds/s", "eval accuracy", "wall time"):
        assert needle in printed
    assert len(printed.splitlines()) < 40  # no output spam


def test_help_documents_every_field_with_its_default(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    entries: dict[str, str] = {}  # option -> its help text, from the "options:" list
    current = None
    for line in out[out.index("options:"):].splitlines()[1:]:
        m = re.match(r"^  (--?[\w-]+)", line)
        if m:
            current = m.group(1)
            entries[current] = ""
        if current:
            entries[current] += " " + line.strip()
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        assert flag in entries, flag
        assert f"(default: {cli._default_text(f)})" in " ".join(entries[flag].split()), (flag, entries[flag])
    for option in ("--config", "--out", "--resume", "--overwrite"):
        assert option in entries


def test_config_file_then_flags_override(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('algorithm = "fedprox"\nrounds = 7\nclient_lr = 1\nmu = 0.5\n')
    cfg = resolve_config({"rounds": 9, "seed": None}, p)
    assert (cfg.algorithm, cfg.rounds, cfg.client_lr, cfg.mu, cfg.seed) == ("fedprox", 9, 1.0, 0.5, 0)
    assert cfg.server_lr == 1.0
    assert resolve_config({"algorithm": "fedadam"}).server_lr == 0.01
    assert resolve_config({"algorithm": "fedadam", "server_lr": 0.3}).server_lr == 0.3


@pytest.mark.parametrize(
    "text, match",
    [
        ("rounds = 5\nlearning_rate = 0.1\n", r"unknown field\(s\) \['learning_rate'\]"),
        ('rounds = "ten"\n', "rounds must be int"),
        ("rounds = true\n", "rounds must be int"),
        ("shuffle = 1\n", "shuffle must be bool"),
        ("rounds = \n", "not valid TOML"),
        ("rounds = 0\n", "rounds must be >= 1"),
        ("client_lr = -0.1\n", "client_lr must be > 0"),
        ('algorithm = "fedfoo"\n', "algorithm must be one of fedavg"),
        ('model = "cnn"\ndataset = "synthetic"\n', "cnn model needs 28x28"),
        ("mu = -1.0\n", "mu must be >= 0"),
    ],
)
def test_bad_config_files_are_refused_naming_the_field(tmp_path, capsys, text, match):
    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match):
        resolve_config({}, p)
    assert main(["train", "--config", str(p), "--out", str(tmp_path / "o")]) == 2
    assert re.search(match, capsys.readouterr().err)


def test_missing_config_file_and_bad_flags(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "none.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--algorithm", "fedfoo"])
    assert "invalid choice: 'fedfoo'" in capsys.readouterr().err


def test_too_many_clients_per_round_is_refused(tmp_path, capsys):
    assert main(["train", "--num-clients", "3", "--clients-per-round", "4", "--out", str(tmp_path / "o")]) == 2
    assert "clients_per_round=4 exceeds the 3 clients" in capsys.readouterr().err


def test_round_data_is_a_pure_function_of_seed_and_round():
    cfg = resolve_config({"num_clients": 10, "clients_per_round": 3})
    pop = cli.load_population("mnist5k", num_clients=10, seed=0)
    a, b = cli.make_round_data(cfg, pop.train), cli.make_round_data(cfg, pop.train)
    same = [np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(_leaves(a(5)), _leaves(b(5)))]
    assert all(same)
    other = [np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(_leaves(a(5)), _leaves(a(6)))]
    assert not all(other)


def _leaves(tree):
    import jax

    return jax.tree.leaves(tree)


def test_an_existing_run_is_not_overwritten_by_accident(reference, capsys):
    out, _ = reference
    before = (out / "metrics.jsonl").read_bytes()
    assert main(["train", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--resume" in err and "--overwrite" in err
    assert (out / "metrics.jsonl").read_bytes() == before


_KILL_SCRIPT = """
import pathlib, sys, time
import fedcore.learning._checkpoint as checkpoint

def pause(tmp):  # stands still mid-checkpoint (temp file written, not yet renamed) until killed
    if "000006" in tmp.name:
        pathlib.Path(sys.argv[1]).write_text(str(tmp))
        time.sleep(600)

checkpoint._before_rename = pause
from fedcore.cli import main
raise SystemExit(main(sys.argv[2:]))
"""


def test_sigkill_mid_checkpoint_then_resume_equals_an_uninterrupted_run(reference, tmp_path):
    ref, _ = reference
    out = tmp_path / "killed"
    marker = tmp_path / "writing"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    # repeat the reference run from its config.toml, and kill it while it writes the round-6 checkpoint
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILL_SCRIPT, str(marker), "train", "--config", str(ref / "config.toml"), "--out", str(out)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 180
        while not marker.exists():
            if proc.poll() is not None:
                pytest.fail(f"the run ended before its last checkpoint: {proc.stdout.read().decode()[-3000:]}")
            assert time.monotonic() < deadline, "the run never reached its last checkpoint"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    ckpts = out / "checkpoints"
    assert sorted(p.name for p in ckpts.glob("ckpt-*")) == ["ckpt-000002.eqx", "ckpt-000004.eqx"]
    assert [p.name for p in ckpts.glob(".ckpt-000006.eqx.*.part")]  # the torn write is only a temp file
    # the run so far repeats the reference exactly
    assert _no_seconds(read_metrics(out / "metrics.jsonl")) == _no_seconds(read_metrics(ref / "metrics.jsonl"))

    # also damage the newest checkpoint: resume must fall back to round 2 and redo 3..6
    newest = ckpts / "ckpt-000004.eqx"
    newest.write_bytes(newest.read_bytes()[:-100])
    with pytest.warns(UserWarning, match="corrupt checkpoint.*ckpt-000004"):
        assert main(["train", "--out", str(out), "--resume"]) == 0
    assert _no_seconds(read_metrics(out / "metrics.jsonl")) == _no_seconds(read_metrics(ref / "metrics.jsonl"))
    for r in (4, 6):  # same state bit for bit (and the same header)
        name = f"ckpt-{r:06d}.eqx"
        assert (ckpts / name).read_bytes() == (ref / "checkpoints" / name).read_bytes()
    assert not list(ckpts.glob(".ckpt-*"))


def _copy_run(ref: Path, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(ref, out)
    return out


@pytest.mark.parametrize("flag, value", [("--algorithm", "fedprox"), ("--algorithm", "fedadam"), ("--seed", "1")])
def test_resume_refuses_another_configuration(reference, tmp_path, capsys, flag, value):
    out = _copy_run(reference[0], tmp_path)
    before = (out / "config.toml").read_bytes()
    assert main(["train", "--out", str(out), "--resume", flag, value]) == 2
    err = capsys.readouterr().err
    name = flag[2:]
    old = "'fedavg'" if name == "algorithm" else "0"
    new = f"'{value}'" if name == "algorithm" else value
    assert f"{name}: {old} -> {new}" in err  # the differing field, not two whole tags
    assert (out / "config.toml").read_bytes() == before  # a refused resume rewrites nothing
    assert main(["train", "--out", str(out), "--resume", "--rounds", "6"]) == 0  # a plain resume still works


def test_resume_with_only_corrupt_checkpoints_says_what_to_do(reference, tmp_path, capsys):
    out = _copy_run(reference[0], tmp_path)
    for p in (out / "checkpoints").iterdir():
        p.write_bytes(b"")
    with pytest.warns(UserWarning):
        assert main(["train", "--out", str(out), "--resume"]) == 1
    err = capsys.readouterr().err
    assert "No loadable checkpoint" in err and "Delete these files" in err


@pytest.mark.parametrize("algorithm", ["fedsgd", "scaffold"])
def test_other_algorithms_run(tmp_path, algorithm):
    out = tmp_path / "o"
    out.mkdir()
    (out / "metrics.jsonl").write_text("old\n")
    assert main(["train", *SMALL, "--algorithm", algorithm, "--rounds", "1", "--out", str(out), "--overwrite"]) == 0
    [record] = read_metrics(out / "metrics.jsonl")
    pop = cli.load_population("mnist5k", num_clients=3)
    total = sum(pop.train.client_sizes().values())
    assert record["train"]["num_examples"] == total  # all 3 clients, one epoch
    header = read_checkpoint_header(out / "checkpoints" / "ckpt-000001.eqx")
    assert header["tag"]["algorithm"] == algorithm
    if algorithm == "scaffold":  # one control variate per client of the population
        assert "client_controls'].weight=f32[3,10,784]" in header["fingerprint"]


def test_chunked_execution_matches_vmap(reference, tmp_path):
    ref, _ = reference
    out = tmp_path / "chunked"
    assert main(["train", "--config", str(ref / "config.toml"), "--rounds", "1", "--execution", "chunked",
                 "--chunk-size", "2", "--out", str(out)]) == 0
    assert tomllib.loads((out / "config.toml").read_text())["chunk_size"] == 2
    [got] = read_metrics(out / "metrics.jsonl")
    want = read_metrics(ref / "metrics.jsonl")[0]
    assert got["train"]["num_examples"] == want["train"]["num_examples"]
    assert got["train"]["loss"] == pytest.approx(want["train"]["loss"], rel=1e-5)


def _write_fake_emnist(d: Path) -> dict[str, int]:
    import h5py

    rng = np.random.default_rng(0)
    sizes = {}
    for split, n_max in (("train", 30), ("test", 8)):
        with h5py.File(d / f"fed_emnist_digitsonly_{split}.h5", "w") as f:
            g = f.create_group("examples")
            for w in ("f0000_14", "f0001_41", "f0002_00"):
                n = int(rng.integers(4, n_max))
                grp = g.create_group(w)
                grp.create_dataset("pixels", data=rng.random((n, 28, 28), dtype=np.float32))
                grp.create_dataset("label", data=rng.integers(0, 10, n).astype(np.int32))
                if split == "train":
                    sizes[w] = n
    return sizes


def test_emnist_from_local_files(tmp_path, capsys):
    sizes = _write_fake_emnist(tmp_path)
    out = tmp_path / "o"
    code = main(["train", "--dataset", "emnist", "--data-path", str(tmp_path), "--clients-per-round", "3",
                 "--local-epochs", "2", "--rounds", "1", "--out", str(out)])
    assert code == 0
    [record] = read_metrics(out / "metrics.jsonl")
    assert record["train"]["num_examples"] == 2 * sum(sizes.values())
    assert main(["describe-data", "--dataset", "emnist", "--data-path", str(tmp_path)]) == 0
    assert f"3 clients, {sum(sizes.values())} examples" in capsys.readouterr().out


def test_emnist_without_files_is_a_clear_error(tmp_path, capsys):
    assert main(["describe-data", "--dataset", "emnist", "--data-path", str(tmp_path / "nowhere")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_describe_data_prints_the_population(tmp_path, capsys):
    plot = tmp_path / "skew.png"
    assert main(["describe-data", "--num-clients", "5", "--max-rows", "3", "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "mnist5k (train):" in out and "5 clients" in out and "total" in out
    assert len([line for line in out.splitlines() if re.match(r"^\d+\s+\d+\s+\d+", line)]) == 3
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_python_dash_m_fedcore_runs():
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    res = subprocess.run([sys.executable, "-m", "fedcore", "train", "--help"], capture_output=True, text=True,
                         env=env, timeout=120)
    assert res.returncode == 0 and "--clients-per-round" in res.stdout
