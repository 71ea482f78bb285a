"""Summaries of a client population: per-client sizes and label histograms.

```python
>>> import numpy as np
>>> from fedcore.data import from_clients_dict
>>> cd = from_clients_dict({
...     "a": {"x": np.zeros((3, 1)), "y": np.array([0, 0, 1])},
...     "b": {"x": np.zeros((1, 1)), "y": np.array([2])},
... })
>>> s = cd.describe()
>>> s.num_examples.tolist(), s.label_counts.tolist()
([3, 1], [[2, 1, 0], [0, 0, 1]])
>>> s.total_examples, s.num_classes
(4, 3)
```
"""

from __future__ import annotations

import dataclasses
import os
import numpy as np
from jaxtyping import Int

__all__ = ["DataSummary"]


@dataclasses.dataclass(frozen=True, eq=False)
class DataSummary:
    """Per-client sizes and label counts of a `ClientData`.

    `label_counts[i, c]` is the number of examples of class `c` held by client
    `client_ids[i]`. `str(summary)` (or `print(summary)`) gives a table.
    """

    client_ids: tuple[str, ...]
    num_examples: Int[np.ndarray, " clients"]
    label_counts: Int[np.ndarray, "clients classes"]

    @property
    def num_clients(self) -> int:
        return len(self.client_ids)

    @property
    def num_classes(self) -> int:
        return int(self.label_counts.shape[1])

    @property
    def total_examples(self) -> int:
        return int(self.num_examples.sum())

    @property
    def classes_per_client(self) -> Int[np.ndarray, " clients"]:
        """Number of distinct labels each client holds."""
        return (self.label_counts > 0).sum(axis=1)

    def stats(self) -> dict[str, float]:
        """Headline numbers: clients, examples, client size min/mean/median/max, labels per client."""
        n = self.num_examples
        return {
            "clients": float(self.num_clients),
            "examples": float(self.total_examples),
            "size_min": float(n.min()),
            "size_mean": float(n.mean()),
            "size_median": float(np.median(n)),
            "size_max": float(n.max()),
            "classes_per_client_mean": float(self.classes_per_client.mean()),
        }

    def table(self, max_rows: int = 20) -> str:
        """A plain-text table: one row per client (the first `max_rows`), then totals."""
        s = self.stats()
        head = (
            f"{self.num_clients} clients, {self.total_examples} examples, {self.num_classes} classes; "
            f"client size min {int(s['size_min'])} / mean {s['size_mean']:.1f} / median "
            f"{s['size_median']:.0f} / max {int(s['size_max'])}; "
            f"{s['classes_per_client_mean']:.1f} classes per client on average"
        )
        show_classes = self.num_classes <= 12
        cols = ["client", "examples", "classes"]
        if show_classes:
            cols += [f"y={c}" for c in range(self.num_classes)]
        rows = []
        for i, cid in enumerate(self.client_ids[:max_rows]):
            row = [cid, str(int(self.num_examples[i])), str(int(self.classes_per_client[i]))]
            if show_classes:
                row += [str(int(v)) for v in self.label_counts[i]]
            rows.append(row)
        if self.num_clients > max_rows:
            rows.append(["...", "", ""] + ([""] * self.num_classes if show_classes else []))
        total = ["total", str(self.total_examples), str(int((self.label_counts.sum(0) > 0).sum()))]
        if show_classes:
            total += [str(int(v)) for v in self.label_counts.sum(axis=0)]
        rows.append(total)
        widths = [max(len(c), *(len(r[j]) for r in rows)) for j, c in enumerate(cols)]

        def fmt(r: list[str]) -> str:
            return "  ".join(v.ljust(w) if j == 0 else v.rjust(w) for j, (v, w) in enumerate(zip(r, widths)))

        lines = [head, fmt(cols), "  ".join("-" * w for w in widths)]
        lines += [fmt(r) for r in rows]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def plot(
        self, path: str | os.PathLike[str], *, max_clients: int = 50, title: str | None = None
    ) -> str:
        """Save a stacked horizontal bar chart (one bar per client, one colour per label) to `path`."""
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
            import matplotlib as mpl
        except ImportError as e:
            raise ImportError('plot_label_skew needs matplotlib: pip install "fedcore[plot]"') from e
        if max_clients < 1:
            raise ValueError(f"max_clients must be at least 1, got {max_clients}.")
        k = min(self.num_clients, max_clients)
        counts = self.label_counts[:k]
        fig = Figure(figsize=(8.5, max(2.5, 0.18 * k + 1.2)), dpi=110)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        cmap = mpl.colormaps["tab10" if self.num_classes <= 10 else "tab20" if self.num_classes <= 20 else "viridis"]
        rows = np.arange(k)
        left = np.zeros(k)
        for c in range(self.num_classes):
            color = cmap(c) if self.num_classes <= 20 else cmap(c / max(1, self.num_classes - 1))
            ax.barh(rows, counts[:, c], left=left, color=color, height=0.85, label=str(c), linewidth=0)
            left += counts[:, c]
        ax.set_yticks(rows)
        ax.set_yticklabels(self.client_ids[:k], fontsize=6 if k > 30 else 8)
        ax.set_ylim(k - 0.5, -0.5)
        ax.set_xlabel("examples per client (coloured by label)")
        ax.set_ylabel("client")
        shown = "" if k == self.num_clients else f" (first {k} of {self.num_clients})"
        ax.set_title(title or f"Label skew across clients{shown}")
        if self.num_classes <= 20:
            ax.legend(title="label", fontsize=7, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        fig.tight_layout()
        out = os.fspath(path)
        fig.savefig(out)
        return out
