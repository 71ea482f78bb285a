"""benchmarks/gpu.py's plan and summary are sound, without running a benchmark (its driver imports no jax)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
STEPS = ["env", "conv", "cohort", "rounds-cnn", "groups", "rounds-linear", "memory"]


def _load():
    spec = importlib.util.spec_from_file_location("fedcore_benchmarks_gpu", BENCHMARKS / "gpu.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


gpu = _load()


def _flag(step, name: str) -> str:
    return step.argv[step.argv.index(name) + 1]


@pytest.mark.parametrize("dry_run", [False, True])
def test_the_plan_lists_every_step_in_order_with_existing_scripts_and_flags(dry_run, tmp_path):
    steps = gpu.plan(dry_run, str(tmp_path))
    assert [s.name for s in steps] == STEPS
    for s in steps:
        script = Path(s.argv[1])
        assert script.parent == BENCHMARKS and script.exists(), s
        source = script.read_text()
        for flag in (a for a in s.argv[2:] if a.startswith("--")):
            assert f'"{flag}"' in source, f"{s.name}: {script.name} has no {flag}"
        assert s.json is None or s.json.startswith(str(tmp_path))
    # each step writes one log, plus summary.md and results.json: what the device tool returns (8 files)
    assert len([s for s in steps if s.name != "env"]) + 2 <= 8


def test_the_gpu_plan_measures_what_the_issue_asks():
    steps = {s.name: s for s in gpu.plan(False, "/tmp")}
    assert _flag(steps["rounds-cnn"], "--cnn-k") == "10,50,100"
    assert set(_flag(steps["rounds-cnn"], "--cnn-methods").split(",")) == {"fedcore", "loop-dev", "vmap"}
    assert _flag(steps["rounds-linear"], "--linear-k") == "10,50,200"
    assert set(_flag(steps["rounds-linear"], "--methods").split(",")) == {"fedcore", "loop", "loop-dev", "vmap"}
    assert _flag(steps["rounds-linear"], "--compile-rounds") == "100"
    assert set(_flag(steps["conv"], "--convs").split(",")) == {"im2col", "nhwc_vjp", "native"}
    assert _flag(steps["cohort"], "--population") == "3383" and _flag(steps["memory"], "--ks") == "3383"
    swept = {int(g) for g in _flag(steps["groups"], "--group-sizes").split(",")}
    assert swept >= set(gpu.group_sweep(100)) | set(gpu.group_sweep(200))
    assert "--require-gpu" in steps["env"].argv
    assert sum(s.cap for s in steps.values()) >= 480  # caps are maxima; the 480 s budget is what bounds the run
    dry = {s.name: s for s in gpu.plan(True, "/tmp")}
    assert "--require-gpu" not in dry["env"].argv


def test_the_group_sweep_is_the_issues_and_holds_the_gpu_default():
    from fedcore.core import default_group_size

    assert gpu.group_sweep(100) == [1, 2, 7, 13, 25, 100]
    assert gpu.group_sweep(3) == [1, 2, 3]
    for k in (100, 200, 3383):
        assert default_group_size(k, "gpu") in gpu.group_sweep(k)


def test_targets_without_results_are_never_met():
    verdicts = [v for _, _, v in gpu.targets({})]
    assert len(verdicts) == 4 and set(verdicts) == {"not measured"}


def _row(model, k, fedcore, **others):
    row = {"model": model, "k": k, "fedcore": {"median": fedcore, "peak_frac": 0.35, "compiles": 2}}
    return row | {n: {"median": m} for n, m in others.items()}


def test_targets_are_read_from_the_steps_results():
    results = {
        "cohort": {"population": 3383, "configs": [
            {"conv": "auto", "group": "default", "group_size": 423, "warm": 1.2, "peak_frac": 0.2},
            {"conv": "im2col", "group": "default", "group_size": 423, "warm": 0.8, "peak_frac": 0.3},
        ]},
        "rounds-cnn": {"rows": [_row("cnn", 10, 0.1, **{"loop-dev": 0.3}), _row("cnn", 100, 0.2, **{"loop-dev": 1.4})],
                       "peaks": {"run": 400_000.0}},
        "rounds-linear": {"rows": [_row("linear", 200, 0.01, loop=0.05)],
                          "compile_counts": {"population.select": {"compiles": 1, "rounds": 100}}},
    }
    got = {t.split(" (")[0].split(" <=")[0].split(" >=")[0]: (m, v) for t, m, v in gpu.targets(results)}
    cohort = got["FedAvg CNN round over 3,383 clients"]
    assert cohort[1] == "MISSED" and "best 0.800 s (conv=im2col" in cohort[0]  # the defaults decide, the best is shown
    assert got["CNN"][1] == "MISSED"  # 35% at K=100 but 20% over the whole population (the largest cohort)
    assert got["fedcore"] == ("7.00x", "met")
    assert got["compiles bounded as on CPU"][1] == "met"


def test_the_summary_of_a_run_cut_short_is_written(tmp_path):
    args = gpu.parser().parse_args(["--dry-run", "--out", str(tmp_path)])
    args.passed = ["--dry-run"]
    steps = gpu.plan(True, str(tmp_path))
    gpu.write_summary(str(tmp_path), args, steps, {"env": ("ok", 3.0), "conv": ("killed at its 45 s limit", 45.0)},
                      {"logs": {"conv": "| conv | batch |\n|---|---|\nnoise\n"}}, started=0.0)
    text = (tmp_path / "summary.md").read_text()
    assert text.startswith("# DRY RUN")
    assert "| conv | killed at its 45 s limit | 45 |" in text and "| memory | not run | 0 |" in text
    assert "| conv | batch |" in text and "noise" not in text
    assert (tmp_path / "results.json").exists()


def test_help_plan_and_bad_steps_from_the_command_line():
    run = lambda *a: subprocess.run([sys.executable, str(BENCHMARKS / "gpu.py"), *a], capture_output=True, text=True, timeout=30)  # noqa: E731
    assert run("--help").returncode == 0
    plan = run("--plan", "--dry-run")
    assert plan.returncode == 0 and re.findall(r"^(\S+) \(at most", plan.stdout, re.M) == STEPS
    bad = run("--plan", "--only", "conv,nope")
    assert bad.returncode != 0 and "unknown step(s) ['nope']" in bad.stderr
