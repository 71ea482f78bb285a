"""The `fedcore` command line: `fedcore train` and `fedcore describe-data`.

A thin layer: it resolves a `TrainConfig` (defaults < `--config` TOML file <
flags), composes a data set, a client sampler and batching into a
`round_data(r)` function, builds the model and the algorithm, and hands them
to `fedcore.learning.train` with a progress bar, a JSON-lines log and
checkpoints. See docs/cli.md.

```python
>>> from fedcore.cli import TrainConfig
>>> TrainConfig().resolved().server_lr
1.0
```
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import sys
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fedcore._atomic import atomic_writer

__all__ = ["TrainConfig", "ConfigError", "main", "build_parser", "resolve_config", "run_training"]

ALGORITHMS = ("fedavg", "fedsgd", "fedprox", "fedadam", "fedyogi", "scaffold")
MODELS = ("linear", "mlp", "cnn")
DATASETS = ("mnist5k", "emnist", "synthetic")
EXECUTIONS = ("vmap", "loop", "chunked", "sharded")
SERVER_LR_DEFAULTS = {"fedavg": 1.0, "fedprox": 1.0, "scaffold": 1.0, "fedsgd": 0.5, "fedadam": 0.01, "fedyogi": 0.01}


class ConfigError(ValueError):
    """A configuration value or file that cannot be used."""


def _field(default: Any, help: str, choices: Sequence[str] | None = None, metavar: str | None = None) -> Any:  # noqa: A002
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices, "metavar": metavar})


NON_FINITE = ("raise", "drop")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a `fedcore train` run; `config.toml` holds exactly these fields.

    The defaults are the seed tutorial's setting (softmax regression 784->10,
    zero init, client SGD 0.1 for 10 local epochs of batches of 20, server
    SGD 1.0) on the embedded MNIST-5k data, with 10 random clients per round.
    """

    algorithm: str = _field("fedavg", "federated algorithm", ALGORITHMS)
    model: str = _field("linear", "model: softmax regression, 2-hidden-layer MLP, or small CNN (28x28 images)", MODELS)
    dataset: str = _field("mnist5k", "data set (emnist needs its files, see --data-path)", DATASETS)
    rounds: int = _field(100, "number of rounds to train", metavar="N")
    clients_per_round: int = _field(10, "clients sampled uniformly at random each round", metavar="K")
    local_epochs: int = _field(10, "passes each client makes over its data per round (not fedsgd)", metavar="E")
    batch_size: int = _field(20, "client batch size", metavar="B")
    client_lr: float = _field(0.1, "client SGD learning rate (not fedsgd)", metavar="LR")
    server_lr: float | None = _field(
        None, "server learning rate: 1.0 fedavg/fedprox/scaffold, 0.5 fedsgd, 0.01 fedadam/fedyogi", metavar="LR"
    )
    mu: float = _field(0.01, "FedProx proximal strength (fedprox only)", metavar="MU")
    seed: int = _field(0, "seed of the data partition, client sampling, shuffling and model init", metavar="S")
    num_clients: int = _field(50, "population size of mnist5k and synthetic (emnist: its 3,383 writers)", metavar="N")
    dirichlet_alpha: float = _field(0.5, "mnist5k label skew: Dirichlet concentration (smaller: more skew)", metavar="ALPHA")
    shuffle: bool = _field(True, "reshuffle each client's examples every epoch")
    data_path: str = _field("", "emnist: directory with fed_emnist_digitsonly_{train,test}.h5 or the .tar.bz2, or emnist_all.sqlite[.lzma]", metavar="PATH")
    eval_every: int = _field(10, "evaluate on the test clients every R rounds and after the last (0: only at the end)", metavar="R")
    eval_clients: int = _field(0, "evaluate on a fixed random subset of N test clients (0: all)", metavar="N")
    execution: str = _field("vmap", "execution strategy of the per-client work", EXECUTIONS)
    chunk_size: int = _field(0, "chunked execution: clients per chunk (0: half the clients per round)", metavar="C")
    checkpoint_every: int = _field(10, "checkpoint every N rounds and after the last (0: only at the end)", metavar="N")
    keep: int = _field(3, "number of newest checkpoints to keep", metavar="K")
    non_finite: str = _field("raise", "a client update with NaN/Inf: stop with an error, or drop it (weight 0, TFF's way)", NON_FINITE)

    def resolved(self) -> TrainConfig:
        """The config with algorithm-dependent defaults filled in (what `config.toml` stores)."""
        if self.server_lr is None:
            if self.algorithm not in SERVER_LR_DEFAULTS:
                raise ConfigError(f"algorithm must be one of {', '.join(ALGORITHMS)}; got {self.algorithm!r}.")
            return dataclasses.replace(self, server_lr=SERVER_LR_DEFAULTS[self.algorithm])
        return self

    def execution_options(self) -> dict[str, Any]:
        """Keyword options of `fc.execution(self.execution, ...)`."""
        if self.execution == "chunked":
            return {"chunk_size": self.chunk_size or max(1, self.clients_per_round // 2)}
        return {}

    def checkpoint_tag(self) -> dict[str, Any]:
        """The fields a checkpoint must agree on to be resumed (all but rounds, evaluation, execution, checkpointing)."""
        loose = {"rounds", "eval_every", "eval_clients", "execution", "chunk_size", "checkpoint_every", "keep"}
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in loose}


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_TYPES = {"algorithm": str, "model": str, "dataset": str, "data_path": str, "execution": str, "shuffle": bool,
          "non_finite": str}
for _f in dataclasses.fields(TrainConfig):
    _TYPES.setdefault(_f.name, float if _f.name in ("client_lr", "server_lr", "mu", "dirichlet_alpha") else int)


def _coerce(name: str, value: Any, source: str) -> Any:
    kind = _TYPES[name]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
        raise ConfigError(f"{source}: {name} must be {kind.__name__}, got {value!r} ({type(value).__name__}).")
    return value


def _check(cfg: TrainConfig) -> TrainConfig:
    for name in ("algorithm", "model", "dataset", "execution", "non_finite"):
        choices = FIELDS[name].metadata["choices"]
        if getattr(cfg, name) not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {getattr(cfg, name)!r}.")
    for name, low in (("rounds", 1), ("clients_per_round", 1), ("local_epochs", 1), ("batch_size", 1),
                      ("num_clients", 1), ("eval_every", 0), ("eval_clients", 0), ("checkpoint_every", 0),
                      ("keep", 1), ("seed", 0), ("chunk_size", 0)):
        if getattr(cfg, name) < low:
            raise ConfigError(f"{name} must be >= {low}; got {getattr(cfg, name)}.")
    for name in ("client_lr", "server_lr", "dirichlet_alpha"):
        if not getattr(cfg, name) > 0:
            raise ConfigError(f"{name} must be > 0; got {getattr(cfg, name)}.")
    if cfg.mu < 0:
        raise ConfigError(f"mu must be >= 0; got {cfg.mu}.")
    if cfg.model == "cnn" and cfg.dataset == "synthetic":
        raise ConfigError("The cnn model needs 28x28 images; synthetic has 60 features. Use --model linear or mlp.")
    return cfg


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The fields of a TOML config file, checked against `TrainConfig`'s names and types."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"Config file {path} does not exist.") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"Config file {path} is not valid TOML: {e}.") from None
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise ConfigError(f"Config file {path}: unknown field(s) {unknown}; known fields: {', '.join(FIELDS)}.")
    return {k: _coerce(k, v, f"Config file {path}") for k, v in raw.items()}


def resolve_config(
    flags: dict[str, Any], config_file: str | os.PathLike[str] | None = None
) -> TrainConfig:
    """Defaults, overridden by the config file's fields, overridden by `flags` (None = not given); checked."""
    values: dict[str, Any] = {}
    if config_file is not None:
        values.update(read_config_file(config_file))
    values.update({k: v for k, v in flags.items() if v is not None})
    return _check(TrainConfig(**values).resolved())


# ---------------------------------------------------------------------------------------------
# Composition: data, model, algorithm


@dataclasses.dataclass
class Population:
    """A data set's train and test clients and the model sizes they need (`test is train` for synthetic)."""

    train: Any
    test: Any
    input_dim: int
    num_classes: int
    test_is_train: bool = False


def load_population(dataset: str, *, num_clients: int = 50, dirichlet_alpha: float = 0.5, seed: int = 0,
                    data_path: str = "") -> Population:
    """The train and test client populations of a data set, with the model's input and output sizes."""
    from fedcore.data.datasets import emnist, mnist5k, synthetic

    if dataset == "mnist5k":
        train, test = mnist5k.load_data(num_clients=num_clients, alpha=dirichlet_alpha, seed=seed)
        return Population(train, test, 784, 10)
    if dataset == "emnist":
        train, test = emnist.load_data(only_digits=True, path=data_path or None, invert=True, flatten=True)
        return Population(train, test, 784, 10)
    if dataset == "synthetic":
        train = synthetic.load_data(num_clients=num_clients, seed=seed)
        return Population(train, train, int(train.element_spec["x"].shape[0]), 10, test_is_train=True)
    raise ConfigError(f"dataset must be one of {', '.join(DATASETS)}; got {dataset!r}.")


def build_model(cfg: TrainConfig, input_dim: int, num_classes: int) -> Any:
    import jax

    from fedcore.learning import models

    key = jax.random.key(cfg.seed)
    if cfg.model == "linear":
        return models.linear(input_dim, num_classes)
    if cfg.model == "mlp":
        return models.mlp(input_dim, num_classes, key=key)
    if input_dim != 784:
        raise ConfigError(f"The cnn model needs 28x28 (784) inputs; {cfg.dataset} has {input_dim}.")
    return models.cnn(num_classes, key=key)


def build_process(cfg: TrainConfig, model: Any, population_size: int) -> Any:
    import optax

    from fedcore import learning

    client_opt = optax.sgd(cfg.client_lr)
    lr = cfg.server_lr
    if cfg.algorithm == "fedavg":
        return learning.build_weighted_fed_avg(model, client_opt, optax.sgd(lr), non_finite=cfg.non_finite)
    if cfg.algorithm == "fedprox":
        return learning.build_fed_prox(model, client_opt, optax.sgd(lr), proximal_strength=cfg.mu, non_finite=cfg.non_finite)
    if cfg.algorithm == "fedadam":
        return learning.build_weighted_fed_avg(model, client_opt, optax.adam(lr, b1=0.9, b2=0.99, eps=1e-3), non_finite=cfg.non_finite)
    if cfg.algorithm == "fedyogi":
        return learning.build_weighted_fed_avg(model, client_opt, optax.yogi(lr, b1=0.9, b2=0.99, eps=1e-3), non_finite=cfg.non_finite)
    if cfg.algorithm == "fedsgd":
        return learning.build_fed_sgd(model, optax.sgd(lr), non_finite=cfg.non_finite)
    if cfg.algorithm == "scaffold":
        return learning.build_scaffold(model, cfg.client_lr, population_size, optax.sgd(lr), non_finite=cfg.non_finite)
    raise ConfigError(f"algorithm must be one of {', '.join(ALGORITHMS)}; got {cfg.algorithm!r}.")


def make_round_data(cfg: TrainConfig, train: Any) -> Callable[[int], Any]:
    """`round_data(r)`: the clients of round `r` and their batches, a pure function of `(seed, r)`."""
    import jax
    import numpy as np

    from fedcore.data import UniformSampler, batch_clients

    if cfg.clients_per_round > len(train):
        raise ConfigError(
            f"clients_per_round={cfg.clients_per_round} exceeds the {len(train)} clients of {cfg.dataset}."
        )
    sampler = UniformSampler(train.client_ids, k=cfg.clients_per_round, seed=cfg.seed)
    position = {cid: i for i, cid in enumerate(train.client_ids)}
    epochs = 1 if cfg.algorithm == "fedsgd" else cfg.local_epochs

    def round_data(r: int) -> Any:
        ids = sampler.sample(r)
        batches = batch_clients(
            [train.dataset(cid) for cid in ids], cfg.batch_size, epochs,
            shuffle=cfg.shuffle, key=jax.random.fold_in(sampler.key(r), 1),
        )
        if cfg.algorithm == "scaffold":
            return batches, np.asarray([position[cid] for cid in ids], np.int32)
        return batches

    return round_data


def make_eval_fn(cfg: TrainConfig, model: Any, process: Any, test: Any) -> Callable[[Any], Any]:
    """`eval_fn(state)`: federated evaluation of the state's model on the (fixed) test clients."""
    import jax

    from fedcore.data import batch_clients, sample_clients
    from fedcore.learning import build_fed_eval

    ids = list(test.client_ids)
    if cfg.eval_clients > len(ids):
        raise ConfigError(
            f"--eval-clients {cfg.eval_clients} exceeds the {len(ids)} test clients; pass at most {len(ids)} (0: all)."
        )
    if cfg.eval_clients and cfg.eval_clients < len(ids):
        ids = sample_clients(ids, cfg.eval_clients, jax.random.fold_in(jax.random.key(cfg.seed), 2**31 - 1))
    batches = batch_clients([test.dataset(cid) for cid in ids], max(cfg.batch_size, 64), 1)
    evaluator = build_fed_eval(model)
    initial = evaluator.initialize()

    def eval_fn(state: Any) -> Any:
        eval_state = evaluator.set_model_weights(initial, process.get_model_weights(state))
        return evaluator.next(eval_state, batches)[1]

    return eval_fn


# ---------------------------------------------------------------------------------------------
# fedcore train


def _default_out() -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path("runs") / stamp
    n = 1
    while out.exists():
        n += 1
        out = Path("runs") / f"{stamp}-{n}"
    return out


def _latest_run(root: Path = Path("runs")) -> Path | None:
    runs = sorted(p for p in root.glob("*") if (p / "config.toml").is_file()) if root.is_dir() else []
    return max(runs, key=lambda p: (p / "config.toml").stat().st_mtime) if runs else None


OUTPUT_FILES = ("metrics.jsonl", "config.toml", "curves.png")


def _write_config(cfg: TrainConfig, path: Path) -> None:
    import tomli_w

    with atomic_writer(path) as f:
        f.write(tomli_w.dumps(dataclasses.asdict(cfg)))


class Diverged(ValueError):
    """Training stopped on a non-finite client update."""


def _check_resumable(cfg: TrainConfig, out: Path) -> None:
    """Before anything is written: the newest checkpoint's tag equals this config's, else the differing fields."""
    from fedcore.learning import CheckpointError, CheckpointManager, read_checkpoint_header

    for _, path in reversed(CheckpointManager(out / "checkpoints").checkpoints()):
        try:
            saved = read_checkpoint_header(path)["tag"]
            break
        except CheckpointError:  # a corrupt one: `train` warns and falls back to an older one
            continue
    else:
        return
    want = json.loads(json.dumps(cfg.checkpoint_tag(), sort_keys=True))
    diff = [f"{k}: {saved.get(k)!r} -> {want.get(k)!r}" for k in sorted(set(saved) | set(want)) if saved.get(k) != want.get(k)]
    if diff:
        raise ConfigError(
            f"--resume: the checkpoint in {out / 'checkpoints'} was written with other settings ({'; '.join(diff)}); "
            "drop those flags to continue it, or start a new run with another --out."
        )


def run_training(cfg: TrainConfig, out: Path, *, resume: bool = False, console: Any = None) -> Any:
    """Runs a resolved config into `out` (metrics.jsonl, config.toml, curves.png, checkpoints); returns the `TrainResult`."""
    import fedcore as fc
    from fedcore import learning

    from rich.console import Console

    console = console or Console()
    population = load_population(
        cfg.dataset, num_clients=cfg.num_clients, dirichlet_alpha=cfg.dirichlet_alpha, seed=cfg.seed,
        data_path=cfg.data_path,
    )
    model = build_model(cfg, population.input_dim, population.num_classes)
    process = build_process(cfg, model, len(population.train))
    round_data = make_round_data(cfg, population.train)
    eval_fn = make_eval_fn(cfg, model, process, population.test)
    try:
        with fc.execution(cfg.execution, **cfg.execution_options()):
            pass
    except (TypeError, ValueError) as e:
        raise ConfigError(f"execution {cfg.execution!r}: {e}") from None
    if resume:
        _check_resumable(cfg, out)
    _write_config(cfg, out / "config.toml")
    console.print(
        f"fedcore train: {cfg.algorithm}, {cfg.model} model, {cfg.dataset} "
        f"({len(population.train)} clients, {cfg.clients_per_round} per round), {cfg.rounds} rounds, "
        f"execution {cfg.execution} -> {out}",
        highlight=False,
        soft_wrap=True,
    )
    if resume and learning.CheckpointManager(out / "checkpoints").latest_round() is None:
        console.print(f"no checkpoint in {out / 'checkpoints'}: starting from round 0", highlight=False)
    callbacks = [learning.ProgressBar(console), learning.JsonlLogger(out / "metrics.jsonl")]
    try:
        with fc.execution(cfg.execution, **cfg.execution_options()):
            result = learning.train(
                process, round_data, cfg.rounds,
                eval_fn=eval_fn, eval_every=cfg.eval_every, callbacks=callbacks,
                checkpoint_dir=out / "checkpoints", checkpoint_every=cfg.checkpoint_every, keep=cfg.keep,
                resume=resume, checkpoint_tag=cfg.checkpoint_tag(), donate_state=True,  # the CLI owns the state
            )
    except RuntimeError as e:  # equinox's run-time errors (a diverging run) are RuntimeErrors
        if "not finite" not in str(e):
            raise
        raise Diverged(
            f"a client update became NaN or Inf (non_finite={cfg.non_finite!r}); lower --client-lr, or add "
            f"--non-finite drop to give such updates weight 0. The last good checkpoint is in {out / 'checkpoints'} "
            f"and the curves so far in {out / 'curves.png'}."
        ) from e
    finally:
        try:
            if (out / "metrics.jsonl").is_file():
                learning.plot_curves(out / "metrics.jsonl", out / "curves.png")
        except ImportError as e:
            console.print(f"(no curves.png: {e})")
    _print_summary(console, cfg, result, out, population.test_is_train)
    return result


def _print_summary(console: Any, cfg: TrainConfig, result: Any, out: Path, eval_on_train: bool) -> None:
    from rich import box
    from rich.table import Table

    table = Table(title="summary", box=box.SIMPLE if console.is_terminal else box.ASCII, show_header=False)
    table.add_column("")
    table.add_column("value", justify="right")
    span = f"{result.start_round} -> {result.rounds}" if result.start_round else str(result.rounds)
    table.add_row("rounds", span)
    for label, metrics in (("train", result.final_train), ("eval" + (" (train clients)" if eval_on_train else ""), result.final_eval)):
        for name in ("loss", "accuracy"):
            if metrics and name in metrics:
                table.add_row(f"{label} {name}", f"{metrics[name]:.4f}")
    table.add_row("wall time", f"{result.wall_seconds:.2f} s")
    if result.first_round_seconds is not None:
        table.add_row("compile time (first round)", f"{result.first_round_seconds:.2f} s")
    if result.rounds_per_second is not None:
        table.add_row("rounds/s", f"{result.rounds_per_second:.1f}")
    table.add_row("output", str(out))
    console.print(table)


def _train_command(args: argparse.Namespace) -> int:
    from fedcore.learning import CheckpointError, CheckpointManager

    from rich.console import Console

    if args.resume and args.overwrite:
        raise ConfigError("--resume continues a run and --overwrite replaces it; pass only one of them.")
    out = Path(args.out) if args.out else None
    if out is not None and out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; --out must be a directory (new or holding a run).")
    if out is None and args.resume:
        out = _latest_run()
        if out is None:
            raise ConfigError("--resume found no run under runs/ to continue; pass --out DIR.")
    out = out or _default_out()
    config_file = args.config
    if config_file is None and args.resume and (out / "config.toml").is_file():
        config_file = out / "config.toml"
    flags = {name: getattr(args, name) for name in FIELDS}
    cfg = resolve_config(flags, config_file)
    if not args.resume:
        existing = [n for n in (*OUTPUT_FILES, "checkpoints") if (out / n).exists()]
        if existing and not args.overwrite:
            raise ConfigError(
                f"{out} already holds a run ({', '.join(existing)}); pass --resume to continue it, "
                "--overwrite to replace it, or another --out."
            )
        if existing:
            for n in OUTPUT_FILES:
                (out / n).unlink(missing_ok=True)
            for _, p in CheckpointManager(out / "checkpoints").checkpoints():
                p.unlink()
    console = Console()
    try:
        run_training(cfg, out, resume=args.resume, console=console)
    except CheckpointError as e:
        print(f"fedcore train: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\ninterrupted; continue with: fedcore train --out {out} --resume", file=sys.stderr)
        return 130
    return 0


# ---------------------------------------------------------------------------------------------
# fedcore describe-data


def _describe_command(args: argparse.Namespace) -> int:
    if args.max_rows < 0:
        raise ConfigError(f"--max-rows must be >= 0; got {args.max_rows}.")
    population = load_population(
        args.dataset, num_clients=args.num_clients, dirichlet_alpha=args.dirichlet_alpha, seed=args.seed,
        data_path=args.data_path,
    )
    data = population.test if args.split == "test" else population.train
    summary = data.describe()
    print(f"{args.dataset} ({args.split}):")
    print(summary.table(max_rows=args.max_rows))
    if args.plot:
        summary.plot(args.plot)
        print(f"label skew plot: {args.plot}")
    return 0


# ---------------------------------------------------------------------------------------------
# Parser


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _default_text(f: dataclasses.Field) -> str:
    if f.name == "server_lr":
        return "by algorithm"
    if f.default == "":
        return '""'
    if isinstance(f.default, bool):
        return str(f.default).lower()
    return str(f.default)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `fedcore` command."""
    parser = argparse.ArgumentParser(
        prog="fedcore", description="Federated learning on JAX: train and inspect data from the command line."
    )
    debug_help = "show the full traceback of an error instead of its one-line message"
    parser.add_argument("--debug", action="store_true", help=debug_help)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{train,describe-data}")
    train = sub.add_parser(
        "train",
        help="train a model with a federated algorithm",
        description="Train a model with a federated algorithm. Every field can also be set in a TOML file "
        "(--config); flags override the file. Outputs go to --out: metrics.jsonl, config.toml, curves.png "
        "and checkpoints/.",
        epilog="examples: fedcore train --rounds 200 --algorithm fedadam | "
        "fedcore train --config runs/x/config.toml | fedcore train --out runs/x --resume --rounds 300",
    )
    train.add_argument("--config", metavar="FILE", help="TOML file with any of the fields below (flags override it)")
    train.add_argument("--out", metavar="DIR", help="output directory (default: runs/<timestamp>)")
    train.add_argument(
        "--resume", action="store_true",
        help="continue the run in --out (default: the newest under runs/) from its latest checkpoint; "
        "its config.toml is the base config unless --config is given",
    )
    train.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help)
    train.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    for f in dataclasses.fields(TrainConfig):
        kw: dict[str, Any] = {"default": None, "help": f"{f.metadata['help']} (default: {_default_text(f)})"}
        if f.metadata["choices"]:
            kw["choices"] = f.metadata["choices"]
        if _TYPES[f.name] is bool:
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw["type"] = _TYPES[f.name]
            kw["metavar"] = f.metadata["metavar"]
        train.add_argument(_flag(f.name), dest=f.name, **kw)
    train.set_defaults(handler=_train_command)

    describe = sub.add_parser(
        "describe-data", help="print a data set's client population: sizes and label skew",
        description="Print a data set's client population: client sizes and labels per client.",
    )
    defaults = TrainConfig()
    describe.add_argument("--dataset", choices=DATASETS, default=defaults.dataset, help="data set (default: mnist5k)")
    describe.add_argument("--split", choices=("train", "test"), default="train", help="population (default: train)")
    describe.add_argument("--num-clients", type=int, default=defaults.num_clients, help="population size for mnist5k and synthetic (default: 50)")
    describe.add_argument("--dirichlet-alpha", type=float, default=defaults.dirichlet_alpha, help="mnist5k label skew (default: 0.5)")
    describe.add_argument("--seed", type=int, default=defaults.seed, help="partition seed (default: 0)")
    describe.add_argument("--data-path", default="", help="emnist: directory with the HDF5 files or the archive, or emnist_all.sqlite[.lzma]")
    describe.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help)
    describe.add_argument("--max-rows", type=int, default=20, help="clients listed (default: 20)")
    describe.add_argument("--plot", metavar="FILE", help="also save a label-skew bar chart (PNG)")
    describe.set_defaults(handler=_describe_command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the `fedcore` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except ConfigError as e:
        if getattr(args, "debug", False):
            raise
        print(f"fedcore {args.command}: error: {e}", file=sys.stderr)
        return 2
    except (ValueError, OSError, ImportError) as e:
        if getattr(args, "debug", False):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"fedcore {args.command}: error: {first} (run with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
