"""FedAvg round speed: fedcore against hand-written JAX baselines, side by side.

    python benchmarks/rounds.py                 # the full table (linear K=3,10,50,200; CNN K=10,50)
    python benchmarks/rounds.py --quick         # ~2 minutes: fewer rounds, linear K<=50, CNN K=10
    python benchmarks/rounds.py --models linear --linear-k 10,50 --rounds 7

Every row trains FedAvg (client SGD over `.repeat(10).batch(20)` of each
client's examples, server SGD(1.0), example-weighted mean of the deltas) on
clients drawn at random from one synthetic population (`clients.py`: ~100
examples per client, lognormal sizes, fixed seed), with:

- fedcore: `build_weighted_fed_avg(...).donating()` on `batch_population(...)`,
  each round `process.next(state, population.select(ids))`;
- (a) loop: a Python loop over clients calling a jitted client update, the
  batches cut on the host each round; (a') loop-dev: the same loop on
  device-resident examples, batches gathered by index;
- (b) vmap: one jitted round vmapping the client update over clients padded
  to the round's largest client (DrJAX-style).
(`baselines.py` has the code.)

Reported per row: the median seconds per round (timed rounds interleave the
methods, so machine noise hits all of them alike; a round that compiled is
run again before it is timed), with CPU-time ratios as a cross-check; the
first round's wall time from cold caches and the part of it spent tracing
and compiling; XLA compiles over the row; fedcore's speedup over the better
baseline; and the achieved GFLOP/s against this machine's f32 matmul peak,
measured in the same run. Then fedcore's compiles over 100 rounds of random
clients, and the issue's targets, met or missed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from baselines import ClientTables, LoopRound, VmapRound, cnn_apply, linear_apply, params_as_dict  # noqa: E402
from clients import make_population  # noqa: E402
from fedcore.data import batch_clients, batch_population  # noqa: E402
from fedcore.learning import build_weighted_fed_avg, models  # noqa: E402

BATCH, EPOCHS = 20, 10
METHODS = ("fedcore", "loop", "loop-dev", "vmap")


# ----------------------------------------------------------------------------- compile accounting


class CompileLog:
    """Counts XLA compiles and the seconds spent tracing, lowering and compiling (from jax.monitoring)."""

    _EVENTS = (
        "/jax/core/compile/jaxpr_trace_duration",
        "/jax/core/compile/jaxpr_to_mlir_module_duration",
        "/jax/core/compile/backend_compile_duration",
    )

    def __init__(self):
        self.compiles, self.seconds = 0, 0.0
        jax.monitoring.register_event_duration_secs_listener(self._listen)

    def _listen(self, name: str, duration: float, **_: Any) -> None:
        if name in self._EVENTS:
            self.seconds += duration
            self.compiles += name.endswith("backend_compile_duration")

    def snapshot(self) -> tuple[int, float]:
        return self.compiles, self.seconds


LOG = CompileLog()


# ----------------------------------------------------------------------------- machine


def matmul_peak(n: int = 4096, repeats: int = 5, precision: str | None = None) -> float:
    """Best GFLOP/s of a jitted f32 `[n, n] @ [n, n]` (and of n/2), measured now.

    `precision`: as `jax_default_matmul_precision` ("highest": true f32;
    "tensorfloat32": TF32 on GPUs that have it; None: the run's setting).
    """
    best = 0.0
    with jax.default_matmul_precision(precision or jax.config.jax_default_matmul_precision):
        for size in (n // 2, n):
            a = jax.device_put(np.random.default_rng(0).random((size, size), np.float32))
            f = jax.jit(lambda x, y: x @ y)
            f(a, a).block_until_ready()
            for _ in range(repeats):
                t = time.perf_counter()
                f(a, a).block_until_ready()
                best = max(best, 2 * size**3 / (time.perf_counter() - t) / 1e9)
    return best


def peaks(n: int) -> dict[str, float]:
    """The f32 and TF32 matmul peaks (GFLOP/s), and `run`: the one of this run's precision (% of peak is against it).

    On CPU there is no TF32 (both are f32). On GPUs jax's default precision
    for f32 matmuls and convolutions is TF32 where the chip has it.
    """
    out = {"f32": matmul_peak(n, precision="highest"), "tf32": matmul_peak(n, precision="tensorfloat32")}
    run = jax.config.jax_default_matmul_precision
    out["run"] = out["f32"] if jax.default_backend() == "cpu" or run in ("highest", "float32") else out["tf32"]
    return out


def flops_per_example(apply: Callable, params: Any, optimizer: optax.GradientTransformation) -> float:
    """XLA's FLOP count of one training step (forward, backward, update) on a full batch, per example."""

    def step(p, opt_state, x, y):
        loss = lambda q: optax.softmax_cross_entropy_with_integer_labels(apply(q, x), y).mean()  # noqa: E731
        grads = jax.grad(loss)(p)
        updates, opt_state = optimizer.update(grads, opt_state, p)
        return optax.apply_updates(p, updates), opt_state

    x = jnp.zeros((BATCH, 784), jnp.float32)
    y = jnp.zeros((BATCH,), jnp.int32)
    cost = jax.jit(step).lower(params, optimizer.init(params), x, y).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"]) / BATCH


# ----------------------------------------------------------------------------- methods


@dataclasses.dataclass
class Method:
    """One way of running a round: `run(ids) -> metrics` (it keeps its own model state)."""

    name: str
    reset: Callable[[], None]
    run: Callable[[np.ndarray], Any]
    final_params: Callable[[], Any]


def fedcore_method(model: models.Model, optimizer, population, group_size: int | None = None) -> Method:
    process = build_weighted_fed_avg(model, optimizer).donating()  # each round reuses the state's buffers
    box: dict[str, Any] = {}

    def reset():
        box["state"] = process.initialize()

    def run(ids):
        box["state"], metrics = process.next(box["state"], population.select(ids, group_size=group_size))
        return jax.block_until_ready(metrics["train"]["loss"])

    name = "fedcore" if group_size is None else f"fedcore-g{group_size}"
    return Method(name, reset, run, lambda: params_as_dict(box["state"].value.params))


def baseline_method(name: str, round_cls, apply, optimizer, tables, initial) -> Method:
    round_fn = round_cls(apply, optimizer, tables)
    box: dict[str, Any] = {}

    def reset():
        box["params"] = jax.tree.map(jnp.array, initial)

    def run(ids):
        box["params"], metrics = round_fn(box["params"], ids)
        return jax.block_until_ready(metrics["loss"])

    return Method(name, reset, run, lambda: box["params"])


def timed(method: Method, ids: np.ndarray) -> tuple[float, float, int, float, float]:
    """`(wall seconds, CPU seconds of this process, compiles, compile seconds, loss)` of one round."""
    c0, s0 = LOG.snapshot()
    t, cpu = time.perf_counter(), time.process_time()
    loss = float(method.run(ids))
    seconds, cpu_seconds = time.perf_counter() - t, time.process_time() - cpu
    c1, s1 = LOG.snapshot()
    return seconds, cpu_seconds, c1 - c0, s1 - s0, loss


# ----------------------------------------------------------------------------- one row


def bench_row(
    model_name: str, k: int, methods: list[Method], clients, rounds: int, seed: int, flops_ex: float, peak: float, fresh: bool
):
    """One row: each method's first round from cold caches, then `rounds` timed rounds, interleaved.

    `fresh`: every timed round draws new clients; else they repeat the first
    round's (the CNN rows: the loops would otherwise compile for each new
    client size, minutes of compiling that the timing discards anyway).
    """
    rng = np.random.default_rng([seed, k])
    cohorts = [np.sort(rng.choice(len(clients), k, replace=False)) for _ in range(rounds + 1 if fresh else 1)]
    cohorts += cohorts[:1] * (rounds + 1 - len(cohorts))
    visits = [sum(len(clients[i]["y"]) for i in c) * EPOCHS for c in cohorts]
    row: dict[str, Any] = {"model": model_name, "k": k, "rounds": rounds}
    first_params = {}
    for m in methods:  # the first round from cold caches, from the same initial model
        jax.clear_caches()
        m.reset()
        seconds, _, compiles, compile_s, loss = timed(m, cohorts[0])
        row[m.name] = {"first": seconds, "compile_s": compile_s, "compiles": compiles, "times": [], "loss0": loss}
        first_params[m.name] = m.final_params()
    ref = first_params[methods[0].name]
    row["max_param_diff"] = {
        m.name: max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(first_params[m.name]), jax.tree.leaves(ref)))
        for m in methods[1:]
    }
    for c, v in zip(cohorts[1:], visits[1:]):
        for m in methods:  # interleaved: noise hits every method alike
            seconds, cpu, compiles, _, _ = timed(m, c)
            row[m.name]["compiles"] += compiles
            if compiles:  # it compiled: time it again, warm
                seconds, cpu, _, _, _ = timed(m, c)
            row[m.name]["times"].append((seconds, cpu, v))
    for m in methods:
        r = row[m.name]
        r["median"] = statistics.median(s for s, _, _ in r["times"])
        r["cpu_median"] = statistics.median(c for _, c, _ in r["times"])
        r["gflops"] = statistics.median(v * flops_ex / s / 1e9 for s, _, v in r["times"])
        r["peak_frac"] = r["gflops"] / peak
    return row


def _ratio(row: dict[str, Any], baselines: tuple[str, ...], key: str = "median") -> str:
    times = [row[n][key] for n in baselines if n in row]
    return f"{min(times) / row['fedcore'][key]:.2f}x" if times else "-"


def speed_table(rows: list[dict[str, Any]], names: list[str]) -> str:
    """Median s/round per method, fedcore's speedups, and achieved GFLOP/s."""
    cols = ["model", "K", *(f"{n} s/round" for n in names)]
    cols += ["speedup vs best of (a), (b)", "speedup vs best of all", "(CPU-time speedups)", "fedcore GFLOP/s (% of peak)", "best baseline GFLOP/s"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        cells = [row["model"], str(row["k"])]
        cells += [f"{row[n]['median']:.4f}" if n in row else "-" for n in names]
        cells += [_ratio(row, ("loop", "vmap")), _ratio(row, ("loop", "loop-dev", "vmap"))]
        cells.append(f"{_ratio(row, ('loop', 'vmap'), 'cpu_median')}, {_ratio(row, ('loop', 'loop-dev', 'vmap'), 'cpu_median')}")
        f = row["fedcore"]
        cells.append(f"{f['gflops']:.1f} ({100 * f['peak_frac']:.0f}%)")
        others = [row[n]["gflops"] for n in names if not n.startswith("fedcore") and n in row]
        cells.append(f"{max(others):.1f}" if others else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def compile_table(rows: list[dict[str, Any]], names: list[str]) -> str:
    """First round from cold caches (of which tracing + compiling), and XLA compiles over the row."""
    cols = ["model", "K", *(f"{n}: 1st round s (compile s)" for n in names), *(f"{n}: compiles" for n in names)]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        cells = [row["model"], str(row["k"])]
        cells += [f"{row[n]['first']:.2f} ({row[n]['compile_s']:.2f})" if n in row else "-" for n in names]
        cells += [str(row[n]["compiles"]) if n in row else "-" for n in names]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- compiles over many rounds


def compiles_over_rounds(clients, population, k: int, rounds: int, seed: int) -> dict[str, tuple[int, float]]:
    """XLA compiles over `rounds` rounds of uniformly sampled clients, from cold caches."""
    out = {}
    model = models.linear()
    process = build_weighted_fed_avg(model, optax.sgd(0.1))
    for name in ("population.select", "batch_clients"):
        rng = np.random.default_rng([seed, 7])
        jax.clear_caches()
        state = process.initialize()
        c0, _ = LOG.snapshot()
        t = time.perf_counter()
        for _ in range(rounds):
            ids = rng.choice(len(clients), k, replace=False)
            data = population.select(ids) if name == "population.select" else batch_clients([clients[i] for i in ids], BATCH, epochs=EPOCHS)
            state, metrics = process.next(state, data)
        jax.block_until_ready(state)
        out[name] = (LOG.snapshot()[0] - c0, time.perf_counter() - t)
    return out


# ----------------------------------------------------------------------------- targets


def targets(rows: list[dict[str, Any]], counts: dict[str, tuple[int, int]]) -> list[str]:
    """The issue's targets, each met or missed, by how much (from this run's numbers)."""
    out = []

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    for row in rows:
        f = row["fedcore"]["median"]
        # Without (a) in a row (the CNN's), (a') stands in: it is at least as fast as (a).
        a = "loop" if "loop" in row else "loop-dev"
        ab = [row[n]["median"] for n in (a, "vmap") if n in row]
        if ab:
            need = 2.0 if row["model"] == "linear" and row["k"] >= 50 else 1.0
            names = " and ".join(n for n in (a, "vmap") if n in row)
            out.append(f"{row['model']} K={row['k']}: fedcore >= {need:g}x the better of {names}: "
                       f"{min(ab) / f:.2f}x -> {verdict(min(ab) / f >= need)}")
        if "loop-dev" in row and a == "loop":
            out.append(f"{row['model']} K={row['k']}: against the stronger (a') loop-dev (not a target): {row['loop-dev']['median'] / f:.2f}x")
        if row["model"] == "cnn":
            frac = row["fedcore"]["peak_frac"]
            out.append(f"cnn K={row['k']}: >= 40% of the matmul peak: {100 * frac:.0f}% -> {verdict(frac >= 0.4)}")
        if row["model"] == "linear":
            c = row["fedcore"]["compile_s"]
            out.append(f"linear K={row['k']}: first-round tracing + compiling <= 2 s: {c:.2f} s -> {verdict(c <= 2.0)}")
    for name, (n, rounds) in counts.items():
        out.append(f"<= 5 compiles over {rounds} rounds of random clients ({name}): {n} -> {verdict(n <= 5)}")
    return out


# ----------------------------------------------------------------------------- main


def row_plan(model_name: str, k: int, names: list[str], args: argparse.Namespace) -> tuple[list[str], int]:
    """Which methods run in a row, and how many timed rounds.

    The CNN is ~2000x the linear model's FLOPs per example: its rows time
    fewer rounds, and skip by default the host-batched loop (its host work is
    negligible next to the CNN's compute, so it times like loop-dev) and, at
    K > 10 or with `--quick`, the padded vmap (it trains ~3x the real batches
    there and would take minutes per round); `--full` runs every method
    everywhere.
    """
    if model_name == "linear":
        return names, args.rounds or (3 if args.quick else 5)
    if args.cnn_methods:
        return [n for n in names if n in args.cnn_methods.split(",")], args.rounds or (1 if args.quick or k > 10 else 2)
    chosen = names if args.full else [n for n in names if n != "loop" and not (n == "vmap" and (k > 10 or args.quick))]
    return chosen, args.rounds or (1 if args.quick or k > 10 else 2)



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer rounds, no K=200, CNN K=10 against loop-dev only (~2 min)")
    parser.add_argument("--models", default="linear,cnn", help="comma list of linear, cnn")
    parser.add_argument("--linear-k", default=None, help="clients per round for the linear model (default 3,10,50,200; --quick: 3,10,50)")
    parser.add_argument("--cnn-k", default=None, help="clients per round for the CNN (default 10,50; --quick: 10)")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds per row (default: linear 5, CNN 2 at K=10 and 1 above; --quick: 3, 1)")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma list of fedcore, loop, loop-dev, vmap")
    parser.add_argument("--population", type=int, default=1000, help="clients in the synthetic population")
    parser.add_argument("--compile-rounds", type=int, default=None, help="rounds of the compile count (default 100)")
    parser.add_argument("--full", action="store_true", help="every method in every CNN row too (slow)")
    parser.add_argument("--group-sizes", default="", help="also time fedcore with these group sizes (comma list)")
    parser.add_argument("--cnn-methods", default=None,
                        help="methods of the CNN rows, at every K (default: fedcore, loop-dev, and vmap at K=10; --full: all)")
    parser.add_argument("--matmul-precision", default=None,
                        help="jax_default_matmul_precision for the run (e.g. highest, tensorfloat32; default: jax's)")
    parser.add_argument("--peak-n", type=int, default=4096, help="matmul size of the peak measurement (default 4096)")
    parser.add_argument("--json", default=None, help="also write the rows, peaks and targets to this JSON file (after every row)")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds: start no new row (nor the compile count) after this long; skipped rows are listed")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.matmul_precision:
        jax.config.update("jax_default_matmul_precision", args.matmul_precision)
    quick = args.quick
    cnn_k = args.cnn_k or ("10" if quick else "10,50")
    linear_k = args.linear_k or ("3,10,50" if quick else "3,10,50,200")
    names = [n for n in args.methods.split(",") if n]
    for n in names:
        if n not in METHODS:
            parser.error(f"unknown method {n!r}; choose from {METHODS}")
    if "fedcore" not in names:
        parser.error("the fedcore method is required (ratios are against it)")
    names.sort(key=METHODS.index)
    group_sizes = [int(g) for g in args.group_sizes.split(",") if g]

    print(f"# fedcore round benchmark: jax {jax.__version__}, backend {jax.default_backend()}, "
          f"{jax.device_count()} device(s): {jax.devices()[0].device_kind}, {os.cpu_count()} CPUs, "
          f"{platform.processor() or platform.machine()}")
    print(f"# command: python benchmarks/rounds.py {' '.join(sys.argv[1:] if argv is None else argv)}".rstrip())
    t0 = time.perf_counter()
    clients = make_population(args.population, seed=args.seed)
    sizes = np.array([len(c["y"]) for c in clients])
    population = batch_population(clients, BATCH, epochs=EPOCHS)
    tables = ClientTables(clients, BATCH, EPOCHS)
    print(f"# population: {len(clients)} clients, examples per client mean {sizes.mean():.0f}, "
          f"median {np.median(sizes):.0f}, max {sizes.max()}; batch {BATCH}, {EPOCHS} epochs ({time.perf_counter() - t0:.1f} s to build)")
    peak_by = peaks(args.peak_n)
    peak = peak_by["run"]
    print(f"# measured matmul peak: f32 {peak_by['f32']:.0f} GFLOP/s, TF32 {peak_by['tf32']:.0f} GFLOP/s; "
          f"matmul precision {jax.config.jax_default_matmul_precision or 'default'} ({peak:.0f} GFLOP/s: % of peak below)")
    record: dict[str, Any] = {
        "backend": jax.default_backend(), "device_kind": jax.devices()[0].device_kind, "jax": jax.__version__,
        "precision": jax.config.jax_default_matmul_precision, "peaks": peak_by, "rows": [], "skipped": [],
        "compile_counts": {}, "targets": [],
    }

    def save() -> None:
        if args.json:
            with open(args.json, "w") as f:
                json.dump(record, f, indent=1)

    def out_of_time() -> bool:
        return args.budget is not None and time.perf_counter() - t0 > args.budget

    specs = {
        "linear": (models.linear(), linear_apply, optax.sgd(0.1), [int(k) for k in linear_k.split(",") if k]),
        "cnn": (models.cnn(), cnn_apply, optax.sgd(0.05), [int(k) for k in cnn_k.split(",") if k]),
    }
    rows = []
    for model_name in [m for m in args.models.split(",") if m]:
        model, apply, optimizer, ks = specs[model_name]
        initial = params_as_dict(model.initial_params)
        flops_ex = flops_per_example(apply, initial, optimizer)
        print(f"# {model_name}: {flops_ex / 1e6:.2f} MFLOP per example visit (forward + backward + update, XLA cost analysis)")
        methods = {
            "fedcore": fedcore_method(model, optimizer, population),
            "loop": baseline_method("loop", lambda *a: LoopRound(*a, data="host"), apply, optimizer, tables, initial),
            "loop-dev": baseline_method("loop-dev", lambda *a: LoopRound(*a, data="device"), apply, optimizer, tables, initial),
            "vmap": baseline_method("vmap", VmapRound, apply, optimizer, tables, initial),
        }
        for g in group_sizes:
            methods[f"fedcore-g{g}"] = fedcore_method(model, optimizer, population, g)
        for k in ks:
            if out_of_time():
                record["skipped"].append(f"{model_name} K={k}")
                print(f"#   {model_name} K={k}: skipped (over --budget {args.budget:g} s)", flush=True)
                continue
            t = time.perf_counter()
            chosen, rounds = row_plan(model_name, k, names, args)
            chosen = [*chosen, *(f"fedcore-g{g}" for g in group_sizes if g <= k)]
            fresh = model_name == "linear"
            row = bench_row(model_name, k, [methods[n] for n in chosen], clients, rounds, args.seed, flops_ex, peak, fresh)
            rows.append(row)
            record["rows"] = rows
            save()
            diffs = ", ".join(f"{n} {d:.1e}" for n, d in row["max_param_diff"].items())
            print(f"#   {model_name} K={k}: {rounds} timed rounds in {time.perf_counter() - t:.0f} s; "
                  f"max |params - fedcore's| after round 1: {diffs or '-'}", flush=True)

    print()
    print(f"Median seconds per round over {', '.join(str(r['rounds']) for r in rows)} timed rounds per row; "
          "(a) loop = host-batched loop, (a') loop-dev = loop on device-resident data, (b) vmap = padded vmap.")
    print()
    columns = names + [f"fedcore-g{g}" for g in group_sizes]
    print(speed_table(rows, columns))
    print()
    print("First round from cold caches (jax.clear_caches()), and XLA compiles over all the row's rounds:")
    print()
    print(compile_table(rows, columns))
    print()
    compile_rounds = args.compile_rounds if args.compile_rounds is not None else (30 if quick else 100)
    k = 10
    counts = {}
    if compile_rounds and out_of_time():
        record["skipped"].append("compile count")
        print(f"compile count skipped (over --budget {args.budget:g} s)")
    elif compile_rounds:
        counts = compiles_over_rounds(clients, population, min(k, len(clients)), compile_rounds, args.seed)
        record["compile_counts"] = {name: {"compiles": n, "rounds": compile_rounds, "seconds": s} for name, (n, s) in counts.items()}
    for name, (n, seconds) in counts.items():
        print(f"fedcore, linear, K={k}: {n} XLA compiles over {compile_rounds} rounds of random clients "
              f"({name}; {seconds:.1f} s in all)")
    print()
    print("Targets:")
    record["targets"] = targets(rows, {name: (n, compile_rounds) for name, (n, _) in counts.items()})
    for line in record["targets"]:
        print(f"- {line}")
    save()
    print(f"# total benchmark time {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
