"""Every GPU measurement of issue 15 in one command, within a time budget, results as files.

    bash benchmarks/gpu.sh                   # on a GPU machine: ~8 min; files in $OUT (or ./gpu-results)
    bash benchmarks/gpu.sh --dry-run         # on CPU, tiny sizes (~2-3 min): checks the whole script
    python benchmarks/gpu.py --plan          # prints the steps and their commands; runs nothing

`gpu.sh` installs carried wheels (`.whl/*.whl`, if any), puts this checkout
on `PYTHONPATH` and runs this driver. The driver runs each step below in its
own process group, with its stdout and stderr in `<out>/<step>.log`, and
kills a step that outruns its share of the budget (`--budget`, 480 s by
default; a step starts only with at least 15 s left). After every step it
rewrites `<out>/summary.md` (the machine, every step's status and time,
the issue's targets met / MISSED / not measured, and the tables the steps
printed) and `<out>/results.json` (everything parsed), so a run cut short
still leaves what finished. Eight files in all, as the device tool returns.

Steps, in this order (the most decisive first):

1. env: `jax.devices()`, `nvidia-smi`, the f32 and TF32 matmul peaks, what
   `conv="auto"` and `default_group_size` resolve to. Without a GPU the run
   stops here with a clear message, unless it is a dry run.
2. conv: `benchmarks/conv.py`, the three CNN convolution implementations.
3. cohort: a warm FedAvg CNN round over all 3,383 clients of an EMNIST-sized
   population (one local epoch, batch 20): the "<= 1 s" target, for each
   convolution and a few group sizes (this file's `--step cohort`).
4. rounds-cnn: `benchmarks/rounds.py`, CNN K=10/50/100, fedcore against
   loop-dev and the padded vmap.
5. groups: `benchmarks/rounds.py` group-size sweep (1, 2, K/16, K/8, K/4, K)
   at linear K=200 and CNN K=100.
6. rounds-linear: `benchmarks/rounds.py`, linear K=10/50/200, fedcore
   against all three baselines, and the compile count over 100 rounds.
7. memory: `benchmarks/memory.py`, chunked and vmap rounds over 3,383
   clients (host RSS and the device's peak bytes in use).

`--dry-run` (or `FEDCORE_GPU_DRY_RUN=1`) runs the same steps on the CPU
(`JAX_PLATFORMS=cpu` unless set) at tiny sizes: its numbers mean nothing,
it only proves the script runs end to end.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
POPULATION = 3383  # federated EMNIST's training clients: the cohort of the "<= 1 s" target
MIN_STEP_SECONDS = 15


@dataclasses.dataclass(frozen=True)
class Step:
    """One step: a command, its time cap in seconds, and the JSON file it writes (if any)."""

    name: str
    cap: float
    argv: tuple[str, ...]
    json: str | None = None
    about: str = ""


def group_sweep(k: int) -> list[int]:
    """The issue's group sizes at cohort size k: 1, 2, K/16, K/8, K/4, K (rounded up, as `default_group_size`)."""
    return sorted({1, 2, math.ceil(k / 16), math.ceil(k / 8), math.ceil(k / 4), k} - {0})


def plan(dry_run: bool, scratch: str) -> list[Step]:
    """The steps of a run; `scratch`: where the steps' JSON files go (merged into results.json)."""
    py, b = sys.executable, lambda name: os.path.join(HERE, name)
    j = lambda name: os.path.join(scratch, f"{name}.json")  # noqa: E731
    if dry_run:
        # CPU compiles dominate a dry run: one CNN row, no CNN in the sweep, one cohort configuration.
        size = dict(peak_n="256", pop="40", cnn_k="1", linear_k="2", g_linear=4, g_cnn=None, rounds=["--rounds", "1"],
                    compile_rounds="3", cohort_pop="4", cohort_budget="1", conv_batches="2", conv_repeats="1",
                    mem=["--population", "6", "--ks", "2", "--vmap-ks", "2"])
    else:
        size = dict(peak_n="8192", pop="1000", cnn_k="10,50,100", linear_k="10,50,200", g_linear=200, g_cnn=100, rounds=[],
                    compile_rounds="100", cohort_pop=str(POPULATION), cohort_budget="70", conv_batches="20,32",
                    conv_repeats="11",
                    mem=["--ks", str(POPULATION), "--vmap-ks", str(POPULATION)])
    sweeps = [group_sweep(size["g_linear"]), group_sweep(size["g_cnn"]) if size["g_cnn"] else []]
    groups = ",".join(str(g) for g in sorted(set(sweeps[0]) | set(sweeps[1])))
    sweep_models = ["--models", "linear,cnn", "--cnn-k", str(size["g_cnn"])] if size["g_cnn"] else ["--models", "linear"]
    common = ["--population", size["pop"], "--peak-n", size["peak_n"], *size["rounds"]]
    # CNN rounds are cheap on a GPU: time 3 of them per row (rounds.py's default, 1-2, is for the CPU).
    cnn_rounds = [] if dry_run else ["--rounds", "3"]
    # rounds.py stops starting rows after ~60% of its cap; the cap kills it (rows already done are in its JSON).
    inner = lambda cap: ["--budget", f"{0.6 * cap:g}"]  # noqa: E731
    return [
        Step("env", 40, (py, b("gpu.py"), "--step", "env", "--peak-n", size["peak_n"], "--json", j("env"),
                         *([] if dry_run else ["--require-gpu"])), j("env"),
             "devices, nvidia-smi, matmul peaks, backend defaults"),
        Step("conv", 45, (py, b("conv.py"), "--convs", "im2col,nhwc_vjp,native", "--batches", size["conv_batches"],
                          "--repeats", size["conv_repeats"]), None, "the three convolutions, ms per SGD step"),
        Step("cohort", 110, (py, b("gpu.py"), "--step", "cohort", "--population", size["cohort_pop"], "--peak-n",
                             size["peak_n"], "--budget", size["cohort_budget"], "--json", j("cohort")), j("cohort"),
             f"warm CNN round over {size['cohort_pop']} clients, 1 epoch: by conv and group size"),
        Step("rounds-cnn", 120, (py, b("rounds.py"), "--models", "cnn", "--cnn-k", size["cnn_k"],
                                 "--methods", "fedcore,loop-dev,vmap", "--cnn-methods", "fedcore,loop-dev,vmap",
                                 "--compile-rounds", "0", *common, *cnn_rounds, *inner(120), "--json", j("rounds-cnn")),
             j("rounds-cnn"),
             "CNN rounds: fedcore vs loop-dev and padded vmap"),
        Step("groups", 90, (py, b("rounds.py"), *sweep_models, "--linear-k", str(size["g_linear"]),
                            "--methods", "fedcore", "--cnn-methods", "fedcore", "--group-sizes", groups,
                            "--compile-rounds", "0", *common, *cnn_rounds, *inner(90), "--json", j("groups")),
             j("groups"), "group-size sweep"),
        Step("rounds-linear", 90, (py, b("rounds.py"), "--models", "linear", "--linear-k", size["linear_k"],
                                   "--methods", "fedcore,loop,loop-dev,vmap", "--compile-rounds", size["compile_rounds"],
                                   *common, *inner(90), "--json", j("rounds-linear")), j("rounds-linear"),
             "linear rounds vs all baselines; compiles over many rounds"),
        Step("memory", 120, (py, b("memory.py"), *size["mem"], "--conv", "auto", "--no-xla"), None,
             "chunked and vmap rounds over the whole population: memory"),
    ]


# ----------------------------------------------------------------------------- running


def run_step(step: Step, log_path: str, seconds: float, env: dict[str, str]) -> tuple[str, float]:
    """Runs `step` for at most `seconds` in its own process group; `(status, wall seconds)`."""
    t = time.perf_counter()
    with open(log_path, "w") as log:
        log.write(f"$ {' '.join(step.argv)}\n")
        log.flush()
        proc = subprocess.Popen(step.argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env, start_new_session=True)
        try:
            rc = proc.wait(timeout=seconds)
            status = "ok" if rc == 0 else f"failed (exit {rc})"
        except subprocess.TimeoutExpired:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)
                    proc.wait(timeout=5)
                    break
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    continue
            status = f"killed at its {seconds:.0f} s limit"
            log.write(f"\n[gpu.py] {status}\n")
    return status, time.perf_counter() - t


def load_json(path: str | None) -> Any:
    if not path or not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None  # killed while writing


# ----------------------------------------------------------------------------- the summary


def _verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else ("met" if ok else "MISSED")


def targets(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The issue's GPU targets as `(target, measured, verdict)`; "not measured" where a step gave nothing."""
    out = []
    cohort = results.get("cohort") or {}
    auto = [c for c in cohort.get("configs", []) if c.get("conv") == "auto" and c.get("group") == "default" and "warm" in c]
    best = min((c for c in cohort.get("configs", []) if "warm" in c), key=lambda c: c["warm"], default=None)
    p = cohort.get("population", POPULATION)
    if auto:
        a = auto[0]
        text = f"{a['warm']:.3f} s/round with the defaults (conv=auto, group {a['group_size']})"
        if best is not None and best is not a:
            text += f"; best {best['warm']:.3f} s (conv={best['conv']}, group {best['group_size']})"
        out.append((f"FedAvg CNN round over {p:,} clients (1 epoch, batch 20) <= 1 s", text, _verdict(a["warm"] <= 1.0)))
    else:
        out.append((f"FedAvg CNN round over {p:,} clients (1 epoch, batch 20) <= 1 s", "-", _verdict(None)))

    # The verdict is the largest cohort's: the whole population with the defaults, else the largest K of rounds-cnn.
    fracs = [(f"K={r['k']}", r["fedcore"]["peak_frac"]) for r in (results.get("rounds-cnn") or {}).get("rows", [])]
    fracs += [(f"K={p:,} (cohort, defaults)", a["peak_frac"]) for a in auto if a.get("peak_frac") is not None]
    run_peak = ((results.get("rounds-cnn") or results.get("env") or {}).get("peaks") or {}).get("run")
    text = ", ".join(f"{name}: {100 * f:.0f}%" for name, f in fracs)
    if fracs and run_peak:
        text += f" of {run_peak:,.0f} GFLOP/s"
    out.append(("CNN >= 30% of the measured dense matmul peak (of the run's precision; verdict: the largest cohort)", text or "-",
                _verdict(fracs[-1][1] >= 0.3 if fracs else None)))

    rows = {(r["model"], r["k"]): r for name in ("rounds-cnn", "rounds-linear") for r in (results.get(name) or {}).get("rows", [])}
    cnn = rows.get(("cnn", 100))
    if cnn and "loop-dev" in cnn:
        ratio = cnn["loop-dev"]["median"] / cnn["fedcore"]["median"]
        out.append(("fedcore >= 5x the per-client jit loop at K=100 (CNN; loop-dev, the stronger loop)", f"{ratio:.2f}x",
                    _verdict(ratio >= 5)))
    else:
        out.append(("fedcore >= 5x the per-client jit loop at K=100 (CNN; loop-dev, the stronger loop)", "-", _verdict(None)))
    lin = max((r for (m, _), r in rows.items() if m == "linear" and "loop" in r), key=lambda r: r["k"], default=None)
    if lin:
        ratio = lin["loop"]["median"] / lin["fedcore"]["median"]
        out.append((f"(for reference, not a target) linear K={lin['k']}: fedcore over the host-batched loop", f"{ratio:.2f}x", "-"))

    per_row = [(f"{r['model']} K={r['k']}", r["fedcore"]["compiles"]) for r in rows.values()]
    counts = (results.get("rounds-linear") or {}).get("compile_counts") or {}
    if per_row or counts:
        text = "fedcore compiles per row: " + ", ".join(f"{n} {c}" for n, c in per_row)
        text += "".join(f"; {v['compiles']} over {v['rounds']} random rounds ({name})" for name, v in counts.items())
        ok = all(c <= 2 for _, c in per_row) and all(v["compiles"] <= 5 for v in counts.values())
        out.append(("compiles bounded as on CPU (<= 2 per row, <= 5 over 100 random rounds)", text, _verdict(ok)))
    else:
        out.append(("compiles bounded as on CPU (<= 2 per row, <= 5 over 100 random rounds)", "-", _verdict(None)))
    return out


def group_table(results: dict[str, Any]) -> list[str]:
    """Median s/round by group size, per (model, K) of the sweep; the best in bold."""
    lines = []
    for r in (results.get("groups") or {}).get("rows", []):
        times = {int(n.removeprefix("fedcore-g")): r[n]["median"] for n in r if n.startswith("fedcore-g")}
        if not times:
            continue
        best = min(times, key=times.get)
        cells = " | ".join(f"**{times[g]:.4f}**" if g == best else f"{times[g]:.4f}" for g in sorted(times))
        lines += [f"{r['model']} K={r['k']}, median s/round by group size (default `fedcore`: {r['fedcore']['median']:.4f}):", "",
                  "| " + " | ".join(str(g) for g in sorted(times)) + " |", "|" + "---|" * len(times), f"| {cells} |", ""]
    return lines


def write_summary(out: str, args: argparse.Namespace, steps: list[Step], status: dict[str, tuple[str, float]],
                  results: dict[str, Any], started: float) -> None:
    env = results.get("env") or {}
    title = "DRY RUN on the CPU at tiny sizes: the numbers mean nothing" if args.dry_run else "fedcore on a GPU"
    lines = [f"# {title}", "",
             f"- device: {env.get('device_kind', '?')} ({env.get('backend', '?')}), jax {env.get('jax', '?')}, "
             f"{env.get('device_count', '?')} device(s)",
             f"- command: `{' '.join(['bash benchmarks/gpu.sh', *args.passed])}`",
             f"- commit: {env.get('commit', '?')}; elapsed {time.perf_counter() - started:.0f} s of a {args.budget:g} s budget"]
    if env.get("peaks"):
        pk = env["peaks"]
        lines.append(f"- matmul peak: f32 {pk['f32']:,.0f} GFLOP/s, TF32 {pk['tf32']:,.0f} GFLOP/s")
    if env.get("defaults"):
        lines.append(f"- on this backend: {env['defaults']}")
    if env.get("nvidia_smi"):
        lines += ["", "```", env["nvidia_smi"].strip(), "```"]
    lines += ["", "## Steps", "", "| step | status | seconds | log | what |", "|---|---|---|---|---|"]
    for s in steps:
        st, sec = status.get(s.name, ("not run", 0.0))
        log = f"{s.name}.log" if s.name != "env" else "(below)"
        lines.append(f"| {s.name} | {st} | {sec:.0f} | {log} | {s.about} |")
    lines += ["", "## Targets", "", "| target | measured | verdict |", "|---|---|---|"]
    lines += [f"| {t} | {m} | {v} |" for t, m, v in targets(results)]
    lines += ["", "## Defaults to decide", ""]
    lines += group_table(results) or ["(no group-size sweep)", ""]
    cohort = results.get("cohort") or {}
    if cohort.get("configs"):
        lines += [f"CNN round over {cohort['population']:,} clients, 1 epoch (cohort step; `auto` is "
                  f"`{cohort.get('auto_conv', '?')}` here, device peak bytes are the process's running maximum):", "",
                  "| conv | group | first round s (compile s) | warm s/round | GFLOP/s (% of peak) | device peak GB |",
                  "|---|---|---|---|---|---|"]
        for c in cohort["configs"]:
            if "error" in c:
                lines.append(f"| {c['conv']} | {c['group']} | failed: {c['error'][:120]} | | | |")
                continue
            dp = c.get("device_peak")
            lines.append(f"| {c['conv']} | {c['group']} ({c['group_size']}) | {c['first']:.2f} ({c['compile_s']:.2f}) | "
                         f"{c['warm']:.4f} | {c['gflops']:,.0f} ({100 * c['peak_frac']:.0f}%) | "
                         f"{'-' if dp is None else f'{dp / 2**30:.1f}'} |")
        lines.append("")
    for s in steps:  # the tables the steps printed
        if s.name == "env":
            continue
        text = results.get("logs", {}).get(s.name, "")
        keep = re.compile(r"^(\||- |fedcore, linear|# measured|\s+(chunked|vmap)\s+K=)")
        table = [ln for ln in text.splitlines() if keep.match(ln)]
        if table:
            note = "; its '- ' lines are rounds.py's CPU targets" if s.argv[1].endswith("rounds.py") else ""
            lines += [f"## {s.name} (from {s.name}.log{note})", "", *table, ""]
    if results.get("logs", {}).get("env"):
        lines += ["## env output", "", "```", results["logs"]["env"][-4000:].strip(), "```"]
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({k: v for k, v in results.items() if k != "logs"} | {"status": status}, f, indent=1)


# ----------------------------------------------------------------------------- the steps of this file


def env_step(args: argparse.Namespace) -> dict[str, Any]:
    import jax

    from fedcore.core import default_group_size
    from fedcore.learning import models
    from rounds import peaks

    backend = jax.default_backend()
    out: dict[str, Any] = {"jax": jax.__version__, "backend": backend, "device_count": jax.device_count(),
                           "devices": [str(d) for d in jax.devices()], "device_kind": jax.devices()[0].device_kind}
    try:
        out["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version,clocks.max.sm",
                                            "--format=csv"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        out["nvidia_smi"] = None
    try:
        out["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                       cwd=ROOT, timeout=10).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        out["commit"] = None
    out["defaults"] = (f"cnn(conv='auto') -> {models.conv_implementation_for(backend)!r}; default_group_size: "
                       f"K=100 -> {default_group_size(100, backend)}, K={POPULATION} -> {default_group_size(POPULATION, backend)}")
    print(json.dumps({k: v for k, v in out.items() if k != "nvidia_smi"}, indent=1), flush=True)
    if args.json:  # before the peaks: the driver learns the backend even if what follows fails
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    if args.require_gpu and backend != "gpu":
        raise SystemExit(f"gpu.py: no GPU: jax.default_backend() is {backend!r}, devices {out['devices']}")
    out["peaks"] = peaks(args.peak_n)
    print(f"matmul peak: f32 {out['peaks']['f32']:.0f} GFLOP/s, TF32 {out['peaks']['tf32']:.0f} GFLOP/s")
    return out


def cohort_step(args: argparse.Namespace) -> dict[str, Any]:
    """Warm FedAvg CNN rounds over the whole population, one local epoch, by convolution and group size."""
    import statistics

    import jax
    import numpy as np
    import optax

    from baselines import cnn_apply, params_as_dict
    from clients import make_population
    from fedcore.core import default_group_size
    from fedcore.data import batch_population
    from fedcore.learning import build_weighted_fed_avg, models
    from rounds import LOG, flops_per_example, peaks

    t0 = time.perf_counter()
    clients = make_population(args.population)
    visits = sum(len(c["y"]) for c in clients) * args.epochs
    population = batch_population(clients, batch_size=20, epochs=args.epochs)
    del clients
    optimizer = optax.sgd(0.02)
    flops_ex = flops_per_example(cnn_apply, params_as_dict(models.cnn().initial_params), optimizer)
    pk = peaks(args.peak_n)
    k, backend = args.population, jax.default_backend()
    out: dict[str, Any] = {"population": k, "epochs": args.epochs, "visits": visits, "flops_per_visit": flops_ex,
                           "peaks": pk, "auto_conv": models.conv_implementation_for(backend), "configs": []}
    print(f"population {k} clients, {visits} example visits, built in {time.perf_counter() - t0:.0f} s; "
          f"{flops_ex / 1e6:.1f} MFLOP per visit; peak {pk['run']:.0f} GFLOP/s", flush=True)
    groups = {"default": None, "K/4": math.ceil(k / 4), "K/16": math.ceil(k / 16)}
    configs = [("auto", "default"), ("im2col", "default"), ("nhwc_vjp", "default"), ("auto", "K/4"), ("auto", "K/16")]
    ids = np.arange(k)
    for conv, group in configs:
        if out["configs"] and time.perf_counter() - t0 > args.budget:  # the defaults (the first) always run
            out.setdefault("skipped", []).append(f"{conv}/{group}")
            print(f"{conv:8s} group {group}: skipped (over --budget {args.budget:g} s)", flush=True)
            continue
        g = groups[group]
        rec: dict[str, Any] = {"conv": conv, "group": group, "group_size": g or default_group_size(k, backend)}
        try:
            process = build_weighted_fed_avg(models.cnn(conv=conv), optimizer).donating()
            state = process.initialize()
            cohort = population.select(ids, group_size=g)
            c0, s0 = LOG.snapshot()
            t = time.perf_counter()
            state, metrics = process.next(state, cohort)
            jax.block_until_ready(metrics)
            rec["first"], rec["compile_s"] = time.perf_counter() - t, LOG.snapshot()[1] - s0
            times = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                state, metrics = process.next(state, cohort)
                jax.block_until_ready(metrics)
                times.append(time.perf_counter() - t)
            rec["compiles"] = LOG.snapshot()[0] - c0
            rec["times"], rec["warm"] = times, statistics.median(times)
            rec["gflops"] = visits * flops_ex / rec["warm"] / 1e9
            rec["peak_frac"] = rec["gflops"] / pk["run"]
            rec["loss"] = float(metrics["train"]["loss"])
            rec["device_peak"] = (jax.local_devices()[0].memory_stats() or {}).get("peak_bytes_in_use")
            del state, metrics
        except Exception as e:  # e.g. out of device memory: record it, go on with the next configuration
            rec["error"] = f"{type(e).__name__}: {e}"
        out["configs"].append(rec)
        print(json.dumps(rec), flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(out, f, indent=1)
    return out


# ----------------------------------------------------------------------------- main


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", default=os.environ.get("FEDCORE_GPU_DRY_RUN", "") not in ("", "0"),
                   help="on CPU at tiny sizes, to check the script (also FEDCORE_GPU_DRY_RUN=1)")
    p.add_argument("--plan", action="store_true", help="print the steps and their commands, run nothing")
    p.add_argument("--out", default=os.environ.get("OUT") or os.path.join(ROOT, "gpu-results"),
                   help="output folder (default $OUT, else ./gpu-results)")
    p.add_argument("--budget", type=float, default=480.0, help="seconds for all steps together (default 480)")
    p.add_argument("--only", default=None, help="comma list of steps to run (default all; env always runs)")
    # A step of this file.
    p.add_argument("--step", choices=("env", "cohort"), default=None, help=argparse.SUPPRESS)
    p.add_argument("--json", default=None, help=argparse.SUPPRESS)
    p.add_argument("--require-gpu", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--peak-n", type=int, default=8192, help=argparse.SUPPRESS)
    p.add_argument("--population", type=int, default=POPULATION, help=argparse.SUPPRESS)
    p.add_argument("--epochs", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--repeats", type=int, default=3, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.passed = sys.argv[1:] if argv is None else list(argv)
    if args.step:
        sys.path[:0] = [HERE, ROOT]
        result = env_step(args) if args.step == "env" else cohort_step(args)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=1)
        return 0

    scratch = "<scratch>" if args.plan else tempfile.mkdtemp(prefix="fedcore-gpu-")
    steps = plan(args.dry_run, scratch)
    if args.only:
        wanted = {"env", *args.only.split(",")}
        unknown = wanted - {s.name for s in steps}
        if unknown:
            raise SystemExit(f"gpu.py: unknown step(s) {sorted(unknown)} in --only; the steps are {[s.name for s in steps]}")
        steps = [s for s in steps if s.name in wanted]
    if args.plan:
        for s in steps:
            print(f"{s.name} (at most {s.cap:g} s): {s.about}\n  {' '.join(s.argv)}")
        return 0

    os.makedirs(args.out, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    if args.dry_run:
        env.setdefault("JAX_PLATFORMS", "cpu")
    started = time.perf_counter()
    status: dict[str, tuple[str, float]] = {}
    results: dict[str, Any] = {"dry_run": args.dry_run, "logs": {}}
    for s in steps:
        left = args.budget - (time.perf_counter() - started)
        if left < MIN_STEP_SECONDS:
            status[s.name] = ("skipped: budget spent", 0.0)
            print(f"[gpu.py] {s.name}: skipped, {left:.0f} s of the budget left", flush=True)
            continue
        log_path = os.path.join(scratch if s.name == "env" else args.out, f"{s.name}.log")
        print(f"[gpu.py] {s.name}: {s.about} (at most {min(s.cap, left):.0f} s)", flush=True)
        status[s.name] = run_step(s, log_path, min(s.cap, left), env)
        print(f"[gpu.py] {s.name}: {status[s.name][0]} in {status[s.name][1]:.0f} s", flush=True)
        with open(log_path) as f:
            results["logs"][s.name] = f.read()
        results[s.name] = load_json(s.json)
        if s.name == "env":
            env_result = results["env"] or {}
            if env_result.get("backend") != "gpu" and not args.dry_run:
                reason = (f"no GPU: jax.default_backend() is {env_result.get('backend')!r} "
                          f"(devices {env_result.get('devices')}); is the CUDA jax installed and the GPU visible? "
                          "(--dry-run runs on the CPU at tiny sizes)")
                status["env"] = (f"failed: {reason}", status["env"][1])
                write_summary(args.out, args, steps, status, results, started)
                print(f"[gpu.py] {reason}\n{results['logs']['env'][-3000:]}", file=sys.stderr)
                return 2
        write_summary(args.out, args, steps, status, results, started)
    write_summary(args.out, args, steps, status, results, started)
    print(f"[gpu.py] done in {time.perf_counter() - started:.0f} s; {args.out}/summary.md:\n", flush=True)
    with open(os.path.join(args.out, "summary.md")) as f:
        print(f.read())
    return 0 if all(st == "ok" for st, _ in status.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
