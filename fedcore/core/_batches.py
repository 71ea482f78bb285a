"""Client batches: several clients' padded batches as one pytree.

The layout shared by the data layer (which builds it), the learning layer
(which trains on it) and execution strategies (which may group clients by
their number of steps).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Int

__all__ = ["ClientBatches", "ClientPopulation", "Cohort", "num_real_steps"]


class ClientBatches(eqx.Module):
    """Batches of several clients, stacked and padded.

    - `data`: dict of arrays `[clients, examples, ...]` (each client's examples once);
    - `index`: `[clients, steps, batch]` int32, which example fills each slot;
    - `mask`: `[clients, steps, batch]` bool, False for padding slots.

    A padded slot (mask False) contributes nothing: no loss, no gradient, no
    count. A step whose mask is all False is skipped (no optimizer step).

    `step_bound` (optional, one int for all clients): no client has real steps
    from there on. A group of clients vmapped together gets its largest step
    count here, so their step loops stop there (see `fedcore.core._grouping`).
    """

    data: dict[str, Array]
    index: Int[Array, "clients steps batch"]
    mask: Bool[Array, "clients steps batch"]
    step_bound: Int[Array, ""] | None = None

    @property
    def num_clients(self) -> int:
        return int(self.index.shape[0])

    @property
    def num_steps(self) -> int:
        return int(self.index.shape[1])

    @property
    def batch_size(self) -> int:
        return int(self.index.shape[2])

    def materialize(self) -> dict[str, Array]:
        """The explicit `[clients, steps, batch, ...]` arrays plus `"mask"`."""
        gathered = {
            k: jax.vmap(lambda a, i: a[i])(v, self.index) for k, v in self.data.items()
        }
        return {**gathered, "mask": self.mask}

    @classmethod
    def from_materialized(cls, batches: Mapping[str, Any]) -> "ClientBatches":
        """Wraps explicit `{"x": [C, S, B, ...], ..., "mask": [C, S, B]}` arrays.

        ```python
        >>> import numpy as np
        >>> b = ClientBatches.from_materialized({"x": np.zeros((2, 3, 4, 5)), "mask": np.ones((2, 3, 4), bool)})
        >>> b.index.shape
        (2, 3, 4)
        ```
        """
        if "mask" not in batches:
            raise ValueError("Materialized batches need a 'mask' entry of shape [clients, steps, batch].")
        mask = jnp.asarray(batches["mask"], dtype=bool)
        if mask.ndim != 3:
            raise ValueError(f"'mask' must be [clients, steps, batch], got shape {mask.shape}.")
        c, s, b = mask.shape
        data = {}
        for k, v in batches.items():
            if k == "mask":
                continue
            v = jnp.asarray(v)
            if v.shape[:3] != (c, s, b):
                raise ValueError(f"'{k}' has leading shape {v.shape[:3]}, but 'mask' is {(c, s, b)}.")
            data[k] = v.reshape(c, s * b, *v.shape[3:])
        index = jnp.broadcast_to(jnp.arange(s * b, dtype=jnp.int32).reshape(s, b), (c, s, b))
        return cls(data, index, mask)


def num_real_steps(mask: Bool[Array, "steps batch"]) -> Int[Array, ""]:
    """How many steps a client runs: up to and including its last non-empty batch (0 if none).

    ```python
    >>> import jax.numpy as jnp
    >>> int(num_real_steps(jnp.array([[True, True], [True, False], [False, False]])))
    2
    ```
    """
    nonempty = jnp.any(mask, axis=-1)
    return jnp.max(jnp.where(nonempty, jnp.arange(1, mask.shape[0] + 1, dtype=jnp.int32), 0), initial=0)


class ClientPopulation(eqx.Module):
    """Every client's batches over one shared store of examples: build it once, keep it on device.

    - `data`: dict of arrays `[examples, ...]`, every client's examples stored once;
    - `index`: `[clients, steps, batch]` int32, which row of `data` fills each slot;
    - `mask`: `[clients, steps, batch]` bool, False for padding slots.

    A round's clients are `population.select(ids)` (a `Cohort`): only `ids`
    travel to the device each round; each client's batches are gathered from
    the store inside the jitted round, and no client data is copied.
    `population.client(i)` is client `i`'s batches as local training sees them.

    ```python
    >>> import numpy as np
    >>> b = ClientBatches.from_materialized({"x": np.zeros((2, 3, 4, 5)), "mask": np.ones((2, 3, 4), bool)})
    >>> p = ClientPopulation.from_batches(b)
    >>> p.data["x"].shape, p.index.shape, p.select(np.array([1])).ids.shape
    ((24, 5), (2, 3, 4), (1,))
    ```
    """

    data: dict[str, Array]
    index: Int[Array, "clients steps batch"]
    mask: Bool[Array, "clients steps batch"]

    @property
    def num_clients(self) -> int:
        return int(self.index.shape[0])

    def client(self, i: Int[Array, ""] | int, step_bound: Int[Array, ""] | None = None) -> ClientBatches:
        """Client `i`'s batches: the shared `data`, its `index` rows `[steps, batch]` and `mask`."""
        return ClientBatches(self.data, self.index[i], self.mask[i], step_bound)

    def select(self, ids: Any, group_size: int | None = None) -> "Cohort":
        """The cohort of clients `ids` (ints in `[0, num_clients)`), e.g. a round's sample.

        `group_size`: how many clients run side by side (vmapped) under the
        `vmap` strategy; by default 1 on CPU and about an eighth of the
        cohort on accelerators (see `fedcore.core._grouping`).
        """
        if group_size is not None and (isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1):
            raise ValueError(f"select: group_size must be a positive int or None, got {group_size!r}.")
        if not isinstance(ids, jax.core.Tracer):
            ids = np.asarray(ids)
            if ids.ndim != 1 or ids.size == 0 or not np.issubdtype(ids.dtype, np.integer):
                raise ValueError(f"select expects a non-empty 1-D array of client ids, got shape {ids.shape} {ids.dtype}.")
            if ids.min() < 0 or ids.max() >= self.num_clients:
                raise ValueError(
                    f"select: client ids must lie in [0, {self.num_clients}), got {ids.min()}..{ids.max()}."
                )
        ids = jax.device_put(ids.astype(np.int32)) if isinstance(ids, np.ndarray) else jnp.asarray(ids, jnp.int32)
        return Cohort(self, ids, group_size)

    @classmethod
    def from_batches(cls, batches: ClientBatches) -> "ClientPopulation":
        """The same clients with their examples in one store (a reshape: nothing is copied)."""
        c, n = batches.index.shape[0], next(iter(batches.data.values())).shape[1]
        data = {k: v.reshape(c * n, *v.shape[2:]) for k, v in batches.data.items()}
        offsets = (jnp.arange(c, dtype=jnp.int32) * n)[:, None, None]
        return cls(data, batches.index.astype(jnp.int32) + offsets, batches.mask)


class Cohort(eqx.Module):
    """The clients of one round: a `ClientPopulation` and the ids of the selected clients.

    Learning processes accept it in place of `ClientBatches`:
    `process.next(state, population.select(ids))`. Placed (inside a
    computation), `population` is all-equal at CLIENTS (every client reads
    its own rows of the shared store) and `ids` is `{i32}@CLIENTS`.
    """

    population: Any
    ids: Any
    group_size: int | None = eqx.field(static=True, default=None)
