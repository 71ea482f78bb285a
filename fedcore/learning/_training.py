"""The training loop: rounds of an iterative process, with evaluation, callbacks and checkpoints.

`train` runs `process.next` round after round on the data that `round_data(r)`
produces for round `r` (0-based: the number of rounds completed before it),
evaluates every few rounds, reports each round to callbacks (a progress bar,
a JSON-lines log, your own) and checkpoints the state. The learning layer
never loads data: `round_data` is where a caller samples and batches clients.
Make it a pure function of the round number (e.g. sample with
`fold_in(key(seed), r)`) and a resumed run equals an uninterrupted one bit
for bit.

```python
>>> import optax, numpy as np, fedcore as fc
>>> from fedcore.learning import models, build_weighted_fed_avg, train
>>> from fedcore.core import ClientBatches
>>> process = build_weighted_fed_avg(models.linear(4, 2), optax.sgd(0.1))
>>> batches = ClientBatches.from_materialized({"x": np.ones((2, 1, 3, 4), np.float32),
...     "y": np.zeros((2, 1, 3), np.int32), "mask": np.ones((2, 1, 3), bool)})
>>> result = train(process, lambda r: batches, rounds=3)
>>> [rec.round for rec in result.records], result.records[-1].train["num_examples"]
([1, 2, 3], 6)
```
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import fedcore.core as fc
from fedcore._atomic import atomic_writer

from .algorithms._checks import check_callbacks
from ._checkpoint import CheckpointManager

__all__ = [
    "RoundRecord",
    "TrainResult",
    "Callback",
    "JsonlLogger",
    "ProgressBar",
    "train",
    "scalar_metrics",
    "read_metrics",
    "plot_curves",
]


def _to_python(x: Any) -> Any:
    a = np.asarray(x)
    if a.ndim == 0:
        return a.item()
    return a.tolist()


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, Mapping):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(_flatten(v, f"{prefix}{k}/"))
        return out
    return {prefix.rstrip("/") or "value": _to_python(tree)}


def scalar_metrics(metrics: Any, section: str = "train") -> dict[str, Any]:
    """A process's metrics as plain Python numbers, keyed by name.

    Placed values are unwrapped. With TFF's layout (`{"client_work": ...,
    "train": {...}, other...}`) the result is `metrics[section]` plus the
    other top-level entries (e.g. `num_non_finite_updates`); otherwise the
    nested mapping is flattened with `/`-joined keys.

    ```python
    >>> import fedcore as fc, jax.numpy as jnp
    >>> scalar_metrics({"client_work": {}, "train": {"loss": fc.server_value(jnp.float32(0.5))}})
    {'loss': 0.5}
    ```
    """
    tree = jax.device_get(jax.tree.map(lambda v: v.value if fc.is_placed(v) else v, metrics, is_leaf=fc.is_placed))
    if isinstance(tree, Mapping) and section in tree:
        out = _flatten(tree[section])
        for k, v in tree.items():
            if k not in (section, "client_work"):
                out.update(_flatten(v, f"{k}/"))
        return out
    return _flatten(tree)


@dataclasses.dataclass(frozen=True)
class RoundRecord:
    """What one round reports: its number (1-based), train metrics, eval metrics (when run) and wall time."""

    round: int
    train: dict[str, Any]
    eval: dict[str, Any] | None
    seconds: float

    def to_json(self) -> dict[str, Any]:
        """The record as one JSON object (`eval` only when evaluation ran this round)."""
        out: dict[str, Any] = {"round": self.round, "train": self.train}
        if self.eval is not None:
            out["eval"] = self.eval
        out["seconds"] = self.seconds
        return out


@dataclasses.dataclass
class TrainResult:
    """What `train` returns: the final state, this call's records and timings.

    `first_round_seconds` is the first round's wall time, compilation
    included; `rounds_per_second` is the speed over the other rounds.
    """

    state: Any
    records: list[RoundRecord]
    start_round: int
    rounds: int
    wall_seconds: float
    first_round_seconds: float | None

    @property
    def final_train(self) -> dict[str, Any] | None:
        """Train metrics of the last round run (None if no round ran)."""
        return self.records[-1].train if self.records else None

    @property
    def final_eval(self) -> dict[str, Any] | None:
        """Metrics of the last evaluation (None if none ran)."""
        evals = [r.eval for r in self.records if r.eval is not None]
        return evals[-1] if evals else None

    @property
    def rounds_per_second(self) -> float | None:
        """Rounds per second after the first (compiling) round; over all rounds if only one ran."""
        n = len(self.records)
        if n == 0:
            return None
        if n == 1 or self.first_round_seconds is None:
            return n / max(self.wall_seconds, 1e-9)
        return (n - 1) / max(self.wall_seconds - self.first_round_seconds, 1e-9)


class Callback:
    """Hooks into `train`; override any of them.

    `on_train_begin(start_round, rounds)` is called once, with the number of
    rounds already done (non-zero on resume) and the target;
    `on_round_end(record)` after every round; `on_train_end(result)` once at
    the end.
    """

    def on_train_begin(self, start_round: int, rounds: int) -> None:
        pass

    def on_round_end(self, record: RoundRecord) -> None:
        pass

    def on_train_end(self, result: TrainResult) -> None:
        pass


class JsonlLogger(Callback):
    """Appends one JSON line per round to `path` (see `RoundRecord.to_json`).

    On resume from round `r` it first drops the lines of rounds after `r`
    (written by the interrupted run and about to be redone); a fresh run
    (`start_round == 0`) starts an empty file.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)

    def on_train_begin(self, start_round: int, rounds: int) -> None:
        kept = [r for r in read_metrics(self.path) if r["round"] <= start_round] if start_round else []
        with atomic_writer(self.path) as f:
            f.write("".join(json.dumps(r) + "\n" for r in kept))

    def on_round_end(self, record: RoundRecord) -> None:
        # An append, not an atomic rewrite: rewriting the file every round costs
        # O(rounds) per round, and a line torn by a crash is harmless (`read_metrics`
        # stops at it and the resume above rewrites the file without it). The fsync
        # is what matters: `train` calls the callbacks before it saves the round's
        # checkpoint, so a checkpoint that survived a power cut implies its round's
        # line did too, and a resumed run's metrics have no hole.
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record.to_json()) + "\n")
            f.flush()
            os.fsync(f.fileno())


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a `metrics.jsonl` file ([] if it does not exist); a torn last line is ignored."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            break  # a line cut short by a crash: everything after it is unreliable
    return records


def _format_metrics(record: RoundRecord) -> str:
    parts = []
    for name in ("loss", "accuracy"):
        if name in record.train:
            parts.append(f"{name} {record.train[name]:.4f}")
    if record.eval:
        for name in ("loss", "accuracy"):
            if name in record.eval:
                parts.append(f"eval_{name} {record.eval[name]:.4f}")
    return "  ".join(parts)


def _format_eta(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class ProgressBar(Callback):
    """A `rich` progress bar: round, loss, accuracy, rounds/s and ETA.

    When the console is not a terminal (CI, a pipe), prints about `lines`
    plain lines instead (the first round, every `rounds / lines` rounds, the
    last round).
    """

    def __init__(self, console: Any = None, *, lines: int = 10):
        from rich.console import Console

        self.console = console if console is not None else Console()
        self.lines = max(1, lines)
        self._progress: Any = None

    def on_train_begin(self, start_round: int, rounds: int) -> None:
        self._start, self._rounds = start_round, rounds
        self._t0 = time.perf_counter()
        self._every = max(1, math.ceil((rounds - start_round) / self.lines))
        if self.console.is_terminal:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("round {task.completed}/{task.total}"),
                BarColumn(),
                TextColumn("{task.fields[metrics]}"),
                TextColumn("{task.fields[rate]}"),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task("train", total=rounds, completed=start_round, metrics="", rate="")
        elif start_round:
            self.console.print(f"resuming at round {start_round}/{rounds}")

    def _rate(self, done: int) -> float | None:
        """Rounds per second after this run's first round (which compiles); None before there is one."""
        if done - self._start <= 1:
            self._t_first = time.perf_counter()
            return None
        return (done - self._start - 1) / max(time.perf_counter() - self._t_first, 1e-9)

    def on_round_end(self, record: RoundRecord) -> None:
        rate = self._rate(record.round)
        speed = f"first round {record.seconds:.1f} s" if rate is None else f"{rate:.1f} rounds/s"
        if self._progress is not None:
            self._progress.update(self._task, completed=record.round, metrics=_format_metrics(record), rate=speed)
            return
        n = record.round - self._start
        if n == 1 or n % self._every == 0 or record.round == self._rounds:
            eta = "-" if rate is None else _format_eta((self._rounds - record.round) / max(rate, 1e-9))
            self.console.print(
                f"round {record.round}/{self._rounds}  {_format_metrics(record)}  {speed}  ETA {eta}",
                highlight=False,
                soft_wrap=True,
            )

    def on_train_end(self, result: TrainResult) -> None:
        self.close()

    def close(self) -> None:
        """Stops the live bar (also after an error)."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def _check_count(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}.")
    return int(value)


def train(
    process: fc.IterativeProcess,
    round_data: Callable[[int], Any],
    rounds: int,
    *,
    state: Any = None,
    eval_fn: Callable[[Any], Any] | None = None,
    eval_every: int = 0,
    callbacks: Sequence[Callback] = (),
    checkpoint_dir: str | os.PathLike[str] | None = None,
    checkpoint_every: int = 0,
    keep: int = 3,
    resume: bool = False,
    checkpoint_tag: Mapping[str, Any] | None = None,
    donate_state: bool = False,
) -> TrainResult:
    """Runs `process` until `rounds` rounds are done; returns the final state and the records.

    - `round_data(r)` gives the arguments of round `r + 1` after the state:
      a tuple is unpacked (`process.next(state, *round_data(r))`, e.g.
      `(batches, client_ids)` for SCAFFOLD), anything else is passed as is.
    - `state` is the initial state (default `process.initialize()`; also the
      template that checkpoints are read into).
    - `eval_fn(state)` returns metrics (e.g. a `build_fed_eval` process's,
      whose `"eval"` entry is used); it runs every `eval_every` rounds and
      after the last one (`eval_every=0`: only after the last one).
    - `callbacks` see every round (`ProgressBar`, `JsonlLogger`, your own).
    - With `checkpoint_dir`, the state is checkpointed every
      `checkpoint_every` rounds (0: only at the end), after the last round and
      on Ctrl-C, keeping the newest `keep`. `checkpoint_tag` (a JSON mapping,
      e.g. the algorithm and seed) is stored and must match on resume.
    - `resume=True` continues from the newest loadable checkpoint in
      `checkpoint_dir` (from the start if there is none).
    - `donate_state=True` runs `process.donating()`: each round may write the
      new state into the old state's buffers (one state in memory instead of
      two, which matters for large models on accelerators; no gain measured
      on CPU). The state you pass is copied first and stays usable; the
      states of intermediate rounds do not survive their next round.
    """
    rounds = _check_count("rounds", rounds, 0)
    eval_every = _check_count("eval_every", eval_every, 0)
    checkpoint_every = _check_count("checkpoint_every", checkpoint_every, 0)
    if not callable(round_data):
        raise TypeError(f"round_data must be a function of the round number, got {type(round_data).__name__}.")
    manager = CheckpointManager(checkpoint_dir, keep) if checkpoint_dir is not None else None
    if resume and manager is None:
        raise ValueError("resume=True needs checkpoint_dir (where the checkpoints are).")
    if state is None:
        state = process.initialize()
    elif donate_state:
        state = jax.tree.map(jnp.copy, state)  # the caller's state must survive the first round
    if donate_state:
        process = process.donating()
    start = 0
    if resume:
        restored = manager.restore(state, tag=checkpoint_tag)
        if restored is not None:
            state, start = restored.state, restored.round_num
    if start > rounds:
        raise ValueError(
            f"The checkpoint in {checkpoint_dir} is at round {start}, past rounds={rounds}; "
            f"ask for at least {start} rounds to continue it."
        )

    callbacks = list(callbacks)
    check_callbacks(callbacks)
    for cb in callbacks:
        cb.on_train_begin(start, rounds)
    records: list[RoundRecord] = []
    reported = (start, state)  # the newest state whose round the callbacks have seen
    saved = start if resume and start else None
    t_begin = time.perf_counter()
    try:
        for r in range(start, rounds):
            t0 = time.perf_counter()
            args = round_data(r)
            state, metrics = process.next(state, *(args if isinstance(args, tuple) else (args,)))
            done = r + 1
            train_metrics = scalar_metrics(metrics, "train")
            eval_metrics = None
            if eval_fn is not None and (done == rounds or (eval_every and done % eval_every == 0)):
                eval_metrics = scalar_metrics(eval_fn(state), "eval")
            record = RoundRecord(done, train_metrics, eval_metrics, time.perf_counter() - t0)
            records.append(record)
            for cb in callbacks:
                cb.on_round_end(record)
            reported = (done, state)
            if manager is not None and (done == rounds or (checkpoint_every and done % checkpoint_every == 0)):
                manager.save(state, done, tag=checkpoint_tag)
                saved = done
    except KeyboardInterrupt:
        done, last = reported
        # With donation, a round interrupted after it started has consumed the last state:
        # the newest checkpoint is then the last one saved.
        consumed = any(getattr(a, "is_deleted", lambda: False)() for a in jax.tree.leaves(last))
        if manager is not None and done != saved and done > 0 and not consumed:
            manager.save(last, done, tag=checkpoint_tag)
        raise
    finally:
        for cb in callbacks:
            if isinstance(cb, ProgressBar):
                cb.close()
    wall = time.perf_counter() - t_begin
    result = TrainResult(state, records, start, rounds, wall, records[0].seconds if records else None)
    for cb in callbacks:
        cb.on_train_end(result)
    return result


def plot_curves(records: Sequence[Mapping[str, Any]] | str | os.PathLike[str], path: str | os.PathLike[str]) -> Path:
    """Saves loss and accuracy against the round (train and eval) as an image (matplotlib, Agg backend).

    `records` are `RoundRecord.to_json()` dicts or the path of a `metrics.jsonl`.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError('plot_curves needs matplotlib: pip install "fedcore[plot]"') from e
    if isinstance(records, (str, os.PathLike)):
        records = read_metrics(records)
    records = [r.to_json() if isinstance(r, RoundRecord) else r for r in records]
    fig = Figure(figsize=(9, 3.6), dpi=110)
    FigureCanvasAgg(fig)
    for i, name in enumerate(("loss", "accuracy")):
        ax = fig.add_subplot(1, 2, i + 1)
        for section, style in (("train", "-"), ("eval", "o-")):
            pts = [(r["round"], r[section][name]) for r in records if r.get(section) and name in r[section]]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, style, label=section, markersize=3)
        ax.set_xlabel("round")
        ax.set_ylabel(name)
        ax.set_title(name)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out
