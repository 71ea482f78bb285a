"""Peak memory of one FedAvg CNN round as the cohort grows: chunked against vmap execution.

    python benchmarks/memory.py                  # K = 100, 1000, 3383 chunked; K = 100, 1000 vmap (~8 min here, of which the XLA memory analyses ~1)
    python benchmarks/memory.py --quick          # K = 100, 300 chunked; K = 100, 300 vmap (~5 min)
    python benchmarks/memory.py --chunk 16 --ks 100,3383 --vmap-ks 100

One synthetic population of 3,383 clients (`clients.py`, the size of
federated EMNIST's training population: ~100 EMNIST-like examples per client,
lognormal sizes, fixed seed) is batched once with
`batch_population(clients, batch_size=20, epochs=E)`. Each configuration runs
one FedAvg round (`models.cnn(conv="im2col")`, 1.2M parameters, client
SGD(0.02), server SGD(1.0), example-weighted) on the population's first K clients,
`process.next(state, population.select(ids))`, under
`fc.execution("chunked", chunk_size=c)` or the default `vmap` strategy.

Every configuration runs in its own child process (`--one`), so its peak
RSS is its own. A child builds the population, drops the clients' lists,
records its steady RSS, resets the kernel's RSS high-water mark
(`/proc/self/clear_refs`), runs the round and reads the high-water mark
again: the difference is the round's own peak memory, free of the
population build's transients (the child first returns the build's freed
heap to the OS with `malloc_trim`). The child's lifetime peak
(`getrusage(RUSAGE_SELF).ru_maxrss`) is reported too, with a baseline child
that only builds the population. XLA's own account of the round's
temporaries comes from `jax.jit(...).lower(...).compile().memory_analysis()`.

Memory does not depend on the number of epochs: each client's local training
is a `lax.scan` over its steps (`client_work._run_real_steps`), so one step's
activations are reused every step; only the population's index tables
(clients x steps x batch x 5 bytes: 8 MB at E=1, 81 MB at E=10 for 3,383
clients) grow with E. The benchmark checks this with XLA's memory analysis of
the same round compiled at E=1 and E=10 (nothing runs), and defaults to
`--epochs 1`: the whole population's chunked round then takes ~4 minutes
here (~40 at 10 epochs).

Chunked rounds take longer than vmap's on CPU: every client's loop runs to
its chunk's largest step count (the chunks hold clients sorted by step
count), and a chunk's matmuls are batched (see docs/scaling.md). `--conv nhwc_vjp`
(`lax.conv` with a custom backward) made the chunked round ~4x slower
still here; the default, im2col, is also what `conv="auto"` picks on CPU.

Also checked: the chunked round's new model equals the vmap round's at the
smallest K (max abs difference of the parameters; float rounding only).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # clients.py; fedcore from this checkout

POPULATION_SIZE = 3383  # federated EMNIST's training clients
BATCH = 20
MB = 2**20


# ----------------------------------------------------------------------------- memory readings (Linux)


def _status(field: str) -> int:
    """A `/proc/self/status` field in bytes (VmRSS, VmHWM)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def _reset_peak() -> bool:
    """Resets the RSS high-water mark (VmHWM) to the current RSS; False if the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _release_freed_memory() -> None:
    """Collects garbage and returns glibc's freed heap to the OS (~0.9 GB after building the population)."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _available_bytes() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


# ----------------------------------------------------------------------------- one configuration (child)


def run_one(args: argparse.Namespace) -> dict[str, Any]:
    """Builds the population, runs one round (unless strategy is 'none'), reports memory and time."""
    import jax
    import numpy as np
    import optax

    import fedcore as fc
    from clients import make_population
    from fedcore.data import batch_population
    from fedcore.learning import build_weighted_fed_avg, models

    compile_seconds = [0.0]

    def listen(name: str, duration: float, **_: Any) -> None:
        if name in ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/backend_compile_duration",
                    "/jax/core/compile/jaxpr_to_mlir_module_duration"):
            compile_seconds[0] += duration

    jax.monitoring.register_event_duration_secs_listener(listen)

    clients = make_population(args.population)
    population = batch_population(clients, batch_size=BATCH, epochs=args.epochs)
    del clients
    _release_freed_memory()
    out: dict[str, Any] = {
        "k": args.k, "strategy": args.strategy, "chunk": args.chunk, "epochs": args.epochs,
        "store_bytes": sum(int(a.nbytes) for a in population.data.values()),
        "tables_bytes": int(population.index.nbytes + population.mask.nbytes),
        "rss_before": _status("VmRSS"),
    }
    if args.strategy == "none":
        out["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return out

    process = build_weighted_fed_avg(models.cnn(conv=args.conv), optax.sgd(0.02))
    state = process.initialize()
    ids = np.arange(args.k)
    cohort = population.select(ids)
    strategy = fc.ChunkedStrategy(args.chunk) if args.strategy == "chunked" else fc.VmapStrategy()
    jax.block_until_ready(state)
    _release_freed_memory()
    out["rss_before"] = _status("VmRSS")
    out["hwm_reset"] = _reset_peak()
    compile_before = compile_seconds[0]
    t = time.perf_counter()
    with fc.execution(strategy):
        new_state, metrics = process.next(state, cohort)
        jax.block_until_ready((new_state, metrics))
    out["seconds"] = time.perf_counter() - t
    out["compile_seconds"] = compile_seconds[0] - compile_before
    out["round_hwm"] = _status("VmHWM")
    out["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out["device_peak"] = (jax.local_devices()[0].memory_stats() or {}).get("peak_bytes_in_use")  # None on CPU
    out["loss"] = float(metrics["train"]["loss"])
    out["num_examples"] = int(metrics["train"]["num_examples"])
    if args.save:
        leaves = jax.tree.leaves(new_state.value.params)
        np.savez(args.save, *[np.asarray(a) for a in leaves])
    del new_state, metrics
    if args.analyze:
        out["xla"] = xla_memory(process, state, cohort, strategy)
    return out


def xla_memory(process, state, cohort, strategy) -> dict[str, int] | None:
    """XLA's memory analysis of the compiled round (temporaries, arguments, outputs), in bytes; compiles only."""
    import jax

    import fedcore as fc
    from fedcore.learning.algorithms._process import place_client_data

    try:
        with fc.execution(strategy):
            fn = jax.jit(lambda s, d: process.next_fn.fn(s, place_client_data(d)))
            analysis = fn.lower(state, cohort).compile().memory_analysis()
        return {
            "temp": int(analysis.temp_size_in_bytes),
            "argument": int(analysis.argument_size_in_bytes),
            "output": int(analysis.output_size_in_bytes),
        }
    except Exception as e:  # memory_analysis is optional on some backends
        print(f"memory_analysis failed: {e!r}", file=sys.stderr)
        return None


def analyze_epochs(args: argparse.Namespace) -> dict[str, Any]:
    """XLA temp memory of the same chunked round compiled at two epoch counts (nothing runs)."""
    import numpy as np
    import optax

    import fedcore as fc
    from clients import make_population
    from fedcore.data import batch_population
    from fedcore.learning import build_weighted_fed_avg, models

    clients = make_population(args.population)
    process = build_weighted_fed_avg(models.cnn(conv=args.conv), optax.sgd(0.02))
    state = process.initialize()
    out = {}
    for epochs in (1, 10):
        population = batch_population(clients, batch_size=BATCH, epochs=epochs)
        analysis = xla_memory(process, state, population.select(np.arange(args.k)), fc.ChunkedStrategy(args.chunk))
        out[str(epochs)] = {"steps": int(population.index.shape[1]), "xla": analysis}
        del population
        gc.collect()
    return out


# ----------------------------------------------------------------------------- the table (parent)


def child(cmd: list[str]) -> dict[str, Any] | None:
    """Runs `memory.py --one ...` in a fresh interpreter; its last stdout line is the JSON result."""
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), *cmd], capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"  child {' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}", flush=True)
        return None
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["child_seconds"] = time.perf_counter() - t
    return result


def fmt_mb(x: float | None) -> str:
    return "-" if x is None else f"{x / MB:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="K = 100, 300 only (~5 min)")
    parser.add_argument("--ks", default=None, help="cohort sizes for chunked (default 100,1000,3383)")
    parser.add_argument("--vmap-ks", default=None, help="cohort sizes for vmap (default 100,1000)")
    parser.add_argument("--chunk", type=int, default=32, help="chunk size (default 32)")
    parser.add_argument("--epochs", type=int, default=1, help="local epochs (default 1; memory does not depend on it)")
    parser.add_argument(
        "--conv",
        default="im2col",
        help="models.cnn(conv=...) (default im2col, as 'auto' on CPU; nhwc_vjp ran a chunked round ~4x slower here)",
    )
    parser.add_argument("--population", type=int, default=POPULATION_SIZE,
                        help=f"clients in the population (default {POPULATION_SIZE}; fewer only for dry runs)")
    parser.add_argument("--no-xla", action="store_true", help="skip XLA's memory analysis (a second compile per row)")
    # A child's arguments.
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--analyze-epochs", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--strategy", default="chunked", help=argparse.SUPPRESS)
    parser.add_argument("--k", type=int, default=100, help=argparse.SUPPRESS)
    parser.add_argument("--save", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--analyze", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.one:
        print(json.dumps(run_one(args)))
        return
    if args.analyze_epochs:
        print(json.dumps(analyze_epochs(args)))
        return

    import jax

    ks = [int(k) for k in (args.ks or ("100,300" if args.quick else "100,1000,3383")).split(",")]
    vmap_ks = [int(k) for k in (args.vmap_ks or ("100,300" if args.quick else "100,1000")).split(",") if k]
    start = time.perf_counter()
    print(
        f"memory.py: FedAvg, CNN (1.2M params, conv={args.conv}), one round on the first K of {args.population} synthetic clients, "
        f"batch {BATCH}, {args.epochs} epoch(s); jax {jax.__version__} on {platform.machine()}, "
        f"{os.cpu_count()} CPUs, {_available_bytes() / 2**30:.1f} GB available",
        flush=True,
    )
    tmp = tempfile.mkdtemp(prefix="fedcore-memory-")
    common = ["--one", "--epochs", str(args.epochs), "--conv", args.conv, "--population", str(args.population)]
    base = child([*common, "--strategy", "none"])
    assert base is not None, "the baseline child (building the population) failed"
    print(
        f"population: store {fmt_mb(base['store_bytes'])} MB, index tables {fmt_mb(base['tables_bytes'])} MB; "
        f"a child that only builds it: RSS after the build {fmt_mb(base['rss_before'])} MB, "
        f"peak while building {fmt_mb(base['peak_rss'])} MB",
        flush=True,
    )
    # Cheap rows first, then the largest cohorts (the longest rounds), largest first.
    configs = [("chunked", min(ks)), *(("vmap", k) for k in vmap_ks), *(("chunked", k) for k in sorted(ks)[:0:-1])]
    rows, saved = [], {}
    model_bytes = 1_206_590 * 4  # models.cnn()'s parameters, f32
    for strategy, k in configs:
        if strategy == "vmap":
            need = base["rss_before"] + 2.5 * k * model_bytes  # the stacked deltas, and headroom for a copy
            if _available_bytes() < need:
                print(f"  skipping vmap K={k}: needs ~{need / 2**30:.1f} GB, {_available_bytes() / 2**30:.1f} GB available")
                continue
        cmd = [*common, "--strategy", strategy, "--chunk", str(args.chunk), "--k", str(k)]
        if k == min(ks + vmap_ks):
            saved[strategy] = os.path.join(tmp, f"{strategy}.npz")
            cmd += ["--save", saved[strategy]]
        if not args.no_xla:
            cmd.append("--analyze")
        r = child(cmd)
        if r is None:
            continue
        rows.append(r)
        print(
            f"  {strategy:8s} K={k:5d}: peak RSS {fmt_mb(r['peak_rss'])} MB, round's own peak "
            f"{fmt_mb(r['round_hwm'] - r['rss_before'])} MB, {r['seconds']:.1f} s "
            f"(child {r['child_seconds']:.0f} s)"
            + (f", device peak {fmt_mb(r['device_peak'])} MB" if r.get("device_peak") is not None else ""),
            flush=True,
        )

    print()
    print(
        "| K | strategy | chunk | peak RSS MB | peak - baseline MB | round's own peak MB | XLA temp MB "
        "| round s (compile s) | examples |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in sorted(rows, key=lambda r: (r["strategy"], r["k"])):
        xla = r.get("xla") or {}
        print(
            f"| {r['k']:,} | {r['strategy']} | {r['chunk'] if r['strategy'] == 'chunked' else '-'} "
            f"| {fmt_mb(r['peak_rss'])} | {fmt_mb(r['peak_rss'] - base['rss_before'])} "
            f"| {fmt_mb(r['round_hwm'] - r['rss_before'])} | {fmt_mb(xla.get('temp'))} "
            f"| {r['seconds']:.1f} ({r['compile_seconds']:.1f}) | {r['num_examples']:,} |"
        )
    print(
        f"\npeak RSS: the child's lifetime peak (ru_maxrss). baseline: a child that only builds the population, "
        f"{fmt_mb(base['rss_before'])} MB after the build (peak {fmt_mb(base['peak_rss'])} MB while building); "
        f"the population's store {fmt_mb(base['store_bytes'])} MB, index tables {fmt_mb(base['tables_bytes'])} MB. "
        f"round's own peak: the RSS high-water mark during the round above the RSS just before it, same child."
    )

    if "chunked" in saved and "vmap" in saved and all(os.path.exists(p) for p in saved.values()):
        import numpy as np

        a, b = np.load(saved["chunked"]), np.load(saved["vmap"])
        diff = max(float(np.max(np.abs(a[f] - b[f]))) for f in a.files)
        scale = max(float(np.max(np.abs(b[f]))) for f in b.files)
        print(
            f"chunked (c={args.chunk}) vs vmap at K={min(ks + vmap_ks)}: max |new params difference| = {diff:.2e} "
            f"(largest parameter {scale:.2f})"
        )

    if not args.no_xla:
        k0 = min(ks)
        proc = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--analyze-epochs", "--k", str(k0), "--chunk", str(args.chunk),
             "--conv", args.conv, "--population", str(args.population)],
            capture_output=True, text=True,
        )
        if proc.returncode == 0:
            e = json.loads(proc.stdout.strip().splitlines()[-1])
            parts = [
                f"E={ep}: {v['steps']} padded steps, XLA temp {fmt_mb((v['xla'] or {}).get('temp'))} MB, "
                f"arguments {fmt_mb((v['xla'] or {}).get('argument'))} MB"
                for ep, v in e.items()
            ]
            print(f"epochs (chunked c={args.chunk}, K={k0}, compiled only): " + "; ".join(parts))
        else:
            print(f"epoch analysis failed:\n{proc.stderr[-2000:]}")
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
